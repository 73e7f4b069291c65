"""The real stack (NATS, template, renderer, gateway as processes) for end-to-end tests.

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

from services._stack import Stack
from tests.support.otlp import OtlpReceiver, start_receiver


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

    @property
    def url(self) -> str:
        return self.stack.url

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.stack.api_key}"}


def _print_logs(stack: Stack) -> None:
    print(stack.log_tails(), file=sys.__stderr__)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def live(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Live]:
    allowed = ImageServer(color=(0, 200, 0))
    secret = ImageServer(color=(255, 0, 255))
    runners = [await _serve(allowed), await _serve(secret)]
    data = DataServer(redirect_to=secret.url("inventory.json"))
    data_runner, data.port = await serve_loopback(data.handle)
    runners.append(data_runner)
    otlp = await start_receiver()
    data_dir: Path = tmp_path_factory.mktemp("litho-data")
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
        },
    )
    try:
        async with stack, aiohttp.ClientSession() as http:
            other_key = await stack.create_key("other-tenant")
            yield Live(stack, http, allowed, secret, other_key, otlp, data)
            if request.session.testsfailed:
                _print_logs(stack)  # the services' side of whatever failed
    except BaseException:
        _print_logs(stack)
        raise
    finally:
        for runner in runners:
            await runner.cleanup()
        await otlp.close()
    # SIGTERM is a graceful stop: every registered service drains and exits 0.
    assert stack.unclean_exits() == {}
