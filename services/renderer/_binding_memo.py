"""A replica's memo of resolved bindings, so that a ``GET /b/{id}.{ext}``
whose data is fresh costs no hop to the binding service.

A :class:`litho.notes.NotedMemo` keyed by binding id: an entry is kept until
the first of the data's ``fresh_until`` (the next GET then asks, and so
refreshes), the memo's time to live, and a change note from the binding
service (:data:`litho.streams.BINDING_CHANGED_SUBJECT`, sent after every
write a resolve would see: an update, a pause or resume, a delete, new
data, a failure).

Only GETs go through the memo; the pre-render asks the binding service
(it must see the data as it is now). Errors (an unknown binding, one that
serves its error) are never memoised.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from nats.aio.client import Client as Nats

from litho.notes import Link, NotedMemo, following
from litho.streams import BINDING_CHANGED_SUBJECT
from services.renderer._bindings import BindingResolver, ResolvedBinding

#: What one entry is charged beyond its variables' text (ids, options, dataclasses).
ENTRY_OVERHEAD = 1024


class BindingMemo:
    """A :class:`BindingResolver` in front of another, bounded by
    ``max_bytes`` (the variables' text as Python holds it, plus a fixed
    overhead per entry; least recently used first out) and by ``max_age``
    seconds per entry; ``max_age`` 0 turns it off."""

    def __init__(self, resolver: BindingResolver, link: Link, *, max_age: float,
                 max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self._resolver = resolver
        self._memo: NotedMemo[ResolvedBinding] = NotedMemo(
            link, name="bindings", max_age=max_age, max_bytes=max_bytes,
            cost=lambda b: sys.getsizeof(b.variables_json) + ENTRY_OVERHEAD,
            until=lambda b: b.fresh_until, clock=clock)

    def __len__(self) -> int:
        return len(self._memo)

    async def resolve(self, binding_id: str, *, refresh: bool = True) -> ResolvedBinding:
        if not refresh:
            return await self._resolver.resolve(binding_id, refresh=False)
        return await self._memo.get(binding_id, lambda: self._resolver.resolve(binding_id))

    def changed(self, binding_id: str) -> None:
        """A change note: forget the binding, and any answer under way for it."""
        self._memo.changed(binding_id)


def following_changes(nc: Nats, memo: BindingMemo) -> AbstractAsyncContextManager[None]:
    """Subscribe ``memo`` to the binding service's change notes."""
    return following(nc, BINDING_CHANGED_SUBJECT, memo.changed)
