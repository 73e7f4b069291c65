"""What a pull consumer does with one message, for each way its handler ends.

``PullConsumer.process`` is driven with a recorded stand-in for a delivered
JetStream message (the ``JsMessage`` port); the real server is in
``tests/contract/test_jetstream_contract.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import pytest
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client

from litho.consumers import (
    TERMINATED_SUBJECT,
    ConsumerOptions,
    Delivery,
    Handler,
    Poison,
    PullConsumer,
    Retry,
    consumer_config,
    proto_decoder,
)
from litho.events.v1 import events_pb2
from litho.messaging import message_headers


@dataclass(frozen=True)
class _Seq:
    stream: int = 7
    consumer: int = 3


@dataclass(frozen=True)
class _Meta:
    num_delivered: int
    stream: str = "LITHO_JOBS"
    consumer: str = "workers"
    timestamp: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    sequence: _Seq = field(default_factory=_Seq)


@dataclass
class FakeMsg:
    data: bytes
    headers: dict[str, str] | None
    metadata: _Meta
    subject: str = "litho.jobs.v1.test.work"
    actions: list[tuple[str, float | None]] = field(default_factory=list)

    async def ack_sync(self, timeout: float = 1.0) -> object:  # noqa: ASYNC109 - nats-py's
        self.actions.append(("ack", None))
        return None

    async def nak(self, delay: int | float | None = None) -> None:
        self.actions.append(("nak", delay))

    async def term(self) -> None:
        self.actions.append(("term", None))

    async def in_progress(self) -> None:
        self.actions.append(("in_progress", None))


@dataclass
class FakePublisher:
    sent: list[tuple[str, Message, str]] = field(default_factory=list)

    async def publish(
        self, subject: str, message: Message, *, msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> object:
        self.sent.append((subject, message, msg_id))
        return None


class _NoNats:
    def jetstream(self, prefix: str = "") -> object:
        return object()


def _msg(deliveries: int = 1, value: str = "job", **kw: object) -> FakeMsg:
    payload = StringValue(value=value)
    return FakeMsg(
        data=payload.SerializeToString(),
        headers=message_headers(payload, msg_id=f"job:{value}"),
        metadata=_Meta(num_delivered=deliveries),
        **kw,  # type: ignore[arg-type]
    )


def _consumer(
    handler: Handler[StringValue], publisher: FakePublisher, **options: float
) -> PullConsumer[StringValue]:
    return PullConsumer(
        cast(Client, _NoNats()), stream="LITHO_JOBS", durable="workers",
        subjects=["litho.jobs.v1.test.>"], handler=handler,
        decode=proto_decoder(StringValue), publisher=publisher,
        options=ConsumerOptions(**options),  # type: ignore[arg-type]
    )


async def _ok(delivery: Delivery[StringValue]) -> None:
    return None


async def test_success_acks_after_the_handler_returned() -> None:
    seen: list[Delivery[StringValue]] = []
    msg = _msg(deliveries=2, value="a")

    async def handler(delivery: Delivery[StringValue]) -> None:
        assert msg.actions == []  # nothing settled while the side effect runs
        seen.append(delivery)

    await _consumer(handler, FakePublisher()).process(msg)
    assert msg.actions == [("ack", None)]
    (delivery,) = seen
    assert (delivery.payload.value, delivery.deliveries, delivery.msg_id) == ("a", 2, "job:a")
    assert delivery.headers["Litho-Message-Type"] == "google.protobuf.StringValue"
    assert (delivery.stream, delivery.consumer, delivery.stream_sequence) == (
        "LITHO_JOBS", "workers", 7)


@pytest.mark.parametrize(("deliveries", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0)])
async def test_an_unexpected_error_naks_with_a_bounded_backoff(
    deliveries: int, delay: float
) -> None:
    async def boom(delivery: Delivery[StringValue]) -> None:
        raise RuntimeError("boom")

    msg = _msg(deliveries=deliveries)
    await _consumer(boom, FakePublisher(), max_deliver=5, backoff_initial=1.0,
                    backoff_max=5.0).process(msg)
    assert msg.actions == [("nak", delay)]


@pytest.mark.parametrize(("asked", "given"), [(0.25, 0.25), (999.0, 10.0), (-1.0, 0.0)])
async def test_retry_uses_its_delay_within_the_cap(asked: float, given: float) -> None:
    async def later(delivery: Delivery[StringValue]) -> None:
        raise Retry("busy", delay=asked)

    msg = _msg()
    await _consumer(later, FakePublisher(), backoff_max=10.0).process(msg)
    assert msg.actions == [("nak", given)]


async def test_a_failure_on_the_last_delivery_terminates_and_reports() -> None:
    async def boom(delivery: Delivery[StringValue]) -> None:
        raise RuntimeError("still broken")

    publisher = FakePublisher()
    msg = _msg(deliveries=3)
    await _consumer(boom, publisher, max_deliver=3).process(msg)
    assert msg.actions == [("term", None)]
    ((subject, event, msg_id),) = publisher.sent
    assert subject == TERMINATED_SUBJECT
    assert msg_id == "terminated:LITHO_JOBS:workers:7"
    assert isinstance(event, events_pb2.MessageTerminated)
    assert (event.deliveries, event.stream_sequence, event.msg_id) == (3, 7, "job:job")
    assert "RuntimeError: still broken" in event.reason


async def test_a_delivery_past_max_deliver_is_terminated_without_running_the_handler() -> None:
    # What a handler that kills its worker looks like: the spare delivery.
    calls: list[int] = []

    async def handler(delivery: Delivery[StringValue]) -> None:
        calls.append(delivery.deliveries)

    publisher = FakePublisher()
    msg = _msg(deliveries=4)
    await _consumer(handler, publisher, max_deliver=3).process(msg)
    assert (calls, msg.actions) == ([], [("term", None)])
    assert "delivered 4 times" in cast(events_pb2.MessageTerminated, publisher.sent[0][1]).reason
    assert consumer_config("w", [], ConsumerOptions(max_deliver=3)).max_deliver == 4


@pytest.mark.parametrize("kind", ["bytes", "type", "poison"])
async def test_poison_is_terminated_at_once(kind: str) -> None:
    async def refuse(delivery: Delivery[StringValue]) -> None:
        raise Poison("never")

    msg = _msg()
    if kind == "bytes":
        msg.data = b"\xff\xff\xff"
    elif kind == "type":
        msg.headers = message_headers(events_pb2.RenderFailed(), msg_id="x")
    publisher = FakePublisher()
    await _consumer(refuse, publisher).process(msg)
    assert msg.actions == [("term", None)]
    reason = cast(events_pb2.MessageTerminated, publisher.sent[0][1]).reason
    assert reason == "poison: never" if kind == "poison" else reason.startswith("undecodable")


async def test_a_terminated_terminated_event_is_not_reported_again() -> None:
    async def refuse(delivery: Delivery[StringValue]) -> None:
        raise Poison("no")

    publisher = FakePublisher()
    msg = _msg(subject=TERMINATED_SUBJECT)
    await _consumer(refuse, publisher).process(msg)
    assert (msg.actions, publisher.sent) == ([("term", None)], [])


async def test_a_slow_handler_heartbeats_and_one_too_slow_is_retried() -> None:
    async def slow(delivery: Delivery[StringValue]) -> None:
        await asyncio.Event().wait()

    msg = _msg()
    # Heartbeats every ack_wait / 3 s; the handler is cut off at handler_timeout.
    await _consumer(slow, FakePublisher(), ack_wait=0.03, handler_timeout=0.2,
                    backoff_initial=0.5).process(msg)
    kinds = [kind for kind, _ in msg.actions]
    assert kinds[-1] == "nak" and msg.actions[-1][1] == 0.5
    assert kinds.count("in_progress") >= 1
    assert set(kinds[:-1]) == {"in_progress"}


async def test_a_handler_cancelled_at_stop_hands_the_message_back_at_once() -> None:
    started = asyncio.Event()

    async def slow(delivery: Delivery[StringValue]) -> None:
        started.set()
        await asyncio.Event().wait()

    msg = _msg()
    task = asyncio.create_task(_consumer(slow, FakePublisher()).process(msg))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert msg.actions == [("nak", None)]


def test_options_refuse_nonsense_and_backoff_is_capped() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        ConsumerOptions(max_in_flight=0)
    with pytest.raises(ValueError, match="ack_wait"):
        ConsumerOptions(ack_wait=0)
    for name, value in (("error_pause", 0), ("backoff_max", float("nan")),
                        ("backoff_initial", float("inf")), ("stop_grace", -1)):
        with pytest.raises(ValueError, match=name):
            ConsumerOptions(**{name: value})  # type: ignore[arg-type]
    # A retry delay that is no finite number falls back to the backoff.
    assert Retry("x", delay=float("nan")).delay is None
    assert Retry("x", delay=2.0).delay == 2.0
    options = ConsumerOptions(backoff_initial=1.0, backoff_max=60.0)
    assert [options.backoff(n) for n in (1, 2, 3, 7, 8, 10_000)] == [1, 2, 4, 60, 60, 60]


def test_extra_headers_cannot_override_the_id_or_type() -> None:
    headers = message_headers(
        StringValue(), msg_id="real", extra={"Nats-Msg-Id": "fake", "traceparent": "t"}
    )
    assert headers == {
        "Nats-Msg-Id": "real",
        "Content-Type": "application/protobuf",
        "Litho-Message-Type": "google.protobuf.StringValue",
        "traceparent": "t",
    }
