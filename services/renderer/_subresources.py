"""Every request a page makes is fetched here, through the outbound guard.

Chromium never reaches the network itself: images, fonts and stylesheets are
fetched by :class:`litho.outbound.OutboundGuard` (which denies private
addresses), cached briefly in memory, and handed back with ``route.fulfill``.
A denied or failed fetch aborts that one request; the page renders without it.
The cache is kept per tenant: a shared one would let a tenant learn, from how
fast an image loads, which URLs other tenants rendered recently.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from opentelemetry import trace

from litho.errors import OutboundDenied, OutboundError
from litho.logs import get_logger
from litho.outbound import OutboundGuard

log = get_logger(__name__)
_tracer = trace.get_tracer("litho.renderer.subresources")


class _Request(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def url(self) -> str: ...


class RouteLike(Protocol):
    """What we use of Playwright's ``Route``."""

    @property
    def request(self) -> _Request: ...

    async def abort(self, error_code: str | None = None) -> None: ...

    async def fulfill(
        self, *, status: int | None = None, headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class _Entry:
    status: int
    headers: dict[str, str]
    body: bytes
    expires: float


class SubresourceFetcher:
    def __init__(self, guard: OutboundGuard, *, ttl: float, max_bytes: int) -> None:
        self._guard = guard
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._cached_bytes = 0

    async def handle(self, route: RouteLike, tenant: str = "") -> None:
        """Fetch (or serve from ``tenant``'s cache) what the page asked for."""
        request = route.request
        if request.method != "GET":
            await route.abort("blockedbyclient")
            return
        url = request.url
        if _never_resolves(url):
            # Relative URLs under the default base URL: no DNS query for them.
            await route.abort("namenotresolved")
            return
        key = (tenant, url)
        # The host only: a path or query may carry a tenant's secrets.
        with _tracer.start_as_current_span("subresource", attributes={
                "server.address": urlsplit(url).hostname or ""}) as span:
            entry = self._lookup(key)
            span.set_attribute("litho.subresource.cached", entry is not None)
            if entry is None:
                try:
                    result = await self._guard.fetch(url)
                except OutboundDenied:
                    await route.abort("blockedbyclient")
                    return
                except OutboundError as exc:
                    log.info("subresource fetch failed", url=url, error=str(exc))
                    await route.abort("failed")
                    return
                entry = _Entry(result.status, dict(result.headers), result.body,
                               time.monotonic() + self._ttl)
                if result.status == 200:
                    self._store(key, entry)
            await route.fulfill(status=entry.status, headers=entry.headers, body=entry.body)

    def _lookup(self, key: tuple[str, str]) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires < time.monotonic():
            self._evict(key)
            return None
        self._cache.move_to_end(key)
        return entry

    def _store(self, key: tuple[str, str], entry: _Entry) -> None:
        size = len(entry.body)
        if self._ttl <= 0 or size > self._max_bytes:
            return
        if key in self._cache:
            self._evict(key)
        self._cache[key] = entry
        self._cached_bytes += size
        while self._cached_bytes > self._max_bytes:
            self._evict(next(iter(self._cache)))

    def _evict(self, key: tuple[str, str]) -> None:
        entry = self._cache.pop(key)
        self._cached_bytes -= len(entry.body)


def _never_resolves(url: str) -> bool:
    """``.invalid`` names never resolve (RFC 6761)."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return False
    return host == "invalid" or host.endswith(".invalid")
