"""Exact counting of experiment events: a group-commit aggregator over the
deliveries of the ``experiment-counter`` consumer (see
:mod:`services.experiment._consumer`).

A handler hands its delivery (stream sequence and count) to
:meth:`Aggregator.add` and returns, so the message is acked, only once a
flush stored it. A flush (every ``interval`` seconds, or at ``max_events``
deliveries) groups the deliveries by counter document
``experiment_counters/{experimentId}:{variantId}`` and writes each document
once:

1. read it; drop the deliveries whose sequence is in its ``applied`` list, or
   at or below its ``ackFloor`` or the consumer's ack floor (a message at or
   below the floor was acked, so counted, by whoever held it before: this is
   a late redelivery; logged once per document);
2. one update conditional on the ``revision`` read: ``$inc`` of the counts,
   ``$set`` of ``applied`` (the new sequences, pruned of every one at or
   below the floor: an acked message never comes back), ``ackFloor``,
   ``stream`` and ``revision + 1``; a missing document is inserted (a
   duplicate-key race reads again), a lost revision reads again.

Each counter document is written on its own: a write that fails (or an
experiment that cannot be read) fails only the deliveries it held, which come
again; the rest of the flush is acked.

A delivery is so counted at most once however often it comes (a nak after
its flush, a redelivery after ``ack_wait``, a restart, several replicas on
one durable consumer), and at least once because its ack waits for its
flush. An event for an experiment or variant that no longer exists, or
whose tenant is not the experiment's, is acked and dropped. What the counter
needs of an experiment (its tenant and variant ids) is kept for a second
(:data:`KNOWN_SECONDS`) rather than read on every flush; a counter document
a flush inserts is checked against the experiment read again afterwards,
and deleted if the experiment went meanwhile (a delete racing the flush
leaves no counts behind).

Stream sequences are what tells deliveries apart, and a stream deleted and
created again starts them at 1 again. Each counter document so also holds
the identity of the stream its ``applied`` and ``ackFloor`` are of
(LITHO_COUNTS's creation time, read with the ack floor); a document of
another stream has both reset before the flush applies to it (logged).

No nats here: the ack floor and the stream's identity come through
:data:`AckFloor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from litho.docstore import Collection, DocumentStore, DuplicateKey
from litho.logs import get_logger
from services.experiment._model import COUNTERS, Clock
from services.experiment._ports import Count
from services.experiment._store import ExperimentStore

log = get_logger(__name__)

#: Event kind -> the counter document's field.
KINDS: Final[Mapping[str, str]] = {
    "impression": "impressions", "click": "clicks", "conversion": "conversions",
    "bot_impression": "botImpressions"}
#: Reads of one counter document a flush tries before it gives up (and naks).
MAX_ATTEMPTS: Final = 100
#: Experiments whose dropped events were logged (once each), at most.
_LOGGED_MAX: Final = 10_000

#: Applied sequences one counter document holds above the ack floor past
#: which a warning says the floor is stuck (a delivery at it keeps failing,
#: so every document keeps each sequence since: they grow until it is acked).
APPLIED_WARNING: Final = 20_000

#: Seconds the counter keeps what it read of an experiment (tenant, variant ids).
KNOWN_SECONDS: Final = 1.0
#: Experiments it keeps so, at most.
KNOWN_MAX: Final = 10_000


@dataclass(frozen=True)
class Floor:
    """The consumer's ack floor, and which stream its sequences are of."""

    #: Every stream sequence at or below it was acked.
    seq: int
    #: The stream's identity (its creation time): LITHO_COUNTS deleted and
    #: created again is another stream, its sequences starting at 1 again.
    stream: str


#: Reads the consumer's ack floor and the stream's identity.
AckFloor = Callable[[], Awaitable[Floor]]


@dataclass(frozen=True)
class Delivered:
    """One delivery: its stream sequence and what it counts."""

    seq: int
    count: Count


#: What a flush failed on, by the stream sequence of each delivery it did
#: not store (the others were stored).
Failures = Mapping[int, BaseException]


