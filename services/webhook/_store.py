"""The webhook service's documents: ``webhook_subscriptions``,
``webhook_deliveries`` and ``batch_webhooks``, each carrying ``tenantId``.

Times are stored as ISO 8601 text in UTC with microseconds, so range
conditions on them compare as times in both document stores.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litho.docstore import DocumentStore, DuplicateKey, slots
from litho.errors import InvalidArgument, NotFound
from litho.logs import get_logger
from services.webhook._model import (
    Delivery,
    DeliveryStatus,
    Filters,
    Subscription,
    SubscriptionStatus,
)

log = get_logger(__name__)

SUBSCRIPTIONS = "webhook_subscriptions"
DELIVERIES = "webhook_deliveries"
BATCH_WEBHOOKS = "batch_webhooks"


def stamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _required_time(value: Any) -> datetime:
    when = _time(value)
    if when is None:
        raise ValueError("a stored time is missing")
    return when


def encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_token(token: str, prefix: str) -> str:
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        value = ""
    if not value.startswith(prefix) or len(value) > 100:
        raise InvalidArgument("pageToken is not a token this API issued")
    return value


# ------------------------------------------------------------ subscriptions ----

def subscription_doc(s: Subscription) -> dict[str, Any]:
    return {
        "_id": s.id, "tenantId": s.tenant_id, "event": s.event, "targetUrl": s.target_url,
        "filters": {"templateId": s.filters.template_id, "bindingId": s.filters.binding_id},
        "description": s.description, "status": s.status.value,
        "statusReason": s.status_reason, "consecutiveFailures": s.consecutive_failures,
        "secret": s.secret, "createTime": stamp(s.create_time),
        "updateTime": stamp(s.update_time), "previousSecret": s.previous_secret,
        "previousSecretUntil": stamp(s.previous_secret_until)
        if s.previous_secret_until else None,
    }


def subscription_from_doc(d: dict[str, Any]) -> Subscription:
    filters = d.get("filters") or {}
    return Subscription(
        id=d["_id"], tenant_id=d["tenantId"], event=d["event"], target_url=d["targetUrl"],
        filters=Filters(template_id=str(filters.get("templateId") or ""),
                        binding_id=str(filters.get("bindingId") or "")),
        description=str(d.get("description") or ""),
        status=SubscriptionStatus(d["status"]), status_reason=str(d.get("statusReason") or ""),
        consecutive_failures=int(d.get("consecutiveFailures") or 0), secret=d["secret"],
        create_time=_required_time(d["createTime"]), update_time=_required_time(d["updateTime"]),
        previous_secret=str(d.get("previousSecret") or ""),
        previous_secret_until=_time(d.get("previousSecretUntil")),
    )


class SubscriptionStore:
    def __init__(self, store: DocumentStore) -> None:
        self._docs = store.collection(SUBSCRIPTIONS)

    async def prepare(self) -> None:
        await self._docs.ensure_index(["tenantId", "event"])
        await self._number_slots()
        await self._docs.ensure_index(["tenantId", "slot"], unique=True)

    async def _number_slots(self) -> None:
        """Give subscriptions stored before slots were kept one each."""
        for doc in await self._docs.find({"slot": None}):
            tenant = doc.get("tenantId")
            used = {d.get("slot") for d in await self._docs.find({"tenantId": tenant})}
            slot = next(k for k in range(len(used) + 1) if k not in used)
            await self._docs.update({"_id": doc["_id"], "slot": None}, {"$set": {"slot": slot}})

    async def count(self, tenant_id: str) -> int:
        return await self._docs.count({"tenantId": tenant_id})

    async def insert(self, s: Subscription) -> None:
        await self._docs.insert(subscription_doc(s))

    async def insert_within(self, s: Subscription, limit: int) -> int:
        """Insert ``s`` unless its tenant has ``limit`` subscriptions; 0 when
        inserted, else the count that refused it (:mod:`litho.docstore.slots`)."""
        return await slots.insert_within(self._docs, subscription_doc(s), limit)

    async def find(self, subscription_id: str) -> Subscription | None:
        doc = await self._docs.get(subscription_id)
        return subscription_from_doc(doc) if doc else None

    async def get(self, tenant_id: str, subscription_id: str) -> Subscription:
        """The tenant's subscription; another tenant's is as missing as none."""
        doc = await self._docs.get(subscription_id)
        if doc is None or doc.get("tenantId") != tenant_id:
            raise NotFound(f"webhook subscription {subscription_id[:100]!r} not found")
        return subscription_from_doc(doc)

    async def page(self, tenant_id: str, *, page_size: int,
                   page_token: str) -> tuple[list[Subscription], str]:
        flt: dict[str, Any] = {"tenantId": tenant_id}
        if page_token:
            flt["_id"] = {"$gt": decode_token(page_token, "whs_")}
        docs = await self._docs.find(flt, sort=[("_id", 1)], limit=page_size + 1)
        items = [subscription_from_doc(d) for d in docs[:page_size]]
        token = encode_token(items[-1].id) if len(docs) > page_size else ""
        return items, token

    async def active_for(self, tenant_id: str, event: str, limit: int) -> list[Subscription]:
        docs = await self._docs.find(
            {"tenantId": tenant_id, "event": event, "status": SubscriptionStatus.ACTIVE.value},
            sort=[("_id", 1)], limit=limit)
        return [subscription_from_doc(d) for d in docs]

    async def set(self, tenant_id: str, subscription_id: str,
                  fields: dict[str, Any]) -> Subscription:
        doc = await self._docs.find_one_and_update(
            {"_id": subscription_id, "tenantId": tenant_id}, {"$set": fields},
            return_document="after")
        if doc is None:
            raise NotFound(f"webhook subscription {subscription_id[:100]!r} not found")
        return subscription_from_doc(doc)

    async def delete(self, tenant_id: str, subscription_id: str) -> bool:
        return await self._docs.delete({"_id": subscription_id, "tenantId": tenant_id}) > 0

    async def failed_attempt(self, subscription_id: str) -> int:
        """One more failed attempt in a row; the count after it."""
        doc = await self._docs.find_one_and_update(
            {"_id": subscription_id}, {"$inc": {"consecutiveFailures": 1}},
            return_document="after")
        return int(doc.get("consecutiveFailures") or 0) if doc else 0

    async def succeeded(self, subscription_id: str) -> None:
        await self._docs.update({"_id": subscription_id, "consecutiveFailures": {"$gt": 0}},
                                {"$set": {"consecutiveFailures": 0}})

    async def stop(self, subscription_id: str, status: SubscriptionStatus, reason: str,
                   now: datetime) -> bool:
        """Pause or disable an active subscription; False if it was not active
        (already stopped, or stopped by its owner meanwhile)."""
        changed = await self._docs.update(
            {"_id": subscription_id, "status": SubscriptionStatus.ACTIVE.value},
            {"$set": {"status": status.value, "statusReason": reason,
                      "updateTime": stamp(now)}})
        return changed > 0


# --------------------------------------------------------------- deliveries ----

#: ``lease`` of a delivery whose job is queued (``leaseUntil`` says until when
#: it may take to start); an attempt in progress holds a token of its own.
QUEUED = "queued"


def delivery_doc(d: Delivery, *, due: datetime, queued_until: datetime | None) -> dict[str, Any]:
    """A new delivery's document. Besides what the log shows it holds
    ``dueAt`` (when its next attempt may start), ``lease`` and ``leaseUntil``
    (who holds it, until when: "" and "" when nobody does; "" sorts before
    every time, so a range condition reads it as long past)."""
    return {
        "_id": d.id, "tenantId": d.tenant_id, "subscriptionId": d.subscription_id,
        "batchWebhookId": d.batch_webhook_id, "event": d.event, "messageId": d.message_id,
        "body": d.body, "status": d.status.value, "attempts": d.attempts,
        "lastResponseCode": d.last_response_code, "lastDurationMs": d.last_duration_ms,
        "lastError": d.last_error,
        "nextRetryTime": stamp(d.next_retry_time) if d.next_retry_time else None,
        "deliveredTime": stamp(d.delivered_time) if d.delivered_time else None,
        "createTime": stamp(d.create_time), "redeliveryOf": d.redelivery_of,
        "dueAt": stamp(due),
        "lease": QUEUED if queued_until else "",
        "leaseUntil": stamp(queued_until) if queued_until else "",
    }


def delivery_from_doc(d: dict[str, Any]) -> Delivery:
    return Delivery(
        id=d["_id"], tenant_id=d["tenantId"], subscription_id=str(d.get("subscriptionId") or ""),
        batch_webhook_id=str(d.get("batchWebhookId") or ""), event=d["event"],
        message_id=d["messageId"], body=d["body"], status=DeliveryStatus(d["status"]),
        attempts=int(d.get("attempts") or 0),
        last_response_code=int(d.get("lastResponseCode") or 0),
        last_duration_ms=int(d.get("lastDurationMs") or 0),
        last_error=str(d.get("lastError") or ""),
        next_retry_time=_time(d.get("nextRetryTime")),
        delivered_time=_time(d.get("deliveredTime")),
        create_time=_required_time(d["createTime"]),
        redelivery_of=str(d.get("redeliveryOf") or ""),
    )


class DeliveryStore:
    """The delivery log, and each pending delivery's place in the schedule.

    A pending delivery is attempted when a job for it runs; jobs are queued
    by whoever *claims* it: the dispatcher (at once), the scheduler (when its
    ``dueAt`` comes and nobody holds it) or a redelivery. A job's attempt
    then *starts*: it swaps the ``queued`` lease for its own token, so of
    two jobs for one attempt only one sends. Settling clears the lease and
    sets the next ``dueAt``; nothing waits in the queue meanwhile.
    """

    def __init__(self, store: DocumentStore) -> None:
        self._docs = store.collection(DELIVERIES)

    async def prepare(self) -> None:
        await self._docs.ensure_index(["tenantId", "subscriptionId"])
        await self._docs.ensure_index(["tenantId", "status"])
        await self._docs.ensure_index(["status", "dueAt"])
        await self._docs.ensure_index(["messageId"])
        await self._docs.ensure_index(["createTime"])
        await self._schedule_unscheduled()

    async def _schedule_unscheduled(self) -> None:
        """Put pending deliveries stored before the scheduler (their retry was a
        delayed job) on the schedule: due at their next retry, else now."""
        for doc in await self._docs.find({"status": DeliveryStatus.PENDING.value,
                                          "dueAt": None}):
            due = doc.get("nextRetryTime") or doc.get("createTime")
            await self._docs.update({"_id": doc["_id"], "dueAt": None},
                                    {"$set": {"dueAt": due, "lease": "", "leaseUntil": ""}})

    async def insert(self, d: Delivery, *, queued_until: datetime | None = None) -> bool:
        """False when a delivery with this id is already stored. With
        ``queued_until``, it is stored claimed (its job is about to be queued)."""
        try:
            await self._docs.insert(delivery_doc(d, due=d.create_time,
                                                 queued_until=queued_until))
        except DuplicateKey:
            return False
        return True

    async def find(self, delivery_id: str) -> Delivery | None:
        doc = await self._docs.get(delivery_id)
        return delivery_from_doc(doc) if doc else None

    async def find_event_delivery(self, message_id: str) -> Delivery | None:
        """The delivery (not a redelivery) with this ``webhook-id``."""
        doc = await self._docs.find_one({"messageId": message_id, "redeliveryOf": ""})
        return delivery_from_doc(doc) if doc else None

    async def get(self, tenant_id: str, subscription_id: str, delivery_id: str) -> Delivery:
        doc = await self._docs.get(delivery_id)
        if (doc is None or doc.get("tenantId") != tenant_id
                or doc.get("subscriptionId") != subscription_id):
            raise NotFound(f"delivery {delivery_id[:100]!r} not found")
        return delivery_from_doc(doc)

    async def page(self, tenant_id: str, subscription_id: str, *, page_size: int,
                   page_token: str) -> tuple[list[Delivery], str]:
        """Newest first."""
        flt: dict[str, Any] = {"tenantId": tenant_id, "subscriptionId": subscription_id}
        if page_token:
            flt["_id"] = {"$lt": decode_token(page_token, "whd_")}
        docs = await self._docs.find(flt, sort=[("_id", -1)], limit=page_size + 1)
        items = [delivery_from_doc(d) for d in docs[:page_size]]
        token = encode_token(items[-1].id) if len(docs) > page_size else ""
        return items, token

    async def pending_count(self, tenant_id: str) -> int:
        return await self._docs.count({"tenantId": tenant_id,
                                       "status": DeliveryStatus.PENDING.value})

    # ------------------------------------------------------ the schedule ----

    async def claim_due(self, now: datetime, queued_until: datetime) -> Delivery | None:
        """Claim the pending delivery due longest ago that nobody holds (its
        job is then queued); None when there is none. One winner per delivery
        across replicas: the claim is one atomic update."""
        doc = await self._docs.find_one_and_update(
            {"status": DeliveryStatus.PENDING.value, "dueAt": {"$lte": stamp(now)},
             "leaseUntil": {"$lt": stamp(now)}},
            {"$set": {"lease": QUEUED, "leaseUntil": stamp(queued_until)}},
            sort=[("dueAt", 1)], return_document="after")
        return delivery_from_doc(doc) if doc else None

    async def claim(self, delivery_id: str, now: datetime,
                    queued_until: datetime) -> Delivery | None:
        """Claim this delivery if it is pending, due and held by nobody."""
        doc = await self._docs.find_one_and_update(
            {"_id": delivery_id, "status": DeliveryStatus.PENDING.value,
             "dueAt": {"$lte": stamp(now)}, "leaseUntil": {"$lt": stamp(now)}},
            {"$set": {"lease": QUEUED, "leaseUntil": stamp(queued_until)}},
            return_document="after")
        return delivery_from_doc(doc) if doc else None

    async def unclaim(self, delivery_id: str, due: datetime | None = None) -> None:
        """Give a queued delivery back to the scheduler (its job was not
        queued, or is not run now), due at ``due`` (unchanged if None)."""
        fields: dict[str, Any] = {"lease": "", "leaseUntil": ""}
        if due is not None:
            fields["dueAt"] = stamp(due)
        await self._docs.update({"_id": delivery_id, "lease": QUEUED}, {"$set": fields})

    async def start(self, delivery_id: str, attempt: int | None, token: str,
                    until: datetime) -> Delivery | None:
        """Begin the attempt a queued job stands for: the delivery pending,
        queued, ``attempt`` attempts made (any when None). None (drop the
        job) when another job started it, it was settled, or it is not queued."""
        flt: dict[str, Any] = {"_id": delivery_id, "status": DeliveryStatus.PENDING.value,
                               "lease": QUEUED}
        if attempt is not None:
            flt["attempts"] = attempt
        doc = await self._docs.find_one_and_update(
            flt, {"$set": {"lease": token, "leaseUntil": stamp(until)}},
            return_document="after")
        return delivery_from_doc(doc) if doc else None

    async def attempted(self, delivery_id: str, token: str, *, status: int, duration_ms: int,
                        error: str) -> Delivery | None:
        """Count an attempt of a pending delivery this attempt holds and log
        what it got; None if the delivery is gone or was taken from it."""
        doc = await self._docs.find_one_and_update(
            {"_id": delivery_id, "status": DeliveryStatus.PENDING.value, "lease": token},
            {"$inc": {"attempts": 1},
             "$set": {"lastResponseCode": status, "lastDurationMs": duration_ms,
                      "lastError": error, "nextRetryTime": None}},
            return_document="after")
        return delivery_from_doc(doc) if doc else None

    async def settle(self, delivery_id: str, status: DeliveryStatus, *,
                     next_retry: datetime | None = None, delivered: datetime | None = None,
                     error: str | None = None) -> None:
        """Log the delivery's state after an attempt (or instead of one) and
        release it: pending with ``next_retry`` is due again then."""
        fields: dict[str, Any] = {
            "status": status.value,
            "nextRetryTime": stamp(next_retry) if next_retry else None,
            "lease": "", "leaseUntil": "",
        }
        if next_retry is not None:
            fields["dueAt"] = stamp(next_retry)
        if delivered is not None:
            fields["deliveredTime"] = stamp(delivered)
        if error is not None:
            fields["lastError"] = error
        await self._docs.update({"_id": delivery_id}, {"$set": fields})

    # ------------------------------------------------------- redeliveries ----

    async def redelivery_of(self, original_id: str) -> str:
        """The id of the last redelivery made of ``original_id`` ("" if none)."""
        doc = await self._docs.get(original_id)
        return str(doc.get("lastRedelivery") or "") if doc else ""

    async def mark_redelivery(self, original_id: str, previous: str, new: str) -> bool:
        """Record ``new`` as the original's redelivery if the last one is
        still ``previous``: of two racing redeliveries, one wins."""
        doc = await self._docs.find_one_and_update(
            {"_id": original_id, "lastRedelivery": previous or None},
            {"$set": {"lastRedelivery": new}})
        return doc is not None

    async def delete_for(self, tenant_id: str, subscription_id: str) -> int:
        return await self._docs.delete({"tenantId": tenant_id, "subscriptionId": subscription_id})

    async def sweep(self, older_than: datetime) -> int:
        """Drop deliveries created before ``older_than`` (the settings keep a
        schedule shorter than that, so none is still waiting for a retry)."""
        return await self._docs.delete({"createTime": {"$lt": stamp(older_than)}})


# ----------------------------------------------------------- batch webhooks ----

@dataclass(frozen=True)
class BatchWebhook:
    id: str
    tenant_id: str
    batch_id: str
    target_url: str
    #: A Standard Webhooks secret (``whsec_…``) the gateway derives from the API key.
    secret: str
    expires: datetime


class BatchWebhookStore:
    def __init__(self, store: DocumentStore) -> None:
        self._docs = store.collection(BATCH_WEBHOOKS)

    async def prepare(self) -> None:
        await self._docs.ensure_index(["expiresAt"])

    async def put(self, hook: BatchWebhook, now: datetime) -> None:
        await self._docs.replace({"_id": hook.id}, {
            "_id": hook.id, "tenantId": hook.tenant_id, "batchId": hook.batch_id,
            "targetUrl": hook.target_url, "secret": hook.secret, "createTime": stamp(now),
            "expiresAt": stamp(hook.expires)}, upsert=True)

    async def find(self, hook_id: str, now: datetime) -> BatchWebhook | None:
        """The webhook, unless it is gone or expired."""
        doc = await self._docs.get(hook_id)
        if doc is None:
            return None
        hook = BatchWebhook(id=doc["_id"], tenant_id=doc["tenantId"], batch_id=doc["batchId"],
                            target_url=doc["targetUrl"], secret=doc["secret"],
                            expires=_required_time(doc["expiresAt"]))
        return hook if hook.expires > now else None

    async def delete(self, hook_id: str) -> None:
        await self._docs.delete({"_id": hook_id})

    async def sweep(self, now: datetime) -> int:
        return await self._docs.delete({"expiresAt": {"$lt": stamp(now)}})
