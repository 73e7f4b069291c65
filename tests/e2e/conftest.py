"""The real stack (NATS, template, renderer, gateway as processes) for end-to-end tests.

``LITHO_TEST_MODE`` picks how it runs (see ``tests/support/production.py``):
``embedded`` (default) as ``make run`` does; ``production`` as the Helm chart
does, with MongoDB (nx-27017), S3 (SeaweedFS), two renderers and two gateways
behind a round-robin balancer in the test process (``live.url``), so that
consecutive requests of a test land on different gateways. Modules marked
``production`` are the part of the suite that runs in that mode
(``make test`` runs it after the whole suite).

Two image servers run on loopback in the test process: ``allowed`` is on the
outbound allow-list, ``secret`` is not, so a template that references both
shows the first and never reaches the second. Both answer 404 under ``/missing/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.typedefs import Handler
from PIL import Image

from litho.blobstore import open_blob_store
from litho.config import S3Settings
from services._stack import Stack
from tests.support.balancer import Balancer
from tests.support.otlp import OtlpReceiver, start_receiver
from tests.support.production import PRODUCTION, Production, current_mode, start_production


def solid_png(color: tuple[int, int, int], size: int = 50) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


@dataclass
class ImageServer:
    color: tuple[int, int, int]
    port: int = 0
    hits: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


async def serve_loopback(handler: Handler) -> tuple[web.AppRunner, int]:
    """``handler`` for every method and path on a free loopback port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


async def _serve(server: ImageServer) -> web.AppRunner:
    body = solid_png(server.color)

    async def handler(request: web.Request) -> web.Response:
        server.hits.append(request.path)
        if request.path.startswith("/missing/"):
            return web.Response(status=404, text="no such image")
        return web.Response(body=body, content_type="image/png")

    runner, server.port = await serve_loopback(handler)
    return runner


@dataclass
class DataServer:
    """A JSON data source on loopback (allow-listed): ``/items/<name>`` answers
    ``items[name]`` with an ETag (and a 304 for ``If-None-Match``), or, when
    ``failing`` is set, a 500; other paths answer what :meth:`handle` says."""

    port: int = 0
    items: dict[str, Any] = field(default_factory=dict)
    failing: bool = False
    #: (path, If-None-Match, Authorization) of every request.
    hits: list[tuple[str, str, str]] = field(default_factory=list)
    #: Where /redirect points (a loopback port that is not allow-listed).
    redirect_to: str = ""
    #: Bodies POSTed to /hook (a webhook receiver).
    hooks: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.hits if p == path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append((request.path, request.headers.get("If-None-Match", ""),
                          request.headers.get("Authorization", "")))
        path = request.path
        if path == "/hook":
            await self.hooks.put(await request.read())
            return web.Response(status=204)
        if path == "/html":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if path == "/invalid":
            return web.Response(text="{not json", content_type="application/json")
        if path == "/huge":
            return web.Response(body=b"[" + b"1," * (5 * 2**20) + b"1]",
                                content_type="application/json")
        if path == "/redirect":
            raise web.HTTPFound(self.redirect_to)
        name = path.removeprefix("/items/")
        if self.failing:
            return web.Response(status=500, text="the inventory is down")
        if name not in self.items:
            return web.Response(status=404, text="no such item")
        body = json.dumps(self.items[name]).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/json",
                            headers={"ETag": etag})


@dataclass
class Live:
    stack: Stack
    http: aiohttp.ClientSession
    allowed: ImageServer
    secret: ImageServer
    other_key: str
    #: Every process of the stack exports its spans here.
    otlp: OtlpReceiver
    #: A JSON data source, allow-listed.
    data: DataServer
    #: Production mode's servers and balancer (None in embedded mode).
    production: Production | None = None
    balancer: Balancer | None = None

    @property
    def url(self) -> str:
        """The balancer in front of every gateway (production mode), else the gateway."""
        return self.balancer.url if self.balancer else self.stack.url

    async def restart(self, service: str, env: dict[str, str] | None = None) -> None:
        """Restart every replica of ``service`` with ``env`` over its settings."""
        for name in self.stack.names:
            if name == service or name.startswith(f"{service}-"):
                await self.stack.restart(name, env)

    async def delete_blobs(self, *keys: str) -> None:
        """Remove stored objects (the blob directory's files, or S3 objects)."""
        env = self.stack.env
        s3 = (self.production.s3_settings() if self.production
              else S3Settings(endpoint_url=None))
        store = await open_blob_store(
            env.get("LITHO_BLOBSTORE_URL") or (self.stack.data_dir / "blobs").as_uri(), s3)
        try:
            for key in keys:
                assert await store.delete(key), key
        finally:
            await store.close()

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.stack.api_key}"}


def _print_logs(stack: Stack) -> None:
    print(stack.log_tails(), file=sys.__stderr__)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def production(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Production | None]:
    """nx-27017 and SeaweedFS in production mode (the bucket made), else None."""
    if current_mode() != PRODUCTION:
        yield None
        return
    parts = await asyncio.to_thread(start_production, tmp_path_factory.mktemp("production"))
    try:
        await parts.ensure_bucket()
        yield parts
        await parts.drop_databases()
    finally:
        await asyncio.to_thread(parts.stop)


def mode_env(production: Production | None, name: str) -> dict[str, str]:
    """What a stack of ``name`` adds to its settings in the current mode."""
    return production.env(name) if production else {}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def live(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
    production: Production | None,
) -> AsyncIterator[Live]:
    allowed = ImageServer(color=(0, 200, 0))
    secret = ImageServer(color=(255, 0, 255))
    runners = [await _serve(allowed), await _serve(secret)]
    data = DataServer(redirect_to=secret.url("inventory.json"))
    data_runner, data.port = await serve_loopback(data.handle)
    runners.append(data_runner)
    otlp = await start_receiver()
    data_dir: Path = tmp_path_factory.mktemp("litho-data")
    balancer = Balancer() if production else None
    stack = Stack(
        data_dir=data_dir,
        gateway_port=0,
        log_to_files=True,
        env={
            "LITHO_OUTBOUND_ALLOW": f"127.0.0.1:{allowed.port},127.0.0.1:{data.port}",
            "LITHO_BINDING_MIN_TTL_SECONDS": "1",
            "LITHO_LOG_LEVEL": "INFO",
            "LITHO_RENDERER_CONCURRENCY": "2",
            **otlp.env(),
            **mode_env(production, "live"),
            # Image URLs point at the balancer, as at a Service in a cluster.
            **({"LITHO_PUBLIC_URL": balancer.start()} if balancer else {}),
        },
    )
    try:
        async with stack, aiohttp.ClientSession() as http:
            if balancer:
                balancer.route_to(stack.urls)
            other_key = await stack.create_key("other-tenant")
            yield Live(stack, http, allowed, secret, other_key, otlp, data, production,
                       balancer)
            if request.session.testsfailed:
                _print_logs(stack)  # the services' side of whatever failed
    except BaseException:
        _print_logs(stack)
        raise
    finally:
        for runner in runners:
            await runner.cleanup()
        await otlp.close()
        if balancer:
            balancer.stop()
    # SIGTERM is a graceful stop: every registered service drains and exits 0.
    assert stack.unclean_exits() == {}
