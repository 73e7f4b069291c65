"""gRPC translation for the webhook service: proto in, domain call, proto out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from litho.webhook.v1 import webhook_pb2 as pb
from litho.webhook.v1 import webhook_pb2_grpc as pb_grpc
from services.webhook._model import (
    Delivery,
    DeliveryStatus,
    Filters,
    Subscription,
    SubscriptionChange,
    SubscriptionStatus,
    invalid,
)
from services.webhook._service import Webhooks

_STATUS_TO_PROTO: dict[SubscriptionStatus, pb.SubscriptionStatus.ValueType] = {
    SubscriptionStatus.ACTIVE: pb.SUBSCRIPTION_STATUS_ACTIVE,
    SubscriptionStatus.PAUSED: pb.SUBSCRIPTION_STATUS_PAUSED,
    SubscriptionStatus.DISABLED: pb.SUBSCRIPTION_STATUS_DISABLED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
_DELIVERY_STATUS: dict[DeliveryStatus, pb.DeliveryStatus.ValueType] = {
    DeliveryStatus.PENDING: pb.DELIVERY_STATUS_PENDING,
    DeliveryStatus.DELIVERED: pb.DELIVERY_STATUS_DELIVERED,
    DeliveryStatus.FAILED: pb.DELIVERY_STATUS_FAILED,
}


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _filters(f: pb.SubscriptionFilters) -> Filters:
    return Filters(template_id=f.template_id, binding_id=f.binding_id)


def subscription_to_proto(s: Subscription) -> pb.Subscription:
    return pb.Subscription(
        id=s.id, tenant_id=s.tenant_id, event=s.event, target_url=s.target_url,
        filters=pb.SubscriptionFilters(template_id=s.filters.template_id,
                                       binding_id=s.filters.binding_id),
        description=s.description, status=_STATUS_TO_PROTO[s.status],
        status_reason=s.status_reason, consecutive_failures=s.consecutive_failures,
        create_time=_timestamp(s.create_time), update_time=_timestamp(s.update_time))


def delivery_to_proto(d: Delivery) -> pb.Delivery:
    return pb.Delivery(
        id=d.id, subscription_id=d.subscription_id, event=d.event,
        status=_DELIVERY_STATUS[d.status], attempts=d.attempts,
        last_response_code=d.last_response_code, last_duration_ms=d.last_duration_ms,
        last_error=d.last_error, next_retry_time=_timestamp(d.next_retry_time),
        delivered_time=_timestamp(d.delivered_time), create_time=_timestamp(d.create_time),
        message_id=d.message_id, redelivery_of=d.redelivery_of)


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, webhooks: Webhooks) -> None:
        self._webhooks = webhooks

    async def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateSubscriptionResponse:
        subscription, secret = await self._webhooks.create(
            request.tenant_id, event=request.event, target_url=request.target_url,
            filters=_filters(request.filters), description=request.description)
        return pb.CreateSubscriptionResponse(
            subscription=subscription_to_proto(subscription), secret=secret)

    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetSubscriptionResponse:
        subscription = await self._webhooks.get(request.tenant_id, request.subscription_id)
        return pb.GetSubscriptionResponse(subscription=subscription_to_proto(subscription))

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListSubscriptionsResponse:
        items, token = await self._webhooks.list_subscriptions(
            request.tenant_id, request.page_size, request.page_token)
        return pb.ListSubscriptionsResponse(
            subscriptions=[subscription_to_proto(s) for s in items], next_page_token=token)

    async def UpdateSubscription(
        self, request: pb.UpdateSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateSubscriptionResponse:
        status = None
        if request.status != pb.SUBSCRIPTION_STATUS_UNSPECIFIED:
            status = _STATUS_FROM_PROTO.get(request.status)
            if status is None:
                raise invalid("status", "must be active or paused")
        change = SubscriptionChange(
            target_url=request.target_url if request.HasField("target_url") else None,
            filters=_filters(request.filters) if request.HasField("filters") else None,
            status=status,
            description=request.description if request.HasField("description") else None)
        subscription = await self._webhooks.update(
            request.tenant_id, request.subscription_id, change)
        return pb.UpdateSubscriptionResponse(subscription=subscription_to_proto(subscription))

    async def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteSubscriptionResponse:
        await self._webhooks.delete(request.tenant_id, request.subscription_id)
        return pb.DeleteSubscriptionResponse()

    async def RotateSubscriptionSecret(
        self, request: pb.RotateSubscriptionSecretRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.RotateSubscriptionSecretResponse:
        subscription, secret = await self._webhooks.rotate_secret(
            request.tenant_id, request.subscription_id)
        return pb.RotateSubscriptionSecretResponse(
            subscription=subscription_to_proto(subscription), secret=secret)

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListDeliveriesResponse:
        items, token = await self._webhooks.deliveries(
            request.tenant_id, request.subscription_id, request.page_size, request.page_token)
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in items], next_page_token=token)

    async def RedeliverDelivery(
        self, request: pb.RedeliverDeliveryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RedeliverDeliveryResponse:
        delivery = await self._webhooks.redeliver(
            request.tenant_id, request.subscription_id, request.delivery_id)
        return pb.RedeliverDeliveryResponse(delivery=delivery_to_proto(delivery))

    async def RegisterBatchWebhook(
        self, request: pb.RegisterBatchWebhookRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.RegisterBatchWebhookResponse:
        await self._webhooks.register_batch_webhook(
            request.tenant_id, request.batch_id, request.target_url, request.secret)
        return pb.RegisterBatchWebhookResponse()
