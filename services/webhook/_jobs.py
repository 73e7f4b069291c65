"""The NATS side: the fan-out consumer on LITHO_EVENTS, the delivery jobs on
LITHO_JOBS and their consumer.

A delivery is one job (``litho.jobs.v1.webhook.deliver``, ``Nats-Msg-Id``
``webhook-delivery:<delivery id>``) from its first attempt to its last: a
failed attempt ``nak``\\ s it with the schedule's delay, which the server
keeps (the message stays pending on the durable consumer, its redelivery
time stored with it), so a retry happens whether or not this process is
still running, or was restarted meanwhile. A waiting retry holds one of the
consumer's ``max_ack_pending`` (``LITHO_WEBHOOK_MAX_PENDING``).
"""

from __future__ import annotations

from collections.abc import Mapping

from nats.aio.client import Client

from litho import messaging
from litho.consumers import ConsumerOptions, Delivery, Poison, PullConsumer, Retry, proto_decoder
from litho.messaging import HEADER_MESSAGE_TYPE
from litho.streams import EVENTS_STREAM, JOBS_STREAM
from litho.webhook.v1 import webhook_pb2 as pb
from services.webhook import _events
from services.webhook._deliverer import Deliverer, RetryLater
from services.webhook._dispatch import Dispatcher
from services.webhook._model import Delivery as WebhookDelivery
from services.webhook._settings import WebhookSettings

DELIVER_SUBJECT = "litho.jobs.v1.webhook.deliver"
FANOUT_DURABLE = "webhook-fanout"
DELIVER_DURABLE = "webhook-deliver"
#: Deliveries of a job beyond the schedule's attempts, for those that never
#: reached a decision (a worker stopped or died mid-attempt).
SPARE_DELIVERIES = 5


class NatsJobQueue:
    def __init__(self, publisher: messaging.Publisher) -> None:
        self._publisher = publisher

    async def enqueue(self, delivery: WebhookDelivery) -> None:
        await self._publisher.publish(
            DELIVER_SUBJECT, pb.DeliveryJob(delivery_id=delivery.id, tenant_id=delivery.tenant_id),
            msg_id=f"webhook-delivery:{delivery.id}")


def delivery_options(settings: WebhookSettings) -> ConsumerOptions:
    delays = settings.retry_delays
    return ConsumerOptions(
        max_in_flight=settings.webhook_max_in_flight,
        max_ack_pending=settings.webhook_max_pending,
        fetch_batch=min(16, settings.webhook_max_in_flight),
        # An attempt is bounded by the timeout; heartbeats cover the rest.
        ack_wait=max(30.0, settings.webhook_timeout * 2),
        max_deliver=len(delays) + 1 + SPARE_DELIVERIES,
        # The schedule's and Retry-After's delays must not be cut short.
        backoff_max=max((*delays, settings.webhook_retry_after_max, 60.0)),
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
        try:
            await deliverer.attempt(delivery.payload.delivery_id)
        except RetryLater as exc:
            raise Retry(exc.reason, delay=exc.delay) from exc

    return PullConsumer(nc, stream=JOBS_STREAM, durable=DELIVER_DURABLE,
                        subjects=[DELIVER_SUBJECT], handler=on_job,
                        decode=proto_decoder(pb.DeliveryJob), options=options,
                        publisher=publisher)
