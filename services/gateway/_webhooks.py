"""``/v1/webhook-subscriptions``: the webhook service's subscriptions and
delivery log, translated to JSON (the service owns the rules)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from litho.webhook.v1 import webhook_pb2 as pb
from services.gateway._keys import ApiKey
from services.gateway._requests import optional_time
from services.gateway._signing import batch_webhook_secret
from services.gateway._state import caller, deps
from services.gateway._validation import body as json_body
from services.gateway._validation import query as query_of

_SUBSCRIPTION_STATUS = {pb.SUBSCRIPTION_STATUS_ACTIVE: "active",
                        pb.SUBSCRIPTION_STATUS_PAUSED: "paused",
                        pb.SUBSCRIPTION_STATUS_DISABLED: "disabled"}
_SETTABLE_STATUS = {"active": pb.SUBSCRIPTION_STATUS_ACTIVE,
                    "paused": pb.SUBSCRIPTION_STATUS_PAUSED}
_DELIVERY_STATUS = {pb.DELIVERY_STATUS_PENDING: "pending",
                    pb.DELIVERY_STATUS_DELIVERED: "delivered",
                    pb.DELIVERY_STATUS_FAILED: "failed"}


def subscription_json(s: pb.Subscription) -> dict[str, Any]:
    filters = {k: v for k, v in (("templateId", s.filters.template_id),
                                 ("bindingId", s.filters.binding_id)) if v}
    return {
        "id": s.id, "event": s.event, "targetUrl": s.target_url, "filters": filters,
        "description": s.description, "status": _SUBSCRIPTION_STATUS.get(s.status, "active"),
        "statusReason": s.status_reason or None,
        "consecutiveFailures": s.consecutive_failures,
        "createdAt": optional_time(s, "create_time"), "updatedAt": optional_time(s, "update_time"),
    }


def delivery_json(d: pb.Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "event": d.event, "status": _DELIVERY_STATUS.get(d.status, "pending"),
        "attempts": d.attempts, "lastResponseCode": d.last_response_code or None,
        "durationMs": d.last_duration_ms if d.attempts else None,
        "error": d.last_error or None, "nextRetryAt": optional_time(d, "next_retry_time"),
        "deliveredAt": optional_time(d, "delivered_time"),
        "createdAt": optional_time(d, "create_time"),
        "webhookId": d.message_id, "redeliveryOf": d.redelivery_of or None,
    }


def _filters(value: dict[str, Any]) -> pb.SubscriptionFilters:
    return pb.SubscriptionFilters(template_id=value.get("templateId", ""),
                                  binding_id=value.get("bindingId", ""))


def _ids(request: web.Request) -> tuple[str, str]:
    return caller(request).tenant_id, request.match_info["subscriptionId"]


async def create_subscription(request: web.Request) -> web.Response:
    body = json_body(request)
    response = await deps(request).webhooks.CreateSubscription(pb.CreateSubscriptionRequest(
        tenant_id=caller(request).tenant_id, event=body["event"],
        target_url=body["targetUrl"], filters=_filters(body.get("filters") or {}),
        description=body.get("description", "")))
    out = {**subscription_json(response.subscription), "secret": response.secret}
    return web.json_response(out, status=201, headers={
        "Location": f"/v1/webhook-subscriptions/{out['id']}"})


async def list_subscriptions(request: web.Request) -> web.Response:
    query = query_of(request)
    response = await deps(request).webhooks.ListSubscriptions(pb.ListSubscriptionsRequest(
        tenant_id=caller(request).tenant_id, page_size=query.get("pageSize", 50),
        page_token=query.get("pageToken", "")))
    return web.json_response({
        "subscriptions": [subscription_json(s) for s in response.subscriptions],
        "nextPageToken": response.next_page_token or None})


async def get_subscription(request: web.Request) -> web.Response:
    tenant, sub = _ids(request)
    response = await deps(request).webhooks.GetSubscription(pb.GetSubscriptionRequest(
        tenant_id=tenant, subscription_id=sub))
    return web.json_response(subscription_json(response.subscription))


async def update_subscription(request: web.Request) -> web.Response:
    tenant, sub = _ids(request)
    body = json_body(request)
    message = pb.UpdateSubscriptionRequest(tenant_id=tenant, subscription_id=sub)
    if "targetUrl" in body:
        message.target_url = body["targetUrl"]
    if "description" in body:
        message.description = body["description"]
    if "filters" in body:  # present replaces them; {} clears them
        message.filters.CopyFrom(_filters(body["filters"] or {}))
    if "status" in body:
        message.status = _SETTABLE_STATUS[body["status"]]
    response = await deps(request).webhooks.UpdateSubscription(message)
    return web.json_response(subscription_json(response.subscription))


async def delete_subscription(request: web.Request) -> web.Response:
    tenant, sub = _ids(request)
    await deps(request).webhooks.DeleteSubscription(pb.DeleteSubscriptionRequest(
        tenant_id=tenant, subscription_id=sub))
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    tenant, sub = _ids(request)
    response = await deps(request).webhooks.RotateSubscriptionSecret(
        pb.RotateSubscriptionSecretRequest(tenant_id=tenant, subscription_id=sub))
    return web.json_response({**subscription_json(response.subscription),
                              "secret": response.secret})


async def list_deliveries(request: web.Request) -> web.Response:
    tenant, sub = _ids(request)
    query = query_of(request)
    response = await deps(request).webhooks.ListDeliveries(pb.ListDeliveriesRequest(
        tenant_id=tenant, subscription_id=sub, page_size=query.get("pageSize", 50),
        page_token=query.get("pageToken", "")))
    return web.json_response({"deliveries": [delivery_json(d) for d in response.deliveries],
                              "nextPageToken": response.next_page_token or None})


async def redeliver(request: web.Request) -> web.Response:
    tenant, sub = _ids(request)
    response = await deps(request).webhooks.RedeliverDelivery(pb.RedeliverDeliveryRequest(
        tenant_id=tenant, subscription_id=sub, delivery_id=request.match_info["deliveryId"]))
    return web.json_response(delivery_json(response.delivery), status=202)


def batch_registrar(webhooks: Any) -> Any:
    """``Deps.register_batch_webhook``: a batch's own ``webhookUrl``, signed
    with the key's batch webhook secret (``GET /v1/signing-key``'s
    ``webhookSecret``), registered before the batch exists."""

    async def register(key: ApiKey, batch_id: str, url: str) -> None:
        await webhooks.RegisterBatchWebhook(pb.RegisterBatchWebhookRequest(
            tenant_id=key.tenant_id, batch_id=batch_id, target_url=url,
            secret=batch_webhook_secret(key.signing_secret)))

    return register
