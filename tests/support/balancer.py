"""A round-robin HTTP load balancer in front of the gateway replicas, for tests.

Production mode of the end-to-end suite puts it where a Kubernetes Service (or
an ingress) stands in front of the chart's gateways: each request goes to the
next replica in turn, so consecutive requests of one test land on different
gateways. It runs its own event loop in a thread, so a test that blocks its
loop (a synchronous client, a subprocess) cannot stall it.

Bodies are passed through whole (request and response), which is enough for
the API's JSON, images and PDFs; hop-by-hop headers are dropped as a proxy must.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

#: RFC 9110 §7.6.1, plus the length, which aiohttp sets from the body it sends.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "content-length",
})
#: aiohttp's server has already decoded a compressed request body.
_DECODED = _HOP_BY_HOP | {"content-encoding"}
#: Longest a proxied exchange may take (a slow render or a large batch upload).
_TIMEOUT = aiohttp.ClientTimeout(total=120)


@dataclass
class Balancer:
    """Round robin over ``upstreams`` (base URLs); set them before requests come."""

    upstreams: list[str] = field(default_factory=list)
    #: Requests forwarded to each upstream (tests check both gateways served).
    served: Counter[str] = field(default_factory=Counter)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _turns: Iterator[int] = field(default_factory=itertools.count)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def route_to(self, upstreams: Sequence[str]) -> None:
        with self._lock:
            self.upstreams = list(upstreams)

    def _next(self) -> str:
        with self._lock:
            if not self.upstreams:
                raise web.HTTPServiceUnavailable(text="the balancer has no upstreams yet")
            upstream = self.upstreams[next(self._turns) % len(self.upstreams)]
            self.served[upstream] += 1
            return upstream

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        upstream = self._next()
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in _DECODED)
        headers["X-Forwarded-For"] = request.remote or ""
        body = await request.read()
        async with self._session.request(
            request.method, upstream + request.rel_url.raw_path_qs, headers=headers,
            data=body or None, allow_redirects=False, auto_decompress=False,
        ) as resp:
            payload = await resp.read()
            # A HEAD answer's length is the GET body's, as the upstream said.
            keep = {"content-length"} if request.method == "HEAD" else set()
            out = CIMultiDict((k, v) for k, v in resp.headers.items()
                              if k.lower() not in _HOP_BY_HOP - keep)
            return web.Response(status=resp.status, reason=resp.reason,
                                body=payload or None, headers=out)

    async def _listen(self) -> str:
        # No connection reuse: every request is its own exchange, as across
        # replicas behind a Service.
        self._session = aiohttp.ClientSession(
            timeout=_TIMEOUT, connector=aiohttp.TCPConnector(force_close=True),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port: int = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> str:
        """Listen on a free loopback port in a thread of its own; the base URL."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="balancer", daemon=True)
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=10)
        return self.url

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