class Aggregator:
    """Group commit: :meth:`add` waits until a flush of ``apply`` stored (or
    failed on) its delivery. One flush at a time. ``apply`` answers the
    deliveries it could not store (an exception it raises fails them all)."""

    def __init__(self, apply: Callable[[list[Delivered]], Awaitable[Failures]], *,
                 interval: float, max_events: int) -> None:
        self._apply = apply
        self._interval = interval
        self._max_events = max(1, max_events)
        self._pending: list[tuple[Delivered, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()

    async def add(self, delivered: Delivered) -> None:
        """Returns once a flush stored ``delivered``; raises what the flush raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((delivered, future))
        self._wake.set()
        if len(self._pending) >= self._max_events:
            self._full.set()
        await asyncio.shield(future)

    async def run(self) -> None:
        """Flush until cancelled."""
        while True:
            await self._wake.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending[:self._max_events], self._pending[self._max_events:]
        if len(self._pending) < self._max_events:
            self._full.clear()
        if not self._pending:
            self._wake.clear()
        if not batch:
            return
        try:
            failures = await self._apply([d for d, _ in batch])
        except Exception as exc:
            failures = {d.seq: exc for d, _ in batch}
        if failures:
            first = next(iter(failures.values()))
            log.warning("counter flush failed for some deliveries; they come again",
                        failed=len(failures), deliveries=len(batch),
                        error=str(first)[:200] or type(first).__name__)
        for delivered, future in batch:
            if future.done():
                continue
            failed = failures.get(delivered.seq)
            if failed is None:
                future.set_result(None)
            else:
                future.set_exception(failed)
                future.exception()  # retrieved: a cancelled waiter leaves no warning

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Aggregator]:
        """Flush in a task until the block exits, then flush what is left."""
        task = asyncio.create_task(self.run(), name="experiment counter flush")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            while self._pending:
                await self.flush()


@dataclass(frozen=True)
class _Known:
    """What the counter needs of an experiment."""

    tenant_id: str
    variants: frozenset[str]


class Counter:
    """Applies flushed deliveries to the counter documents, exactly once each."""

    def __init__(self, store: DocumentStore, experiments: ExperimentStore, ack_floor: AckFloor,
                 *, floor_seconds: float = 1.0, known_seconds: float = KNOWN_SECONDS,
                 known_max: int = KNOWN_MAX, clock: Clock = time.monotonic,
                 on_counted: Callable[[Iterable[str]], None] | None = None) -> None:
        self._counters: Collection = store.collection(COUNTERS)
        self._experiments = experiments
        self._ack_floor = ack_floor
        self._floor_seconds = floor_seconds
        self._known_seconds = known_seconds
        self._known_max = max(1, known_max)
        self._clock = clock
        self._on_counted = on_counted
        self._floor: Floor | None = None
        self._floor_read_at: float | None = None
        self._floor_lock = asyncio.Lock()
        self._known: OrderedDict[str, tuple[float, _Known | None]] = OrderedDict()
        self._logged: set[str] = set()
        self._floor_logged: set[str] = set()
        self._stuck_logged: set[str] = set()

    async def floor(self, *, read_since: float | None = None) -> Floor:
        """The consumer's ack floor and its stream, read at most once per
        ``floor_seconds`` (a failed read keeps the last: a lower floor only
        keeps more), or read again unless read at or after ``read_since``
        (then a failed read raises). Raises while it was never read."""
        async with self._floor_lock:
            now = self._clock()
            last_read = self._floor_read_at
            due = last_read is None or now - last_read >= self._floor_seconds
            fresh_needed = read_since is not None and (last_read is None
                                                       or last_read < read_since)
            if due or fresh_needed:
                try:
                    read = await self._ack_floor()
                except Exception as exc:
                    if self._floor is None or fresh_needed:
                        raise
                    self._floor_read_at = now  # not again before floor_seconds
                    log.warning("the counter's ack floor could not be read",
                                error=str(exc)[:200] or type(exc).__name__)
                else:
                    self._floor_read_at = now
                    last = self._floor
                    if last is not None and last.stream == read.stream:
                        read = Floor(max(last.seq, read.seq), read.stream)
                    elif last is not None:
                        log.warning("LITHO_COUNTS is not the stream it was (deleted and "
                                    "created again): its ack floor starts again",
                                    stream=read.stream, was=last.stream, floor=read.seq)
                    self._floor = read
            if self._floor is None:
                raise RuntimeError("the counter's ack floor was never read")
            return self._floor

    async def apply(self, batch: Sequence[Delivered]) -> Failures:
        """Store ``batch``; answers the deliveries it could not store, by
        sequence. Raises (every delivery failed) when the ack floor was never
        read."""
        started = self._clock()
        floor = await self.floor()
        failures: dict[int, BaseException] = {}
        groups: dict[str, dict[int, Delivered]] = {}
        known: dict[str, _Known | BaseException | None] = {}
        for d in batch:
            c = d.count
            if c.experiment_id not in known:
                try:
                    known[c.experiment_id] = await self._known_of(c.experiment_id)
                except Exception as exc:
                    known[c.experiment_id] = exc
            of = known[c.experiment_id]
            if isinstance(of, BaseException):
                failures[d.seq] = of
            elif self._countable(of, c):
                groups.setdefault(f"{c.experiment_id}:{c.variant_id}", {})[d.seq] = d
        results = await asyncio.gather(*(self._apply_one(key, group, floor, started)
                                         for key, group in groups.items()),
                                       return_exceptions=True)
        counted: set[str] = set()
        # Each document on its own: the ones stored are done (and drop their
        # deliveries should they come again), the others' deliveries fail.
        for group, result in zip(groups.values(), results, strict=True):
            if isinstance(result, BaseException):
                failures.update(dict.fromkeys(group, result))
            else:
                counted.add(next(iter(group.values())).count.experiment_id)
        if self._on_counted is not None and counted:
            self._on_counted(counted)
        return failures

    async def _known_of(self, experiment_id: str) -> _Known | None:
        """The experiment's tenant and variant ids (None: no such experiment),
        kept ``known_seconds``."""
        now = self._clock()
        held = self._known.get(experiment_id)
        if held is not None and now - held[0] < self._known_seconds:
            return held[1]
        return await self._read_known(experiment_id)

    async def _read_known(self, experiment_id: str) -> _Known | None:
        doc = await self._experiments.by_id(experiment_id)
        known = None if doc is None else _Known(
            tenant_id=str(doc.get("tenantId")),
            variants=frozenset(str(v["id"]) for v in doc.get("variants") or ()))
        self._known[experiment_id] = (self._clock(), known)
        self._known.move_to_end(experiment_id)
        while len(self._known) > self._known_max:
            self._known.popitem(last=False)
        return known

    def _countable(self, known: _Known | None, c: Count) -> bool:
        problem = ""
        if c.kind not in KINDS:
            problem = f"{c.kind[:40]!r} is not a kind the counter knows"
        elif known is None:
            problem = "the experiment no longer exists"
        elif known.tenant_id != c.tenant_id:
            problem = "the event's tenant is not the experiment's"
        elif c.variant_id not in known.variants:
            problem = "the variant no longer exists"
        if problem and _first(self._logged, c.experiment_id):
            log.warning("experiment events dropped", experiment=c.experiment_id[:100],
                        variant=c.variant_id[:100], reason=problem)
        return not problem

    async def _apply_one(self, key: str, group: Mapping[int, Delivered], floor: Floor,
                         started: float) -> None:
        for _ in range(MAX_ATTEMPTS):
            doc = await self._counters.get(key)
            if doc is None:
                fresh = [d for seq, d in group.items() if seq > floor.seq]
                self._log_floor_drops(key, group, floor.seq, floor)
                if not fresh:
                    return
                first = fresh[0].count
                new: dict[str, Any] = {
                    "_id": key, "tenantId": first.tenant_id,
                    "experimentId": first.experiment_id, "variantId": first.variant_id,
                    **dict.fromkeys(KINDS.values(), 0), **_sums(fresh),
                    "applied": sorted(d.seq for d in fresh), "ackFloor": floor.seq,
                    "stream": floor.stream, "revision": 1}
                try:
                    await self._counters.insert(new)
                except DuplicateKey:
                    continue  # another flush made it meanwhile: read it
                await self._unless_orphaned(key, first.experiment_id)
                return
            doc_stream = str(doc.get("stream") or "")
            if doc_stream != floor.stream:
                # Ours may be a second old: the stream's identity read anew decides.
                floor = await self.floor(read_since=started)
            if doc_stream != floor.stream:
                log.warning("counter document of another LITHO_COUNTS stream (deleted and "
                            "created again): its applied sequences and ack floor are reset",
                            counter=key[:200], stream=floor.stream, was=doc_stream[:100],
                            ack_floor=_int(doc.get("ackFloor")), floor=floor.seq)
                doc_floor, applied = floor.seq, set()
            else:
                doc_floor = max(_int(doc.get("ackFloor")), floor.seq)
                applied = {s for s in doc.get("applied") or () if isinstance(s, int)}
            self._log_floor_drops(key, group, doc_floor, floor)
            fresh = [d for seq, d in group.items() if seq > doc_floor and seq not in applied]
            if not fresh:
                return
            revision = doc.get("revision")
            kept = sorted(s for s in applied.union(d.seq for d in fresh) if s > doc_floor)
            if len(kept) > APPLIED_WARNING and _first(self._stuck_logged, key):
                log.warning("a counter document holds many sequences above the ack floor: "
                            "the floor is stuck (a delivery at it keeps failing)",
                            counter=key[:200], applied=len(kept), ack_floor=doc_floor,
                            stream=floor.stream)
            matched = await self._counters.update(
                {"_id": key, "revision": revision},
                {"$inc": _sums(fresh), "$set": {"applied": kept, "ackFloor": doc_floor,
                                                "stream": floor.stream,
                                                "revision": _int(revision) + 1}})
            if matched:
                return
        raise RuntimeError(f"counter {key!r} kept changing under {MAX_ATTEMPTS} attempts")

    async def _unless_orphaned(self, key: str, experiment_id: str) -> None:
        """Delete the counter document just inserted if its experiment went
        meanwhile (its delete took the experiment's counters before this
        insert). A failed check deletes it too unless another flush wrote to
        it since (then its ``applied`` keeps these deliveries from counting
        twice), and raises: the deliveries come again."""
        try:
            gone = await self._read_known(experiment_id) is None
        except Exception:
            with contextlib.suppress(Exception):
                await self._counters.delete({"_id": key, "revision": 1})
            raise
        if gone:
            await self._counters.delete({"_id": key})
            log.info("counter of an experiment deleted meanwhile removed", counter=key[:200])

    def _log_floor_drops(self, key: str, group: Mapping[int, Delivered], at_or_below: int,
                         floor: Floor) -> None:
        """Once per counter document: deliveries dropped as at or below the
        ack floor (late redeliveries of counted messages; many of them, or
        counts that stay short, would say the stream's sequences were reused)."""
        dropped = sorted(seq for seq in group if seq <= at_or_below)
        if dropped and _first(self._floor_logged, key):
            log.warning("experiment events at or below the ack floor dropped as counted "
                        "before", counter=key[:200], dropped=len(dropped),
                        first=dropped[0], ack_floor=at_or_below, stream=floor.stream)


def _first(seen: set[str], key: str) -> bool:
    """Whether ``key`` is new to ``seen`` (bounded: forgets all when full)."""
    if key in seen:
        return False
    if len(seen) >= _LOGGED_MAX:
        seen.clear()
    seen.add(key)
    return True


def _sums(deliveries: Iterable[Delivered]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for d in deliveries:
        field = KINDS[d.count.kind]
        sums[field] = sums.get(field, 0) + 1
    return sums


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
