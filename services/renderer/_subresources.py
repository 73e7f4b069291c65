"""Every request a page makes is fetched here, through the outbound guard.

Chromium never reaches the network itself: images, fonts and stylesheets are
fetched by :class:`litho.outbound.OutboundGuard` (which denies private
addresses), cached briefly in memory, and handed back with ``route.fulfill``.
A denied or failed fetch aborts that one request; the page renders without it,
and the request's outcome (``_assets.Asset``) goes back to the render, which
warns about it and does not store the output under its content address.
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

from litho.errors import (
    OutboundDenied,
    OutboundError,
    OutboundTimeout,
    OutboundTooLarge,
    OutboundUnresolved,
)
from litho.logs import get_logger
from litho.outbound import OutboundGuard
from services.renderer import _assets
from services.renderer._assets import Asset

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

    async def handle(self, route: RouteLike, tenant: str = "") -> Asset:
        """Fetch (or serve from ``tenant``'s cache) what the page asked for,
        and say how it went."""
        request = route.request
        url = request.url
        if request.method != "GET":
            await route.abort("blockedbyclient")
            return _assets.not_get(url, request.method)
        if _never_resolves(url):
            # Relative URLs under the default base URL: no DNS query for them.
            await route.abort("namenotresolved")
            if urlsplit(url).hostname == "fonts.litho.invalid":
                # The same words for any id: another tenant's font and a
                # made-up id must be indistinguishable.
                return _assets.failed(url, "not an uploaded font this document names by "
                                           "family")
            return _assets.unresolvable(url)
        key = (tenant, url)
        started = time.perf_counter()
        # The host only: a path or query may carry a tenant's secrets.
        with _tracer.start_as_current_span("subresource", attributes={
                "server.address": urlsplit(url).hostname or ""}) as span:
            entry = self._lookup(key)
            span.set_attribute("litho.subresource.cached", entry is not None)
            asset = await self._fetch(route, key, entry, started)
            span.set_attributes({"litho.subresource.outcome": asset.outcome.value,
                                 "litho.subresource.size_bytes": asset.size})
            return asset

    async def _fetch(self, route: RouteLike, key: tuple[str, str], entry: _Entry | None,
                     started: float) -> Asset:
        url = key[1]
        cached = entry is not None
        if entry is None:
            try:
                result = await self._guard.fetch(url)
            except (OutboundDenied, OutboundUnresolved):
                # One outcome for both: telling "resolves to a private
                # address" from "does not exist" would let a tenant map the
                # operator's internal names.
                await route.abort("blockedbyclient")
                return _assets.denied(url)
            except OutboundTimeout:
                await route.abort("timedout")
                return _assets.timed_out(url, self._guard.timeout, _ms(started))
            except OutboundTooLarge:
                await route.abort("failed")
                return _assets.too_large(url, self._guard.max_bytes, _ms(started))
            except OutboundError as exc:
                log.info("subresource fetch failed", url=_assets.clip_url(url), error=str(exc))
                await route.abort("failed")
                return _assets.failed(url, str(exc)[:300], _ms(started))
            entry = _Entry(result.status, dict(result.headers), result.body,
                           time.monotonic() + self._ttl)
            if result.status == 200:
                self._store(key, entry)
        await route.fulfill(status=entry.status, headers=entry.headers, body=entry.body)
        if entry.status >= 400:
            return _assets.failed(url, f"the server answered HTTP {entry.status}",
                                  _ms(started), status=entry.status, size=len(entry.body))
        return _assets.Asset(_assets.clip_url(url), _assets.Outcome.LOADED,
                             size=len(entry.body), duration_ms=_ms(started),
                             status=entry.status, cached=cached)

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


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _never_resolves(url: str) -> bool:
    """``.invalid`` names never resolve (RFC 6761)."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return False
    return host == "invalid" or host.endswith(".invalid")
