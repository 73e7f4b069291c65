"""The NATS adapter behind :class:`services.experiment._ports.EventSink`:
change notes on core NATS, counts on LITHO_COUNTS and winner_ready on
LITHO_EVENTS through :class:`litho.messaging.Publisher`."""

from __future__ import annotations

import uuid

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as Nats

from litho.events.v1 import events_pb2
from litho.messaging import Publisher
from litho.notes import send_note
from litho.streams import EXPERIMENT_CHANGED_SUBJECT, EXPERIMENT_COUNT_SUBJECT
from services.experiment._ports import Count, WinnerReady

WINNER_READY_SUBJECT = "litho.events.v1.experiment.winner_ready"
#: How long a change note may wait for the server to have it.


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def count_message(count: Count) -> events_pb2.ExperimentCount:
    return events_pb2.ExperimentCount(
        tenant_id=count.tenant_id, experiment_id=count.experiment_id,
        variant_id=count.variant_id, kind=count.kind, time=_timestamp(count.at))


def count_msg_id(count: Count) -> str:
    """``count:<tenant>:<experiment>:<event id>`` for an event the caller
    named (JetStream drops a second publish of it within the stream's
    duplicate window), else ``count:<random>``."""
    if count.event_id:
        return f"count:{count.tenant_id}:{count.experiment_id}:{count.event_id}"
    return f"count:{uuid.uuid4().hex}"


def winner_ready_msg_id(experiment_id: str) -> str:
    return f"winner-ready:{experiment_id}"


class NatsExperimentEvents:
    """Publishes and waits for the stream's ack. Change notes are core NATS,
    flushed to the server before the write answers."""

    def __init__(self, publisher: Publisher, nc: Nats) -> None:
        self._publisher = publisher
        self._nc = nc

    async def changed(self, tenant_handle: str, slug: str) -> None:
        await send_note(self._nc, EXPERIMENT_CHANGED_SUBJECT, f"{tenant_handle}/{slug}")

    async def count(self, count: Count) -> None:
        await self._publisher.publish(EXPERIMENT_COUNT_SUBJECT, count_message(count),
                                      msg_id=count_msg_id(count))

    async def winner_ready(self, event: WinnerReady) -> None:
        await self._publisher.publish(WINNER_READY_SUBJECT, events_pb2.ExperimentWinnerReady(
            experiment_id=event.experiment_id, tenant_id=event.tenant_id, slug=event.slug,
            variant_id=event.variant_id, probability_to_be_best=event.probability_to_be_best,
            impressions=event.impressions, time=_timestamp(event.at)),
            msg_id=winner_ready_msg_id(event.experiment_id))
