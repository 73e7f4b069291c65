"""The renderer's subresource fetcher: through the real outbound guard, to a
real loopback server; only Playwright's Route is faked (behind RouteLike)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
from aiohttp import web

from litho.config import OutboundSettings
from litho.outbound import OutboundGuard
from services.renderer._subresources import SubresourceFetcher


@dataclass
class FakeRequest:
    url: str
    method: str = "GET"


@dataclass
class FakeRoute:
    request: FakeRequest
    aborted: str | None = None
    fulfilled: dict[str, object] = field(default_factory=dict)

    async def abort(self, error_code: str | None = None) -> None:
        self.aborted = error_code

    async def fulfill(self, *, status: int | None = None, headers: dict[str, str] | None = None,
                      body: bytes | str | None = None) -> None:
        self.fulfilled = {"status": status, "body": body}


@dataclass
class Server:
    base: str
    hits: list[str]


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[Server]:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/missing.png":
            return web.Response(status=404, body=b"no")
        return web.Response(body=b"x" * 1000, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield Server(f"http://127.0.0.1:{runner.addresses[0][1]}", hits)
    await runner.cleanup()


async def fetcher_for(server: Server, *, ttl: float = 60, max_bytes: int = 10_000,
                      allow: bool = True) -> tuple[SubresourceFetcher, OutboundGuard]:
    port = server.base.rsplit(":", 1)[1]
    guard = OutboundGuard(OutboundSettings(allow=f"127.0.0.1:{port}" if allow else ""))
    await guard.start()
    return SubresourceFetcher(guard, ttl=ttl, max_bytes=max_bytes), guard


async def fetch(fetcher: SubresourceFetcher, url: str, method: str = "GET",
                tenant: str = "t1") -> FakeRoute:
    route = FakeRoute(FakeRequest(url, method))
    await fetcher.handle(route, tenant)
    return route


async def test_fetches_once_then_serves_from_memory(server: Server) -> None:
    fetcher, guard = await fetcher_for(server)
    for _ in range(3):
        route = await fetch(fetcher, f"{server.base}/a.png")
        assert route.fulfilled == {"status": 200, "body": b"x" * 1000}
    assert server.hits == ["/a.png"]
    await guard.close()


async def test_the_cache_is_per_tenant(server: Server) -> None:
    # A shared cache would tell a tenant, by timing, which URLs others fetched.
    fetcher, guard = await fetcher_for(server)
    for tenant in ("t1", "t2", "t1", "t2"):
        route = await fetch(fetcher, f"{server.base}/shared.png", tenant=tenant)
        assert route.fulfilled == {"status": 200, "body": b"x" * 1000}
    assert server.hits == ["/shared.png", "/shared.png"]
    await guard.close()


async def test_entries_expire_after_the_ttl(server: Server) -> None:
    fetcher, guard = await fetcher_for(server, ttl=0.05)
    await fetch(fetcher, f"{server.base}/b.png")
    await asyncio.sleep(0.1)
    await fetch(fetcher, f"{server.base}/b.png")
    assert server.hits == ["/b.png", "/b.png"]
    await guard.close()


async def test_the_cache_is_bounded_in_bytes_and_keeps_only_200s(server: Server) -> None:
    fetcher, guard = await fetcher_for(server, max_bytes=1500)
    for name in ("c.png", "d.png", "c.png"):  # d evicts c: both do not fit
        await fetch(fetcher, f"{server.base}/{name}")
    assert server.hits == ["/c.png", "/d.png", "/c.png"]
    for _ in range(2):
        route = await fetch(fetcher, f"{server.base}/missing.png")
        assert route.fulfilled["status"] == 404
    assert server.hits.count("/missing.png") == 2
    await guard.close()


async def test_denied_and_non_get_requests_are_aborted(server: Server) -> None:
    fetcher, guard = await fetcher_for(server, allow=False)
    route = await fetch(fetcher, f"{server.base}/e.png")
    assert route.aborted == "blockedbyclient" and not route.fulfilled
    fetcher, other = await fetcher_for(server)
    assert (await fetch(fetcher, f"{server.base}/e.png", "POST")).aborted == "blockedbyclient"
    assert server.hits == []
    await guard.close()
    await other.close()


async def test_names_under_invalid_are_refused_without_a_lookup(server: Server) -> None:
    # Relative URLs under the default base URL (http://document.invalid/).
    fetcher, guard = await fetcher_for(server)
    for url in ("http://document.invalid/logo.png", "https://a.b.INVALID./x.css",
                "http://invalid/x"):
        route = await fetch(fetcher, url)
        assert route.aborted == "namenotresolved" and route.fulfilled == {}
    # Only the name decides: a host that merely contains "invalid" is fetched.
    route = await fetch(fetcher, f"{server.base}/invalid.png")
    assert route.fulfilled["status"] == 200
    await guard.close()
