"""A replica's memo of resolved bindings, so that a ``GET /b/{id}.{ext}``
whose data is fresh costs no hop to the binding service.

An entry is kept until the first of: the binding's data stops being fresh
(``fresh_until``: the next GET then asks, and so refreshes), the memo's
time to live, or a change note. The binding service sends a note (core
NATS, :data:`litho.streams.BINDING_CHANGED_SUBJECT`) after every write a
resolve would see (an update, a pause or resume, a delete, new data, a
failure) and flushes it before the write answers. Notes are not kept by
the server, so a replica whose connection dropped may have missed some: it
forgets everything, and memoises nothing while it is disconnected. A
resolve that was under way when a note for its binding came is not kept
(it may have read the document before the write).

Only GETs go through the memo; the pre-render asks the binding service
(it must see the data as it is now). Errors (an unknown binding, one that
serves its error) are never memoised.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from litho.logs import get_logger
from litho.streams import BINDING_CHANGED_SUBJECT
from services.renderer._bindings import BindingResolver, ResolvedBinding

log = get_logger(__name__)

#: What one entry is charged beyond its variables' text (ids, options, dataclasses).
ENTRY_OVERHEAD = 1024


class Link(Protocol):
    def generation(self) -> int | None:
        """Which connection the notes arrive on: None while disconnected, and
        a new number after every reconnect (notes may have been missed)."""
        ...


class NatsLink:
    """:class:`Link` of a nats-py client: its reconnect count."""

    def __init__(self, nc: Nats) -> None:
        self._nc = nc

    def generation(self) -> int | None:
        if not self._nc.is_connected:
            return None
        return int(self._nc.stats["reconnects"])


@dataclass(frozen=True)
class _Entry:
    value: ResolvedBinding
    until: float
    cost: int


class BindingMemo:
    """A :class:`BindingResolver` in front of another, bounded by
    ``max_bytes`` (the variables' text as Python holds it, plus a fixed
    overhead per entry; least recently used first out) and by ``max_age``
    seconds per entry; ``max_age`` 0 turns it off."""

    def __init__(self, resolver: BindingResolver, link: Link, *, max_age: float,
                 max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self._resolver = resolver
        self._link = link
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        #: Resolves under way per binding, and the bindings a note came for
        #: meanwhile (their answers are not kept).
        self._loading: dict[str, int] = {}
        self._noted: set[str] = set()
        self._generation: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    async def resolve(self, binding_id: str, *, refresh: bool = True) -> ResolvedBinding:
        if not refresh or self._max_age <= 0:
            return await self._resolver.resolve(binding_id, refresh=refresh)
        generation = self._current_generation()
        entry = self._entries.get(binding_id)
        if entry is not None and generation is not None:
            if self._clock() < entry.until:
                self._entries.move_to_end(binding_id)
                return entry.value
            self._drop(binding_id)
        self._loading[binding_id] = self._loading.get(binding_id, 0) + 1
        try:
            value = await self._resolver.resolve(binding_id)
        finally:
            noted = self._done_loading(binding_id)
        if (generation is not None and not noted
                and self._current_generation() == generation):
            self._keep(binding_id, value)
        return value

    def changed(self, binding_id: str) -> None:
        """A change note: forget the binding, and any answer under way for it."""
        self._drop(binding_id)
        if binding_id in self._loading:
            self._noted.add(binding_id)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._noted.update(self._loading)

    def _current_generation(self) -> int | None:
        """The link's generation; everything is forgotten when it moved."""
        generation = self._link.generation()
        if generation != self._generation:
            if self._entries:
                log.info("binding memo cleared: the change notes' connection dropped",
                         entries=len(self._entries))
            self.clear()
            self._generation = generation
        return generation

    def _done_loading(self, binding_id: str) -> bool:
        noted = binding_id in self._noted
        left = self._loading[binding_id] - 1
        if left:
            self._loading[binding_id] = left
        else:
            del self._loading[binding_id]
            self._noted.discard(binding_id)
        return noted

    def _keep(self, binding_id: str, value: ResolvedBinding) -> None:
        now = self._clock()
        until = now + self._max_age
        if value.fresh_until is not None:
            until = min(until, value.fresh_until)
        cost = sys.getsizeof(value.variables_json) + ENTRY_OVERHEAD
        if until <= now or cost > self._max_bytes:
            return
        self._drop(binding_id)
        self._entries[binding_id] = _Entry(value, until, cost)
        self._bytes += cost
        while self._bytes > self._max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.cost

    def _drop(self, binding_id: str) -> None:
        entry = self._entries.pop(binding_id, None)
        if entry is not None:
            self._bytes -= entry.cost


def following_changes(nc: Nats, memo: BindingMemo) -> AbstractAsyncContextManager[None]:
    """Subscribe ``memo`` to the binding service's change notes (every
    replica gets every note: a plain subscription, no queue group)."""

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async def on_note(msg: Msg) -> None:
            memo.changed(msg.data.decode("utf-8", "replace"))

        subscription = await nc.subscribe(BINDING_CHANGED_SUBJECT, cb=on_note)
        try:
            yield
        finally:
            if nc.is_connected:
                await subscription.unsubscribe()

    return running()
