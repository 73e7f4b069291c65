"""The gateway's probes (``services/gateway/_health.py``): ``/livez`` calls
nothing, ``/readyz`` asks the render path, names what is not ready and keeps
its answer about a second. The readiness is driven through fake checks (its
port) and once through real gRPC health servers on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from litho import rpc
from services.gateway._app import create_app
from services.gateway._health import Check, Readiness, render_path_readiness
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._state import Deps

Serve = Callable[[Readiness | None], Awaitable[str]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """A check that counts its calls and fails while ``error`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None
        self.delay = 0.0

    async def __call__(self) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error


def _readiness(checks: Mapping[str, Check], clock: FakeClock | None = None,
               **kwargs: Any) -> Readiness:
    return Readiness(checks, clock=clock or FakeClock(), **kwargs)


async def test_ready_when_every_check_passes_and_names_each_that_fails() -> None:
    template, renderer, keys = Counted(), Counted(), Counted()
    clock = FakeClock()
    readiness = _readiness({"template": template, "renderer": renderer, "key-store": keys},
                           clock)
    assert await readiness.not_ready() == ()
    renderer.error = ConnectionError("refused by 10.0.0.7:50052")
    keys.error = RuntimeError("mongo down")
    clock.now += 1.5
    assert await readiness.not_ready() == ("renderer", "key-store")


async def test_the_answer_is_kept_for_the_ttl() -> None:
    check, clock = Counted(), FakeClock()
    readiness = _readiness({"renderer": check}, clock, ttl=1.0)
    for _ in range(50):
        assert await readiness.not_ready() == ()
    assert check.calls == 1
    check.error = ConnectionError()
    clock.now += 0.9
    assert await readiness.not_ready() == ()  # still the kept answer
    clock.now += 0.2
    assert await readiness.not_ready() == ("renderer",)
    assert check.calls == 2


async def test_concurrent_probes_share_one_round() -> None:
    check = Counted()
    check.delay = 0.05
    readiness = _readiness({"template": check})
    answers = await asyncio.gather(*(readiness.not_ready() for _ in range(20)))
    assert answers == [()] * 20
    assert check.calls == 1


async def test_a_slow_check_is_not_ready_after_the_timeout() -> None:
    slow, fast = Counted(), Counted()
    slow.delay = 5.0
    readiness = _readiness({"template": slow, "renderer": fast}, timeout=0.05)
    started = asyncio.get_running_loop().time()
    assert await readiness.not_ready() == ("template",)
    assert asyncio.get_running_loop().time() - started < 4.0  # well before the 5 s check


async def test_a_probe_that_goes_away_does_not_cancel_the_round() -> None:
    check = Counted()
    check.delay = 0.1
    readiness = _readiness({"renderer": check})
    first = asyncio.create_task(readiness.not_ready())
    await asyncio.sleep(0.01)
    second = asyncio.create_task(readiness.not_ready())
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == ()
    assert check.calls == 1


@pytest_asyncio.fixture(loop_scope="session")
async def serve() -> AsyncIterator[Serve]:
    """Starts the gateway app (no backend stubs) with the given readiness."""
    runners: list[web.AppRunner] = []

    async def start(readiness: Readiness | None) -> str:
        doc = load_document()
        deps = Deps(keys=None, templates=None, renderer=None,  # type: ignore[arg-type]
                    webhooks=None, blobs=None,  # type: ignore[arg-type]
                    openapi=doc, validator=RequestValidator(doc), readiness=readiness)
        runner = web.AppRunner(create_app(deps, max_body_bytes=1 << 20), access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_livez_answers_without_a_key_and_calls_nothing(serve: Serve) -> None:
    check = Counted()
    check.error = ConnectionError()
    url = await serve(Readiness({"renderer": check}))
    async with aiohttp.ClientSession() as http, http.get(f"{url}/livez") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok"}
        assert r.headers["Cache-Control"] == "no-store"
    assert check.calls == 0


async def test_readyz_answers_without_a_key(serve: Serve) -> None:
    renderer, template = Counted(), Counted()
    url = await serve(Readiness({"template": template, "renderer": renderer}, ttl=0))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/readyz") as r:
            assert r.status == 200
            assert await r.json() == {"status": "ready"}
        renderer.error = ConnectionError("connect to 10.1.2.3:50052 refused")
        async with http.get(f"{url}/readyz") as r:
            assert r.status == 503
            assert r.content_type == "application/problem+json"
            assert r.headers["Cache-Control"] == "no-store"
            body = await r.json()
        # A key is still needed elsewhere: the probes are the exception.
        async with http.get(f"{url}/v1/templates") as other:
            assert other.status == 401
    assert body["detail"] == "not ready: renderer"
    assert "10.1.2.3" not in str(body)


async def _health_server(stack: AsyncExitStack) -> tuple[HealthServicer, str]:
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stack.push_async_callback(server.stop, None)
    return health, f"127.0.0.1:{port}"


class _Store:
    """The key store's document store, as far as readiness asks it."""

    def __init__(self) -> None:
        self.up = True

    async def ping(self) -> None:
        if not self.up:
            raise ConnectionError("store down")


async def test_render_path_readiness_asks_real_health_services() -> None:
    async with AsyncExitStack() as stack:
        template_health, template_at = await _health_server(stack)
        renderer_health, renderer_at = await _health_server(stack)
        backends = {
            "template": await rpc.open_channel(stack, template_at, default_deadline=5),
            "renderer": await rpc.open_channel(stack, renderer_at, default_deadline=5),
            # Not on the render path: never asked (nothing listens there).
            "webhook": await rpc.open_channel(stack, "127.0.0.1:1", default_deadline=5),
        }
        store = _Store()
        readiness = render_path_readiness(backends, store, ttl=0)  # type: ignore[arg-type]
        assert await readiness.not_ready() == ()
        await renderer_health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await readiness.not_ready() == ("renderer",)
        await template_health.enter_graceful_shutdown()
        store.up = False
        assert await readiness.not_ready() == ("template", "renderer", "key-store")
        await renderer_health.set("", health_pb2.HealthCheckResponse.SERVING)
        store.up = True
        assert await readiness.not_ready() == ("template",)


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_the_probes_are_public_operations(path: str) -> None:
    from services.gateway._middleware import is_public
    from services.gateway._scopes import PUBLIC, scope_needed
    doc = load_document()
    operation = doc["paths"][path]["get"]
    assert operation["security"] == []
    assert scope_needed(operation["operationId"]) == PUBLIC
    assert is_public("GET", path)
