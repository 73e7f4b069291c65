"""ResolveExperiment, RecordEvents and the change notes, over gRPC against
the service's composition root in this process: the real template service,
a real ``nats-server`` (the counts stream, the service's own counter, the
change notes) and the service's SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from litho import assignment, messaging
from litho.docstore import open_document_store
from litho.errors import Conflict, InvalidArgument, NotFound, Unavailable
from litho.experiment.v1 import experiment_pb2 as pb
from litho.streams import COUNTS_STREAM, EXPERIMENT_CHANGED_SUBJECT
from services.experiment._events import count_msg_id
from services.experiment._experiments import Experiments
from services.experiment._model import ExperimentSpec, VariantInput, tenant_handle
from services.experiment._ports import Count, WinnerReady
from services.experiment._serving import EventInput, Serving
from services.experiment._store import ExperimentStore
from tests.support.nats_server import NatsServer
from tests.unit.test_experiment_app import (
    OTHER,
    TENANT,
    Service,
    create_request,
    run_service,
)
from tests.unit.test_experiment_app import nats_server as nats_server


@pytest_asyncio.fixture
async def service(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Service]:
    async with run_service(tmp_path, nats_server, experiment_count_flush_seconds=0.01,
                           experiment_counter_floor_seconds=0.05) as running_service:
        yield running_service


@contextlib.asynccontextmanager
async def notes(service: Service) -> AsyncIterator[asyncio.Queue[str]]:
    """The change notes published meanwhile."""
    got: asyncio.Queue[str] = asyncio.Queue()

    async def on_note(msg: Msg) -> None:
        await got.put(msg.data.decode())

    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, service.nats_url, name="notes-test")
        await nc.subscribe(EXPERIMENT_CHANGED_SUBJECT, cb=on_note)
        await messaging.delivered(nc)
        yield got


async def next_notes(got: asyncio.Queue[str], n: int) -> list[str]:
    return [await asyncio.wait_for(got.get(), 10) for _ in range(n)]


async def running_experiment(service: Service, slug: str = "spring-sale") -> pb.Experiment:
    created = (await service.stub.CreateExperiment(create_request(service, slug=slug))).experiment
    return (await service.stub.StartExperiment(pb.StartExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment


async def stored_counts(service: Service) -> int:
    """Messages waiting in the counts stream (none once counted)."""
    async with contextlib.AsyncExitStack() as stack:
        js = (await messaging.connect(stack, service.nats_url, name="probe")).jetstream()
        return int((await js.stream_info(COUNTS_STREAM)).state.messages)


async def counted(service: Service, experiment_id: str, *, impressions: int,
                  within: float = 20.0) -> pb.GetExperimentStatsResponse:
    """The stats once the counter stored ``impressions`` impressions in all."""
    deadline = time.monotonic() + within
    while True:
        stats = await service.stub.GetExperimentStats(pb.GetExperimentStatsRequest(
            tenant_id=TENANT, experiment_id=experiment_id))
        total = sum(v.impressions for v in stats.variants)
        if total >= impressions:
            return stats
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- resolve ----

async def test_resolve_answers_the_experiment_and_its_epochs(service: Service) -> None:
    created = (await service.stub.CreateExperiment(create_request(service))).experiment
    handle = tenant_handle(TENANT)
    resolved = await service.stub.ResolveExperiment(pb.ResolveExperimentRequest(
        tenant_handle=handle, slug="spring-sale"))
    got = (await service.stub.GetExperiment(pb.GetExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment
    assert resolved.experiment == got
    assert len(resolved.epochs) == 1
    assert dict(resolved.epochs[0].weights) == {"a": 5000, "b": 5000}
    assert resolved.epochs[0].since == got.create_time
    # A draft's new variants replace the epoch.
    await service.stub.UpdateExperiment(pb.UpdateExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id, spec=pb.ExperimentSpec(
            variants=[pb.Variant(id="a", weight=2000), pb.Variant(id="c", weight=8000)],
            has_variants=True)))
    resolved = await service.stub.ResolveExperiment(pb.ResolveExperimentRequest(
        tenant_handle=handle, slug="spring-sale"))
    assert [dict(e.weights) for e in resolved.epochs] == [{"a": 2000, "c": 8000}]
    assert dict(resolved.experiment.serving_weights) == {"a": 2000, "c": 8000}


@pytest.mark.parametrize(("handle", "slug"), [
    ("", "spring-sale"), ("short", "spring-sale"), ("A" * 16, "spring-sale"),
    (tenant_handle(OTHER), "spring-sale"), (tenant_handle(TENANT), "Spring-Sale"),
    (tenant_handle(TENANT), "x" * 65), (tenant_handle(TENANT), "autumn"),
    (tenant_handle(TENANT), "\x00" * 10_000)])
async def test_resolve_of_anything_else_is_not_found(service: Service, handle: str,
                                                     slug: str) -> None:
    await service.stub.CreateExperiment(create_request(service))
    with pytest.raises(NotFound):
        await service.stub.ResolveExperiment(pb.ResolveExperimentRequest(
            tenant_handle=handle, slug=slug))


# ----------------------------------------------------------- change notes ----

async def test_every_write_a_resolve_sees_sends_a_change_note(service: Service) -> None:
    key = f"{tenant_handle(TENANT)}/spring-sale"
    ident = {"tenant_id": TENANT}
    async with notes(service) as got:
        created = (await service.stub.CreateExperiment(create_request(service))).experiment
        assert await next_notes(got, 1) == [key]
        ident["experiment_id"] = created.id
        await service.stub.UpdateExperiment(pb.UpdateExperimentRequest(
            **ident, spec=pb.ExperimentSpec(slug="summer-sale")))
        assert sorted(await next_notes(got, 2)) == sorted(
            [key, f"{tenant_handle(TENANT)}/summer-sale"])
        key = f"{tenant_handle(TENANT)}/summer-sale"
        await service.stub.StartExperiment(pb.StartExperimentRequest(**ident))
        await service.stub.PauseExperiment(pb.PauseExperimentRequest(**ident))
        await service.stub.UpdateExperiment(pb.UpdateExperimentRequest(
            **ident, spec=pb.ExperimentSpec(name="Renamed")))
        await service.stub.CompleteExperiment(pb.CompleteExperimentRequest(
            **ident, winner_variant_id="b"))
        await service.stub.ArchiveExperiment(pb.ArchiveExperimentRequest(**ident))
        await service.stub.DeleteExperiment(pb.DeleteExperimentRequest(**ident))
        assert await next_notes(got, 6) == [key] * 6
        # Reads and refused writes send none.
        await service.stub.ListExperiments(pb.ListExperimentsRequest(tenant_id=TENANT))
        with pytest.raises(NotFound):
            await service.stub.StartExperiment(pb.StartExperimentRequest(**ident))
        # The next note is the next write's (notes keep their order on one connection).
        await service.stub.CreateExperiment(create_request(service, slug="next"))
        assert await next_notes(got, 1) == [f"{tenant_handle(TENANT)}/next"]


# ------------------------------------------------------------ record events ----

async def test_recorded_events_are_counted_by_variant_or_by_visitor(service: Service) -> None:
    experiment = await running_experiment(service)
    resolved = await service.stub.ResolveExperiment(pb.ResolveExperimentRequest(
        tenant_handle=experiment.tenant_handle, slug=experiment.slug))
    epochs = [assignment.Epoch(e.since.ToNanoseconds() / 1e9,
                               tuple((v.id, e.weights[v.id]) for v in experiment.variants))
              for e in resolved.epochs]
    vids = [f"visitor-{i}" for i in range(40)]
    events = [pb.ExperimentEventInput(type="impression", experiment=experiment.slug, vid=v)
              for v in vids]
    events += [pb.ExperimentEventInput(type="conversion", experiment=experiment.id,
                                       variant_id="b") for _ in range(7)]
    events += [pb.ExperimentEventInput(type="click", experiment=experiment.id, vid=vids[0])]
    answer = await service.stub.RecordEvents(pb.RecordEventsRequest(
        tenant_id=TENANT, events=events))
    assert answer.accepted == len(events)
    stats = await counted(service, experiment.id, impressions=40)
    by_visitor = [assignment.assign(experiment.id, v, epochs) for v in vids]
    got = {v.variant_id: v for v in stats.variants}
    assert {k: got[k].impressions for k in got} == {
        k: by_visitor.count(k) for k in ("a", "b")}
    assert got["b"].conversions == 7 and got["a"].conversions == 0
    assert got[by_visitor[0]].clicks == 1
    assert await stored_counts(service) == 0


async def test_bad_events_are_each_named_and_nothing_is_counted(service: Service) -> None:
    experiment = await running_experiment(service)
    theirs = (await service.stub.CreateExperiment(create_request(
        service, tenant_id=OTHER, template_id=service.other_template_id))).experiment
    good = pb.ExperimentEventInput(type="impression", experiment=experiment.id, variant_id="a")
    bad = [
        pb.ExperimentEventInput(type="view", experiment=experiment.id, variant_id="a"),
        pb.ExperimentEventInput(type="click", experiment=theirs.id, variant_id="a"),
        pb.ExperimentEventInput(type="click", experiment="no-such-slug", variant_id="a"),
        pb.ExperimentEventInput(type="click", experiment=experiment.slug, variant_id="z"),
        pb.ExperimentEventInput(type="click", experiment=experiment.slug),
        pb.ExperimentEventInput(type="click", experiment=experiment.slug, variant_id="a",
                                vid="v1"),
        pb.ExperimentEventInput(type="click", experiment=experiment.slug, vid="v" * 10_000),
        pb.ExperimentEventInput(type="click", experiment="x" * 100_000, variant_id="a"),
    ]
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.RecordEvents(pb.RecordEventsRequest(
            tenant_id=TENANT, events=[good, *bad]))
    assert [e.field for e in caught.value.errors] == [
        "events[1].type", "events[2].experiment", "events[3].experiment",
        "events[4].variantId", "events[5].variantId", "events[6].variantId", "events[7].vid",
        "events[8].experiment"]
    # Another tenant's experiment reads exactly as a missing one.
    assert caught.value.errors[1].message.replace(theirs.id, "?") == (
        caught.value.errors[2].message.replace("no-such-slug", "?"))
    assert all(len(e.message) < 400 for e in caught.value.errors)
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.RecordEvents(pb.RecordEventsRequest(
            tenant_id=TENANT, events=[good] * 101))
    assert [e.field for e in caught.value.errors] == ["events"]
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.RecordEvents(pb.RecordEventsRequest(tenant_id=TENANT))
    assert [e.field for e in caught.value.errors] == ["events"]
    # An experiment that is not running: 409 naming the event, and its status.
    await service.stub.PauseExperiment(pb.PauseExperimentRequest(
        tenant_id=TENANT, experiment_id=experiment.id))
    with pytest.raises(Conflict) as refused:
        await service.stub.RecordEvents(pb.RecordEventsRequest(
            tenant_id=TENANT, events=[good]))
    assert [e.field for e in refused.value.errors] == ["events[0].experiment"]
    assert "paused" in refused.value.errors[0].message
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await service.raw.RecordEvents(pb.RecordEventsRequest(tenant_id=TENANT, events=[good]))
    assert raw.value.code() == grpc.StatusCode.ABORTED
    # Nothing of any refused request reached the counter.
    stats = await service.stub.GetExperimentStats(pb.GetExperimentStatsRequest(
        tenant_id=TENANT, experiment_id=experiment.id))
    assert sum(v.impressions + v.clicks for v in stats.variants) == 0
    assert await stored_counts(service) == 0


# --------------------------------------------------------------- event ids ----

async def test_event_ids_are_checked_and_unique_within_a_request(service: Service) -> None:
    experiment = await running_experiment(service)

    def event(event_id: str) -> pb.ExperimentEventInput:
        return pb.ExperimentEventInput(type="impression", experiment=experiment.id,
                                       variant_id="a", event_id=event_id)

    with pytest.raises(InvalidArgument) as caught:
        await service.stub.RecordEvents(pb.RecordEventsRequest(tenant_id=TENANT, events=[
            event("order-1"), event("has space"), event("x" * 65), event("order-1"),
            event(""), event("é"), event("A_b-9" * 12)]))
    assert [e.field for e in caught.value.errors] == [
        "events[1].eventId", "events[2].eventId", "events[3].eventId", "events[5].eventId"]
    assert "events[0]" in caught.value.errors[2].message
    assert all(len(e.message) < 300 for e in caught.value.errors)
    assert await stored_counts(service) == 0


async def test_events_sent_again_with_their_ids_are_counted_once(service: Service) -> None:
    experiment = await running_experiment(service)
    events = [pb.ExperimentEventInput(type="impression", experiment=experiment.id,
                                      variant_id="ab"[i % 2], event_id=f"imp-{i}")
              for i in range(10)]
    for _ in range(3):  # the request retried whole, twice
        answer = await service.stub.RecordEvents(pb.RecordEventsRequest(
            tenant_id=TENANT, events=events))
        assert answer.accepted == 10
    # Ids are the experiment's: the same ids for another experiment count too.
    other = await running_experiment(service, slug="other")
    await service.stub.RecordEvents(pb.RecordEventsRequest(tenant_id=TENANT, events=[
        pb.ExperimentEventInput(type="impression", experiment=other.id, variant_id="a",
                                event_id="imp-0")]))
    await counted(service, other.id, impressions=1)
    stats = await counted(service, experiment.id, impressions=10)
    assert await stored_counts(service) == 0  # nothing more is waiting to be counted
    stats = await service.stub.GetExperimentStats(pb.GetExperimentStatsRequest(
        tenant_id=TENANT, experiment_id=experiment.id))
    assert {v.variant_id: v.impressions for v in stats.variants} == {"a": 5, "b": 5}


class FailingSink:
    """Publishes for counting, failing every other publish (a timeout after
    which the stream may or may not have the message)."""

    def __init__(self) -> None:
        self.published: list[Count] = []
        self._n = 0

    async def changed(self, tenant_handle: str, slug: str) -> None:
        return None

    async def count(self, count: Count) -> None:
        self._n += 1
        if self._n % 2:
            raise TimeoutError("no ack from the stream")
        self.published.append(count)

    async def winner_ready(self, event: WinnerReady) -> None:
        return None


@pytest_asyncio.fixture
async def experiments(tmp_path: Path) -> AsyncIterator[Experiments]:
    store = await open_document_store(f"sqlite:///{tmp_path / 'serving.db'}", "litho")
    made = Experiments(ExperimentStore(store), AnyTemplate())
    await made.store.prepare()
    try:
        yield made
    finally:
        await store.close()


class AnyTemplate:
    async def exists(self, tenant_id: str, template_id: str) -> bool:
        return True


async def test_a_failed_publish_fails_the_request_saying_how_many_were_published(
        experiments: Experiments) -> None:
    created = await experiments.create(TENANT, ExperimentSpec(
        name="n", slug="s", template_id="tpl",
        variants=[VariantInput(id="a", weight=5000), VariantInput(id="b", weight=5000)]))
    await experiments.start(TENANT, created.id)
    sink = FailingSink()
    serving = Serving(experiments.store, sink)
    named = [EventInput("conversion", created.id, variant_id="a", event_id=f"e{i}")
             for i in range(10)]
    with pytest.raises(Unavailable) as caught:
        await serving.record(TENANT, named)
    assert str(caught.value) == (
        "published 5 of 10 events for counting (those are counted); retry the request whole "
        "with the same eventIds to count each event once")
    assert [c.event_id for c in sink.published] == ["e1", "e3", "e5", "e7", "e9"]
    # Events without ids: a retry counts those published again, and it says so.
    unnamed = [EventInput("conversion", created.id, variant_id="a")] * 4
    with pytest.raises(Unavailable, match=r"published 2 of 4 .*: 2 of the published events "
                                          r"have no eventId, and a retry counts them twice"):
        await serving.record(TENANT, unnamed)


def test_a_named_event_is_published_with_a_message_id_of_its_name() -> None:
    count = Count(TENANT, "exp_abc", "a", "click", 0.0, event_id="order-7")
    assert count_msg_id(count) == f"count:{TENANT}:exp_abc:order-7"
    unnamed = dataclasses.replace(count, event_id="")
    assert count_msg_id(unnamed).startswith("count:") and count_msg_id(unnamed) != (
        count_msg_id(unnamed))
    assert re.fullmatch(r"count:[0-9a-f]{32}", count_msg_id(unnamed))
