"""The real stack (NATS, template, renderer, gateway as processes) for end-to-end tests.

Two image servers run on loopback in the test process: ``allowed`` is on the
outbound allow-list, ``secret`` is not, so a template that references both
shows the first and never reaches the second. Both answer 404 under ``/missing/``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

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
class Live:
    stack: Stack
    http: aiohttp.ClientSession
    allowed: ImageServer
    secret: ImageServer
    other_key: str
    #: Every process of the stack exports its spans here.
    otlp: OtlpReceiver

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
    otlp = await start_receiver()
    data_dir: Path = tmp_path_factory.mktemp("litho-data")
    stack = Stack(
        data_dir=data_dir,
        gateway_port=0,
        log_to_files=True,
        env={
            "LITHO_OUTBOUND_ALLOW": f"127.0.0.1:{allowed.port}",
            "LITHO_LOG_LEVEL": "INFO",
            "LITHO_RENDERER_CONCURRENCY": "2",
            **otlp.env(),
        },
    )
    try:
        async with stack, aiohttp.ClientSession() as http:
            other_key = await stack.create_key("other-tenant")
            yield Live(stack, http, allowed, secret, other_key, otlp)
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
