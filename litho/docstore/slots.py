"""A per-tenant cap on documents that concurrent inserts cannot pass, without
a transaction: each document holds a numbered ``slot`` below the cap, and a
unique index on (tenantId, slot) lets only one of the inserts racing for the
last free slot win.

The caller keeps that unique index (``ensure_index(["tenantId", "slot"],
unique=True)``). Finding a free slot never reads documents: "fewer than k
documents hold a slot below k" says one below k is free, so a binary search
over counts, which the index answers, finds the lowest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litho.docstore import Collection, DuplicateKey


async def free_slot(docs: Collection, tenant_id: str, limit: int) -> int | None:
    """The lowest slot below ``limit`` no document of the tenant holds, or None."""
    async def holds_all_below(k: int) -> bool:
        return await docs.count({"tenantId": tenant_id, "slot": {"$lt": k}}) >= k

    if limit <= 0 or await holds_all_below(limit):
        return None
    low, high = 0, limit  # every slot below low is held; one below high is free
    while high - low > 1:
        middle = (low + high) // 2
        if await holds_all_below(middle):
            low = middle
        else:
            high = middle
    return low


async def insert_within(docs: Collection, doc: dict[str, Any], limit: int, *,
                        on_clash: Callable[[], Awaitable[None]] | None = None) -> int:
    """Insert ``doc`` (with a free slot, set on ``doc`` too) unless its tenant
    holds ``limit`` documents; 0 when inserted, else the count that refused
    it. A clash on another unique index than the slot's is for ``on_clash``
    to raise (it is called on every clash; when it returns, the slot was
    taken meanwhile and another is tried)."""
    tenant_id = doc["tenantId"]
    for _ in range(limit + 10):
        slot = await free_slot(docs, tenant_id, limit)
        if slot is None:
            return max(await docs.count({"tenantId": tenant_id}), limit)
        try:
            await docs.insert({**doc, "slot": slot})
        except DuplicateKey:
            if on_clash is not None:
                await on_clash()
            continue  # the slot was taken meanwhile: look again
        doc["slot"] = slot
        return 0
    return limit
