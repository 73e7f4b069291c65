"""Composition root of the renderer: builds everything, serves, unwinds."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from functools import partial

from playwright.async_api import async_playwright

from litho import messaging, rpc
from litho.blobstore import open_blob_store
from litho.config import BlobStoreSettings, OutboundSettings, S3Settings, blobstore_url, load
from litho.logs import configure_logging, get_logger
from litho.outbound import OutboundGuard
from litho.renderer.v1 import renderer_pb2, renderer_pb2_grpc
from services.renderer import _chromium
from services.renderer._capture import CaptureSpec, capture
from services.renderer._engine import ChromiumPage, PlaywrightEngine
from services.renderer._events import NatsRenderEvents
from services.renderer._pipeline import RenderPipeline
from services.renderer._pool import PagePool
from services.renderer._servicer import RendererServicer
from services.renderer._settings import RendererSettings
from services.renderer._subresources import SubresourceFetcher
from services.renderer._template_client import GrpcTemplateSource

log = get_logger(__name__)
SERVICE_NAME = renderer_pb2.DESCRIPTOR.services_by_name["RendererService"].full_name


async def main(stop: asyncio.Event) -> None:
    settings = load(RendererSettings)
    configure_logging("renderer", level=settings.log_level, fmt=settings.log_format)
    async with AsyncExitStack() as stack:
        blobs = await open_blob_store(
            blobstore_url(load(BlobStoreSettings), settings), load(S3Settings)
        )
        stack.push_async_callback(blobs.close)

        nc = await messaging.connect(stack, settings.nats_url, name="litho-renderer")
        js = nc.jetstream()
        await messaging.ensure_stream(js, messaging.EVENTS_STREAM, messaging.EVENTS_SUBJECTS)
        events = NatsRenderEvents(messaging.EventPublisher(js))
        stack.push_async_callback(events.flush)

        guard = await stack.enter_async_context(OutboundGuard(load(OutboundSettings)))
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
        )
        pool = PagePool(
            engine, size=settings.renderer_concurrency, max_queue=settings.renderer_max_queue,
            restart_after=settings.renderer_restart_after, timeout=settings.renderer_timeout,
        )
        await pool.start()
        stack.push_async_callback(pool.close)

        channel = await rpc.open_channel(
            stack, settings.template_grpc_target, default_deadline=settings.rpc_deadline
        )

        async def run_capture(spec: CaptureSpec) -> bytes:
            return await pool.run(partial(_capture_on, spec=spec))

        pipeline = RenderPipeline(
            GrpcTemplateSource(channel), blobs, run_capture, events,
            max_dimension=settings.renderer_max_dimension,
        )
        await rpc.start_server(
            stack,
            address=settings.renderer_grpc_address,
            services=[(renderer_pb2_grpc.add_RendererServiceServicer_to_server,
                       RendererServicer(pipeline), SERVICE_NAME)],
            grace=settings.shutdown_grace,
        )
        await stop.wait()


async def _capture_on(page: object, *, spec: CaptureSpec) -> bytes:
    assert isinstance(page, ChromiumPage)
    return await capture(page, spec)
