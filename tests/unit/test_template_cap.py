"""The per-tenant template cap (LITHO_TEMPLATE_MAX_PER_TENANT): a create past
it is a 429 naming the setting, a delete frees room, creates racing on two
replicas never pass it, and templates stored before the cap existed count
(real document stores: SQLite, and MongoDB's protocol on nx-27017; two
repositories on their own connections to the same data)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from litho.docstore import DocumentStore
from litho.errors import ResourceExhausted
from litho.template.v1 import template_pb2 as pb
from services.template._lang import Engine, LangExpander
from services.template._model import Limits, Spec
from services.template._service import Templates
from services.template._servicer import TemplateServicer
from services.template._settings import TemplateSettings
from services.template._store import TemplateRepository
from tests.support.nx27017 import Nx27017, peer_stores, start_nx27017

SPEC = Spec(name="card", html="<p>{{ title }}</p>", width=100, height=50)


@pytest.fixture(scope="module")
def nx27017(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nx27017]:
    server = start_nx27017(tmp_path_factory.mktemp("nx27017"))
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(params=["sqlite", "nx27017"])
async def peers(request: pytest.FixtureRequest,
                tmp_path: Path) -> AsyncIterator[list[DocumentStore]]:
    """Two stores on the same data, as two template service replicas have."""
    server = request.getfixturevalue("nx27017") if request.param == "nx27017" else None
    async with peer_stores(request.param, tmp_path, server, prefix="cap") as stores:
        yield stores


def _service(repo: TemplateRepository, cap: int) -> Templates:
    limits = Limits(max_html_bytes=512 * 1024, max_dimension=5000,
                    max_variables_bytes=8192, max_output_bytes=2 * 1024 * 1024,
                    max_per_tenant=cap)
    return Templates(repo, LangExpander(Engine()), limits, max_pattern_input=10_000,
                     expand_timeout=5.0)


async def _prepared(store: DocumentStore, cap: int) -> Templates:
    repo = TemplateRepository(store, version_cache_size=0)
    await repo.prepare()
    return _service(repo, cap)


async def test_past_the_cap_a_create_is_a_429_naming_the_setting_and_a_delete_frees_room(
        peers: list[DocumentStore]) -> None:
    templates = await _prepared(peers[0], 3)
    made = [await templates.create("t1", SPEC) for _ in range(3)]
    with pytest.raises(ResourceExhausted) as refused:
        await templates.create("t1", SPEC)
    assert "LITHO_TEMPLATE_MAX_PER_TENANT" in refused.value.message
    assert "this tenant has 3 templates; the limit is 3" in refused.value.message
    assert refused.value.retry_after == 60.0
    assert refused.value.status == "RESOURCE_EXHAUSTED"  # 429 at the gateway
    # Another tenant has its own room.
    await templates.create("t2", SPEC)
    # Updates are not creates, and keep the template's slot.
    await templates.update("t1", made[0].id, Spec(name="renamed"))
    with pytest.raises(ResourceExhausted):
        await templates.create("t1", SPEC)
    await templates.delete("t1", made[1].id)
    await templates.create("t1", SPEC)
    with pytest.raises(ResourceExhausted):
        await templates.create("t1", SPEC)
    listed, _ = await templates.list_templates("t1", 100, "")
    assert len(listed) == 3


async def test_creates_racing_on_two_replicas_never_pass_the_cap(
        peers: list[DocumentStore]) -> None:
    one, two = await _prepared(peers[0], 5), await _prepared(peers[1], 5)
    await one.create("t1", SPEC)
    outcomes = await asyncio.gather(
        *(((one if i % 2 else two).create("t1", SPEC)) for i in range(12)),
        return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
    made = [o for o in outcomes if not isinstance(o, BaseException)]
    assert (len(made), len(refused)) == (4, 8)
    assert [o for o in outcomes if isinstance(o, BaseException)] == refused
    assert await peers[0].collection("templates").count({"tenantId": "t1"}) == 5
    # A refused create leaves no version behind.
    assert await peers[0].collection("template_versions").count({"tenantId": "t1"}) == 5


async def _insert_old_heads(store: DocumentStore, tenant_id: str, count: int) -> list[str]:
    """Heads and versions as the store wrote them before the cap (no slot)."""
    now = datetime.now(UTC).isoformat()
    ids = []
    for i in range(count):
        template_id = f"tpl_old{tenant_id}{i:04d}"
        doc = {"tenantId": tenant_id, "templateId": template_id, "name": f"old {i}",
               "html": "<p>old</p>", "width": 10, "height": 10, "sampleVariables": {},
               "variableDefinitions": [], "discoveredVariables": [], "tags": [],
               "version": 1, "createTime": now, "updateTime": now}
        await store.collection("templates").insert({"_id": template_id, **doc})
        await store.collection("template_versions").insert({"_id": f"{template_id}:1", **doc})
        ids.append(template_id)
    return ids


async def test_templates_stored_before_the_cap_count_against_it(
        peers: list[DocumentStore]) -> None:
    old = await _insert_old_heads(peers[0], "t1", 4)
    await _insert_old_heads(peers[0], "t2", 2)
    # Two replicas start together: both number the old heads, alike.
    one, two = await asyncio.gather(_prepared(peers[0], 3), _prepared(peers[1], 3))
    heads = await peers[0].collection("templates").find({})
    assert sorted((d["tenantId"], d["slot"]) for d in heads) == [
        ("t1", 0), ("t1", 1), ("t1", 2), ("t1", 3), ("t2", 0), ("t2", 1)]
    # t1 is past the cap already (4 of 3): refused, and told how many it has.
    with pytest.raises(ResourceExhausted) as refused:
        await two.create("t1", SPEC)
    assert "this tenant has 4 templates; the limit is 3" in refused.value.message
    # t2 has one left, and only one.
    await one.create("t2", SPEC)
    with pytest.raises(ResourceExhausted):
        await two.create("t2", SPEC)
    # An old template updated keeps its slot; deleting two gets t1 under the cap.
    await one.update("t1", old[0], Spec(name="renamed"))
    await one.delete("t1", old[1])
    with pytest.raises(ResourceExhausted):
        await one.create("t1", SPEC)
    await one.delete("t1", old[2])
    await two.create("t1", SPEC)
    with pytest.raises(ResourceExhausted):
        await one.create("t1", SPEC)
    # A restart finds nothing to number and changes nothing.
    before = sorted((d["_id"], d["slot"])
                    for d in await peers[0].collection("templates").find({}))
    await _prepared(peers[1], 3)
    after = sorted((d["_id"], d["slot"])
                   for d in await peers[1].collection("templates").find({}))
    assert before == after


async def test_the_servicer_create_is_refused_at_the_cap(peers: list[DocumentStore]) -> None:
    """The RPC the gateway, ``litho templates push`` and the copilot's copies reach."""
    templates = await _prepared(peers[0], 1)
    servicer = TemplateServicer(templates, max_variables_bytes=8192)
    request = pb.CreateTemplateRequest(tenant_id="t1", spec=pb.TemplateSpec(
        name="a", html="<p>a</p>", width=10, height=10))
    await servicer.CreateTemplate(request, None)  # type: ignore[arg-type]
    with pytest.raises(ResourceExhausted, match="LITHO_TEMPLATE_MAX_PER_TENANT"):
        await servicer.CreateTemplate(request, None)  # type: ignore[arg-type]


def test_the_cap_is_a_setting_with_a_sane_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TemplateSettings.model_fields["template_max_per_tenant"].default == 10_000
    monkeypatch.setenv("LITHO_TEMPLATE_MAX_PER_TENANT", "25")
    assert TemplateSettings().template_max_per_tenant == 25
