"""Durable JetStream pull consumers: at-least-once handling with bounded work.

A :class:`PullConsumer` binds to one durable consumer of a stream and hands
each message to a handler, never running more than ``max_in_flight`` handlers
at once (and never fetching more messages than it has free slots, so no
message waits in a local buffer while its ack timer runs). What happens to a
message depends on how its handler ends:

| handler                         | message                                              |
| ------------------------------- | ---------------------------------------------------- |
| returns                         | ``ack`` (only now: the side effect is done)          |
| raises :class:`Retry`           | ``nak`` with the given delay, or the backoff          |
| raises anything else            | ``nak`` with the backoff (logged with the traceback)  |
| raises :class:`Poison`          | ``term`` at once                                      |
| fails on delivery ``max_deliver`` | ``term``                                            |
| payload cannot be decoded       | ``term`` at once, handler not called                 |

Every ``term`` is logged and published as a ``MessageTerminated`` event on
``litho.events.v1.message.terminated``. The server-side ``max_deliver`` is one
more than ours: a message whose handler kills the worker (so no ``nak`` is
ever sent) comes back once more and is terminated without running the handler.
While a handler runs longer than a third of ``ack_wait``, the consumer tells
the server it is still working (``+WPI``), so slow work is not redelivered to
a second worker; ``handler_timeout`` bounds how long that can go on.

Handlers must be idempotent: a worker that dies after the side effect but
before its ack makes the message come back after ``ack_wait``.

:meth:`PullConsumer.stop` (or cancelling :meth:`PullConsumer.run`) stops
fetching, lets running handlers finish for up to ``stop_grace`` seconds, and
``nak``\\ s (without delay) those it had to cancel, so another worker picks
them up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

import nats.errors
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header, StatusCode

from litho import telemetry
from litho.events.v1 import events_pb2
from litho.logs import get_logger
from litho.messaging import HEADER_MESSAGE_TYPE, HEADER_MSG_ID, Publisher

log = get_logger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)

TERMINATED_SUBJECT = "litho.events.v1.message.terminated"
#: Longest ``reason`` text carried by a terminated event.
MAX_REASON_CHARS = 500


class Retry(Exception):
    """Raised by a handler: the side effect did not happen; deliver again later.

    ``delay`` (seconds) overrides the consumer's backoff for this attempt; it
    is still capped by ``backoff_max``.
    """

    def __init__(self, reason: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # A delay that is no finite number (nan, inf) means the backoff.
        self.delay = delay if delay is not None and math.isfinite(delay) else None


class Poison(Exception):
    """Raised by a handler or decoder: this message can never succeed; drop it."""


@dataclass(frozen=True)
class Delivery(Generic[T]):
    """One delivered message, decoded, as a handler sees it."""

    subject: str
    payload: T
    #: The message's headers, as published (see ``litho.messaging.message_headers``).
    headers: Mapping[str, str]
    msg_id: str | None
    stream: str
    consumer: str
    stream_sequence: int
    #: 1 on the first delivery, 2 on the first redelivery, …
    deliveries: int


Handler = Callable[[Delivery[T]], Awaitable[None]]
#: Turns a message's bytes (and headers) into a payload; raises to mark it poison.
Decoder = Callable[[bytes, Mapping[str, str]], T]


def proto_decoder(message_type: type[M]) -> Decoder[M]:
    """Decode payloads of one proto type; a message published as another
    type (its ``Litho-Message-Type`` header) or unparseable bytes are poison."""
    full_name = message_type.DESCRIPTOR.full_name

    def decode(data: bytes, headers: Mapping[str, str]) -> M:
        published_as = headers.get(HEADER_MESSAGE_TYPE)
        if published_as is not None and published_as != full_name:
            raise Poison(f"expected a {full_name}, got a {published_as}")
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            raise Poison(f"not a valid {full_name}: {exc}") from exc

    return decode


@dataclass(frozen=True)
class ConsumerOptions:
    """Every number of a consumer; services map these to their settings."""

    #: Handlers running at once in this process; also the most one fetch asks for.
    max_in_flight: int = 16
    #: Messages delivered and not yet acked across *every* worker of the
    #: durable consumer (the server stops delivering at this bound).
    max_ack_pending: int = 256
    #: Most messages one fetch asks for (never more than the free slots).
    fetch_batch: int = 16
    #: Seconds one fetch waits on the server for messages (a long poll).
    fetch_timeout: float = 5.0
    #: Seconds the server waits for an ack before delivering again.
    ack_wait: float = 30.0
    #: Deliveries a message gets before it is terminated.
    max_deliver: int = 5
    #: ``nak`` delay after the n-th failure: ``backoff_initial * 2**(n-1)``,
    #: at most ``backoff_max`` seconds.
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: Seconds a handler may run (heartbeats keep the message meanwhile).
    handler_timeout: float = 300.0
    #: Seconds running handlers get to finish when the consumer stops.
    stop_grace: float = 30.0
    #: Seconds to wait after a failed fetch (server away) before the next.
    error_pause: float = 1.0
    #: Seconds to wait for the server to confirm an ack.
    ack_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_ack_pending", "fetch_batch", "max_deliver"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConsumerOptions.{name} must be at least 1")
        for name in ("fetch_timeout", "ack_wait", "handler_timeout", "ack_timeout",
                     "error_pause", "backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ConsumerOptions.{name} must be a positive number")
        if not (math.isfinite(self.stop_grace) and self.stop_grace >= 0):
            raise ValueError("ConsumerOptions.stop_grace must be a number, at least 0")

    @property
    def progress_interval(self) -> float:
        """Seconds between ``+WPI`` heartbeats of a running handler."""
        return self.ack_wait / 3

    def backoff(self, failures: int) -> float:
        """Delay before the next delivery after ``failures`` failed attempts."""
        exponent = min(max(failures - 1, 0), 32)
        return min(self.backoff_max, self.backoff_initial * 2.0**exponent)


class _Metadata(Protocol):
    @property
    def num_delivered(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def consumer(self) -> str: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def sequence(self) -> _Sequence: ...


class _Sequence(Protocol):
    @property
    def stream(self) -> int: ...


class EventPublisher(Protocol):
    """Where terminated events go (``litho.messaging.Publisher``)."""

    async def publish(
        self, subject: str, message: Message, *, msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> object: ...


class JsMessage(Protocol):
    """The part of ``nats.aio.msg.Msg`` a consumer uses (a port for unit tests)."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def headers(self) -> dict[str, str] | None: ...
    @property
    def metadata(self) -> _Metadata: ...
    async def ack_sync(self, timeout: float = 1.0) -> object: ...  # noqa: ASYNC109 - nats-py's
    async def nak(self, delay: int | float | None = None) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


