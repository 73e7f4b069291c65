"""Composition root of the webhook service: builds everything and serves;
``litho.service`` runs it and unwinds it in reverse order (the gRPC server
first, then the consumers, letting attempts in hand finish, then the guard,
NATS and the document store)."""

from __future__ import annotations

from functools import partial

from litho import lifecycle, messaging
from litho.logs import get_logger
from litho.outbound import AllowList, OutboundGuard
from litho.service import Host
from litho.webhook.v1 import webhook_pb2, webhook_pb2_grpc
from services.webhook import _jobs
from services.webhook._deliverer import Deliverer
from services.webhook._dispatch import Dispatcher
from services.webhook._events import Context
from services.webhook._model import Limits
from services.webhook._service import Scheduler, Stores, Webhooks
from services.webhook._servicer import WebhookServicer
from services.webhook._settings import WebhookSettings
from services.webhook._store import BatchWebhookStore, DeliveryStore, SubscriptionStore
from services.webhook._transport import GuardTransport

log = get_logger(__name__)
SERVICE_NAME = webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name
SETTINGS = WebhookSettings


async def build(host: Host[WebhookSettings]) -> None:
    settings, stack = host.settings, host.stack
    store = await host.document_store()
    stores = Stores(SubscriptionStore(store), DeliveryStore(store), BatchWebhookStore(store))
    await stores.prepare()

    nc = await host.nats()
    js = nc.jetstream()  # streams ensured by host.nats()
    publisher = messaging.Publisher(js)
    jobs = _jobs.NatsJobQueue(publisher)

    # No redirects: a 3xx is a failed attempt, never a request to elsewhere.
    guard = await stack.enter_async_context(OutboundGuard(
        settings.outbound.model_copy(update={"max_redirects": 0})))
    webhooks = Webhooks(
        stores, jobs,
        limits=Limits(max_subscriptions=settings.webhook_max_subscriptions,
                      max_description_chars=settings.webhook_max_description_chars,
                      max_url_chars=settings.webhook_max_url_chars,
                      max_pending_per_tenant=settings.webhook_max_pending_per_tenant),
        allow=AllowList.parse(settings.outbound.allow),
        batch_retention=settings.webhook_batch_retention,
        delivery_retention=settings.webhook_delivery_retention,
        rotation_overlap=settings.webhook_rotation_overlap,
        queue_lease=settings.webhook_queue_lease)
    deliverer = Deliverer(
        stores, GuardTransport(guard, timeout=settings.webhook_timeout,
                               max_bytes=settings.webhook_response_max_bytes),
        schedule=settings.retry_delays, retry_after_max=settings.webhook_retry_after_max,
        pause_after=settings.webhook_pause_after_failures,
        attempt_lease=settings.attempt_lease,
        max_in_flight_per_tenant=settings.webhook_max_in_flight_per_tenant,
        busy_delay=settings.webhook_scheduler_interval)
    dispatcher = Dispatcher(stores, jobs, max_subscriptions=settings.webhook_max_subscriptions,
                            max_pending_per_tenant=settings.webhook_max_pending_per_tenant,
                            queue_lease=settings.webhook_queue_lease)
    scheduler = Scheduler(stores, jobs, queue_lease=settings.webhook_queue_lease,
                          per_tenant=settings.webhook_max_in_flight_per_tenant * 2,
                          interval=settings.webhook_scheduler_interval)

    await stack.enter_async_context(_jobs.delivery_consumer(
        nc, deliverer, _jobs.delivery_options(settings), publisher).running())
    await stack.enter_async_context(_jobs.fanout_consumer(
        nc, dispatcher, Context(public_url=settings.image_base,
                                 image_base_url=settings.image_base_url),
        _jobs.fanout_options(settings), publisher).running())
    await stack.enter_async_context(lifecycle.periodic(
        partial(_sweep, webhooks), settings.webhook_sweep_interval, name="webhook sweep"))
    await stack.enter_async_context(lifecycle.periodic(
        partial(_schedule_due, scheduler), settings.webhook_scheduler_interval,
        name="webhook scheduler"))

    await host.serve_grpc([(webhook_pb2_grpc.add_WebhookServiceServicer_to_server,
                            WebhookServicer(webhooks), SERVICE_NAME)])


async def _schedule_due(scheduler: Scheduler) -> None:
    """Queue the deliveries whose next attempt is due."""
    while await scheduler.tick() >= scheduler.batch:
        pass  # more are due: go on at once


async def _sweep(webhooks: Webhooks) -> None:
    """Drop expired batch webhooks and old deliveries."""
    hooks, deliveries = await webhooks.sweep()
    if hooks or deliveries:
        log.info("webhook sweep", batch_webhooks=hooks, deliveries=deliveries)
