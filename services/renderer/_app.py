"""Composition root of the renderer: builds everything and serves;
``litho.service`` runs it and unwinds it in reverse order."""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial

from playwright.async_api import async_playwright

from litho import lifecycle, messaging
from litho.consumers import ConsumerOptions
from litho.logs import get_logger
from litho.notes import NatsLink
from litho.outbound import OutboundGuard
from litho.renderer.v1 import renderer_pb2, renderer_pb2_grpc
from litho.service import Host
from services.renderer import _chromium, _encode, _fonts, _fonts_check
from services.renderer._assets import AssetLog
from services.renderer._batch_queue import NatsBatchEvents, NatsItemQueue
from services.renderer._batch_queue import consumer as batch_consumer
from services.renderer._batches import Batches, BatchLimits
from services.renderer._binding_client import GrpcBindingClient
from services.renderer._binding_memo import BindingMemo, following_changes
from services.renderer._binding_prerender import Prerenderer
from services.renderer._binding_prerender import consumer as prerender_consumer
from services.renderer._bindings import BindingRenders
from services.renderer._capture import Capturer
from services.renderer._engine import ChromiumPage, PlaywrightEngine
from services.renderer._events import NatsRenderEvents
from services.renderer._fit import FitLimits
from services.renderer._pipeline import CaptureSpec, Output, RenderPipeline
from services.renderer._pool import PagePool
from services.renderer._servicer import RendererServicer, options_from_proto
from services.renderer._settings import RendererSettings
from services.renderer._source_memo import SourceMemo
from services.renderer._spec import Limits
from services.renderer._subresources import SubresourceFetcher
from services.renderer._template_client import GrpcTemplateSource

log = get_logger(__name__)
SERVICE_NAME = renderer_pb2.DESCRIPTOR.services_by_name["RendererService"].full_name
SETTINGS = RendererSettings


