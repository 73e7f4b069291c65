"""The per-tenant template cap (LITHO_TEMPLATE_MAX_PER_TENANT): a create past
it is a 429 naming the setting, a delete frees room, creates racing on two
replicas never pass it, and templates stored before the cap existed count
(real document stores: SQLite, and MongoDB's protocol on nx-27017; two
repositories on their own connections to the same data)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from litho.docstore import DocumentStore
from litho.errors import ResourceExhausted
from litho.template.v1 import template_pb2 as pb
from services.template._lang import Engine, LangExpander
from services.template._model import Limits, Spec
from services.template._service import Templates
from services.template._servicer import TemplateServicer
from services.template._settings import TemplateSettings
from services.template._store import TemplateRepository

SPEC = Spec(name="card", html="<p>{{ title }}</p>", width=100, height=50)


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


def _counting(store: DocumentStore, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Calls of each method on the ``templates`` collections ``store`` opens from now on."""
    calls: Counter[str] = Counter()
    real = store.collection

    def counted(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await method(*args, **kwargs)
        return call

    def collection(name: str) -> Any:
        coll = real(name)
        if name == "templates":
            for method in ("count", "find", "get", "update"):
                monkeypatch.setattr(coll, method, counted(method, getattr(coll, method)))
        return coll

    monkeypatch.setattr(store, "collection", collection)
    return calls


async def test_numbering_old_templates_reads_each_once_and_counts_per_tenant(
        peers: list[DocumentStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """Linear in a tenant's templates: no count or search per template (which
    made 10,000 old templates of one tenant take ~20 minutes at start-up)."""
    await _insert_old_heads(peers[0], "big", 200)
    await _insert_old_heads(peers[0], "small", 3)
    calls = _counting(peers[0], monkeypatch)
    await _prepared(peers[0], 10_000)
    assert calls["update"] == 203  # one write per template
    assert calls["count"] <= 2  # one per tenant
    assert calls["find"] <= 2 * (203 // 25 + 2)  # batches of 25, read about twice
    assert calls["get"] == 0  # nothing numbered them meanwhile
    heads = await peers[0].collection("templates").find({"tenantId": "big"}, sort=[("_id", 1)])
    assert [d["slot"] for d in heads] == list(range(200))


async def test_replicas_numbering_together_around_held_slots_agree(
        peers: list[DocumentStore]) -> None:
    """Some heads already hold slots (an interrupted start, a head numbered by
    hand): the rest take the lowest free ones in _id order, alike on three
    replicas numbering at once (over several batches), and the unique index
    builds."""
    old = await _insert_old_heads(peers[0], "t1", 60)
    held = {3: 0, 7: 2, 9: 5, 30: 31, 59: 40}
    for index, slot in held.items():
        await peers[0].collection("templates").update({"_id": old[index]},
                                                      {"$set": {"slot": slot}})
    replicas = await asyncio.gather(_prepared(peers[0], 60), _prepared(peers[1], 60),
                                    _prepared(peers[1], 60))
    free = iter(s for s in range(60) if s not in held.values())
    expected = [held[i] if i in held else next(free) for i in range(60)]
    heads = await peers[0].collection("templates").find({}, sort=[("_id", 1)])
    assert [d["slot"] for d in heads] == expected
    with pytest.raises(ResourceExhausted):
        await replicas[2].create("t1", SPEC)
    await replicas[0].delete("t1", old[4])  # frees slot 6
    await replicas[1].create("t1", SPEC)
    assert (await peers[0].collection("templates").find({"slot": 6}))[0]["_id"] != old[4]


async def _race(one: Templates, two: Templates, tenant_id: str, racers: int) -> list[object]:
    return list(await asyncio.gather(
        *((one if i % 2 else two).create(tenant_id, SPEC) for i in range(racers)),
        return_exceptions=True))


async def _fill(templates: Templates, tenant_id: str) -> None:
    """Create until the cap refuses."""
    with pytest.raises(ResourceExhausted, match="LITHO_TEMPLATE_MAX_PER_TENANT"):
        for _ in range(20):
            await templates.create(tenant_id, SPEC)


async def test_a_tenant_holding_slots_past_the_cap_cannot_race_past_it(
        peers: list[DocumentStore]) -> None:
    """Over the cap at upgrade (15 of 10), the 6 lowest slots freed: 9 held,
    all in slots 6..14. Creates racing for slots 0..5 (each free below the cap)
    find the tenant past it once in, and take themselves back."""
    old = await _insert_old_heads(peers[0], "t1", 15)
    one, two = await _prepared(peers[0], 10), await _prepared(peers[1], 10)
    for template_id in old[:6]:
        await one.delete("t1", template_id)
    outcomes = await _race(one, two, "t1", 6)
    made = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
    assert len(made) <= 1 and len(made) + len(refused) == 6
    assert all("LITHO_TEMPLATE_MAX_PER_TENANT" in r.message for r in refused)
    heads = peers[0].collection("templates")
    assert await heads.count({"tenantId": "t1"}) == 9 + len(made)
    # A refused create leaves neither head nor version behind.
    assert await peers[0].collection("template_versions").count({"tenantId": "t1"}) == 9 + len(
        made)
    await _fill(one, "t1")
    assert await heads.count({"tenantId": "t1"}) == 10


async def test_a_lowered_cap_holds_under_racing_creates(peers: list[DocumentStore]) -> None:
    """10 templates made under a cap of 10, the cap lowered to 5 and the 6
    lowest deleted: 4 held in slots 6..9, and racing creates add one at most."""
    before = await _prepared(peers[0], 10)
    made = [await before.create("t1", SPEC) for _ in range(10)]
    one, two = await _prepared(peers[0], 5), await _prepared(peers[1], 5)
    for template in made[:6]:
        await one.delete("t1", template.id)
    outcomes = await _race(one, two, "t1", 6)
    assert sum(not isinstance(o, BaseException) for o in outcomes) <= 1
    assert all(isinstance(o, ResourceExhausted) for o in outcomes if isinstance(o, BaseException))
    await _fill(two, "t1")
    assert await peers[0].collection("templates").count({"tenantId": "t1"}) == 5
    assert await peers[0].collection("template_versions").count({"tenantId": "t1"}) == 5


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
