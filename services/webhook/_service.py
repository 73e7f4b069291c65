"""What the API does with subscriptions and their delivery logs, and a
batch's own webhook. No grpc or nats here: deliveries are queued through
the :class:`JobQueue` port."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from litho.errors import Conflict, FailedPrecondition, InvalidArgument, ResourceExhausted
from litho.logs import get_logger
from litho.outbound import AllowList
from services.webhook import _signing
from services.webhook._model import (
    MAX_BATCH_ID_CHARS,
    MAX_SECRET_CHARS,
    Delivery,
    DeliveryStatus,
    Filters,
    Limits,
    Subscription,
    SubscriptionChange,
    SubscriptionStatus,
    batch_webhook_id,
    check_description,
    check_event,
    check_filters,
    check_settable_status,
    check_target_url,
    check_tenant,
    invalid,
    new_delivery_id,
    new_subscription_id,
    page_size,
)
from services.webhook._store import (
    BatchWebhook,
    BatchWebhookStore,
    DeliveryStore,
    SubscriptionStore,
    stamp,
)

log = get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class JobQueue(Protocol):
    """Where a delivery goes to be attempted (``litho.jobs.v1.webhook.deliver``)."""

    async def enqueue(self, delivery: Delivery) -> None: ...


@dataclass(frozen=True)
class Stores:
    subscriptions: SubscriptionStore
    deliveries: DeliveryStore
    batch_webhooks: BatchWebhookStore

    async def prepare(self) -> None:
        await self.subscriptions.prepare()
        await self.deliveries.prepare()
        await self.batch_webhooks.prepare()


#: Seconds a claimed delivery's job has to start by default (``LITHO_WEBHOOK_QUEUE_LEASE``).
DEFAULT_QUEUE_LEASE = 300.0


async def queue(stores: Stores, jobs: JobQueue, delivery: Delivery) -> bool:
    """Queue the job of a delivery claimed for it; if that fails, give the
    delivery back to the scheduler (which queues it at its next look) and
    say so with False."""
    try:
        await jobs.enqueue(delivery)
    except Exception as exc:  # the scheduler takes over
        log.warning("webhook job not queued; the scheduler will", delivery=delivery.id,
                    error=str(exc) or type(exc).__name__)
        await stores.deliveries.unclaim(delivery.id)
        return False
    return True


def over_pending_cap(tenant_id: str, pending: int, cap: int) -> str:
    return (f"not attempted: tenant {tenant_id!r} has {pending} deliveries pending; the "
            f"limit is {cap} (LITHO_WEBHOOK_MAX_PENDING_PER_TENANT)")


class Scheduler:
    """Queues one job for each pending delivery whose next attempt is due and
    that nobody holds. Any number of replicas may run one: each claim is an
    atomic update with one winner. A tenant gets at most ``per_tenant`` jobs
    a look; its other due deliveries wait for the next look (pushed back by
    ``interval``), so one tenant's backlog does not fill the queue ahead of
    everyone else's."""

    def __init__(self, stores: Stores, jobs: JobQueue, *, queue_lease: float,
                 batch: int = 200, per_tenant: int = 8, interval: float = 1.0,
                 clock: Clock = utc_now) -> None:
        self._stores = stores
        self._jobs = jobs
        self._queue_lease = queue_lease
        self._batch = batch
        self._per_tenant = per_tenant
        self._interval = interval
        self._clock = clock

    @property
    def batch(self) -> int:
        return self._batch

    async def tick(self) -> int:
        """Queue what is due (at most ``batch``); how many were queued."""
        queued = 0
        per_tenant: Counter[str] = Counter()
        for _ in range(self._batch):
            now = self._clock()
            delivery = await self._stores.deliveries.claim_due(
                now, now + timedelta(seconds=self._queue_lease))
            if delivery is None:
                break
            if per_tenant[delivery.tenant_id] >= self._per_tenant:
                await self._stores.deliveries.unclaim(
                    delivery.id, due=now + timedelta(seconds=self._interval))
                continue
            if not await queue(self._stores, self._jobs, delivery):
                break  # NATS is away: the next look tries again
            per_tenant[delivery.tenant_id] += 1
            queued += 1
        return queued


