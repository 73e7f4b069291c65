"""A replica's memo of another service's answers, kept until change notes say
otherwise.

The owning service publishes a key on a core NATS subject (no stream:
nothing kept) after every write that changes the answer for it, and flushes
it to the server before the write answers; every replica subscribes (no
queue group) and drops that key. An entry is otherwise kept until the first
of its own end (``until``: when the answer stops being true by itself) and
the memo's time to live. Notes are not kept by the server, so a replica
whose connection dropped may have missed some: it forgets everything, and
keeps nothing while it is disconnected. Concurrent misses of one key share
one load. A load that was under way when a note for its key came is not
kept (it may have read the state before the write), and callers that come
after the note do not share it. Errors are never kept.

Users: the renderer's memo of resolved bindings (``GET /b/``) and the
gateway's memo of experiments (``GET /s/``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from litho.logs import get_logger
from litho.messaging import delivered

log = get_logger(__name__)

V = TypeVar("V")
#: Seconds between reloads of an entry answered stale.
STALE_RETRY = 5.0


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
class _Entry(Generic[V]):
    value: V
    until: float
    cost: int
    #: When the entry first went past its time (stale answers count from it).
    ended: float | None = None


class NotedMemo(Generic[V]):
    """Answers by key, bounded by ``max_bytes`` (``cost`` of each; least
    recently used first out) and by ``max_age`` seconds per entry (and by
    ``until`` of the answer, when it gives one); ``max_age`` 0 keeps
    nothing. With ``stale_on``, an entry past its time whose reload fails
    with one of those errors (the owner away) is still answered for up to
    ``max_stale`` seconds past its end, and asked again at most every
    ``STALE_RETRY`` seconds meanwhile (other callers get the stale answer at
    once); a note or a dropped connection forgets it all the same."""

    def __init__(self, link: Link, *, name: str, max_age: float, max_bytes: int,
                 cost: Callable[[V], int],
                 until: Callable[[V], float | None] = lambda _: None,
                 stale_on: tuple[type[Exception], ...] = (), max_stale: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._link = link
        self._stale_on = stale_on
        self._max_stale = max_stale
        self._name = name
        self.max_age = max_age
        self._max_bytes = max_bytes
        self._cost = cost
        self._until = until
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._bytes = 0
        #: Loads under way per key, and the keys a note came for meanwhile
        #: (their answers are not kept).
        self._loading: dict[str, int] = {}
        self._noted: set[str] = set()
        #: The load under way per key, shared by every miss until a note.
        self._shared: dict[str, asyncio.Future[V]] = {}
        self._generation: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        """The kept answer for ``key``, or ``load()``'s (kept when it may be)."""
        if self.max_age <= 0:
            return await load()
        generation = self._current_generation()
        entry = self._entries.get(key)
        if entry is not None and generation is not None:
            if self._clock() < entry.until:
                self._entries.move_to_end(key)
                return entry.value
            if not self._stale_on:
                self._drop(key)
        try:
            return await self._load(key, load, generation)
        except Exception as exc:
            stale = self._entries.get(key)
            if stale is None:
                raise
            now = self._clock()
            ended = stale.until if stale.ended is None else stale.ended
            if (isinstance(exc, self._stale_on) and generation is not None
                    and now < ended + self._max_stale):
                if stale.ended is None:
                    log.warning("answering a stale entry: its reload failed", memo=self._name,
                                key=key[:200], error=str(exc)[:200])
                # Asked again only after a while; answered stale until then.
                self._entries[key] = replace(stale, until=now + STALE_RETRY, ended=ended)
                return stale.value
            if now >= stale.until:
                self._drop(key)
            raise

    async def _load(self, key: str, load: Callable[[], Awaitable[V]],
                    generation: int | None) -> V:
        shared = self._shared.get(key)
        if shared is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this caller was cancelled
                # The owner was cancelled: load ourselves.
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._shared[key] = future
        self._loading[key] = self._loading.get(key, 0) + 1
        try:
            value = await load()
        except Exception as exc:
            future.set_exception(exc)
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            noted = self._done_loading(key)
            if self._shared.get(key) is future:
                del self._shared[key]
        future.set_result(value)
        if (generation is not None and not noted
                and self._current_generation() == generation):
            self._keep(key, value)
        return value

    def changed(self, key: str) -> None:
        """A change note: forget the key, and any answer under way for it."""
        self._drop(key)
        self._shared.pop(key, None)
        if key in self._loading:
            self._noted.add(key)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._shared.clear()
        self._noted.update(self._loading)

    def _current_generation(self) -> int | None:
        """The link's generation; everything is forgotten when it moved."""
        generation = self._link.generation()
        if generation != self._generation:
            if self._entries:
                log.info("memo cleared: the change notes' connection dropped",
                         memo=self._name, entries=len(self._entries))
            self.clear()
            self._generation = generation
        return generation

    def _done_loading(self, key: str) -> bool:
        noted = key in self._noted
        left = self._loading[key] - 1
        if left:
            self._loading[key] = left
        else:
            del self._loading[key]
            self._noted.discard(key)
        return noted

    def _keep(self, key: str, value: V) -> None:
        now = self._clock()
        until = now + self.max_age
        own = self._until(value)
        if own is not None:
            until = min(until, own)
        cost = self._cost(value)
        if until <= now or cost > self._max_bytes:
            return
        self._drop(key)
        self._entries[key] = _Entry(value, until, cost)
        self._bytes += cost
        while self._bytes > self._max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.cost

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.cost


def _consume(future: asyncio.Future[V]) -> None:
    # A failure nobody else waited for is not "never retrieved".
    if not future.cancelled():
        future.exception()


#: How long a change note may wait for the server to have it.
NOTE_FLUSH_TIMEOUT = 1


async def send_note(nc: Nats, subject: str, key: str) -> None:
    """Publish a change note and flush it to the server, so that replicas
    usually have it before the write answers. Never raises: a note that
    cannot be sent is logged (replicas' entries end by their own time), and
    none is tried while disconnected (replicas that miss notes then forget
    everything when they reconnect; a buffered note would only wait)."""
    if not nc.is_connected:
        log.warning("change note not sent: NATS is not connected", subject=subject,
                    key=key[:200])
        return
    try:
        await nc.publish(subject, key.encode())
        await delivered(nc, timeout=NOTE_FLUSH_TIMEOUT)
    except Exception as exc:
        log.warning("change note not sent; replicas' entries end by their own time",
                    subject=subject, key=key[:200], error=str(exc)[:200])


def following(nc: Nats, subject: str,
              on_note: Callable[[str], None]) -> AbstractAsyncContextManager[None]:
    """Call ``on_note`` with each note's text on ``subject`` while entered
    (a plain subscription, no queue group: every replica gets every note)."""

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async def on_msg(msg: Msg) -> None:
            on_note(msg.data.decode("utf-8", "replace"))

        subscription = await nc.subscribe(subject, cb=on_msg)
        try:
            # Live before the caller goes on: a note sent from now on arrives.
            try:
                await delivered(nc, timeout=NOTE_FLUSH_TIMEOUT)
            except Exception as exc:
                log.warning("change notes' subscription not confirmed", subject=subject,
                            error=str(exc)[:200])
            yield
        finally:
            if nc.is_connected:
                await subscription.unsubscribe()

    return running()
