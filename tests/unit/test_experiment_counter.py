"""The experiment counter against a real ``nats-server`` and a real SQLite
store: every published count is stored exactly once, whatever the
redeliveries (a nak after the flush), the replicas (two counters on one
durable consumer and one store) and the crashes (a counter whose connection
dies after its flush and before its acks, then a new one)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from structlog.testing import capture_logs

from litho import messaging
from litho.consumers import TERMINATED_SUBJECT, ConsumerOptions, Delivery, Poison, Retry
from litho.docstore import DocumentStore, open_document_store
from litho.events.v1 import events_pb2
from litho.streams import COUNTS_STREAM, EXPERIMENT_COUNT_SUBJECT, counts_stream
from services.experiment import _consumer, _counter
from services.experiment._consumer import (
    DURABLE,
    CountHandler,
    NatsAckFloor,
    consumer,
    count_handler,
)
from services.experiment._counter import (
    KINDS,
    Aggregator,
    Counter,
    Delivered,
    Failures,
    Floor,
)
from services.experiment._experiments import Experiments
from services.experiment._model import ExperimentSpec, GoalInput, VariantInput
from services.experiment._ports import Count
from services.experiment._settings import ExperimentSettings
from services.experiment._store import ExperimentStore

TENANT, OTHER = "t-count", "t-other"
#: The kinds published, in turn.
PUBLISHED_KINDS = ("impression", "impression", "click", "conversion", "bot_impression")


class AnyTemplate:
    async def exists(self, tenant_id: str, template_id: str) -> bool:
        return True


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.support.nats_server import start_nats

    started = start_nats(tmp_path_factory.mktemp("nats-counter"))
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Rig:
    nats_url: str
    db_url: str
    nc: Client
    js: JetStreamContext
    store: DocumentStore
    experiment_id: str
    expected: Tally[tuple[str, str]] = field(default_factory=Tally)

    async def publish(self, n: int, *, experiment_id: str = "", tenant_id: str = TENANT,
                      variants: tuple[str, ...] = ("a", "b"), kinds: tuple[str, ...] =
                      PUBLISHED_KINDS, expect: bool = True) -> None:
        """``n`` counts, spread over ``variants`` and ``kinds``; remembered as
        expected unless ``expect`` is False."""
        publisher = messaging.Publisher(self.js)
        cycle = itertools.cycle(itertools.product(variants, kinds))
        events = [next(cycle) for _ in range(n)]
        for start in range(0, n, 500):
            await asyncio.gather(*(publisher.publish(
                EXPERIMENT_COUNT_SUBJECT, events_pb2.ExperimentCount(
                    tenant_id=tenant_id, experiment_id=experiment_id or self.experiment_id,
                    variant_id=variant, kind=kind), msg_id=f"count:{uuid.uuid4().hex}")
                for variant, kind in events[start:start + 500]))
        if expect:
            self.expected.update(events)

    async def counted(self) -> Tally[tuple[str, str]]:
        docs = await self.store.collection("experiment_counters").find(
            {"experimentId": self.experiment_id})
        out: Tally[tuple[str, str]] = Tally()
        for doc in docs:
            for kind, name in KINDS.items():
                if doc[name]:
                    out[(doc["variantId"], kind)] = doc[name]
        return out

    async def settled(self, within: float = 60.0) -> None:
        """Until every message was acked (the work queue is empty)."""
        deadline = time.monotonic() + within
        while True:
            info = await self.js.consumer_info(COUNTS_STREAM, DURABLE)
            stream = await self.js.stream_info(COUNTS_STREAM)
            if not info.num_pending and not info.num_ack_pending and not stream.state.messages:
                return
            assert time.monotonic() < deadline, (info, stream.state)
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def rig(nats_server: Any, tmp_path: Path) -> AsyncIterator[Rig]:
    db_url = f"sqlite:///{tmp_path / 'experiment.db'}"
    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, nats_server.url, name="counter-test")
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(COUNTS_STREAM)
        await messaging.ensure_streams(js, [counts_stream()])
        store = await open_document_store(db_url, "litho")
        stack.push_async_callback(store.close)
        experiments = Experiments(ExperimentStore(store), AnyTemplate())
        await experiments.store.prepare()
        created = await experiments.create(TENANT, spec())
        await experiments.start(TENANT, created.id)
        yield Rig(nats_server.url, db_url, nc, js, store, created.id)


def spec(slug: str = "banner") -> ExperimentSpec:
    return ExperimentSpec(
        name="Banner", slug=slug, template_id="tpl",
        variants=[VariantInput(id="a", weight=5000), VariantInput(id="b", weight=5000)],
        goal=GoalInput(type="impressions_only"))


Wrap = Callable[[CountHandler], CountHandler]


@dataclass
class Instance:
    consumer_task: asyncio.Task[None]
    handled: Tally[int]


@contextlib.asynccontextmanager
async def counting(rig: Rig, *, wrap: Wrap | None = None, in_flight: int = 500,
                   ack_wait: float = 30.0, name: str = "counter",
                   consumer_options: ConsumerOptions | None = None,
                   failing_flushes: int = 0) -> AsyncIterator[Instance]:
    """One counter replica, as the service builds it (its own connection and
    store handle), stopped cleanly at the end; its first ``failing_flushes``
    flushes fail as with the store away."""
    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, rig.nats_url, name=name)
        store = await open_document_store(rig.db_url, "litho")
        stack.push_async_callback(store.close)
        counter = Counter(store, ExperimentStore(store), NatsAckFloor(nc), floor_seconds=0.01)
        failures = iter(range(failing_flushes))

        async def apply(batch: list[Delivered]) -> Failures:
            if next(failures, None) is not None:
                raise ConnectionError("the store is away")
            return await counter.apply(batch)

        aggregator = await stack.enter_async_context(
            Aggregator(apply, interval=0.02, max_events=1000).running())
        handled: Tally[int] = Tally()
        inner = count_handler(aggregator)

        async def seen(delivery: Delivery[events_pb2.ExperimentCount]) -> None:
            handled[delivery.stream_sequence] += 1
            await (wrap(inner) if wrap else inner)(delivery)

        pulled = consumer(nc, seen, consumer_options or options(in_flight, ack_wait),
                          messaging.Publisher(nc.jetstream()))
        await pulled.ensure()
        task = asyncio.create_task(pulled.run())

        async def stop() -> None:
            pulled.stop()
            await task

        stack.push_async_callback(stop)
        yield Instance(task, handled)


def options(in_flight: int, ack_wait: float, **more: Any) -> ConsumerOptions:
    return ConsumerOptions(max_in_flight=in_flight, max_ack_pending=20_000,
                           fetch_batch=min(in_flight, 256), ack_wait=ack_wait,
                           max_deliver=20, backoff_initial=0.01, backoff_max=0.1,
                           fetch_timeout=1.0, **more)


def nak_after_flush(first_deliveries_only: bool = True) -> Wrap:
    """A handler that, once its flush stored the count, naks the first
    delivery (so the same message comes again)."""
    def wrap(inner: CountHandler) -> CountHandler:
        async def handler(delivery: Delivery[events_pb2.ExperimentCount]) -> None:
            await inner(delivery)
            if delivery.deliveries == 1 or not first_deliveries_only:
                raise Retry("again, after the flush", delay=0.0)
        return handler
    return wrap


# ------------------------------------------------------------------ tests ----

async def test_every_published_event_is_counted_once(rig: Rig) -> None:
    await rig.publish(4000)
    async with counting(rig) as instance:
        await rig.settled()
        # The applied sequences are forgotten once acked: the next write prunes them.
        await rig.publish(10)  # five for each variant
        await rig.settled()
    assert await rig.counted() == rig.expected
    assert sum(rig.expected.values()) == 4010
    assert set(instance.handled.values()) == {1}
    docs = await rig.store.collection("experiment_counters").find(
        {"experimentId": rig.experiment_id})
    assert {d["variantId"] for d in docs} == {"a", "b"}
    for doc in docs:
        assert len(doc["applied"]) <= 5 and doc["ackFloor"] >= 4000, doc["applied"][:10]


async def test_the_same_messages_delivered_twice_count_once(rig: Rig) -> None:
    await rig.publish(2000)
    async with counting(rig, wrap=nak_after_flush()) as instance:
        await rig.settled()
    assert await rig.counted() == rig.expected
    # Every message really came twice: once counted and nak'd, once dropped and acked.
    assert len(instance.handled) == 2000 and set(instance.handled.values()) == {2}


async def test_two_counters_on_one_durable_consumer_count_exactly(rig: Rig) -> None:
    await rig.publish(3000)
    # One replica naks every first delivery after its flush: those messages
    # come again, to either replica; both write the same counter documents.
    async with counting(rig, wrap=nak_after_flush(), in_flight=50, name="one") as one, \
            counting(rig, in_flight=50, name="two") as two:
        await rig.settled()
    assert await rig.counted() == rig.expected
    assert one.handled and two.handled
    assert set(one.handled) | set(two.handled) == set(range(1, 3001))
    assert max((one.handled + two.handled).values()) >= 2


async def test_a_counter_that_dies_after_its_flush_then_a_new_one_count_exactly(
        rig: Rig) -> None:
    await rig.publish(3000)
    stored: set[int] = set()
    half = asyncio.Event()
    hang = asyncio.Event()

    def die_after_flush(inner: CountHandler) -> CountHandler:
        async def handler(delivery: Delivery[events_pb2.ExperimentCount]) -> None:
            await inner(delivery)
            stored.add(delivery.stream_sequence)
            if len(stored) >= 1000:
                half.set()
            if len(stored) > 500:
                await hang.wait()  # stored, never acked: the crash comes first
        return handler

    # The crashed replica: its connection closes without a drain, so none of
    # the messages it stored is acked or nak'd (they come back after ack_wait).
    nc = await nats.connect(rig.nats_url, name="doomed")
    store = await open_document_store(rig.db_url, "litho")
    counter = Counter(store, ExperimentStore(store), NatsAckFloor(nc), floor_seconds=0.01)
    aggregator = Aggregator(counter.apply, interval=0.02, max_events=1000)
    flushing = asyncio.create_task(aggregator.run())
    doomed = consumer(nc, die_after_flush(count_handler(aggregator)),
                      options(500, 1.0, stop_grace=0.0), messaging.Publisher(nc.jetstream()))
    await doomed.ensure()
    running = asyncio.create_task(doomed.run())
    await asyncio.wait_for(half.wait(), 30)
    await nc.close()
    doomed.stop()
    await running
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    await store.close()
    assert await rig.counted() != rig.expected  # mid-way: some stored, not all

    async with counting(rig, ack_wait=1.0, name="restarted") as restarted:
        await rig.settled()
    assert await rig.counted() == rig.expected
    # The new replica was handed again messages the dead one had stored (and
    # never acked): those were not counted twice.
    assert len(stored & set(restarted.handled)) >= 400


async def test_events_of_missing_experiments_variants_or_other_tenants_are_dropped(
        rig: Rig) -> None:
    await rig.publish(10)
    await rig.publish(3, experiment_id="exp_" + "x" * 22, expect=False)
    await rig.publish(3, tenant_id=OTHER, expect=False)
    await rig.publish(3, variants=("gone",), expect=False)
    await rig.publish(2, kinds=("share",), expect=False)  # no such kind: terminated
    async with counting(rig):
        await rig.settled()
    assert await rig.counted() == rig.expected
    assert await rig.store.collection("experiment_counters").count(
        {"variantId": "gone"}) == 0


async def test_a_stream_created_again_has_its_events_counted(rig: Rig) -> None:
    await rig.publish(10)
    async with counting(rig):
        await rig.settled()
    assert await rig.counted() == rig.expected
    # LITHO_COUNTS deleted and created again (its sequences start at 1 again),
    # the counter started again: the counter documents hold the old stream's
    # sequences, which must not pass for the new stream's.
    await rig.js.delete_stream(COUNTS_STREAM)
    await messaging.ensure_streams(rig.js, [counts_stream()])
    await rig.publish(6)
    with capture_logs() as logs:
        async with counting(rig, name="after"):
            await rig.settled()
    assert await rig.counted() == rig.expected
    assert sum(rig.expected.values()) == 16
    resets = [e for e in logs if "reset" in e["event"]]
    assert {e["counter"] for e in resets} == {f"{rig.experiment_id}:a",
                                             f"{rig.experiment_id}:b"}
    docs = await rig.store.collection("experiment_counters").find(
        {"experimentId": rig.experiment_id})
    stream = (await rig.js.stream_info(COUNTS_STREAM)).created
    assert stream is not None and {d["stream"] for d in docs} == {stream.isoformat()}


async def test_store_errors_never_terminate_a_count(rig: Rig) -> None:
    await rig.publish(3)
    terminated: list[Msg] = []

    async def on_terminated(msg: Msg) -> None:
        terminated.append(msg)

    await rig.nc.subscribe(TERMINATED_SUBJECT, cb=on_terminated)
    await messaging.delivered(rig.nc)
    # The service's own consumer options, only with a quicker backoff: the
    # store fails more often than any small max_deliver would allow.
    quick = dataclasses.replace(
        _consumer.options(ExperimentSettings()), backoff_initial=0.005, backoff_max=0.01,
        fetch_timeout=1.0)
    assert quick.max_deliver >= 100_000
    async with counting(rig, consumer_options=quick, failing_flushes=40) as instance:
        await rig.settled()
    assert await rig.counted() == rig.expected
    assert max(instance.handled.values()) > 20 and terminated == []


def test_the_counters_consumer_retries_for_good_with_a_capped_backoff() -> None:
    chosen = _consumer.options(ExperimentSettings())
    assert chosen.max_deliver >= 100_000
    assert chosen.backoff_max <= 10.0
    assert chosen.backoff(10**6) <= 10.0


async def test_a_failed_flush_is_a_retry_and_not_a_count_a_poison() -> None:
    async def apply(batch: list[Delivered]) -> Failures:
        raise ConnectionError("the store is away")

    aggregator = Aggregator(apply, interval=0.001, max_events=10)
    handler = count_handler(aggregator)
    good = events_pb2.ExperimentCount(tenant_id=TENANT, experiment_id="exp_x",
                                      variant_id="a", kind="impression")
    async with aggregator.running():
        with pytest.raises(Retry, match="the store is away"):
            await handler(delivery(good))
        with pytest.raises(Poison):
            await handler(delivery(events_pb2.ExperimentCount(
                tenant_id=TENANT, experiment_id="exp_x", variant_id="a", kind="share")))


def delivery(event: events_pb2.ExperimentCount, seq: int = 1
             ) -> Delivery[events_pb2.ExperimentCount]:
    return Delivery(subject=EXPERIMENT_COUNT_SUBJECT, payload=event, headers={}, msg_id=None,
                    stream=COUNTS_STREAM, consumer=DURABLE, stream_sequence=seq,
                    deliveries=1)


# ------------------------------------------------- the counter on its own ----

@dataclass
class Floors:
    """An ack floor that says what the test sets, counting its reads."""

    floor: Floor = field(default_factory=lambda: Floor(0, "stream-1"))
    reads: int = 0

    async def __call__(self) -> Floor:
        self.reads += 1
        return self.floor


class ReadCounting(ExperimentStore):
    """The experiment store, its reads of experiments by id counted; the
    experiment is deleted (once) right after the read ``delete_after`` reads it."""

    def __init__(self, store: DocumentStore, *, delete_after: int = 0) -> None:
        super().__init__(store)
        self.reads = 0
        self._delete_after = delete_after
        self.experiments: Experiments | None = None

    async def by_id(self, experiment_id: str) -> dict[str, Any] | None:
        doc = await super().by_id(experiment_id)
        self.reads += 1
        if self.reads == self._delete_after and doc is not None:
            assert self.experiments is not None
            await self.experiments.pause(TENANT, experiment_id)
            await self.experiments.delete(TENANT, experiment_id)
        return doc


@dataclass
class Alone:
    store: DocumentStore
    experiments: Experiments
    experiment_id: str

    async def doc(self, variant: str = "a") -> dict[str, Any] | None:
        return await self.store.collection("experiment_counters").get(
            f"{self.experiment_id}:{variant}")


@pytest_asyncio.fixture
async def alone(tmp_path: Path) -> AsyncIterator[Alone]:
    store = await open_document_store(f"sqlite:///{tmp_path / 'counter.db'}", "litho")
    experiments = Experiments(ExperimentStore(store), AnyTemplate())
    await experiments.store.prepare()
    created = await experiments.create(TENANT, spec())
    await experiments.start(TENANT, created.id)
    try:
        yield Alone(store, experiments, created.id)
    finally:
        await store.close()


def impressions(experiment_id: str, seqs: Iterable[int], variant: str = "a"
                ) -> list[Delivered]:
    return [Delivered(s, Count(TENANT, experiment_id, variant, "impression", 0.0))
            for s in seqs]


@dataclass
class Ticks:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_delete_during_a_flush_leaves_no_counter_behind(alone: Alone) -> None:
    # The experiment is deleted (and its counters with it) right after the
    # flush read it, before the flush inserts its counter documents.
    experiments = ReadCounting(alone.store, delete_after=1)
    experiments.experiments = alone.experiments
    counter = Counter(alone.store, experiments, Floors())
    await counter.apply(impressions(alone.experiment_id, range(1, 4)))
    assert await alone.experiments.store.by_id(alone.experiment_id) is None
    assert await alone.doc() is None
    assert await alone.store.collection("experiment_counters").count({}) == 0
    # A flush whose check fails takes back what it inserted, and fails.
    other = await alone.experiments.create(TENANT, spec("other"))
    await alone.experiments.start(TENANT, other.id)

    class Failing(ExperimentStore):
        reads = 0

        async def by_id(self, experiment_id: str) -> dict[str, Any] | None:
            Failing.reads += 1
            if Failing.reads > 1:
                raise ConnectionError("the store is away")
            return await super().by_id(experiment_id)

    failed = await Counter(alone.store, Failing(alone.store), Floors()).apply(
        impressions(other.id, [7]))
    assert list(failed) == [7]
    assert isinstance(failed[7], ConnectionError)
    assert await alone.store.collection("experiment_counters").count({}) == 0


async def test_a_document_that_cannot_be_written_fails_only_its_own_deliveries(
        alone: Alone) -> None:
    other = await alone.experiments.create(TENANT, spec("other-one"))
    await alone.experiments.start(TENANT, other.id)

    class Unwritable:
        """The counter documents, with one of them refusing every write."""

        def __init__(self, inner: Any, refused: str) -> None:
            self._inner, self._refused = inner, refused

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        async def update(self, where: dict[str, Any], change: dict[str, Any]) -> int:
            if where["_id"] == self._refused:
                raise ConnectionError("this document is away")
            result: int = await self._inner.update(where, change)
            return result

        async def insert(self, doc: dict[str, Any]) -> None:
            if doc["_id"] == self._refused:
                raise ConnectionError("this document is away")
            await self._inner.insert(doc)

    counted: list[set[str]] = []
    counter = Counter(alone.store, alone.experiments.store, Floors(),
                      on_counted=lambda ids: counted.append(set(ids)))
    counter._counters = Unwritable(counter._counters, f"{other.id}:b")  # type: ignore[assignment]
    batch = (impressions(alone.experiment_id, [1, 2]) + impressions(other.id, [3, 4], "b")
             + impressions(other.id, [5]))
    failed = await counter.apply(batch)
    assert sorted(failed) == [3, 4]
    assert all(isinstance(e, ConnectionError) for e in failed.values())
    docs = {d["_id"]: d["impressions"]
            for d in await alone.store.collection("experiment_counters").find({})}
    assert docs == {f"{alone.experiment_id}:a": 2, f"{other.id}:a": 1}
    assert counted == [{alone.experiment_id, other.id}]


async def test_the_aggregator_fails_only_the_deliveries_a_flush_did_not_store() -> None:
    async def apply(batch: list[Delivered]) -> Failures:
        return {d.seq: ConnectionError(f"no {d.seq}") for d in batch if d.seq % 2}

    aggregator = Aggregator(apply, interval=0.001, max_events=10)
    async with aggregator.running():
        results = await asyncio.gather(
            *(aggregator.add(d) for d in impressions("exp_x", range(1, 7))),
            return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["ConnectionError", "NoneType"] * 3


async def test_counter_documents_of_another_stream_are_reset(alone: Alone) -> None:
    floors = Floors()
    first = Counter(alone.store, alone.experiments.store, floors, floor_seconds=0.0)
    await first.apply(impressions(alone.experiment_id, range(1, 11)))
    floors.floor = Floor(10, "stream-1")
    await first.apply(impressions(alone.experiment_id, [11]))
    doc = await alone.doc()
    assert doc is not None
    assert (doc["impressions"], doc["applied"], doc["ackFloor"], doc["stream"]) == (
        11, [11], 10, "stream-1")
    # The stream deleted and created again: its sequences start at 1 again.
    floors.floor = Floor(0, "stream-2")
    again = Counter(alone.store, alone.experiments.store, floors, floor_seconds=0.0)
    with capture_logs() as logs:
        await again.apply(impressions(alone.experiment_id, range(1, 6)))
        await again.apply(impressions(alone.experiment_id, range(1, 6)))  # redelivered
    doc = await alone.doc()
    assert doc is not None
    assert (doc["impressions"], doc["applied"], doc["ackFloor"], doc["stream"]) == (
        16, [1, 2, 3, 4, 5], 0, "stream-2")
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "counter document of another LITHO_COUNTS stream (deleted and created again): "
        "its applied sequences and ack floor are reset"]


async def test_a_counter_with_a_stale_stream_reads_it_again_before_a_reset(
        alone: Alone) -> None:
    floors = Floors(Floor(0, "stream-2"))
    current = Counter(alone.store, alone.experiments.store, floors, floor_seconds=0.0)
    await current.apply(impressions(alone.experiment_id, range(1, 4)))
    # A replica that read the floor before the stream was created again: the
    # document's stream differs from what it holds, so it reads again first.
    stale_floors = Floors(Floor(50, "stream-1"))
    ticks = Ticks()
    stale = Counter(alone.store, alone.experiments.store, stale_floors,
                    floor_seconds=3600.0, clock=ticks)
    await stale.floor()
    stale_floors.floor = Floor(0, "stream-2")
    ticks.now = 1.0
    await stale.apply(impressions(alone.experiment_id, range(1, 5)))  # 1-3 redelivered
    doc = await alone.doc()
    assert doc is not None
    assert (doc["impressions"], doc["applied"], doc["stream"]) == (4, [1, 2, 3, 4],
                                                                  "stream-2")
    assert stale_floors.reads == 2


async def test_deliveries_at_or_below_the_floor_are_logged_once_per_document(
        alone: Alone) -> None:
    floors = Floors()
    counter = Counter(alone.store, alone.experiments.store, floors, floor_seconds=0.0)
    await counter.apply(impressions(alone.experiment_id, range(1, 4))
                        + impressions(alone.experiment_id, range(4, 6), "b"))
    floors.floor = Floor(5, "stream-1")
    with capture_logs() as logs:
        for _ in range(3):
            await counter.apply(impressions(alone.experiment_id, [2, 3])
                                + impressions(alone.experiment_id, [4], "b"))
    dropped = [e for e in logs if "at or below the ack floor" in e["event"]]
    assert sorted((e["counter"], e["dropped"]) for e in dropped) == [
        (f"{alone.experiment_id}:a", 2), (f"{alone.experiment_id}:b", 1)]
    assert (await alone.doc() or {})["impressions"] == 3


async def test_the_counter_reads_an_experiment_at_most_once_a_second(alone: Alone) -> None:
    ticks = Ticks()
    experiments = ReadCounting(alone.store)
    counter = Counter(alone.store, experiments, Floors(), clock=ticks, known_max=2)
    seqs = itertools.count(1)
    await counter.apply(impressions(alone.experiment_id, [next(seqs)]))
    assert experiments.reads == 2  # the flush's read, and the check after the insert
    ticks.now = 0.5
    await counter.apply(impressions(alone.experiment_id, [next(seqs)]))
    await counter.apply(impressions(alone.experiment_id, [next(seqs)], "b"))
    assert experiments.reads == 3  # b's new document: checked after its insert
    ticks.now = 1.6
    await counter.apply(impressions(alone.experiment_id, [next(seqs)]))
    assert experiments.reads == 4
    # Bounded: with room for two, a third experiment pushes the oldest out.
    for slug in ("x", "y"):
        made = await alone.experiments.create(TENANT, spec(slug))
        await counter.apply([Delivered(next(seqs), Count(TENANT, made.id, "a", "impression",
                                                         0.0))])
    reads = experiments.reads
    await counter.apply(impressions(alone.experiment_id, [next(seqs)]))
    assert experiments.reads == reads + 1
    assert (await alone.doc() or {})["impressions"] == 4


# --------------------------------------------------------- the aggregator ----

async def test_the_aggregator_flushes_full_batches_at_once_and_reports_failures() -> None:
    flushed: list[list[int]] = []
    fail = False

    async def apply(batch: list[Delivered]) -> Failures:
        flushed.append([d.seq for d in batch])
        if fail:
            raise RuntimeError("store away")
        return {}

    def delivered(seq: int) -> Delivered:
        return Delivered(seq, Count(TENANT, "exp", "a", "impression", 0.0))

    aggregator = Aggregator(apply, interval=3600.0, max_events=3)
    async with aggregator.running():
        # A full batch flushes without waiting for the (hour-long) interval.
        await asyncio.wait_for(asyncio.gather(*(aggregator.add(delivered(s))
                                                for s in (1, 2, 3))), 5)
        assert flushed == [[1, 2, 3]]
        fail = True
        results = await asyncio.wait_for(asyncio.gather(
            *(aggregator.add(delivered(s)) for s in (4, 5, 6)), return_exceptions=True), 5)
        assert [type(r) for r in results] == [RuntimeError] * 3
        fail = False
        # What is left at the end is flushed on the way out.
        pending = asyncio.ensure_future(aggregator.add(delivered(7)))
        await asyncio.sleep(0)
    await asyncio.wait_for(pending, 5)
    assert flushed[-1] == [7]


async def test_a_stuck_ack_floor_is_warned_about_once_per_document(
        alone: Alone, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_counter, "APPLIED_WARNING", 3)
    counter = Counter(alone.store, alone.experiments.store, Floors(), floor_seconds=0.0)
    with capture_logs() as logs:
        for seqs in ([1, 2], [3, 4], [5, 6]):  # the floor stays at 0
            await counter.apply(impressions(alone.experiment_id, seqs))
    stuck = [e for e in logs if "the floor is stuck" in e["event"]]
    assert [(e["applied"], e["ack_floor"]) for e in stuck] == [(4, 0)]
    assert (await alone.doc() or {})["impressions"] == 6
