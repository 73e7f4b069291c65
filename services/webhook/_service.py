"""What the API does with subscriptions and their delivery logs, and a
batch's own webhook. No grpc or nats here: deliveries are queued through
the :class:`JobQueue` port."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from litho.errors import FailedPrecondition, InvalidArgument
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


async def queue(stores: Stores, jobs: JobQueue, delivery: Delivery) -> None:
    """Queue a stored redelivery; if that fails, log it as failed (so it
    never shows pending with nothing to attempt it) and raise."""
    try:
        await jobs.enqueue(delivery)
    except Exception:
        await stores.deliveries.settle(delivery.id, DeliveryStatus.FAILED,
                                       error="could not be queued; redeliver it")
        raise


class Webhooks:
    def __init__(self, stores: Stores, jobs: JobQueue, *, limits: Limits, allow: AllowList,
                 batch_retention: float, delivery_retention: float,
                 clock: Clock = utc_now) -> None:
        self._stores = stores
        self._subs = stores.subscriptions
        self._deliveries = stores.deliveries
        self._jobs = jobs
        self._limits = limits
        self._allow = allow
        self._batch_retention = batch_retention
        self._delivery_retention = delivery_retention
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
            raise InvalidArgument(
                f"this tenant has {count} webhook subscriptions; the limit is "
                f"{self._limits.max_subscriptions} (LITHO_WEBHOOK_MAX_SUBSCRIPTIONS): "
                "delete one first")
        now = self._clock()
        secret = _signing.new_secret()
        subscription = Subscription(
            id=new_subscription_id(), tenant_id=tenant_id, event=event, target_url=target_url,
            filters=filters, description=description, status=SubscriptionStatus.ACTIVE,
            status_reason="", consecutive_failures=0, secret=secret, create_time=now,
            update_time=now)
        await self._subs.insert(subscription)
        log.info("webhook subscription created", tenant=tenant_id, subscription=subscription.id,
                 event_type=event)
        return subscription, secret

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
            fields["status"] = check_settable_status(change.status).value
            # Set by hand: whatever stopped it is over, and it starts counting afresh.
            fields["statusReason"] = ""
            fields["consecutiveFailures"] = 0
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
        secret = _signing.new_secret()
        subscription = await self._subs.set(tenant_id, subscription_id, {
            "secret": secret, "updateTime": stamp(self._clock())})
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
        """A new delivery of a logged delivery's body, with the same ``webhook-id``."""
        check_tenant(tenant_id)
        subscription = await self._subs.get(tenant_id, subscription_id)
        original = await self._deliveries.get(tenant_id, subscription_id, delivery_id)
        if subscription.status is not SubscriptionStatus.ACTIVE:
            raise FailedPrecondition(
                f"webhook subscription {subscription_id!r} is {subscription.status.value}; "
                "set its status to active first")
        now = self._clock()
        delivery = replace(
            original, id=new_delivery_id(now), status=DeliveryStatus.PENDING, attempts=0,
            last_response_code=0, last_duration_ms=0, last_error="", next_retry_time=None,
            delivered_time=None, create_time=now, redelivery_of=original.id)
        await self._deliveries.insert(delivery)
        await queue(self._stores, self._jobs, delivery)
        return delivery

    # ----------------------------------------------------- batch webhooks ----

    async def register_batch_webhook(self, tenant_id: str, batch_id: str, target_url: str,
                                     secret: str) -> None:
        """Deliver the batch's ``batch.completed`` or ``batch.failed`` to
        ``target_url`` once, signed with ``secret``; registering again replaces."""
        check_tenant(tenant_id)
        if not batch_id or len(batch_id) > MAX_BATCH_ID_CHARS:
            raise invalid("batchId", f"is required, at most {MAX_BATCH_ID_CHARS} characters")
        self._check_url(target_url, field="webhookUrl")
        if not secret or len(secret) > MAX_SECRET_CHARS:
            raise invalid("secret", f"is required, at most {MAX_SECRET_CHARS} characters")
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
