"""The ``experiment-counter`` consumer: a durable pull consumer on
LITHO_COUNTS (a work queue) filtered to ``litho.counts.v1.experiment``. Every
replica runs a worker of it; each handler hands its delivery to the
:class:`services.experiment._counter.Aggregator` and returns (so the message
is acked) only once a flush stored it.

A flush that fails (the store away) never costs a count: its deliveries are
retried (``Retry``, the backoff capped at :data:`BACKOFF_MAX` seconds) for as
long as :data:`MAX_DELIVER` deliveries take, weeks. Only a message that can
never be counted (undecodable, or not a count) is terminated.
"""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from litho import messaging
from litho.consumers import (
    ConsumerOptions,
    Delivery,
    Handler,
    Poison,
    PullConsumer,
    Retry,
    proto_decoder,
)
from litho.events.v1 import events_pb2
from litho.streams import COUNTS_STREAM, EXPERIMENT_COUNT_SUBJECT
from services.experiment._counter import KINDS, Aggregator, Delivered, Floor
from services.experiment._ports import Count
from services.experiment._settings import ExperimentSettings

DURABLE = "experiment-counter"
#: Deliveries of one message before it is terminated: without a practical
#: limit (at the capped backoff, about eleven days of failed flushes).
MAX_DELIVER: Final = 100_000
BACKOFF_INITIAL: Final = 0.5
BACKOFF_MAX: Final = 10.0


def options(settings: ExperimentSettings) -> ConsumerOptions:
    in_flight = settings.experiment_counter_max_in_flight
    return ConsumerOptions(
        max_in_flight=in_flight,
        max_ack_pending=max(settings.experiment_counter_max_ack_pending, in_flight),
        fetch_batch=min(in_flight, 256),
        ack_wait=settings.experiment_counter_ack_wait,
        # A flush that fails (the store away) is retried soon, and for good.
        max_deliver=MAX_DELIVER, backoff_initial=BACKOFF_INITIAL, backoff_max=BACKOFF_MAX,
        stop_grace=max(5.0, 4 * settings.experiment_count_flush_seconds),
    )


CountHandler = Handler[events_pb2.ExperimentCount]


def count_handler(aggregator: Aggregator) -> CountHandler:
    """Hands each delivery to ``aggregator``; returns once a flush stored it."""
    async def on_count(delivery: Delivery[events_pb2.ExperimentCount]) -> None:
        event = delivery.payload
        if event.kind not in KINDS or not event.experiment_id or not event.variant_id:
            raise Poison(f"not a count: kind {event.kind[:40]!r}, experiment "
                         f"{event.experiment_id[:100]!r}, variant {event.variant_id[:100]!r}")
        try:
            await aggregator.add(Delivered(delivery.stream_sequence, Count(
                tenant_id=event.tenant_id, experiment_id=event.experiment_id,
                variant_id=event.variant_id, kind=event.kind,
                at=event.time.ToNanoseconds() / 1e9)))
        except Exception as exc:
            # The flush failed (logged once by the aggregator): come again.
            raise Retry(f"counter flush failed: {str(exc)[:200] or type(exc).__name__}"
                        ) from exc

    return on_count


def consumer(nc: Client, handler: CountHandler, consumer_options: ConsumerOptions,
             publisher: messaging.Publisher) -> PullConsumer[events_pb2.ExperimentCount]:
    return PullConsumer(nc, stream=COUNTS_STREAM, durable=DURABLE,
                        subjects=[EXPERIMENT_COUNT_SUBJECT], handler=handler,
                        decode=proto_decoder(events_pb2.ExperimentCount),
                        options=consumer_options, publisher=publisher)


class NatsAckFloor:
    """:data:`services.experiment._counter.AckFloor` of the durable consumer:
    its ack floor's stream sequence (``consumer_info``) and LITHO_COUNTS's
    creation time (``stream_info``), which tells a stream deleted and created
    again from the one the counter documents were written with."""

    def __init__(self, nc: Client, *, durable: str = DURABLE) -> None:
        self._js = nc.jetstream()
        self._durable = durable

    async def __call__(self) -> Floor:
        stream = await self._js.stream_info(COUNTS_STREAM)
        info = await self._js.consumer_info(COUNTS_STREAM, self._durable)
        created = stream.created.isoformat() if stream.created is not None else ""
        return Floor(int(info.ack_floor.stream_seq) if info.ack_floor else 0, created)
