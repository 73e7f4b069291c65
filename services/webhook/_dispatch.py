"""Fan-out: one event becomes one delivery per matching subscription (and
one for the batch's own webhook), each queued for :mod:`._deliverer`.

A delivery's id is derived from the event's id, its target and its time, so
an event handled twice (redelivered after a crash before its ack) finds its
deliveries stored and makes no second one. An event without a time gets the
time of its first handling, and is found again by its ``webhook-id``.

A tenant with ``LITHO_WEBHOOK_MAX_PENDING_PER_TENANT`` deliveries pending
gets its new deliveries logged as failed at once, never queued.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from services.webhook._events import Event
from services.webhook._model import (
    Delivery,
    DeliveryStatus,
    batch_webhook_id,
    event_delivery_id,
    event_message_id,
)
from services.webhook._service import (
    DEFAULT_QUEUE_LEASE,
    Clock,
    JobQueue,
    Stores,
    over_pending_cap,
    queue,
    utc_now,
)


class Dispatcher:
    def __init__(self, stores: Stores, jobs: JobQueue, *, max_subscriptions: int,
                 max_pending_per_tenant: int = 1000, queue_lease: float = DEFAULT_QUEUE_LEASE,
                 clock: Clock = utc_now) -> None:
        self._stores = stores
        self._jobs = jobs
        self._max_subscriptions = max_subscriptions
        self._max_pending = max_pending_per_tenant
        self._queue_lease = queue_lease
        self._clock = clock

    async def handle(self, event: Event, event_id: str) -> list[str]:
        """Store and queue the event's deliveries; their ids."""
        if not event.tenant_id:
            return []
        targets: list[tuple[str, str]] = []
        subscriptions = await self._stores.subscriptions.active_for(
            event.tenant_id, event.type, self._max_subscriptions)
        for subscription in subscriptions:
            if subscription.filters.matches(event):
                targets.append((subscription.id, ""))
        if event.batch_id:
            hook_id = batch_webhook_id(event.tenant_id, event.batch_id)
            hook = await self._stores.batch_webhooks.find(hook_id, self._clock())
            if hook is not None:
                targets.append(("", hook.id))
        if not targets:
            return []
        pending = await self._stores.deliveries.pending_count(event.tenant_id)
        made = []
        for subscription_id, hook_id in targets:
            delivery_id, new = await self._deliver(event, event_id, subscription_id, hook_id,
                                                   over_cap=pending >= self._max_pending,
                                                   pending=pending)
            made.append(delivery_id)
            pending += new
        return made

    async def _deliver(self, event: Event, event_id: str, subscription_id: str,
                       hook_id: str, *, over_cap: bool, pending: int) -> tuple[str, int]:
        """The delivery's id, and 1 if a pending one was made."""
        target = subscription_id or hook_id
        now = self._clock()
        message_id = event_message_id(event_id, target)
        if event.time is None:
            stored = await self._stores.deliveries.find_event_delivery(message_id)
            if stored is not None:
                await self._requeue(stored.id)
                return stored.id, 0
        delivery = Delivery(
            id=event_delivery_id(event_id, target, event.time or now), tenant_id=event.tenant_id,
            subscription_id=subscription_id, batch_webhook_id=hook_id, event=event.type,
            message_id=message_id, body=event.body(now),
            status=DeliveryStatus.PENDING, attempts=0, last_response_code=0,
            last_duration_ms=0, last_error="", next_retry_time=None, delivered_time=None,
            create_time=now, redelivery_of="")
        if over_cap:
            failed = replace(delivery, status=DeliveryStatus.FAILED,
                             last_error=over_pending_cap(event.tenant_id, pending,
                                                         self._max_pending))
            await self._stores.deliveries.insert(failed)
            return delivery.id, 0
        lease = now + timedelta(seconds=self._queue_lease)
        if await self._stores.deliveries.insert(delivery, queued_until=lease):
            # Not queued (NATS away): given back to the scheduler, which queues it.
            await queue(self._stores, self._jobs, delivery)
            return delivery.id, 1
        # Stored before: queued again only if nobody holds it (the first
        # handling died before queueing it, or its job was lost).
        await self._requeue(delivery.id)
        return delivery.id, 0

    async def _requeue(self, delivery_id: str) -> None:
        now = self._clock()
        claimed = await self._stores.deliveries.claim(
            delivery_id, now, now + timedelta(seconds=self._queue_lease))
        if claimed is not None:
            await queue(self._stores, self._jobs, claimed)
