"""Fan-out: one event becomes one delivery per matching subscription (and
one for the batch's own webhook), each queued for :mod:`._deliverer`.

A delivery's id is derived from the event's id and its target, so an event
handled twice (redelivered after a crash before its ack) finds its
deliveries stored and makes no second one.
"""

from __future__ import annotations

from services.webhook._events import Event
from services.webhook._model import (
    Delivery,
    DeliveryStatus,
    batch_webhook_id,
    event_delivery_id,
    event_message_id,
)
from services.webhook._service import Clock, JobQueue, Stores, utc_now


class Dispatcher:
    def __init__(self, stores: Stores, jobs: JobQueue, *, max_subscriptions: int,
                 clock: Clock = utc_now) -> None:
        self._stores = stores
        self._jobs = jobs
        self._max_subscriptions = max_subscriptions
        self._clock = clock

    async def handle(self, event: Event, event_id: str) -> list[str]:
        """Store and queue the event's deliveries; their ids."""
        if not event.tenant_id:
            return []
        made = []
        subscriptions = await self._stores.subscriptions.active_for(
            event.tenant_id, event.type, self._max_subscriptions)
        for subscription in subscriptions:
            if subscription.filters.matches(event):
                made.append(await self._deliver(event, event_id, subscription.id, ""))
        if event.batch_id:
            hook_id = batch_webhook_id(event.tenant_id, event.batch_id)
            hook = await self._stores.batch_webhooks.find(hook_id, self._clock())
            if hook is not None:
                made.append(await self._deliver(event, event_id, "", hook.id))
        return made

    async def _deliver(self, event: Event, event_id: str, subscription_id: str,
                       hook_id: str) -> str:
        target = subscription_id or hook_id
        now = self._clock()
        delivery = Delivery(
            id=event_delivery_id(event_id, target, event.time), tenant_id=event.tenant_id,
            subscription_id=subscription_id, batch_webhook_id=hook_id, event=event.type,
            message_id=event_message_id(event_id, target), body=event.body(now),
            status=DeliveryStatus.PENDING, attempts=0, last_response_code=0,
            last_duration_ms=0, last_error="", next_retry_time=None, delivered_time=None,
            create_time=now, redelivery_of="")
        if await self._stores.deliveries.insert(delivery):
            # Not queued (NATS away): the event is handled again, and comes here.
            await self._jobs.enqueue(delivery)
            return delivery.id
        stored = await self._stores.deliveries.find(delivery.id)
        # Stored before, and never attempted: the first handling may have died
        # before queueing it. Queued twice is harmless: the job's id is the
        # delivery's, so the stream keeps one inside its duplicate window.
        if stored is not None and stored.status is DeliveryStatus.PENDING and not stored.attempts:
            await self._jobs.enqueue(stored)
        return delivery.id