async def build(host: Host[RendererSettings]) -> None:
    settings, stack = host.settings, host.stack
    await _fonts_check.warn_missing_fonts()  # a missing script renders as tofu, silently
    blobs = await host.blob_store()

    nc = await host.nats()
    js = nc.jetstream()
    events = NatsRenderEvents(messaging.EventPublisher(js))
    stack.push_async_callback(events.flush)

    guard = await stack.enter_async_context(OutboundGuard(settings.outbound))
    fetcher = SubresourceFetcher(
        guard, ttl=settings.renderer_subresource_ttl,
        max_bytes=settings.renderer_subresource_cache_bytes,
    )
    playwright = await stack.enter_async_context(async_playwright())
    engine = PlaywrightEngine(
        playwright,
        executable_path=_chromium.executable_path(settings.chromium_path),
        args=_chromium.launch_args(),
        fetcher=fetcher,
        timeout=settings.renderer_timeout,
        base_url=settings.renderer_base_url,
        fonts=_fonts.FontServer(blobs, max_cached_bytes=settings.renderer_font_cache_bytes,
                                ttl=settings.renderer_subresource_ttl),
    )
    pool = PagePool(
        engine, size=settings.renderer_concurrency, max_queue=settings.renderer_max_queue,
        restart_after=settings.renderer_restart_after, timeout=settings.renderer_timeout,
        recycle_after=settings.renderer_page_recycle_after,
        overrun_cooldown=settings.renderer_overrun_cooldown,
        interactive_reserve=settings.renderer_batch_yield_seconds,
    )
    await pool.start()
    stack.push_async_callback(pool.close)

    limits = Limits(
        max_dimension=settings.renderer_max_dimension,
        max_pixels=settings.renderer_max_pixels,
        max_scale=settings.renderer_max_scale,
        max_gif_fps=settings.renderer_max_gif_fps,
        max_gif_duration_ms=settings.renderer_max_gif_duration_ms,
        max_gif_frames=settings.renderer_max_gif_frames,
        max_pdf_pages=settings.renderer_max_pdf_pages,
        max_pdf_documents=settings.renderer_max_pdf_documents,
        max_gif_pixels=settings.renderer_max_gif_pixels,
        max_webp_pixels=settings.renderer_max_webp_pixels,
    )
    channel = await host.channel("template")

    _encode.disable_operation_cache()
    # Encoders release the GIL: a thread per core keeps both cores busy.
    executor = stack.enter_context(ThreadPoolExecutor(
        max_workers=max(2, settings.renderer_concurrency), thread_name_prefix="encode"))
    font_budget = (settings.renderer_max_fonts_per_render,
                   settings.renderer_max_font_bytes_per_render)
    capturer = Capturer(limits=limits, executor=executor, fit=FitLimits(
        max_elements=settings.renderer_fit_max_elements,
        max_font_px=settings.renderer_fit_max_font_size))

    async def run_capture(spec: CaptureSpec, tenant_id: str, *,
                          background: bool = False) -> Output:
        return await pool.run(
            partial(_capture_on, capturer=capturer, spec=spec, tenant=tenant_id,
                    budget=font_budget),
            tenant=tenant_id, background=background)

    templates = GrpcTemplateSource(channel)
    binding_service = GrpcBindingClient(await host.channel("binding"),
                                        options_of=options_from_proto)
    pipeline = RenderPipeline(
        templates, blobs, run_capture, events,
        limits=limits, base_url=settings.renderer_base_url,
        render_id_secret=settings.renderer_render_id_secret.get_secret_value().encode(),
        reuse_warned_seconds=settings.renderer_warned_reuse_seconds,
        data_sources=binding_service,
        source_cache=SourceMemo(max_bytes=settings.renderer_data_source_memo_bytes),
    )
    memo = BindingMemo(binding_service, NatsLink(nc),
                       max_age=settings.renderer_binding_memo_seconds,
                       max_bytes=settings.renderer_binding_memo_bytes)
    await stack.enter_async_context(following_changes(nc, memo))
    bindings = BindingRenders(memo, pipeline.render)
    publisher = messaging.Publisher(js)
    batches = Batches(
        await host.document_store(), queue=NatsItemQueue(publisher),
        events=NatsBatchEvents(publisher), templates=templates, render=pipeline.render,
        limits=BatchLimits(max_items=settings.batch_max_items,
                           retention=settings.batch_retention,
                           max_item_bytes=settings.batch_max_item_bytes,
                           max_pending_items=settings.batch_max_pending_items,
                           # Waiting for a page behind interactive renders, then the render.
                           item_timeout=4 * settings.renderer_timeout),
        options_of=options_from_proto, worker=f"{socket.gethostname()}:{os.getpid()}")
    await batches.prepare()
    items = batch_consumer(nc, batches, ConsumerOptions(
        # Twice the pages: an item waits ready while another finishes its
        # bookkeeping, so no page idles between items.
        max_in_flight=settings.renderer_batch_in_flight or 2 * settings.renderer_concurrency,
        ack_wait=settings.renderer_batch_ack_wait,
        max_deliver=settings.renderer_batch_max_deliver,
        # The item's own timeout (above) ends it first; this is the backstop.
        handler_timeout=4 * settings.renderer_timeout + 60,
        stop_grace=settings.shutdown_grace), publisher)
    await stack.enter_async_context(items.running())
    await stack.enter_async_context(lifecycle.periodic(
        batches.sweep, settings.renderer_batch_sweep_interval, name="batch sweep"))
    prerender = prerender_consumer(nc, Prerenderer(bindings), ConsumerOptions(
        max_in_flight=settings.renderer_prerender_in_flight,
        fetch_batch=settings.renderer_prerender_in_flight,
        ack_wait=settings.renderer_batch_ack_wait,
        max_deliver=settings.renderer_prerender_max_deliver,
        # Waiting for a page behind interactive renders, then the render.
        handler_timeout=4 * settings.renderer_timeout + 60,
        stop_grace=settings.shutdown_grace), publisher)
    await stack.enter_async_context(prerender.running())
    await host.serve_grpc(
        [(renderer_pb2_grpc.add_RendererServiceServicer_to_server,
          RendererServicer(pipeline, batches, bindings), SERVICE_NAME)],
        # A batch of LITHO_BATCH_MAX_BYTES of variables, plus its framing.
        max_receive_message_bytes=settings.batch_max_bytes + 64 * 1024)


async def _capture_on(page: object, *, capturer: Capturer, spec: CaptureSpec,
                      tenant: str, budget: tuple[int, int]) -> Output:
    assert isinstance(page, ChromiumPage)
    page.tenant = tenant
    page.assets = record = AssetLog()
    # Each uploaded font is read whole and copied to Chromium: one render
    # declares only what its budget holds, and says what it left out.
    kept, dropped = _fonts.within_budget(spec.fonts, max_count=budget[0], max_bytes=budget[1])
    for face in dropped:
        record.finish(record.start(_fonts.url_of(face), "font"),
                      _fonts.left_out(face, max_count=budget[0], max_bytes=budget[1]))
    page.fonts = {_fonts.url_of(f): f for f in kept}
    try:
        output = await capturer.capture(page, replace(spec, fonts=kept))
    finally:
        page.assets = None
        page.fonts = {}
    return replace(output, assets=record.assets())
