"""The template store keeps working around a stored template it cannot read
(written before inputs were bounded, or by hand): listings skip it, reading
it says to delete it, and deleting it works; and no listing page is too
large for one gRPC message (real SQLite store)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import pytest_asyncio

from litho.docstore import DocumentStore, open_document_store
from litho.errors import FailedPrecondition, NotFound
from litho.template.v1 import template_pb2 as pb
from services.template._model import Spec, Template
from services.template._servicer import template_to_proto
from services.template._store import MAX_PAGE_BYTES, TemplateRepository, wire_size

TENANT = "tenant-a"


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[DocumentStore, Path]]:
    path = tmp_path / "docs.db"
    docstore = await open_document_store(f"sqlite://{path}", "unused")
    try:
        yield docstore, path
    finally:
        await docstore.close()


def _head_text(template_id: str, sample: str) -> str:
    """A stored head (and version) as the store writes it, with raw JSON for
    ``sampleVariables`` so it can be nested as deep as an old bug allowed."""
    now = datetime.now(UTC).isoformat()
    fields: dict[str, Any] = {
        "tenantId": TENANT, "templateId": template_id, "name": "old", "html": "<p>x</p>",
        "width": 10, "height": 10, "variableDefinitions": [], "discoveredVariables": [],
        "version": 1, "createTime": now, "updateTime": now,
    }
    head = json.dumps(fields)[:-1]
    return f'{head}, "sampleVariables": {sample}}}'


async def _write_raw(path: Path, template_id: str, sample: str) -> None:
    text = _head_text(template_id, sample)
    async with aiosqlite.connect(path) as conn:
        await conn.execute("INSERT INTO templates (_id, doc) VALUES (?, ?)",
                           (template_id, f'{{"_id": "{template_id}", {text[1:]}'))
        await conn.execute("INSERT INTO template_versions (_id, doc) VALUES (?, ?)",
                           (f"{template_id}:1", f'{{"_id": "{template_id}:1", {text[1:]}'))
        await conn.commit()


def _deep(levels: int) -> str:
    return '{"a": ' + "[" * levels + "]" * levels + "}"


@pytest.mark.parametrize("levels", [150, 995], ids=["decodable-but-too-deep", "undecodable"])
async def test_an_unreadable_template_never_breaks_listing_and_can_be_deleted(
    store: tuple[DocumentStore, Path], levels: int,
) -> None:
    docstore, path = store
    repo = TemplateRepository(docstore, version_cache_size=0)
    await repo.prepare()
    first = await repo.create(TENANT, Spec(name="a", html="<p>a</p>", width=1, height=1))
    await _write_raw(path, "tpl_000000000001bad", _deep(levels))
    last = await repo.create(TENANT, Spec(name="c", html="<p>c</p>", width=1, height=1))

    listed, token = await repo.list(TENANT, page_size=50, page_token="")
    assert [t.id for t in listed] == [first.id, last.id] and token == ""
    # Paging by one still walks past it: the token comes from the stored id.
    seen, token = [], ""
    for _ in range(5):
        page, token = await repo.list(TENANT, page_size=1, page_token=token)
        seen += [t.id for t in page]
        if not token:
            break
    assert seen == [first.id, last.id]
    versions, _ = await repo.versions(TENANT, first.id, page_size=10, page_token="")
    assert [v.version for v in versions] == [1]

    with pytest.raises((FailedPrecondition, NotFound)):
        await repo.latest(TENANT, "tpl_000000000001bad")
    with pytest.raises(NotFound):
        await repo.delete("another-tenant", "tpl_000000000001bad")
    await repo.delete(TENANT, "tpl_000000000001bad")
    with pytest.raises(NotFound):
        await repo.delete(TENANT, "tpl_000000000001bad")
    assert await docstore.collection("template_versions").count(
        {"templateId": "tpl_000000000001bad"}) == 0
    listed, _ = await repo.list(TENANT, page_size=50, page_token="")
    assert [t.id for t in listed] == [first.id, last.id]


async def test_a_decodable_but_too_deep_template_says_to_delete_it(
    store: tuple[DocumentStore, Path],
) -> None:
    docstore, path = store
    repo = TemplateRepository(docstore, version_cache_size=0)
    await repo.prepare()
    await _write_raw(path, "tpl_000000000002bad", _deep(150))
    with pytest.raises(FailedPrecondition, match="delete it"):
        await repo.latest(TENANT, "tpl_000000000002bad")


# ------------------------------------------------- pages bounded in bytes ----

#: gRPC's default limit on a received message (the gateway's channel).
GRPC_MAX_MESSAGE = 4 * 1024 * 1024


def _html(size: int, mark: str) -> str:
    """A template source of exactly ``size`` bytes."""
    head = f"<p>{mark}</p>"
    return head + "x" * (size - len(head))


def _list_message(templates: list[Template], token: str) -> pb.ListTemplatesResponse:
    return pb.ListTemplatesResponse(
        templates=[template_to_proto(t) for t in templates], next_page_token=token)


async def _walk(repo: TemplateRepository, page_size: int,
                template_id: str | None = None) -> list[list[Template]]:
    pages: list[list[Template]] = []
    token = ""
    for _ in range(50):
        if template_id is None:
            page, token = await repo.list(TENANT, page_size=page_size, page_token=token)
        else:
            page, token = await repo.versions(TENANT, template_id, page_size=page_size,
                                              page_token=token)
        pages.append(page)
        if not token:
            return pages
    raise AssertionError("the listing never ended")


async def test_listing_nine_large_templates_pages_under_the_grpc_limit(
    store: tuple[DocumentStore, Path],
) -> None:
    """Nine templates with html at its 512 KiB limit are ~4.6 MiB together:
    at the default page size one page used to be over gRPC's 4 MiB limit."""
    docstore, _ = store
    repo = TemplateRepository(docstore, version_cache_size=0)
    await repo.prepare()
    created = [await repo.create(TENANT, Spec(name=f"t{i}", html=_html(512 * 1024, str(i)),
                                              width=1, height=1))
               for i in range(9)]
    assert sum(len(t.html) for t in created) > GRPC_MAX_MESSAGE
    pages = await _walk(repo, page_size=50)
    assert len(pages) > 1 and all(pages)
    for page in pages:
        size = _list_message(page, "x" * 40).ByteSize()
        assert size <= MAX_PAGE_BYTES < GRPC_MAX_MESSAGE
    # Every template once, in id order: each token continues right after the
    # last template its page returned.
    assert [t.id for page in pages for t in page] == sorted(t.id for t in created)


async def test_nine_large_versions_of_one_template_page_under_the_grpc_limit(
    store: tuple[DocumentStore, Path],
) -> None:
    docstore, _ = store
    repo = TemplateRepository(docstore, version_cache_size=0)
    await repo.prepare()
    first = await repo.create(TENANT, Spec(name="t", html=_html(512 * 1024, "1"),
                                           width=1, height=1))
    for version in range(2, 10):
        await repo.update(TENANT, first.id, Spec(html=_html(512 * 1024, str(version))))
    pages = await _walk(repo, page_size=50, template_id=first.id)
    assert len(pages) > 1
    for page in pages:
        assert _list_message(page, "x" * 40).ByteSize() <= MAX_PAGE_BYTES
    versions = [t.version for page in pages for t in page]
    assert versions == list(range(9, 0, -1))
    assert [t.html[:6] for page in pages for t in page] == [f"<p>{v}</p>"[:6] for v in versions]


async def test_a_page_stops_before_its_byte_budget_and_always_holds_one(
    store: tuple[DocumentStore, Path],
) -> None:
    docstore, path = store
    repo = TemplateRepository(docstore, version_cache_size=0, max_page_bytes=100_000)
    await repo.prepare()

    async def make(name: str, size: int) -> Template:
        # Ids order by creation only across milliseconds.
        await asyncio.sleep(0.002)
        return await repo.create(TENANT, Spec(name=name, html=_html(size, name),
                                              width=1, height=1))

    a, b = await make("a", 60_000), await make("b", 30_000)
    # An unreadable document between b and c is skipped, and counts nowhere.
    await _write_raw(path, f"{b.id}~bad", _deep(995))
    c, d, e = await make("c", 30_000), await make("d", 150_000), await make("e", 1_000)
    pages = await _walk(repo, page_size=50)
    # a + b fit in 100,000 bytes and c would not; d is over the budget on its
    # own and is returned alone; e follows it.
    assert [[t.name for t in page] for page in pages] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [t.id for page in pages for t in page] == [x.id for x in (a, b, c, d, e)]
    assert wire_size(d) > 100_000
    # The count bound still applies where the byte bound does not bite.
    assert [[t.name for t in page] for page in await _walk(repo, page_size=1)] == [
        ["a"], ["b"], ["c"], ["d"], ["e"]]


async def test_the_largest_template_fits_in_one_message_read_or_listed(
    store: tuple[DocumentStore, Path],
) -> None:
    """html, sample variables and variable definitions all at their limits
    (JSON of astral characters, which json.dumps writes as 12 bytes each, and
    as many discovered variables as the source can name), read and listed."""
    docstore, _ = store
    repo = TemplateRepository(docstore, version_cache_size=0)
    await repo.prepare()
    names = [n for n in (f"{a}{b}{c}" for a in _LETTERS for b in _LETTERS for c in "_" + _LETTERS)
             if n.isidentifier()]
    html = "{{ [" + ",".join(names) + "] }}"
    html += "x" * (512 * 1024 - len(html.encode()))
    emoji = "\U0001F600"
    sample = {"e": emoji * (256 * 1024 // 4 - 8)}
    definitions = [{"name": f"v{i}", "type": "text", "description": emoji * 300}
                   for i in range(200)]
    assert len(json.dumps(sample, ensure_ascii=False).encode()) <= 256 * 1024
    assert len(json.dumps(definitions, ensure_ascii=False).encode()) <= 256 * 1024
    big = await repo.create(TENANT, Spec(
        name="n" * 200, html=html, width=1, height=1, sample_variables=sample,
        variable_definitions=definitions, discovered_variables=names))
    await asyncio.sleep(0.002)  # ids order by creation only across milliseconds
    small = await repo.create(TENANT, Spec(name="s", html="<p>s</p>", width=1, height=1))

    read = await repo.latest(TENANT, big.id)
    one = pb.GetTemplateResponse(template=template_to_proto(read)).ByteSize()
    assert MAX_PAGE_BYTES < one < GRPC_MAX_MESSAGE
    assert wire_size(read) >= one  # the page budget never underestimates
    pages = await _walk(repo, page_size=50)
    assert [[t.id for t in page] for page in pages] == [[big.id], [small.id]]
    assert _list_message(pages[0], "x" * 40).ByteSize() < GRPC_MAX_MESSAGE


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


async def test_concurrent_updates_one_wins_the_others_conflict(
    store: tuple[DocumentStore, Path],
) -> None:
    from litho.errors import Conflict

    repo = TemplateRepository(store[0], version_cache_size=0)
    await repo.prepare()
    created = await repo.create(TENANT, Spec(name="t", html="<p>0</p>", width=10, height=10,
                                             sample_variables={}, variable_definitions=[]))
    # Concurrent: every update has read the same head before any writes (an
    # update that reads the head after another's move is simply the next one).
    real_latest = repo.latest
    barrier = asyncio.Barrier(5)

    async def latest_then_wait(tenant_id: str, template_id: str) -> Template:
        head = await real_latest(tenant_id, template_id)
        await barrier.wait()
        return head

    repo.latest = latest_then_wait  # type: ignore[method-assign]
    outcomes = await asyncio.gather(*(
        repo.update(TENANT, created.id, Spec(html=f"<p>{n}</p>")) for n in range(1, 6)
    ), return_exceptions=True)
    repo.latest = real_latest  # type: ignore[method-assign]
    winners = [o for o in outcomes if isinstance(o, Template)]
    assert len(winners) == 1 and winners[0].version == 2
    assert all(isinstance(o, Conflict) for o in outcomes if o not in winners)
    head = await repo.latest(TENANT, created.id)
    assert head.version == 2 and head.html == winners[0].html


async def test_a_head_left_behind_by_an_interrupted_update_is_repaired(
    store: tuple[DocumentStore, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from litho.errors import Conflict
    from services.template import _store

    repo = TemplateRepository(store[0], version_cache_size=0)
    await repo.prepare()
    created = await repo.create(TENANT, Spec(name="t", html="<p>1</p>", width=10, height=10,
                                             sample_variables={}, variable_definitions=[]))
    heads = repo._heads
    real_replace = heads.replace
    calls = 0

    async def failing_once(flt: Any, doc: Any, *, upsert: bool = False) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the store went away between the two writes")
        return await real_replace(flt, doc, upsert=upsert)

    monkeypatch.setattr(heads, "replace", failing_once)
    with pytest.raises(ConnectionError):
        await repo.update(TENANT, created.id, Spec(html="<p>2</p>"))
    # Version 2 exists, the head is still at 1. Just after, this looks like an
    # update still under way: a Conflict, as for any concurrent update.
    with pytest.raises(Conflict):
        await repo.update(TENANT, created.id, Spec(html="<p>3</p>"))
    # Later, it is known to be abandoned: the head is moved to version 2, and
    # the update goes on as version 3, instead of a Conflict forever.
    monkeypatch.setattr(_store, "_HEAD_REPAIR_AFTER", 0.0)
    updated = await repo.update(TENANT, created.id, Spec(html="<p>3</p>"))
    assert updated.version == 3
    versions, _ = await repo.versions(TENANT, created.id, page_size=10, page_token="")
    assert [(v.version, v.html) for v in versions] == [(3, "<p>3</p>"), (2, "<p>2</p>"),
                                                       (1, "<p>1</p>")]
    assert (await repo.latest(TENANT, created.id)).html == "<p>3</p>"


async def test_a_stalled_head_move_never_takes_the_head_back(
    store: tuple[DocumentStore, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An update stalls between its two writes long enough to be repaired
    (its version adopted) and overtaken; its late head move changes nothing."""
    from services.template import _store

    monkeypatch.setattr(_store, "_HEAD_REPAIR_AFTER", 0.0)
    repo = TemplateRepository(store[0], version_cache_size=0)
    await repo.prepare()
    created = await repo.create(TENANT, Spec(name="t", html="<p>1</p>", width=10, height=10,
                                             sample_variables={}, variable_definitions=[]))
    heads = repo._heads
    real_replace = heads.replace
    stalled, go = asyncio.Event(), asyncio.Event()

    async def stall_first(flt: Any, doc: Any, *, upsert: bool = False) -> bool:
        if not stalled.is_set():
            stalled.set()
            await go.wait()
        return await real_replace(flt, doc, upsert=upsert)

    monkeypatch.setattr(heads, "replace", stall_first)
    slow = asyncio.ensure_future(repo.update(TENANT, created.id, Spec(html="<p>2</p>")))
    await stalled.wait()  # version 2 is written, its head move has not happened
    overtaking = await repo.update(TENANT, created.id, Spec(html="<p>3</p>"))
    assert overtaking.version == 3  # repaired to 2, then went on
    go.set()
    assert (await slow).version == 2
    head = await repo.latest(TENANT, created.id)
    assert (head.version, head.html) == (3, "<p>3</p>")


async def test_listing_by_name_prefix_and_tag_pages_through_only_the_matches(
    store: tuple[DocumentStore, Path],
) -> None:
    docstore, _ = store
    repo = TemplateRepository(docstore, version_cache_size=0)
    await repo.prepare()
    names = ["og/blog", "og/docs", "Og/caps", "og", "social/x", "og/ünï", "og/blog2", "oh"]
    made = {n: await repo.create(TENANT, Spec(
        name=n, html="<p>x</p>", width=1, height=1,
        tags=["og"] if n.startswith("og") else ["social", "wide"]))
        for n in names}
    await repo.create("another-tenant", Spec(name="og/theirs", html="x", width=1, height=1,
                                             tags=["og"]))

    async def walk(**filters: str) -> list[str]:
        found, token = [], ""
        while True:
            page, token = await repo.list(TENANT, page_size=2, page_token=token, **filters)
            found += [t.name for t in page]
            if not token:
                return found

    def in_id_order(*wanted: str) -> list[str]:
        # Pages are in id order; ids made in the same millisecond may sort
        # either way, so the expectation is ordered by the ids themselves.
        return sorted(wanted, key=lambda n: made[n].id)

    assert await walk(name_prefix="og/") == in_id_order("og/blog", "og/docs", "og/ünï",
                                                        "og/blog2")
    assert await walk(name_prefix="og/blog") == in_id_order("og/blog", "og/blog2")
    assert await walk(name_prefix="og/ü") == ["og/ünï"]
    assert await walk(tag="wide") == in_id_order("Og/caps", "social/x", "oh")
    assert await walk(tag="og", name_prefix="og/d") == ["og/docs"]
    assert await walk(tag="nope") == []
    assert made["og/blog"].tags == ["og"]
    updated = await repo.update(TENANT, made["oh"].id, Spec(tags=["og", "late"]))
    assert updated.tags == ["og", "late"]
    assert "oh" in await walk(tag="late")