class Webhooks:
    def __init__(self, stores: Stores, jobs: JobQueue, *, limits: Limits, allow: AllowList,
                 batch_retention: float, delivery_retention: float,
                 rotation_overlap: float = 24 * 3600.0,
                 queue_lease: float = DEFAULT_QUEUE_LEASE, clock: Clock = utc_now) -> None:
        self._stores = stores
        self._subs = stores.subscriptions
        self._deliveries = stores.deliveries
        self._jobs = jobs
        self._limits = limits
        self._allow = allow
        self._batch_retention = batch_retention
        self._delivery_retention = delivery_retention
        self._rotation_overlap = rotation_overlap
        self._queue_lease = queue_lease
        self._clock = clock

    # ------------------------------------------------------ subscriptions ----

    async def create(self, tenant_id: str, *, event: str, target_url: str, filters: Filters,
                     description: str) -> tuple[Subscription, str]:
        """The new subscription and its secret (never answered again)."""
        check_tenant(tenant_id)
        check_event(event)
        self._check_url(target_url)
        check_filters(filters)
        check_description(description, self._limits.max_description_chars)
        count = await self._subs.count(tenant_id)
        if count >= self._limits.max_subscriptions:
            raise self._too_many(count)
        now = self._clock()
        secret = _signing.new_secret()
        subscription = Subscription(
            id=new_subscription_id(), tenant_id=tenant_id, event=event, target_url=target_url,
            filters=filters, description=description, status=SubscriptionStatus.ACTIVE,
            status_reason="", consecutive_failures=0, secret=secret, create_time=now,
            update_time=now)
        refused = await self._subs.insert_within(subscription, self._limits.max_subscriptions)
        if refused:  # others were created meanwhile
            raise self._too_many(refused)
        log.info("webhook subscription created", tenant=tenant_id, subscription=subscription.id,
                 event_type=event)
        return subscription, secret

    def _too_many(self, count: int) -> InvalidArgument:
        return InvalidArgument(
            f"this tenant has {count} webhook subscriptions; the limit is "
            f"{self._limits.max_subscriptions} (LITHO_WEBHOOK_MAX_SUBSCRIPTIONS): "
            "delete one first")

    async def get(self, tenant_id: str, subscription_id: str) -> Subscription:
        check_tenant(tenant_id)
        return await self._subs.get(tenant_id, subscription_id)

    async def list_subscriptions(self, tenant_id: str, requested_size: int,
                   page_token: str) -> tuple[list[Subscription], str]:
        check_tenant(tenant_id)
        return await self._subs.page(tenant_id, page_size=page_size(requested_size),
                                     page_token=page_token)

    async def update(self, tenant_id: str, subscription_id: str,
                     change: SubscriptionChange) -> Subscription:
        check_tenant(tenant_id)
        fields: dict[str, Any] = {}
        if change.target_url is not None:
            fields["targetUrl"] = self._check_url(change.target_url)
        if change.filters is not None:
            filters = check_filters(change.filters)
            fields["filters"] = {"templateId": filters.template_id,
                                 "bindingId": filters.binding_id}
        if change.description is not None:
            fields["description"] = check_description(
                change.description, self._limits.max_description_chars)
        if change.status is not None:
            status = check_settable_status(change.status)
            current = await self._subs.get(tenant_id, subscription_id)
            if status is not current.status:
                fields["status"] = status.value
                # Set by hand: whatever stopped it is over, and it starts counting afresh.
                fields["statusReason"] = ""
                fields["consecutiveFailures"] = 0
            # Active again while active (or paused while paused) changes nothing:
            # the failure count keeps counting towards the pause.
        if not fields:
            return await self._subs.get(tenant_id, subscription_id)
        fields["updateTime"] = stamp(self._clock())
        return await self._subs.set(tenant_id, subscription_id, fields)

    async def delete(self, tenant_id: str, subscription_id: str) -> None:
        """The subscription and its delivery log; retries waiting for it end."""
        check_tenant(tenant_id)
        await self._subs.get(tenant_id, subscription_id)
        await self._subs.delete(tenant_id, subscription_id)
        await self._deliveries.delete_for(tenant_id, subscription_id)

    async def rotate_secret(self, tenant_id: str,
                            subscription_id: str) -> tuple[Subscription, str]:
        check_tenant(tenant_id)
        current = await self._subs.get(tenant_id, subscription_id)
        secret = _signing.new_secret()
        now = self._clock()
        # The old secret keeps signing (next to the new one) for the overlap.
        subscription = await self._subs.set(tenant_id, subscription_id, {
            "secret": secret, "previousSecret": current.secret,
            "previousSecretUntil": stamp(now + timedelta(seconds=self._rotation_overlap)),
            "updateTime": stamp(now)})
        log.info("webhook secret rotated", tenant=tenant_id, subscription=subscription_id)
        return subscription, secret

    # --------------------------------------------------------- deliveries ----

    async def deliveries(self, tenant_id: str, subscription_id: str, requested_size: int,
                         page_token: str) -> tuple[list[Delivery], str]:
        check_tenant(tenant_id)
        await self._subs.get(tenant_id, subscription_id)
        return await self._deliveries.page(tenant_id, subscription_id,
                                           page_size=page_size(requested_size),
                                           page_token=page_token)

    async def redeliver(self, tenant_id: str, subscription_id: str,
                        delivery_id: str) -> Delivery:
        """A new delivery of a logged delivery's body, with the same
        ``webhook-id``; refused (409) while the last redelivery of the same
        delivery is still pending, and (429) past the tenant's pending cap."""
        check_tenant(tenant_id)
        subscription = await self._subs.get(tenant_id, subscription_id)
        original = await self._deliveries.get(tenant_id, subscription_id, delivery_id)
        if subscription.status is not SubscriptionStatus.ACTIVE:
            raise FailedPrecondition(
                f"webhook subscription {subscription_id!r} is {subscription.status.value}; "
                "set its status to active first")
        previous = await self._deliveries.redelivery_of(original.id)
        if previous:
            last = await self._deliveries.find(previous)
            if last is not None and last.status is DeliveryStatus.PENDING:
                raise self._still_pending(original.id, previous)
        cap = self._limits.max_pending_per_tenant
        pending = await self._deliveries.pending_count(tenant_id)
        if pending >= cap:
            raise ResourceExhausted(
                f"tenant {tenant_id!r} has {pending} deliveries pending; the limit is {cap} "
                "(LITHO_WEBHOOK_MAX_PENDING_PER_TENANT): redeliver once some are settled",
                retry_after=60.0)
        now = self._clock()
        delivery = replace(
            original, id=new_delivery_id(now), status=DeliveryStatus.PENDING, attempts=0,
            last_response_code=0, last_duration_ms=0, last_error="", next_retry_time=None,
            delivered_time=None, create_time=now, redelivery_of=original.id)
        if not await self._deliveries.mark_redelivery(original.id, previous, delivery.id):
            raise self._still_pending(original.id, "")  # another redelivery won the race
        await self._deliveries.insert(
            delivery, queued_until=now + timedelta(seconds=self._queue_lease))
        await queue(self._stores, self._jobs, delivery)
        return delivery

    @staticmethod
    def _still_pending(original_id: str, redelivery_id: str) -> Conflict:
        which = f" ({redelivery_id})" if redelivery_id else ""
        return Conflict(f"a redelivery of delivery {original_id!r}{which} is still pending; "
                        "wait until it is delivered or failed")

    # ----------------------------------------------------- batch webhooks ----

    async def register_batch_webhook(self, tenant_id: str, batch_id: str, target_url: str,
                                     secret: str) -> None:
        """Deliver the batch's ``batch.completed`` or ``batch.failed`` to
        ``target_url`` once, signed with ``secret`` (``whsec_…``, derived from
        the API key by the gateway); registering again replaces."""
        check_tenant(tenant_id)
        if not batch_id or len(batch_id) > MAX_BATCH_ID_CHARS:
            raise invalid("batchId", f"is required, at most {MAX_BATCH_ID_CHARS} characters")
        self._check_url(target_url, field="webhookUrl")
        if not secret or len(secret) > MAX_SECRET_CHARS:
            raise invalid("secret", f"is required, at most {MAX_SECRET_CHARS} characters")
        try:
            _signing.check_batch_secret(secret)
        except ValueError as exc:
            raise invalid("secret", str(exc)) from exc
        now = self._clock()
        await self._stores.batch_webhooks.put(BatchWebhook(
            id=batch_webhook_id(tenant_id, batch_id), tenant_id=tenant_id, batch_id=batch_id,
            target_url=target_url, secret=secret,
            expires=now + timedelta(seconds=self._batch_retention)), now)

    async def sweep(self) -> tuple[int, int]:
        """Drop expired batch webhooks and deliveries past their retention."""
        now = self._clock()
        hooks = await self._stores.batch_webhooks.sweep(now)
        old = await self._deliveries.sweep(now - timedelta(seconds=self._delivery_retention))
        return hooks, old

    def _check_url(self, url: str, *, field: str = "targetUrl") -> str:
        return check_target_url(url, allow=self._allow, max_chars=self._limits.max_url_chars,
                                field=field)
