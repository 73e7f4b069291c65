"""NATS adapters of the batch ports: items on the jobs work queue, the
finished event, and the consumer every replica runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from litho import messaging
from litho.consumers import ConsumerOptions, Delivery, PullConsumer, Retry, proto_decoder
from litho.errors import LithoError
from litho.events.v1 import events_pb2
from litho.renderer.v1 import renderer_pb2 as pb
from services.renderer._batches import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    Batches,
    Item,
    RetryLater,
    timestamp,
)

ITEMS_SUBJECT = "litho.jobs.v1.render.batch"
DURABLE = "renderer-batch"
SUBJECT_COMPLETED = "litho.events.v1.batch.completed"
SUBJECT_FAILED = "litho.events.v1.batch.failed"
#: Publishes awaiting their ack at once while a batch is queued.
_PIPELINE = 256


class NatsItemQueue:
    def __init__(self, publisher: messaging.Publisher) -> None:
        self._publisher = publisher

    async def publish(self, items: Sequence[pb.BatchItem]) -> None:
        # The tenant is in the id: de-duplication ids are stream-wide.
        for start in range(0, len(items), _PIPELINE):
            try:
                async with asyncio.TaskGroup() as group:
                    for item in items[start:start + _PIPELINE]:
                        group.create_task(self._publisher.publish(
                            ITEMS_SUBJECT, item,
                            msg_id=f"batch-item:{item.tenant_id}:{item.batch_id}:{item.index}"))
            except* LithoError as failed:
                raise failed.exceptions[0] from None  # the first refusal says why


def finished_event(batch: dict[str, Any]) -> events_pb2.BatchFinished:
    counts = batch.get("counts") or {}
    return events_pb2.BatchFinished(
        batch_id=batch["_id"], tenant_id=batch["tenantId"], template_id=batch["templateId"],
        template_version=batch["version"], status=batch["status"],
        total_items=batch["totalItems"], completed_items=counts.get(SUCCEEDED, 0),
        failed_items=counts.get(FAILED, 0), cancelled_items=counts.get(CANCELLED, 0),
        metadata_json=json.dumps(batch.get("metadata") or {}),
        created_at=timestamp(batch["createdAt"]),
        completed_at=timestamp(batch.get("completedAt")),
    )


class NatsBatchEvents:
    def __init__(self, publisher: messaging.Publisher) -> None:
        self._publisher = publisher

    async def finished(self, batch: dict[str, Any]) -> None:
        subject = SUBJECT_FAILED if batch["status"] in (FAILED, CANCELLED) else SUBJECT_COMPLETED
        await self._publisher.publish(subject, finished_event(batch),
                                      msg_id=f"batch-finished:{batch['tenantId']}:{batch['_id']}")


def consumer(nc: Any, batches: Batches, options: ConsumerOptions,
             publisher: messaging.Publisher) -> PullConsumer[pb.BatchItem]:
    """The work-queue consumer one replica runs; all replicas share it."""

    # One delivery more than the item's tries: a replica that died rendering
    # it on its last try still leaves a delivery that records the failure.
    tries = options.max_deliver
    queue_options = replace(options, max_deliver=tries + 1)

    async def on_item(delivery: Delivery[pb.BatchItem]) -> None:
        if delivery.deliveries > tries:
            await batches.give_up(delivery.payload, f"no try of {tries} finished (did the "
                                                    "renderer die rendering it?)")
            return
        last = delivery.deliveries >= tries
        try:
            await batches.handle(Item(delivery.payload, last_delivery=last))
        except RetryLater as exc:
            raise Retry(exc.error.message,
                        delay=getattr(exc.error, "retry_after", None)) from exc
        except Exception as exc:
            if not last:
                raise  # nak with backoff: another try, maybe on another replica
            await batches.give_up(delivery.payload, f"{type(exc).__name__} on every try")

    return PullConsumer(nc, stream=messaging.JOBS_STREAM, durable=DURABLE,
                        subjects=[ITEMS_SUBJECT], handler=on_item,
                        decode=proto_decoder(pb.BatchItem), options=queue_options,
                        publisher=publisher)