def consumer_config(
    durable: str, subjects: Sequence[str], options: ConsumerOptions
) -> ConsumerConfig:
    """The server-side config of a durable pull consumer with ``options``."""
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=options.ack_wait,
        # One spare delivery: see the module docstring.
        max_deliver=options.max_deliver + 1,
        max_ack_pending=options.max_ack_pending,
        filter_subjects=list(subjects) or None,
    )


class PullConsumer(Generic[T]):
    """One worker of the durable pull consumer ``durable`` on ``stream``.

    Several workers (in one process or many) may share a durable consumer;
    on a work-queue stream each message goes to exactly one of them.
    """

    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        durable: str,
        subjects: Sequence[str],
        handler: Handler[T],
        decode: Decoder[T],
        options: ConsumerOptions | None = None,
        publisher: EventPublisher | None = None,
        api_prefix: str = "$JS.API",
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(prefix=api_prefix)
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.stream = stream
        self.durable = durable
        self.subjects = tuple(subjects)
        self._handler = handler
        self._decode = decode
        self.options = options or ConsumerOptions()
        self._publisher: EventPublisher = publisher or Publisher(self._js)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def ensure(self) -> None:
        """Create the durable consumer, or update its config (idempotent)."""
        await self._js.add_consumer(
            self.stream, consumer_config(self.durable, self.subjects, self.options)
        )

    def stop(self) -> None:
        """Stop fetching; :meth:`run` returns once running handlers are done."""
        self._stopping.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PullConsumer[T]]:
        """Ensure the consumer and run it in a task until the block exits
        (for a service's exit stack)."""
        await self.ensure()
        task = asyncio.create_task(self.run(), name=f"consumer {self.stream}/{self.durable}")
        try:
            yield self
        finally:
            self.stop()
            await task

    async def run(self) -> None:
        """Pull and handle messages until :meth:`stop` or cancellation.

        Call :meth:`ensure` first (once per deployment is enough).

        One pull request is outstanding at a time, asking for at most the free
        handler slots (and ``fetch_batch``); each message starts its handler
        the moment it arrives, while the request's remaining credit waits on
        the server for more. (nats-py's ``fetch`` would hold a partial batch
        back until the batch is full or the request expires, leaving slots
        idle while the held messages' ack timers run.)
        """
        sub = await self._nc.subscribe(self._nc.new_inbox())
        log.info("consumer started", stream=self.stream, consumer=self.durable)
        credit = 0
        expires_at = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                if credit <= 0 or loop.time() > expires_at:
                    free = await self._wait_for_slot()
                    if free == 0:
                        break
                    credit = min(free, self.options.fetch_batch)
                    if not await self._pull(sub.subject, credit):
                        credit = 0
                        await self._pause()
                        continue
                    # The server ends the request with a 408 at expiry; the
                    # margin only matters if that never comes (a restart).
                    expires_at = loop.time() + self.options.fetch_timeout + 1.0
                msg = await self._next(sub, expires_at - loop.time())
                if msg is None:
                    continue
                status = (msg.headers or {}).get(Header.STATUS)
                if status is not None:
                    credit = await self._on_status(status, msg, credit)
                    continue
                credit -= 1
                # Beyond the credit (a request left over from a reconnect) a
                # message still waits for a slot: the bound holds regardless.
                if await self._wait_for_slot() == 0:
                    await self._settle(msg.nak(), "nak", msg)
                    continue
                self._start(msg)
        finally:
            # Also on cancellation: no new pulls, running handlers finish.
            # Unsubscribing withdraws the outstanding pull request, so the
            # server hands nothing more to a worker that will not handle it;
            # acks go to each message's own reply subject.
            self._stopping.set()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await self._finish_in_flight()
            log.info("consumer stopped", stream=self.stream, consumer=self.durable)

    async def _pull(self, inbox: str, batch: int) -> bool:
        request = {"batch": batch, "expires": int(self.options.fetch_timeout * 1e9)}
        try:
            await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=inbox)
        except nats.errors.Error as exc:
            log.warning("pull request failed", stream=self.stream, consumer=self.durable,
                        error=str(exc) or type(exc).__name__)
            return False
        return True

    async def _next(self, sub: Subscription, wait: float) -> Msg | None:
        """The next message on the pull inbox; None on timeout or stop."""
        if wait <= 0:
            return None
        get = asyncio.ensure_future(sub.next_msg(timeout=wait))
        if not await _wait_first({get}, self._stopping):
            get.cancel()
            with contextlib.suppress(BaseException):
                await get
            return None
        try:
            return get.result()
        except TimeoutError:
            return None
        except nats.errors.Error as exc:
            log.warning("reading pulled messages failed", stream=self.stream,
                        consumer=self.durable, error=str(exc) or type(exc).__name__)
            await self._pause()
            return None

    async def _on_status(self, status: str, msg: Msg, credit: int) -> int:
        """The credit left after a status message on the pull inbox."""
        if status == StatusCode.CONTROL_MESSAGE:  # an idle heartbeat
            return credit
        if status in (StatusCode.REQUEST_TIMEOUT, StatusCode.NO_MESSAGES):
            return 0  # the request ended; ask again
        # 409 (consumer deleted, too many waiting requests, …) or 503 (no
        # JetStream): the request is over, and asking again at once would spin.
        description = (msg.headers or {}).get(Header.DESCRIPTION, "")
        log.warning("pull request refused; pausing", stream=self.stream,
                    consumer=self.durable, status=status, description=description)
        await self._pause()
        return 0

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.options.error_pause)

    async def _wait_for_slot(self) -> int:
        """Free handler slots (0 once stopping)."""
        while len(self._tasks) >= self.options.max_in_flight:
            if not await _wait_first(set(self._tasks), self._stopping):
                return 0
        if self._stopping.is_set():
            return 0
        return self.options.max_in_flight - len(self._tasks)

    def _start(self, msg: JsMessage) -> None:
        task = asyncio.create_task(self.process(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_in_flight(self) -> None:
        if not self._tasks:
            return
        tasks = set(self._tasks)
        _, late = await asyncio.wait(tasks, timeout=self.options.stop_grace)
        for task in late:
            task.cancel()
        if late:
            log.warning("handlers cancelled at stop", stream=self.stream,
                        consumer=self.durable, count=len(late))
            await asyncio.wait(late)

    async def process(self, msg: JsMessage) -> None:
        """Decode, handle, and settle one message (ack, nak or term), inside a
        CONSUMER span that continues the publisher's trace (so a termination
        event is in the message's trace too)."""
        meta = msg.metadata
        headers: Mapping[str, str] = MappingProxyType(dict(msg.headers or {}))
        with telemetry.consume_span(
            msg.subject, headers, consumer=meta.consumer,
            message_id=headers.get(HEADER_MSG_ID, ""), delivery=meta.num_delivered,
        ):
            await self._process(msg, headers)

    async def _process(self, msg: JsMessage, headers: Mapping[str, str]) -> None:
        meta = msg.metadata
        if meta.num_delivered > self.options.max_deliver:
            await self._terminate(msg, headers, (
                f"delivered {meta.num_delivered} times; the handler never finished "
                f"(did it stop the worker?)"
            ))
            return
        try:
            payload = self._decode(msg.data, headers)
        except Exception as exc:
            await self._terminate(msg, headers, f"undecodable: {exc}")
            return
        delivery = Delivery(
            subject=msg.subject,
            payload=payload,
            headers=headers,
            msg_id=headers.get(HEADER_MSG_ID),
            stream=meta.stream,
            consumer=meta.consumer,
            stream_sequence=meta.sequence.stream,
            deliveries=meta.num_delivered,
        )
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        deadline = asyncio.timeout(self.options.handler_timeout)
        try:
            try:
                async with deadline:
                    await self._handle(delivery)
            finally:
                heartbeat.cancel()
        except Poison as exc:
            await self._terminate(msg, headers, f"poison: {exc}")
        except Retry as exc:
            await self._retry(msg, headers, exc.reason, exc.delay)
        except asyncio.CancelledError:
            # Cancelled at stop: hand the message back for another worker now.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                reason = f"handler ran over {self.options.handler_timeout} s (handler_timeout)"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            log.exception("handler failed", stream=meta.stream, consumer=meta.consumer,
                          subject=msg.subject, deliveries=meta.num_delivered)
            await self._retry(msg, headers, reason, None)
        else:
            # A confirmed ack: when process() returns, the server has it.
            await self._settle(msg.ack_sync(timeout=self.options.ack_timeout), "ack", msg)

    async def _handle(self, delivery: Delivery[T]) -> None:
        # The one place a delivered message reaches its handler (inside the
        # message's CONSUMER span, see process()).
        await self._handler(delivery)

    async def _heartbeat(self, msg: JsMessage) -> None:
        interval = self.options.progress_interval
        while True:
            await asyncio.sleep(interval)
            await self._settle(msg.in_progress(), "in_progress", msg)

    async def _retry(
        self, msg: JsMessage, headers: Mapping[str, str], reason: str, delay: float | None
    ) -> None:
        deliveries = msg.metadata.num_delivered
        if deliveries >= self.options.max_deliver:
            await self._terminate(msg, headers, (
                f"failed on delivery {deliveries} of {self.options.max_deliver} "
                f"(max_deliver): {reason}"
            ))
            return
        wait = self.options.backoff(deliveries) if delay is None else delay
        wait = min(max(wait, 0.0), self.options.backoff_max)
        log.info("message will be retried", stream=self.stream, consumer=self.durable,
                 subject=msg.subject, deliveries=deliveries, delay=wait, reason=reason)
        await self._settle(msg.nak(delay=wait), "nak", msg)

    async def _terminate(self, msg: JsMessage, headers: Mapping[str, str], reason: str) -> None:
        meta = msg.metadata
        reason = reason[:MAX_REASON_CHARS]
        log.warning("message terminated", stream=meta.stream, consumer=meta.consumer,
                    subject=msg.subject, stream_sequence=meta.sequence.stream,
                    deliveries=meta.num_delivered, reason=reason)
        # The event first: if the worker dies before the term, the message
        # comes back, is terminated again, and the event's id de-duplicates.
        if msg.subject != TERMINATED_SUBJECT:  # never a chain of events about events
            event = events_pb2.MessageTerminated(
                stream=meta.stream,
                consumer=meta.consumer,
                subject=msg.subject,
                stream_sequence=meta.sequence.stream,
                deliveries=meta.num_delivered,
                reason=reason,
                msg_id=headers.get(HEADER_MSG_ID, ""),
                message_type=headers.get(HEADER_MESSAGE_TYPE, ""),
                time=_now(),
            )
            try:
                await self._publisher.publish(
                    TERMINATED_SUBJECT, event,
                    msg_id=f"terminated:{meta.stream}:{meta.consumer}:{meta.sequence.stream}",
                )
            except Exception as exc:
                log.error("publishing a terminated event failed", subject=msg.subject,
                          error=str(exc))
        await self._settle(msg.term(), "term", msg)

    async def _settle(self, action: Awaitable[object], what: str, msg: JsMessage) -> None:
        # An ack, nak or term that cannot be sent (the connection is down)
        # only means the message comes back after ack_wait.
        try:
            await action
        except Exception as exc:
            log.warning("could not send to JetStream", action=what, subject=msg.subject,
                        error=str(exc) or type(exc).__name__)


async def _wait_first(tasks: Collection[asyncio.Future[Any]], stop: asyncio.Event) -> bool:
    """Wait until one of ``tasks`` is done (True) or ``stop`` is set (False)."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    return not stop.is_set() or any(t.done() for t in tasks)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts
