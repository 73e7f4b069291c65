"""The NATS side: the fan-out consumer on LITHO_EVENTS, the delivery jobs on
LITHO_JOBS and their consumer.

An attempt is one job (``litho.jobs.v1.webhook.deliver``, ``Nats-Msg-Id``
``webhook-delivery:<delivery id>:<attempts made>``), acked once the attempt
is logged, whatever it got. A failed attempt stores the delivery's next
attempt time in the document store; the scheduler (run by every replica,
each claim atomic) queues a new job when it comes, so a retry happens
whether or not this process is still running, and a delivery waiting for
its retry holds none of the consumer's ``max_ack_pending``
(``LITHO_WEBHOOK_MAX_PENDING``): one tenant's failing receiver cannot
starve the others.
"""

from __future__ import annotations

from collections.abc import Mapping

from nats.aio.client import Client

from litho import messaging
from litho.consumers import ConsumerOptions, Delivery, Poison, PullConsumer, proto_decoder
from litho.messaging import HEADER_MESSAGE_TYPE
from litho.streams import EVENTS_STREAM, JOBS_STREAM
from litho.webhook.v1 import webhook_pb2 as pb
from services.webhook import _events
from services.webhook._deliverer import Deliverer
from services.webhook._dispatch import Dispatcher
from services.webhook._model import Delivery as WebhookDelivery
from services.webhook._settings import WebhookSettings

DELIVER_SUBJECT = "litho.jobs.v1.webhook.deliver"
FANOUT_DURABLE = "webhook-fanout"
DELIVER_DURABLE = "webhook-deliver"
#: Deliveries of one job, for attempts that never reached a decision (a
#: worker stopped or died mid-attempt, the store was away). A job past them is
#: terminated; its delivery is queued again by the scheduler once its lease ends.
MAX_JOB_DELIVERIES = 5
JOB_ID_PREFIX = "webhook-delivery:"


def job_id(delivery_id: str, attempts: int) -> str:
    return f"{JOB_ID_PREFIX}{delivery_id}:{attempts}"


def attempt_of(msg_id: str | None, delivery_id: str) -> int | None:
    """The attempts made before the job named ``msg_id`` (None if it says none)."""
    prefix = f"{JOB_ID_PREFIX}{delivery_id}:"
    if msg_id and msg_id.startswith(prefix):
        tail = msg_id.removeprefix(prefix)
        if tail.isascii() and tail.isdigit() and len(tail) < 10:
            return int(tail)
    return None


class NatsJobQueue:
    def __init__(self, publisher: messaging.Publisher) -> None:
        self._publisher = publisher

    async def enqueue(self, delivery: WebhookDelivery) -> None:
        await self._publisher.publish(
            DELIVER_SUBJECT, pb.DeliveryJob(delivery_id=delivery.id, tenant_id=delivery.tenant_id),
            msg_id=job_id(delivery.id, delivery.attempts))


def delivery_options(settings: WebhookSettings) -> ConsumerOptions:
    return ConsumerOptions(
        max_in_flight=settings.webhook_max_in_flight,
        max_ack_pending=settings.webhook_max_pending,
        fetch_batch=min(16, settings.webhook_max_in_flight),
        # An attempt is bounded by the timeout; heartbeats cover the rest.
        ack_wait=max(30.0, settings.webhook_timeout * 2),
        # A job is one attempt: redelivered only when its handling broke
        # (the retries of the schedule are new jobs, queued by the scheduler).
        max_deliver=MAX_JOB_DELIVERIES,
        handler_timeout=settings.webhook_timeout + 60.0,
        stop_grace=min(settings.shutdown_grace, settings.webhook_timeout + 5.0),
    )


def fanout_options(settings: WebhookSettings) -> ConsumerOptions:
    return ConsumerOptions(max_deliver=10, stop_grace=min(settings.shutdown_grace, 10.0))


def _raw(data: bytes, headers: Mapping[str, str]) -> bytes:
    # Several payload types share the consumer: the subject says which.
    return data


def fanout_consumer(nc: Client, dispatcher: Dispatcher, context: _events.Context,
                    options: ConsumerOptions,
                    publisher: messaging.Publisher) -> PullConsumer[bytes]:
    async def on_event(delivery: Delivery[bytes]) -> None:
        kind = _events.BY_SUBJECT.get(delivery.subject)
        if kind is None:
            raise Poison(f"no webhook event is published on {delivery.subject}")
        published_as = delivery.headers.get(HEADER_MESSAGE_TYPE)
        expected = kind.message.DESCRIPTOR.full_name
        if published_as is not None and published_as != expected:
            raise Poison(f"expected a {expected}, got a {published_as}")
        try:
            event = kind.parse(delivery.payload, context)
        except ValueError as exc:
            raise Poison(str(exc)) from exc
        event_id = delivery.msg_id or f"{delivery.stream}:{delivery.stream_sequence}"
        await dispatcher.handle(event, event_id)

    return PullConsumer(nc, stream=EVENTS_STREAM, durable=FANOUT_DURABLE,
                        subjects=_events.subjects(), handler=on_event, decode=_raw,
                        options=options, publisher=publisher)


def delivery_consumer(nc: Client, deliverer: Deliverer, options: ConsumerOptions,
                      publisher: messaging.Publisher) -> PullConsumer[pb.DeliveryJob]:
    async def on_job(delivery: Delivery[pb.DeliveryJob]) -> None:
        delivery_id = delivery.payload.delivery_id
        await deliverer.attempt(delivery_id, attempt_of(delivery.msg_id, delivery_id))

    return PullConsumer(nc, stream=JOBS_STREAM, durable=DELIVER_DURABLE,
                        subjects=[DELIVER_SUBJECT], handler=on_job,
                        decode=proto_decoder(pb.DeliveryJob), options=options,
                        publisher=publisher)
