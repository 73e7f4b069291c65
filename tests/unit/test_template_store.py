"""The template store keeps working around a stored template it cannot read
(written before inputs were bounded, or by hand): listings skip it, reading
it says to delete it, and deleting it works (real SQLite store)."""

from __future__ import annotations

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
from services.template._model import Spec
from services.template._store import TemplateRepository

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
