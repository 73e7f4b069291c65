"""Composition root of the binding service: builds everything and serves;
``litho.service`` unwinds it in reverse order (the gRPC server first, then the
scheduler and the sweep, the guard, NATS and the document store)."""

from __future__ import annotations

from functools import partial

from litho import lifecycle, messaging
from litho.binding.v1 import binding_pb2, binding_pb2_grpc
from litho.logs import get_logger
from litho.outbound import AllowList, OutboundGuard
from litho.service import Host
from services.binding._adapters import GrpcTemplateMapping, NatsBindingEvents
from services.binding._bindings import Bindings
from services.binding._fetch import Fetcher, FetchSlots
from services.binding._model import Limits
from services.binding._scheduler import Scheduler
from services.binding._secrets import SecretBox
from services.binding._servicer import BindingServicer
from services.binding._settings import BindingSettings
from services.binding._sources import DataSources
from services.binding._store import BindingStore

log = get_logger(__name__)
SERVICE_NAME = binding_pb2.DESCRIPTOR.services_by_name["BindingService"].full_name
SETTINGS = BindingSettings
#: Seconds between sweeps of the data source cache.
SWEEP_INTERVAL = 3600.0
#: Room past the fetch's timeout for a refresh to settle (the mapping, the store).
LEASE_MARGIN = 30.0
#: gRPC's own default receive limit, kept as the floor.
GRPC_DEFAULT_RECEIVE = 4 * 1024 * 1024
#: Room for a request's other fields beside its pushed or sample data: a
#: mapping (100 expressions of 2,000 characters), defaults, names.
REQUEST_OVERHEAD = 1024 * 1024


def max_request_bytes(settings: BindingSettings) -> int:
    """The largest request the server takes: a push (PushBindingData) or sample
    data (PreviewBinding) as large as the settings allow, and the rest."""
    largest = max(settings.binding_max_push_bytes, settings.binding_max_data_bytes)
    return max(GRPC_DEFAULT_RECEIVE, largest + REQUEST_OVERHEAD)


async def build(host: Host[BindingSettings]) -> None:
    settings, stack = host.settings, host.stack
    # First: without its key the service must not start (nothing could be sealed).
    box = SecretBox.from_setting(settings.binding_secret_key)
    store = await host.document_store()

    nc = await host.nats()
    js = nc.jetstream()
    events = NatsBindingEvents(messaging.Publisher(js), nc)
    templates = GrpcTemplateMapping(await host.channel("template"))

    guard = await stack.enter_async_context(OutboundGuard(settings.outbound))
    fetcher = Fetcher(guard, timeout=settings.binding_fetch_timeout,
                      max_bytes=settings.binding_max_data_bytes, limits=settings.json_limits(),
                      slots=FetchSlots(per_tenant=settings.binding_tenant_fetches,
                                       total=settings.binding_max_fetches,
                                       queue=settings.binding_tenant_fetch_queue))
    allow = AllowList.parse(settings.outbound.allow)
    limits = Limits(
        max_per_tenant=settings.binding_max_per_tenant,
        min_ttl_seconds=settings.binding_min_ttl_seconds,
        min_cron_interval=settings.binding_min_cron_interval,
        max_push_bytes=settings.binding_max_push_bytes,
        max_data_bytes=settings.binding_max_data_bytes,
        lease_seconds=settings.binding_fetch_timeout + LEASE_MARGIN,
        json_limits=settings.json_limits())
    binding_store = BindingStore(store)
    await binding_store.prepare()
    bindings = Bindings(binding_store, fetcher, templates, events, box, allow=allow,
                        limits=limits)
    sources = DataSources(
        store, fetcher, allow=allow, max_sources=settings.binding_max_template_sources,
        retention=settings.binding_source_cache_retention,
        max_bytes=settings.binding_max_source_bytes,
        max_entries_per_tenant=settings.binding_max_cache_entries_per_tenant)
    await sources.prepare()
    scheduler = Scheduler(bindings, lease_seconds=limits.lease_seconds)

    await stack.enter_async_context(lifecycle.periodic(
        partial(_refresh_due, scheduler), settings.binding_scheduler_interval,
        name="binding scheduler"))
    await stack.enter_async_context(lifecycle.periodic(
        partial(_sweep, sources), SWEEP_INTERVAL, name="data source cache sweep"))

    await host.serve_grpc([(binding_pb2_grpc.add_BindingServiceServicer_to_server,
                            BindingServicer(bindings, sources), SERVICE_NAME)],
                          max_receive_message_bytes=max_request_bytes(settings))


async def _refresh_due(scheduler: Scheduler) -> None:
    """Refresh the cron bindings that are due."""
    while await scheduler.tick() >= scheduler.batch:
        pass  # more are due: go on at once


async def _sweep(sources: DataSources) -> None:
    swept = await sources.sweep()
    if swept:
        log.info("data source cache sweep", entries=swept)
