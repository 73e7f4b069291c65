"""JetStream streams, publisher and pull consumers against a real ``nats-server``.

One server per session (``tests/support/nats_server.py``); each test starts
from freshly declared streams. The restart test has a server of its own.
Waits are bounded by counts and events; times are generous backstops only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from litho import messaging
from litho.consumers import (
    TERMINATED_SUBJECT,
    ConsumerOptions,
    Delivery,
    Poison,
    PullConsumer,
    Retry,
    proto_decoder,
)
from litho.events.v1 import events_pb2
from litho.streams import EVENTS_STREAM, JOBS_STREAM, ensure_streams
from tests.support.nats_server import NatsServer, start_nats

JOB_SUBJECT = "litho.jobs.v1.test.work"
#: Backstop for every wait: far beyond what any step needs, even on a loaded machine.
BACKSTOP = 30.0

Handler = Callable[[Delivery[StringValue]], Awaitable[None]]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


async def _connect(stack: AsyncExitStack, url: str) -> Client:
    return await messaging.connect(stack, url, name="litho-test")


@pytest_asyncio.fixture(loop_scope="session")
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest_asyncio.fixture(loop_scope="session")
async def nc(nats_server: NatsServer, stack: AsyncExitStack) -> Client:
    """A connection, with both streams freshly declared."""
    client = await _connect(stack, nats_server.url)
    js = client.jetstream()
    for name in (EVENTS_STREAM, JOBS_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await ensure_streams(js)
    return client


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + BACKSTOP
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _publish_jobs(js: JetStreamContext, values: list[str]) -> None:
    publisher = messaging.Publisher(js)
    for value in values:
        ack = await publisher.publish(JOB_SUBJECT, StringValue(value=value), msg_id=f"job:{value}")
        assert not ack.duplicate


def _worker(
    nc: Client, handler: Handler, options: ConsumerOptions, durable: str = "workers"
) -> PullConsumer[StringValue]:
    return PullConsumer(
        nc, stream=JOBS_STREAM, durable=durable, subjects=["litho.jobs.v1.test.>"],
        handler=handler, decode=proto_decoder(StringValue), options=options,
    )


async def _jobs_left(js: JetStreamContext) -> int:
    info = await js.stream_info(JOBS_STREAM)
    return info.state.messages


async def _terminated_event(js: JetStreamContext) -> events_pb2.MessageTerminated | None:
    try:
        raw = await js.get_last_msg(EVENTS_STREAM, TERMINATED_SUBJECT)
    except NotFoundError:
        return None
    assert raw.data is not None
    return events_pb2.MessageTerminated.FromString(raw.data)


# --------------------------------------------------------------------------- streams


async def test_streams_are_declared_with_their_retention(js: JetStreamContext) -> None:
    events = (await js.stream_info(EVENTS_STREAM)).config
    jobs = (await js.stream_info(JOBS_STREAM)).config
    assert (events.retention, events.storage, events.subjects) == (
        "limits", "file", ["litho.events.v1.>"])
    assert (jobs.retention, jobs.storage, jobs.subjects, jobs.discard) == (
        "workqueue", "file", ["litho.jobs.v1.>"], "new")
    assert events.max_age == 7 * 24 * 3600 and events.duplicate_window == 120


async def test_ensure_streams_is_idempotent_and_repairs_drift(js: JetStreamContext) -> None:
    await js.update_stream(messaging.events_stream(max_age=3600).config())
    await _publish_jobs(js, ["kept"])
    await ensure_streams(js)
    await ensure_streams(js)
    assert (await js.stream_info(EVENTS_STREAM)).config.max_age == 7 * 24 * 3600
    assert await _jobs_left(js) == 1  # updating never recreates a stream


# ------------------------------------------------------------------ (d) idempotency


async def test_a_duplicate_msg_id_is_stored_once(js: JetStreamContext) -> None:
    publisher = messaging.Publisher(js)
    first = await publisher.publish(JOB_SUBJECT, StringValue(value="a"), msg_id="job:1")
    again = await publisher.publish(JOB_SUBJECT, StringValue(value="a"), msg_id="job:1")
    other = await publisher.publish(JOB_SUBJECT, StringValue(value="a"), msg_id="job:2")
    assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
    assert again.sequence == first.sequence
    assert await _jobs_left(js) == 2


async def test_published_headers_carry_the_id_type_and_extras(js: JetStreamContext) -> None:
    publisher = messaging.Publisher(js)
    ack = await publisher.publish(
        JOB_SUBJECT, StringValue(value="h"), msg_id="job:h",
        # Not a trace header: with tracing configured (an earlier test in the
        # process may have), the publisher writes its own traceparent.
        headers={"Litho-Test-Extra": "kept", "Nats-Msg-Id": "not-this"},
    )
    raw = await js.get_msg(JOBS_STREAM, ack.sequence)
    assert raw.headers is not None
    assert raw.headers["Nats-Msg-Id"] == "job:h"
    assert raw.headers["Litho-Message-Type"] == "google.protobuf.StringValue"
    assert raw.headers["Litho-Test-Extra"] == "kept"


# ------------------------------------------------- (a) a worker dies before its ack


async def test_a_worker_that_dies_before_acking_sees_the_message_again_elsewhere(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, stack: AsyncExitStack
) -> None:
    options = ConsumerOptions(ack_wait=1.0, stop_grace=0.1)
    seen: list[tuple[str, int]] = []
    holding = asyncio.Event()

    async def hang(delivery: Delivery[StringValue]) -> None:
        seen.append(("doomed", delivery.deliveries))
        holding.set()
        await asyncio.Event().wait()

    async def finish(delivery: Delivery[StringValue]) -> None:
        seen.append(("survivor", delivery.deliveries))

    # Its own connection, closed without drain: what the server sees when a process dies.
    doomed_nc = await nats.connect(nats_server.url)
    doomed = _worker(doomed_nc, hang, options)
    await doomed.ensure()
    doomed_run = asyncio.create_task(doomed.run())
    await _publish_jobs(js, ["j1"])
    await asyncio.wait_for(holding.wait(), BACKSTOP)

    # While the handler runs, heartbeats keep the message from being redelivered.
    await asyncio.sleep(3 * options.ack_wait)
    info = await js.consumer_info(JOBS_STREAM, "workers")
    assert (info.num_ack_pending, info.num_redelivered) == (1, 0)

    survivor = _worker(nc, finish, options)
    await stack.enter_async_context(survivor.running())
    await doomed_nc.close()
    doomed_run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await doomed_run

    async def done() -> bool:
        return len(seen) == 2 and await _jobs_left(js) == 0

    await _until(done, "the survivor to handle the abandoned job")
    assert seen == [("doomed", 1), ("survivor", 2)]


# ----------------------------------------------- (b) poison stops after N attempts


async def test_a_failing_message_is_terminated_after_max_deliver_and_reported(
    nc: Client, js: JetStreamContext, stack: AsyncExitStack
) -> None:
    options = ConsumerOptions(max_deliver=3, backoff_initial=0.05, backoff_max=0.2)
    attempts: list[int] = []

    async def explode(delivery: Delivery[StringValue]) -> None:
        attempts.append(delivery.deliveries)
        raise RuntimeError("the renderer exploded")

    await stack.enter_async_context(_worker(nc, explode, options).running())
    await _publish_jobs(js, ["bad"])

    async def reported() -> bool:
        return await _terminated_event(js) is not None and await _jobs_left(js) == 0

    await _until(reported, "the terminated event and the job's removal")
    assert attempts == [1, 2, 3]
    event = await _terminated_event(js)
    assert event is not None
    assert (event.stream, event.consumer, event.subject, event.deliveries) == (
        JOBS_STREAM, "workers", JOB_SUBJECT, 3)
    assert event.msg_id == "job:bad"
    assert event.message_type == "google.protobuf.StringValue"
    assert "max_deliver" in event.reason and "the renderer exploded" in event.reason
    info = await js.consumer_info(JOBS_STREAM, "workers")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


@pytest.mark.parametrize("kind", ["undecodable", "wrong type", "handler says poison"])
async def test_poison_is_terminated_on_its_first_delivery(
    nc: Client, js: JetStreamContext, stack: AsyncExitStack, kind: str
) -> None:
    calls: list[int] = []

    async def handler(delivery: Delivery[StringValue]) -> None:
        calls.append(delivery.deliveries)
        raise Poison("the template no longer exists")

    await stack.enter_async_context(_worker(nc, handler, ConsumerOptions(max_deliver=5)).running())
    if kind == "undecodable":
        await js.publish(JOB_SUBJECT, b"\xff\xff\xff", headers={"Nats-Msg-Id": "job:x"})
    elif kind == "wrong type":
        await messaging.Publisher(js).publish(
            JOB_SUBJECT, events_pb2.RenderFailed(reason="r"), msg_id="job:x")
    else:
        await _publish_jobs(js, ["x"])

    async def reported() -> bool:
        return await _terminated_event(js) is not None and await _jobs_left(js) == 0

    await _until(reported, "the terminated event")
    event = await _terminated_event(js)
    assert event is not None and event.deliveries == 1
    if kind == "handler says poison":
        assert calls == [1]
        assert event.reason == "poison: the template no longer exists"
    else:
        assert calls == []
        assert event.reason.startswith("undecodable: ")


async def test_retry_naks_with_a_delay_and_the_next_delivery_succeeds(
    nc: Client, js: JetStreamContext, stack: AsyncExitStack
) -> None:
    attempts: list[int] = []

    async def flaky(delivery: Delivery[StringValue]) -> None:
        attempts.append(delivery.deliveries)
        if delivery.deliveries == 1:
            raise Retry("the template service is restarting", delay=0.1)

    await stack.enter_async_context(_worker(nc, flaky, ConsumerOptions(max_deliver=2)).running())
    await _publish_jobs(js, ["once"])

    async def acked() -> bool:
        return len(attempts) == 2 and await _jobs_left(js) == 0

    await _until(acked, "the retried job to be acked")
    assert attempts == [1, 2]
    assert await _terminated_event(js) is None


# --------------------------------- (c) a restarted server keeps every acked message


@pytest.mark.parametrize("signal", ["SIGKILL", "SIGTERM"])
async def test_a_restarted_server_loses_nothing_the_publisher_got_an_ack_for(
    tmp_path: Path, signal: str
) -> None:
    server = start_nats(tmp_path)
    try:
        values = [f"v{i}" for i in range(50)]
        async with AsyncExitStack() as first:
            nc = await _connect(first, server.url)
            js = nc.jetstream()
            await ensure_streams(js)
            await _publish_jobs(js, values)
            await messaging.Publisher(js).publish(
                "litho.events.v1.test.happened", StringValue(value="e"), msg_id="event:1")
            # Every ack is in hand; close first only so the client does not
            # spend its drain timeout on a dead server.
            await nc.close()
            if signal == "SIGKILL":
                server.kill()
        server.restart()  # SIGTERM first if still running

        got: list[str] = []
        async with AsyncExitStack() as second:
            nc = await _connect(second, server.url)
            js = nc.jetstream()
            await ensure_streams(js)  # the services' start-up after a restart: a no-op

            async def collect(delivery: Delivery[StringValue]) -> None:
                got.append(delivery.payload.value)

            await second.enter_async_context(
                _worker(nc, collect, ConsumerOptions(max_in_flight=8)).running())

            async def drained() -> bool:
                return len(got) >= len(values) and await _jobs_left(js) == 0

            await _until(drained, "every job to be consumed after the restart")
            assert (await js.stream_info(EVENTS_STREAM)).state.messages == 1
        assert sorted(got) == sorted(values)
    finally:
        server.stop()


# ------------------------------------- (e) work queue: one worker per job, (f) bounds


async def test_each_job_goes_to_exactly_one_of_two_competing_workers(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, stack: AsyncExitStack
) -> None:
    # One job in flight per worker, and the first job of each waits until the
    # other worker has one too: both must take part, deterministically.
    options = ConsumerOptions(max_in_flight=1)
    handled: list[tuple[str, str, int]] = []
    started = {"w1": asyncio.Event(), "w2": asyncio.Event()}

    def handler_for(name: str, other: str) -> Handler:
        async def handle(delivery: Delivery[StringValue]) -> None:
            started[name].set()
            await asyncio.wait_for(started[other].wait(), BACKSTOP)
            handled.append((name, delivery.payload.value, delivery.deliveries))
        return handle

    nc2 = await _connect(stack, nats_server.url)
    await stack.enter_async_context(_worker(nc, handler_for("w1", "w2"), options).running())
    await stack.enter_async_context(_worker(nc2, handler_for("w2", "w1"), options).running())
    values = [f"job{i}" for i in range(30)]
    await _publish_jobs(js, values)

    async def done() -> bool:
        return len(handled) >= len(values) and await _jobs_left(js) == 0

    await _until(done, "all jobs to be handled")
    assert Counter(v for _, v, _ in handled) == Counter(values)
    assert {d for _, _, d in handled} == {1}
    assert {w for w, _, _ in handled} == {"w1", "w2"}


@pytest.mark.parametrize(
    ("workers", "max_in_flight", "max_ack_pending", "bound"),
    [(1, 3, 100, 3), (2, 3, 4, 4)],
    ids=["max_in_flight", "max_ack_pending"],
)
async def test_in_flight_messages_stay_within_the_bound(
    nats_server: NatsServer, js: JetStreamContext, stack: AsyncExitStack,
    workers: int, max_in_flight: int, max_ack_pending: int, bound: int,
) -> None:
    options = ConsumerOptions(
        max_in_flight=max_in_flight, fetch_batch=10, max_ack_pending=max_ack_pending
    )
    running = 0
    peak = 0
    handled: list[str] = []
    release = asyncio.Event()

    async def hold(delivery: Delivery[StringValue]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.wait_for(release.wait(), BACKSTOP)
            handled.append(delivery.payload.value)
        finally:
            running -= 1

    for _ in range(workers):
        worker_nc = await _connect(stack, nats_server.url)
        await stack.enter_async_context(_worker(worker_nc, hold, options).running())
    values = [f"job{i}" for i in range(12)]
    await _publish_jobs(js, values)

    async def full() -> bool:
        return running == bound

    await _until(full, f"{bound} handlers to run")
    # Room for an over-eager fetch to show itself, were there one.
    await asyncio.sleep(0.5)
    info = await js.consumer_info(JOBS_STREAM, "workers")
    assert (running, info.num_ack_pending) == (bound, bound)
    release.set()

    async def done() -> bool:
        return len(handled) == len(values) and await _jobs_left(js) == 0

    await _until(done, "all jobs to be handled")
    assert peak == bound
    assert sorted(handled) == sorted(values)


# ------------------------------------------------------------------- clean stop


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_stopping_finishes_in_flight_work_and_fetches_nothing_new(
    nc: Client, js: JetStreamContext, how: str
) -> None:
    handled: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def slow(delivery: Delivery[StringValue]) -> None:
        holding.set()
        await asyncio.wait_for(release.wait(), BACKSTOP)
        handled.append(delivery.payload.value)

    worker = _worker(nc, slow, ConsumerOptions(fetch_timeout=1.0))
    await worker.ensure()
    run = asyncio.create_task(worker.run())
    await _publish_jobs(js, ["first"])
    await asyncio.wait_for(holding.wait(), BACKSTOP)
    if how == "stop":
        worker.stop()
    else:
        run.cancel()
    await asyncio.sleep(0.2)
    assert not run.done()  # still finishing the job in hand
    await _publish_jobs(js, ["later1", "later2"])
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(run, BACKSTOP)
    assert handled == ["first"]
    assert await _jobs_left(js) == 2  # the first was acked
    info = await js.consumer_info(JOBS_STREAM, "workers")
    # Nothing new was delivered: one delivery in all, none outstanding.
    assert (info.delivered.consumer_seq, info.num_ack_pending) == (1, 0)


# ------------------------------------------- trace context travels with the message


async def test_a_job_is_handled_in_the_trace_that_published_it(
    nc: Client, js: JetStreamContext, stack: AsyncExitStack
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from litho import telemetry

    telemetry.configure("contract", stack)
    spans = InMemorySpanExporter()
    telemetry.add_span_processor(stack, SimpleSpanProcessor(spans))
    seen: list[trace.SpanContext] = []

    async def handler(delivery: Delivery[StringValue]) -> None:
        seen.append(trace.get_current_span().get_span_context())

    await stack.enter_async_context(_worker(nc, handler, ConsumerOptions(), "traced").running())
    with trace.get_tracer("test").start_as_current_span("submit batch") as submit:
        await _publish_jobs(js, ["traced"])

    async def handled() -> bool:
        return bool(seen)

    await _until(handled, "the job to be handled")
    trace_id = submit.get_span_context().trace_id
    assert seen[0].trace_id == trace_id  # the handler ran inside the publisher's trace
    by_name = {s.name: s for s in spans.get_finished_spans()}
    publish, process = by_name[f"publish {JOB_SUBJECT}"], by_name[f"process {JOB_SUBJECT}"]
    assert publish.parent is not None
    assert publish.parent.span_id == submit.get_span_context().span_id
    assert process.parent is not None and publish.context is not None
    assert process.parent.span_id == publish.context.span_id
    assert process.context is not None and process.context.span_id == seen[0].span_id


async def test_a_poison_message_is_terminated_inside_its_trace(
    nc: Client, js: JetStreamContext, stack: AsyncExitStack
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from litho import telemetry

    telemetry.configure("contract", stack)
    spans = InMemorySpanExporter()
    telemetry.add_span_processor(stack, SimpleSpanProcessor(spans))

    async def poison(delivery: Delivery[StringValue]) -> None:
        raise Poison("never")

    worker = _worker(nc, poison, ConsumerOptions(), "traced-poison")
    await stack.enter_async_context(worker.running())
    with trace.get_tracer("test").start_as_current_span("submit") as submit:
        await _publish_jobs(js, ["doomed"])

    async def reported() -> bool:
        return await _terminated_event(js) is not None

    await _until(reported, "the terminated event")
    terminated = [s for s in spans.get_finished_spans()
                  if s.name == f"publish {TERMINATED_SUBJECT}"]
    assert len(terminated) == 1 and terminated[0].context is not None
    assert terminated[0].context.trace_id == submit.get_span_context().trace_id


async def test_a_message_over_the_server_limit_is_invalid_not_unavailable(
    js: JetStreamContext,
) -> None:
    from litho import errors

    huge = StringValue(value="x" * (2 * 1024 * 1024))  # the server's max_payload is 1 MiB
    with pytest.raises(errors.InvalidArgument, match="max_payload"):
        await messaging.Publisher(js).publish(JOB_SUBJECT, huge, msg_id="job:huge")


async def test_a_full_jobs_stream_refuses_new_jobs_and_keeps_the_old(js: JetStreamContext) -> None:
    from litho import errors
    from litho.streams import jobs_stream

    await ensure_streams(js, [jobs_stream(max_msgs=2)])
    await _publish_jobs(js, ["one", "two"])
    with pytest.raises(errors.ResourceExhausted, match="full"):
        await messaging.Publisher(js).publish(JOB_SUBJECT, StringValue(value="three"),
                                              msg_id="job:three")
    assert await _jobs_left(js) == 2  # nothing dropped to make room


async def test_a_subject_no_stream_stores_is_unavailable(js: JetStreamContext) -> None:
    from litho import errors

    with pytest.raises(errors.Unavailable, match="no JetStream stream"):
        await messaging.Publisher(js).publish("litho.nowhere.v1.x", StringValue(value="x"),
                                              msg_id="x")
