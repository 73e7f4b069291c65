"""litho.docstore.slots: a per-tenant cap that racing inserts cannot pass,
against the real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from litho.docstore import open_document_store, slots
from litho.errors import AlreadyExists


async def test_racing_inserts_never_pass_the_cap_and_freed_slots_are_reused(
        tmp_path: Path) -> None:
    store = await open_document_store(f"sqlite:///{tmp_path / 's.db'}", "litho")
    try:
        docs = store.collection("capped")
        await docs.ensure_index(["tenantId", "slot"], unique=True)
        results = await asyncio.gather(*(
            slots.insert_within(docs, {"_id": f"d{i}", "tenantId": "t1"}, 5)
            for i in range(12)))
        assert results.count(0) == 5 and all(r >= 5 for r in results if r)
        assert sorted(d["slot"] for d in await docs.find({"tenantId": "t1"})) == [0, 1, 2, 3, 4]
        # Another tenant has a cap of its own.
        assert await slots.insert_within(docs, {"_id": "o", "tenantId": "t2"}, 5) == 0
        assert await docs.delete({"tenantId": "t1", "slot": 0}) == 1
        freed: dict[str, object] = {"_id": "new", "tenantId": "t1"}
        assert await slots.insert_within(docs, freed, 5) == 0 and freed["slot"] == 0
        assert await slots.free_slot(docs, "t1", 5) is None
        assert await slots.free_slot(docs, "t1", 0) is None
    finally:
        await store.close()


async def test_a_clash_on_another_unique_index_is_the_callers_to_raise(tmp_path: Path) -> None:
    store = await open_document_store(f"sqlite:///{tmp_path / 's.db'}", "litho")
    try:
        docs = store.collection("named")
        await docs.ensure_index(["tenantId", "slot"], unique=True)
        await docs.ensure_index(["tenantId", "name"], unique=True)
        assert await slots.insert_within(docs, {"_id": "a", "tenantId": "t", "name": "x"}, 5) == 0

        async def taken() -> None:
            raise AlreadyExists("name x is taken")

        with pytest.raises(AlreadyExists):
            await slots.insert_within(docs, {"_id": "b", "tenantId": "t", "name": "x"}, 5,
                                      on_clash=taken)
    finally:
        await store.close()
