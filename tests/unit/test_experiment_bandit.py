"""Weight epochs, the bandit's reweighting and ``experiment.winner_ready``:
the domain on the real SQLite store (the events recorded by a fake sink),
then the service as it runs against a real ``nats-server``."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from litho import assignment, messaging
from litho.docstore import DocumentStore, open_document_store
from litho.events.v1 import events_pb2
from litho.experiment.v1 import experiment_pb2 as pb
from litho.streams import EXPERIMENT_CHANGED_SUBJECT
from services.experiment._bandit import Bandit
from services.experiment._epochs import appended, assignment_epochs, first_epochs
from services.experiment._events import WINNER_READY_SUBJECT
from services.experiment._experiments import Experiments
from services.experiment._model import (
    BanditInput,
    ExperimentSpec,
    GoalInput,
    VariantInput,
    tenant_handle,
)
from services.experiment._ports import Count, WinnerReady
from services.experiment._serving import EventInput, Serving
from services.experiment._settings import ExperimentSettings
from services.experiment._stats import Arm, Summary, summarise
from services.experiment._store import ExperimentStore
from services.experiment._summaries import Summaries
from services.experiment._winner import WinnerWatch
from tests.support.nats_server import NatsServer
from tests.unit.test_experiment_app import TENANT, Service, create_request, run_service
from tests.unit.test_experiment_app import nats_server as nats_server
from tests.unit.test_experiment_resolve import counted

START = 1_700_000_000.0
#: Seconds from a reweighting to its epoch's start (LITHO_EXPERIMENT_EPOCH_DELAY).
DELAY = 60.0


class AnyTemplate:
    async def exists(self, tenant_id: str, template_id: str) -> bool:
        return True


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Sink:
    notes: list[str] = field(default_factory=list)
    winners: list[WinnerReady] = field(default_factory=list)
    counts: list[Count] = field(default_factory=list)
    fail_winner: bool = False

    async def changed(self, tenant_handle: str, slug: str) -> None:
        self.notes.append(f"{tenant_handle}/{slug}")

    async def count(self, count: Count) -> None:
        self.counts.append(count)

    async def winner_ready(self, event: WinnerReady) -> None:
        if self.fail_winner:
            raise RuntimeError("NATS away")
        self.winners.append(event)


@dataclass
class World:
    store: DocumentStore
    experiments: Experiments
    sink: Sink
    clock: Clock

    def bandit(self, **overrides: Any) -> Bandit:
        settings: dict[str, Any] = {"interval": 60.0, "min_weight": 100, "draws": 20_000,
                                    "max_epochs": 1000, "epoch_delay": DELAY, **overrides}
        return Bandit(self.experiments.store, self.sink, clock=self.clock, **settings)

    def watch(self, summaries: Summaries | None = None) -> WinnerWatch:
        return WinnerWatch(self.experiments.store, self.sink, every=10.0, draws=20_000,
                           clock=self.clock, summaries=summaries)

    async def counts(self, experiment_id: str, **by_variant: tuple[int, int]) -> None:
        """Counters: impressions and conversions by variant."""
        coll = self.store.collection("experiment_counters")
        for variant, (impressions, conversions) in by_variant.items():
            await coll.replace({"_id": f"{experiment_id}:{variant}"}, {
                "_id": f"{experiment_id}:{variant}", "tenantId": TENANT,
                "experimentId": experiment_id, "variantId": variant,
                "impressions": impressions, "clicks": 0, "conversions": conversions,
                "botImpressions": 0}, upsert=True)

    async def doc(self, experiment_id: str) -> dict[str, Any]:
        doc = await self.store.collection("experiments").get(experiment_id)
        assert doc is not None
        return doc

    async def running(self, *, bandit: bool = True, warmup: int = 100,
                      minimum: int = 100, slug: str = "banner") -> str:
        created = await self.experiments.create(TENANT, ExperimentSpec(
            name="Banner", slug=slug, template_id="tpl",
            variants=[VariantInput(id="a", weight=5000), VariantInput(id="b", weight=5000)],
            goal=GoalInput(type="impressions_only"),
            bandit=BanditInput(enabled=bandit, warmup_impressions=warmup),
            minimum_sample_size=minimum))
        await self.experiments.start(TENANT, created.id)
        self.sink.notes.clear()
        return created.id


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await open_document_store(f"sqlite:///{tmp_path / 'experiment.db'}", "litho")
    sink, clock = Sink(), Clock()
    experiments = Experiments(ExperimentStore(store), AnyTemplate(), clock=clock, events=sink)
    await experiments.store.prepare()
    try:
        yield World(store, experiments, sink, clock)
    finally:
        await store.close()


# ----------------------------------------------------------------- epochs ----

def test_past_the_limit_the_second_and_third_epochs_merge() -> None:
    epochs: list[dict[str, Any]] = [{"since": 1.0, "weights": {"a": 5000, "b": 5000}}]
    for i in range(2, 6):
        epochs = appended(epochs, float(i), {"a": 1000 * i, "b": 10_000 - 1000 * i},
                          max_epochs=3)
    # The first epoch is kept as it is; the second takes the third's weights.
    assert [(e["since"], e["weights"]["a"]) for e in epochs] == [
        (1.0, 5000), (2.0, 4000), (5.0, 5000)]
    for i in range(6, 9):
        epochs = appended(epochs, float(i), {"a": 1000 * i, "b": 10_000 - 1000 * i},
                          max_epochs=2)
    assert [(e["since"], e["weights"]["a"]) for e in epochs] == [(1.0, 5000), (2.0, 8000)]


def test_merging_epochs_never_moves_a_visitor_id_the_caller_gave() -> None:
    variants = [{"id": "a", "weight": 5000}, {"id": "b", "weight": 5000}]
    doc: dict[str, Any] = {"variants": variants, "createdAt": 0.0,
                           "epochs": first_epochs(0.0, variants)}
    first = doc["epochs"][0]
    callers = [f"user-{i}" for i in range(1000)]
    before = {v: assignment.assign("exp_x", v, assignment_epochs(doc)) for v in callers}
    for n in range(1, 11):
        weights = {"a": 9000, "b": 1000} if n % 2 else {"a": 1000, "b": 9000}
        doc["epochs"] = appended(doc["epochs"], 300.0 * n, weights, max_epochs=2)
        assert len(doc["epochs"]) <= 2 and doc["epochs"][0] == first
        epochs = assignment_epochs(doc)
        assert {v: assignment.assign("exp_x", v, epochs) for v in callers} == before
        # A visitor first seen now gets the newest weights.
        fresh = [f"v1.{300 * n}.{i:022d}" for i in range(200)]
        shown = [assignment.assign("exp_x", v, epochs) for v in fresh]
        assert shown.count(max(weights, key=lambda k: weights[k])) > 150


async def test_an_experiment_starts_with_one_epoch_of_its_own_weights(world: World) -> None:
    experiment_id = await world.running()
    doc = await world.doc(experiment_id)
    assert doc["epochs"] == [{"since": doc["createdAt"], "weights": {"a": 5000, "b": 5000}}]
    # A document from before epochs: one epoch of its variants' weights.
    del doc["epochs"]
    assert [e.weights for e in assignment_epochs(doc)] == [(("a", 5000), ("b", 5000))]


# ----------------------------------------------------------------- bandit ----

async def test_the_bandit_appends_an_epoch_after_the_warmup(world: World) -> None:
    experiment_id = await world.running(warmup=1000)
    bandit = world.bandit()
    await world.counts(experiment_id, a=(400, 20), b=(500, 60))
    assert await bandit.round() == 0  # 900 impressions: still warming up
    assert len((await world.doc(experiment_id))["epochs"]) == 1
    world.clock.now += 61  # the next round: the lease ran out
    await world.counts(experiment_id, a=(500, 25), b=(500, 60))
    assert await bandit.round() == 1
    doc = await world.doc(experiment_id)
    _, second = doc["epochs"]
    assert second["since"] == world.clock.now + DELAY
    weights = second["weights"]
    assert sum(weights.values()) == 10_000 and weights["b"] > weights["a"] >= 100
    assert doc["servingWeights"] == weights
    assert world.sink.notes == [f"{tenant_handle(TENANT)}/banner"]
    got = await world.experiments.get(TENANT, experiment_id)
    assert dict(got.serving_weights) == weights


async def test_a_new_epoch_starts_only_after_the_delay(world: World) -> None:
    experiment_id = await world.running()
    await world.counts(experiment_id, a=(5000, 10), b=(5000, 900))
    before = assignment_epochs(await world.doc(experiment_id))
    assert await world.bandit(epoch_delay=45.0).round() == 1
    doc = await world.doc(experiment_id)
    assert doc["epochs"][-1]["since"] == world.clock.now + 45.0
    after = assignment_epochs(doc)
    # Visitors first seen before the epoch starts (while gateways may still
    # hold the experiment without it) keep the weights they were shown.
    now = int(world.clock.now)
    for seen in (now, now + 44):
        vids = [f"v1.{seen}.{i:022d}" for i in range(300)]
        assert [assignment.assign(experiment_id, v, after) for v in vids] == [
            assignment.assign(experiment_id, v, before) for v in vids]
    vids = [f"v1.{now + 45}.{i:022d}" for i in range(300)]
    assert [assignment.assign(experiment_id, v, after) for v in vids].count("b") > 280


async def test_the_epoch_delay_is_a_setting() -> None:
    assert ExperimentSettings().experiment_epoch_delay == 60.0
    assert ExperimentSettings(experiment_epoch_delay=90).experiment_epoch_delay == 90.0
    with pytest.raises(ValueError):
        ExperimentSettings(experiment_epoch_delay=-1)


async def test_one_replica_reweights_an_experiment_per_interval(world: World) -> None:
    experiment_id = await world.running()
    await world.counts(experiment_id, a=(500, 25), b=(500, 30))  # b better, not surely
    one, two = world.bandit(), world.bandit()
    assert sorted(await asyncio.gather(one.round(), two.round())) == [0, 1]
    await world.counts(experiment_id, a=(900, 25), b=(900, 90))
    world.clock.now += 30  # within the interval: the lease holds
    assert await one.round() + await two.round() == 0
    world.clock.now += 31
    assert await two.round() == 1
    assert len((await world.doc(experiment_id))["epochs"]) == 3
    assert len(world.sink.notes) == 2


async def test_the_bandit_leaves_others_alone_and_keeps_its_floor(world: World) -> None:
    off = await world.running(bandit=False, slug="off")
    paused = await world.running(slug="paused")
    await world.experiments.pause(TENANT, paused)
    on = await world.running(slug="on")
    for experiment_id in (off, paused, on):
        await world.counts(experiment_id, a=(5000, 10), b=(5000, 900))
    assert await world.bandit(min_weight=700, max_epochs=2).round() == 1
    assert len((await world.doc(off))["epochs"]) == 1
    assert len((await world.doc(paused))["epochs"]) == 1
    weights = (await world.doc(on))["servingWeights"]
    assert weights == {"a": 700, "b": 9300}
    world.clock.now += 61
    await world.counts(on, a=(5000, 900), b=(5000, 10))
    assert await world.bandit(min_weight=700, max_epochs=2).round() == 1
    epochs = (await world.doc(on))["epochs"]
    assert len(epochs) == 2 and epochs[-1]["weights"] == {"a": 9300, "b": 700}


async def test_events_by_visitor_follow_the_epoch_the_visitor_was_first_seen_in(
        world: World) -> None:
    experiment_id = await world.running()
    await world.counts(experiment_id, a=(5000, 10), b=(5000, 900))
    world.clock.now += 100
    assert await world.bandit().round() == 1  # b gets 9,900 bp from now on
    serving = Serving(world.experiments.store, world.sink, clock=world.clock)
    old = [f"v1.{int(START)}.{i:022d}" for i in range(100)]
    new = [f"v1.{int(world.clock.now + DELAY)}.{i:022d}" for i in range(100)]
    for vids in (old, new):
        assert await serving.record(TENANT, [
            EventInput(type="conversion", experiment="banner", vid=v) for v in vids]) == 100
    before = [c.variant_id for c in world.sink.counts[:100]]
    after = [c.variant_id for c in world.sink.counts[100:]]
    assert 30 <= before.count("a") <= 70  # the variants' own 50/50
    assert after.count("b") >= 95
    # A caller's own id carries no time: the first epoch's weights.
    resolved = await serving.resolve(tenant_handle(TENANT), "banner")
    assert len(resolved.epochs) == 2
    assert assignment.assign(experiment_id, "caller-7", resolved.epochs) == (
        assignment.assign(experiment_id, "caller-7", resolved.epochs[:1]))


# ------------------------------------------------------------ winner_ready ----

async def test_winner_ready_is_published_once_when_first_recommended(world: World) -> None:
    experiment_id = await world.running(bandit=False, minimum=500)
    watch, other_replica = world.watch(), world.watch()
    await world.counts(experiment_id, a=(400, 20), b=(400, 60))
    assert not await watch.check(experiment_id)  # under the minimum sample
    await world.counts(experiment_id, a=(1000, 50), b=(1000, 150))
    world.sink.fail_winner = True
    with pytest.raises(RuntimeError):
        await watch.check(experiment_id)
    assert (await world.doc(experiment_id)).get("winnerReadyAt") is None
    world.sink.fail_winner = False
    results = await asyncio.gather(watch.check(experiment_id),
                                   other_replica.check(experiment_id))
    assert sorted(results) == [False, True]
    assert not await watch.check(experiment_id)
    (event,) = world.sink.winners
    assert (event.experiment_id, event.variant_id, event.slug, event.impressions) == (
        experiment_id, "b", "banner", 2000)
    assert event.probability_to_be_best > 0.95
    assert (await world.doc(experiment_id))["winnerReadyAt"] == world.clock.now


async def test_touched_experiments_are_checked_at_most_once_per_period(world: World) -> None:
    experiment_id = await world.running(bandit=False, minimum=500)
    watch = world.watch()
    watch.touched([experiment_id])
    await watch.wait_idle()
    await world.counts(experiment_id, a=(1000, 50), b=(1000, 150))
    watch.touched([experiment_id])  # checked 0 s ago: not again
    await watch.wait_idle()
    assert world.sink.winners == []
    world.clock.now += 10
    watch.touched([experiment_id])
    await watch.wait_idle()
    assert [e.variant_id for e in world.sink.winners] == ["b"]
    await watch.close()


class Computations:
    """:func:`summarise` as a :class:`Summaries` runs it (on threads),
    counted, with the most that ran at once."""

    def __init__(self, *, seconds: float = 0.0) -> None:
        self.calls = 0
        self.running = 0
        self.most = 0
        self._seconds = seconds
        self._lock = threading.Lock()

    def __call__(self, arms: Sequence[Arm], **kwargs: Any) -> Summary:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self._seconds)  # on a worker thread: holds it, as the real work does
            return summarise(arms, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


async def test_a_winner_check_skips_the_statistics_under_the_minimum_sample(
        world: World) -> None:
    experiment_id = await world.running(bandit=False, minimum=500)
    computed = Computations()
    watch = world.watch(Summaries(compute=computed))
    await world.counts(experiment_id, a=(499, 10), b=(5000, 900))
    assert not await watch.check(experiment_id)
    assert computed.calls == 0  # one variant short of the sample: nothing to compute
    await world.counts(experiment_id, a=(500, 25), b=(500, 26))
    assert not await watch.check(experiment_id)  # no winner, yet
    assert not await watch.check(experiment_id)
    assert computed.calls == 1  # the same counts: the kept result
    await world.counts(experiment_id, a=(1000, 50), b=(1000, 150))
    assert await watch.check(experiment_id)
    assert computed.calls == 2


async def test_winner_checks_compute_one_statistics_at_a_time(world: World) -> None:
    computed = Computations(seconds=0.05)
    watch = world.watch(Summaries(compute=computed))
    ids = []
    for i in range(6):
        ids.append(await world.running(bandit=False, minimum=10, slug=f"e{i}"))
        await world.counts(ids[-1], a=(100 + i, 5), b=(100 + i, 6))  # each its own counts
    watch.touched(ids)
    await watch.wait_idle()
    assert (computed.calls, computed.most) == (6, 1)
    await watch.close()


async def test_statistics_are_computed_once_per_distinct_counts(world: World) -> None:
    computed = Computations(seconds=0.05)
    experiments = Experiments(world.experiments.store, AnyTemplate(), clock=world.clock,
                              summaries=Summaries(compute=computed))
    experiment_id = await world.running(bandit=False)
    await world.counts(experiment_id, a=(1000, 50), b=(1000, 80))
    first = await experiments.stats(TENANT, experiment_id)
    assert await experiments.stats(TENANT, experiment_id) == first
    assert computed.calls == 1
    await world.counts(experiment_id, a=(1000, 50), b=(1001, 80))
    answers = await asyncio.gather(*(experiments.stats(TENANT, experiment_id)
                                     for _ in range(4)))
    assert computed.calls == 2 and all(a == answers[0] for a in answers)
    assert answers[0] != first
    # A threshold (or a sample size, or the draws) is part of what is kept by.
    await world.experiments.update(TENANT, experiment_id,
                                   ExperimentSpec(confidence_threshold=0.9))
    await experiments.stats(TENANT, experiment_id)
    assert computed.calls == 3


async def test_kept_statistics_are_bounded_and_failures_not_kept() -> None:
    computed = Computations()
    summaries = Summaries(size=2, compute=computed)

    async def of(n: int) -> Summary:
        return await summaries.summarise(
            [Arm("a", True, n, 1), Arm("b", False, n, 2)], minimum_sample_size=1,
            confidence_threshold=0.95, draws=1000)

    for n in (10, 11, 12):
        await of(n)
    assert len(summaries) == 2 and computed.calls == 3
    await of(12)
    assert computed.calls == 3
    await of(10)  # dropped as the least recently used: computed again
    assert computed.calls == 4

    def broken(arms: Sequence[Arm], **kwargs: Any) -> Summary:
        raise RuntimeError("no")

    failing = Summaries(compute=broken)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await failing.summarise([Arm("a", True, 1, 1)], minimum_sample_size=1,
                                    confidence_threshold=0.95, draws=1000)
    assert len(failing) == 0


# ------------------------------------------------------- the running service ----

@pytest_asyncio.fixture
async def service(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Service]:
    async with run_service(tmp_path, nats_server, experiment_count_flush_seconds=0.01,
                           experiment_counter_floor_seconds=0.05,
                           experiment_winner_check_seconds=0.0,
                           experiment_bandit_interval=0.1,
                           experiment_stats_draws=1000) as running_service:
        yield running_service


@contextlib.asynccontextmanager
async def subscribed(service: Service, subject: str) -> AsyncIterator[asyncio.Queue[Msg]]:
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await got.put(msg)

    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, service.nats_url, name="bandit-test")
        await nc.subscribe(subject, cb=on_msg)
        await messaging.delivered(nc)
        yield got


async def test_the_service_reweights_and_publishes_winner_ready(service: Service) -> None:
    created = (await service.stub.CreateExperiment(create_request(
        service, goal=pb.Goal(type="impressions_only"),
        bandit=pb.Bandit(enabled=True, warmup_impressions=50),
        minimum_sample_size=30))).experiment
    ident = {"tenant_id": TENANT, "experiment_id": created.id}
    async with subscribed(service, EXPERIMENT_CHANGED_SUBJECT) as notes, \
            subscribed(service, WINNER_READY_SUBJECT) as winners:
        await service.stub.StartExperiment(pb.StartExperimentRequest(**ident))
        key = f"{created.tenant_handle}/{created.slug}"
        assert (await asyncio.wait_for(notes.get(), 10)).data.decode() == key
        events = [pb.ExperimentEventInput(type=kind, experiment=created.slug, variant_id=v)
                  for v, kind, n in (("a", "impression", 40), ("b", "impression", 40),
                                     ("b", "conversion", 30), ("a", "conversion", 2))
                  for _ in range(n)]
        for start in range(0, len(events), 100):
            await service.stub.RecordEvents(pb.RecordEventsRequest(
                tenant_id=TENANT, events=events[start:start + 100]))
        # Counted, then: the bandit's epoch (a note) and the winner, once.
        assert (await asyncio.wait_for(notes.get(), 20)).data.decode() == key
        msg = await asyncio.wait_for(winners.get(), 20)
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == f"winner-ready:{created.id}"
        event = events_pb2.ExperimentWinnerReady.FromString(msg.data)
        assert (event.experiment_id, event.tenant_id, event.variant_id, event.impressions) == (
            created.id, TENANT, "b", 80)
        resolved = await service.stub.ResolveExperiment(pb.ResolveExperimentRequest(
            tenant_handle=created.tenant_handle, slug=created.slug))
        assert len(resolved.epochs) >= 2
        # LITHO_EXPERIMENT_EPOCH_DELAY (60 s): the epoch starts in a minute.
        assert resolved.epochs[-1].since.ToNanoseconds() / 1e9 > time.time() + 50
        weights = dict(resolved.epochs[-1].weights)
        assert weights["b"] > weights["a"] and sum(weights.values()) == 10_000
        assert dict(resolved.experiment.serving_weights) == weights
        # More counts: winner_ready is not published again.
        await service.stub.RecordEvents(pb.RecordEventsRequest(
            tenant_id=TENANT, events=events[:50]))
        await counted(service, created.id, impressions=130)
        assert winners.empty()
