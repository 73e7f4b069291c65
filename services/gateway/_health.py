"""Probes: ``/livez`` (the process answers) and ``/readyz`` (the render path
can serve); ``/healthz`` (``_handlers.get_health``) asks every backend.

``/livez`` calls nothing: a liveness probe that failed with a backend would
restart gateways that are fine. ``/readyz`` asks only what a render needs (the
template and renderer services' health, and the key store that authenticates
every call), each check bounded by a timeout, and keeps the answer for
:data:`READY_TTL` seconds, so probes at any rate cost the backends at most one
round of checks a second; concurrent probes share the round under way. A 503
names the parts that are not ready, and nothing else about them.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
from aiohttp import web

from litho import rpc
from litho.docstore import DocumentStore
from litho.logs import get_logger
from services.gateway._problems import problem
from services.gateway._state import deps

log = get_logger(__name__)

#: One readiness check: returns when the part is ready, raises otherwise.
Check = Callable[[], Awaitable[object]]
#: Seconds a readiness answer is kept (default of LITHO_GATEWAY_READY_CACHE_SECONDS).
READY_TTL = 1.0
#: Seconds one check may take before its part counts as not ready (below
#: Kubernetes' default probe timeout, 1 s, with the round trip; default of
#: LITHO_GATEWAY_READY_TIMEOUT).
READY_CHECK_TIMEOUT = 0.8
_NO_STORE = {"Cache-Control": "no-store"}
#: The services a render goes through, by their registry names.
RENDER_PATH = ("template", "renderer")


def render_path_readiness(backends: Mapping[str, grpc.aio.Channel],
                          store: DocumentStore, *, ttl: float = READY_TTL,
                          timeout: float = READY_CHECK_TIMEOUT) -> Readiness:
    """What a render needs: the template and renderer services SERVING on
    their standard health service, and the document store holding API keys."""
    checks: dict[str, Check] = {
        name: functools.partial(rpc.wait_healthy, backends[name], timeout=timeout)
        for name in RENDER_PATH}
    checks["key-store"] = store.ping
    return Readiness(checks, ttl=ttl, timeout=timeout)


class Readiness:
    """Runs named checks together and keeps the result for ``ttl`` seconds."""

    def __init__(self, checks: Mapping[str, Check], *, ttl: float = READY_TTL,
                 timeout: float = READY_CHECK_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._checks = dict(checks)
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._result: tuple[str, ...] = ()
        self._until = float("-inf")
        self._round: asyncio.Task[tuple[str, ...]] | None = None

    async def not_ready(self) -> tuple[str, ...]:
        """The names of the checks that failed, in declaration order; empty: ready."""
        if self._clock() < self._until:
            return self._result
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._run(), name="readiness")
        # Shielded: a probe that goes away does not cancel the round others wait for.
        return await asyncio.shield(self._round)

    async def _run(self) -> tuple[str, ...]:
        results = await asyncio.gather(*(self._one(name, check)
                                         for name, check in self._checks.items()))
        failed = tuple(name for name, ok in zip(self._checks, results, strict=True) if not ok)
        self._result, self._until = failed, self._clock() + self._ttl
        return failed

    async def _one(self, name: str, check: Check) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await check()
        except Exception as exc:  # any failure, or the timeout, is "not ready"
            log.info("not ready", part=name, error=str(exc) or type(exc).__name__)
            return False
        return True


async def get_live(request: web.Request) -> web.Response:
    """``GET /livez``: the process serves HTTP; nothing else is asked."""
    return web.json_response({"status": "ok"}, headers=_NO_STORE)


async def get_ready(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when the render path can serve, else 503 naming
    the parts that cannot."""
    readiness = deps(request).readiness
    failed = await readiness.not_ready() if readiness is not None else ()
    if failed:
        return problem(503, "not ready: " + ", ".join(failed), headers=_NO_STORE)
    return web.json_response({"status": "ready"}, headers=_NO_STORE)
