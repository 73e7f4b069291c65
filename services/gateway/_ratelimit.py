"""Rate limits and monthly render quotas, shared by every gateway replica.

Three limits apply to an authenticated request:

- **per key** and **per tenant**, requests per second: each a token bucket
  (a rate and a burst) kept in the document store as GCRA's one number, the
  bucket's *theoretical arrival time* (``tat``): the bucket is full when
  ``tat <= now`` and holds ``burst - (tat - now) * rate`` tokens otherwise.
  Taking tokens is one conditional ``find_one_and_update`` (``$set`` when the
  bucket is full, ``$inc`` when it is not), atomic on SQLite and MongoDB, so
  replicas never double-spend;
- **renders per calendar month (UTC)** per tenant: one counter document per
  tenant and month, reserved before the render (``$inc`` under a ``$lte``
  filter) and given back when the render answers 4xx or 5xx (or is an
  ``Idempotency-Key`` replay, counted the first time).

The hot path mostly touches no store: a replica *leases* tokens from the
shared bucket (one at first, doubling while it spends them in time, at most
``lease_fraction`` of the burst) and spends them locally; a lease it has not
spent after ``lease_seconds`` is dropped. So in any interval of length ``d``
a bucket admits at most ``burst + rate * d + R * L`` requests (``R``
replicas, ``L`` the largest lease), and a replica may refuse while another
still holds up to ``L`` unspent tokens. A refused bucket is remembered until
its next token is due, so a client hammering past its limit costs no store
calls. If the store fails or is slower than ``store_timeout``, the request
is admitted (logged): a limiter outage must not be a gateway outage. Renders
admitted so are not counted, so nothing is given back for them; and a
refund never takes a month's counter below zero.

Per-tenant overrides live in the ``tenant_limits`` collection (managed by
``python -m services.gateway.limits``), cached per replica for
``overrides_ttl`` seconds; any field an override leaves out is the default.
A key's own rate follows its tenant's override unless the override names one.

Public URLs have no key but render for a tenant: a signed URL (``/r/``) for
its signing key's tenant, an experiment image (``/s/``) and a binding image
(``/b/``) for their owner's. Their handlers call :func:`public_render` (or,
for ``/b/``, :func:`count_public_render` once the renderer has named the
tenant): a render one of them causes counts in the tenant's month when the
renderer made it for that call (``rendered``), reserved before and given
back otherwise, so that viewers reloading an image cannot spend the
tenant's quota. Over the quota, what is stored is still served (the
renderer is asked for a stored output only); else a 429 that names nothing
of the owner. (The API's render routes count every answered request, cache
hits included: a caller asked for that render.) Public views take none of
the per-second limits and carry no X-RateLimit-* headers.

Every authenticated response carries ``X-RateLimit-Limit``,
``-Remaining`` and ``-Reset`` (seconds until the limit is whole again) of the
limit closest to exhaustion, and ``X-RateLimit-Scope`` naming it (``key``,
``tenant`` or ``tenant-renders-month``); a refusal is a 429 problem+json with
``Retry-After`` and the same headers for the limit that refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from litho.docstore import Document, DocumentStore, DuplicateKey
from litho.errors import FailedPrecondition, FieldError, InvalidArgument, ResourceExhausted
from litho.logs import get_logger
from services.gateway._problems import problem
from services.gateway._state import API_KEY

log = get_logger(__name__)

_T = TypeVar("_T")

COUNTERS = "rate_counters"
OVERRIDES = "tenant_limits"

#: The authenticated routes whose request is one render (method, route path).
#: Batches count their items through :func:`reserve_renders`.
RENDER_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/v1/templates/{templateId}/render"),
    ("POST", "/template/{templateId}/render"),
    ("POST", "/v1/templates/{templateId}/pdf"),
    ("POST", "/v1/render"),
    # A binding's preview renders an image too (served at /images/ like any).
    ("POST", "/v1/bindings/preview"),
})

#: Set by ``_idempotency.py`` on a stored response answered again: that
#: render was counted the first time.
REPLAYED_HEADER = "Idempotent-Replayed"
#: Buckets a replica keeps in memory; past it, idle ones are dropped.
_MAX_BUCKETS = 100_000
#: Tenants whose limits a replica keeps in memory.
_MAX_OVERRIDES = 10_000
#: Conditional updates tried before a contended bucket is treated as refused.
_ATTEMPTS = 5
#: Slack for float comparisons of times, in seconds.
_EPSILON = 1e-6
#: Seconds between two warnings about a failing store.
_WARN_EVERY = 30.0

MAX_PER_SECOND = 1_000_000.0
MAX_BURST = 10_000_000
MAX_RENDERS_PER_MONTH = 10**12

_OVERRIDE_FIELDS = {
    "requestsPerSecond": "requests per second of the tenant, 0 for none",
    "burst": "requests the tenant may make at once",
    "keyRequestsPerSecond": "requests per second of each key, 0 for none",
    "keyBurst": "requests each key may make at once",
    "rendersPerMonth": "renders per calendar month (UTC), 0 for none",
}


@dataclass(frozen=True)
class Limits:
    """One tenant's limits; a rate of 0 (or a quota of 0) means none."""

    per_second: float = 50.0
    burst: int = 100
    key_per_second: float = 50.0
    key_burst: int = 100
    renders_per_month: int = 0

    def with_override(self, doc: Mapping[str, Any]) -> Limits:
        """These defaults under a ``tenant_limits`` document (checked)."""
        o = check_override(doc)
        per_second = o.get("requestsPerSecond", self.per_second)
        burst = o.get("burst", self.burst)
        return Limits(
            per_second=per_second, burst=burst,
            key_per_second=o.get("keyRequestsPerSecond",
                                 per_second if "requestsPerSecond" in o else self.key_per_second),
            key_burst=o.get("keyBurst", burst if "burst" in o else self.key_burst),
            renders_per_month=o.get("rendersPerMonth", self.renders_per_month))


def check_override(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The override fields of ``doc``, each checked; an InvalidArgument naming
    the field otherwise."""
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if name in ("_id", "tenantId", "updatedAt"):
            continue
        if name not in _OVERRIDE_FIELDS:
            raise InvalidArgument(f"unknown limit {name!r}", errors=[FieldError(
                name, "one of " + ", ".join(sorted(_OVERRIDE_FIELDS)))])
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise InvalidArgument(f"{name} must be a number",
                                  errors=[FieldError(name, _OVERRIDE_FIELDS[name])])
        low, high = ((0, MAX_PER_SECOND) if name.endswith("PerSecond")
                     else (1, MAX_BURST) if name.endswith(("burst", "Burst"))
                     else (0, MAX_RENDERS_PER_MONTH))
        if not low <= value <= high or (not name.endswith("PerSecond") and value != int(value)):
            kind = "a number" if name.endswith("PerSecond") else "an integer"
            raise InvalidArgument(f"{name} must be {kind} from {low} to {high:g}; got {value}",
                                  errors=[FieldError(name, f"{kind} from {low} to {high:g}")])
        out[name] = float(value) if name.endswith("PerSecond") else int(value)
    return out


def month_of(now: float) -> tuple[str, float]:
    """The calendar month (UTC) holding ``now``, ``YYYY-MM``, and when the next begins."""
    day = datetime.fromtimestamp(now, UTC)
    following = (datetime(day.year + 1, 1, 1, tzinfo=UTC) if day.month == 12
                 else datetime(day.year, day.month + 1, 1, tzinfo=UTC))
    return f"{day.year:04d}-{day.month:02d}", following.timestamp()


class SharedCounters:
    """The counters every replica shares, in the document store's
    ``rate_counters`` collection: a bucket's ``tat``
    (``b:<k|t>:<key or tenant id>:<rate>:<burst>``) and
    a tenant's renders of a month (``m:<tenant>:<YYYY-MM>``)."""

    def __init__(self, store: DocumentStore) -> None:
        self._docs = store.collection(COUNTERS)

    async def take(self, bucket: str, wanted: int, *, rate: float, burst: int, now: float,
                   hint: float | None = None) -> tuple[int, float]:
        """Take up to ``wanted`` (at most ``burst``) tokens from the bucket at
        ``now``: how many were taken, and the bucket's ``tat`` after.
        ``hint`` is the last ``tat`` seen, to pick the likely update first."""
        period = 1.0 / rate
        tat = hint
        for _ in range(_ATTEMPTS):
            if tat is None or tat <= now:
                try:
                    doc = await self._docs.find_one_and_update(
                        {"_id": bucket, "tat": {"$lte": now}},
                        {"$set": {"tat": now + wanted * period}},
                        upsert=True, return_document="after")
                except DuplicateKey:
                    doc = None  # it exists and is not full: read it
                if doc is not None:
                    return wanted, float(doc["tat"])
            else:
                available = math.floor((now + burst * period - tat) * rate + _EPSILON)
                if available < 1:
                    return 0, tat
                taken = min(wanted, available)
                doc = await self._docs.find_one_and_update(
                    {"_id": bucket, "tat": {"$gt": now,
                                            "$lte": now + (burst - taken) * period + _EPSILON}},
                    {"$inc": {"tat": taken * period}}, return_document="after")
                if doc is not None:
                    return taken, float(doc["tat"])
            current = await self._docs.get(bucket)
            tat = None if current is None else float(current["tat"])
        return 0, now + period  # contended past every attempt: refuse for one period

    async def reserve_renders(self, tenant_id: str, month: str, count: int,
                              quota: int) -> int | None:
        """Count ``count`` renders of the month if they fit in ``quota``: the
        month's renders after, or None when they do not fit."""
        if count > quota:
            return None
        try:
            doc = await self._docs.find_one_and_update(
                {"_id": f"m:{tenant_id}:{month}", "renders": {"$lte": quota - count}},
                {"$inc": {"renders": count},
                 "$setOnInsert": {"tenantId": tenant_id, "month": month}},
                upsert=True, return_document="after")
        except DuplicateKey:
            return None
        return None if doc is None else int(doc["renders"])

    async def refund_renders(self, tenant_id: str, month: str, count: int) -> None:
        """Give back ``count`` renders of the month; none when fewer are
        counted, so that the counter never goes below zero."""
        await self._docs.update({"_id": f"m:{tenant_id}:{month}", "renders": {"$gte": count}},
                                {"$inc": {"renders": -count}})

    async def renders(self, tenant_id: str, month: str) -> int:
        doc = await self._docs.get(f"m:{tenant_id}:{month}")
        return 0 if doc is None else int(doc.get("renders", 0))


class TenantLimits:
    """Per-tenant overrides (``tenant_limits``, one document per tenant id),
    and the defaults beneath them; each replica keeps a tenant's limits for
    ``ttl`` seconds."""

    def __init__(self, store: DocumentStore, defaults: Limits, *, ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._docs = store.collection(OVERRIDES)
        # services/gateway/_keys.py's collection: a tenant exists while it has keys.
        self._keys = store.collection("api_keys")
        self.defaults = defaults
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, Limits]] = {}

    def cached(self, tenant_id: str) -> Limits | None:
        """The tenant's limits if this replica knows them (no store call)."""
        hit = self._cache.get(tenant_id)
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    async def of(self, tenant_id: str) -> Limits:
        known = self.cached(tenant_id)
        if known is not None:
            return known
        now = self._clock()
        doc = await self._docs.get(tenant_id)
        try:
            limits = self.defaults if doc is None else self.defaults.with_override(doc)
        except InvalidArgument as exc:
            # Written by hand past the command: the defaults, loudly.
            log.warning("ignoring an invalid tenant_limits document", tenant=tenant_id,
                        error=exc.message)
            limits = self.defaults
        if self._ttl > 0:
            if len(self._cache) >= _MAX_OVERRIDES:
                self._cache.clear()
            self._cache[tenant_id] = (now + self._ttl, limits)
        return limits

    async def override(self, tenant_id: str) -> Document | None:
        return await self._docs.get(tenant_id)

    async def set(self, tenant_id: str, values: Mapping[str, Any]) -> Document:
        """Set some of a tenant's limits (the rest keep their value or default).
        An unknown tenant (one without API keys) is an InvalidArgument."""
        checked = check_override(values)
        if not checked:
            raise InvalidArgument("name at least one limit to set", errors=[FieldError(
                "limits", "one or more of " + ", ".join(sorted(_OVERRIDE_FIELDS)))])
        await self._known(tenant_id)
        await self._docs.update(
            {"_id": tenant_id},
            {"$set": {**checked, "updatedAt": datetime.now(UTC).isoformat()},
             "$setOnInsert": {"tenantId": tenant_id}}, upsert=True)
        doc = await self._docs.get(tenant_id)
        return doc if doc is not None else {"_id": tenant_id, **checked}

    async def unset(self, tenant_id: str) -> bool:
        """Drop a tenant's override (back to the defaults); False if it had none."""
        return await self._docs.delete({"_id": tenant_id}) > 0

    async def _known(self, tenant_id: str) -> None:
        if await self._keys.find_one({"tenantId": tenant_id}) is None:
            raise InvalidArgument(
                f"unknown tenant {tenant_id!r}: it has no API keys (create one first with "
                "python -m services.gateway.keys create --tenant ...)",
                errors=[FieldError("tenant", "a tenant that has at least one API key")])


#: A bucket: its scope (``key`` or ``tenant``), the key or tenant id, its
#: rate and its burst.
_Which = tuple[str, str, float, int]


@dataclass
class _Bucket:
    """A replica's side of one shared bucket."""

    held: int = 0
    lease_until: float = 0.0
    lease_size: int = 1
    #: The shared ``tat`` as last seen (our own held tokens included).
    tat: float | None = None
    refused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Standing:
    """Where a request stands against one limit."""

    scope: str
    limit: int
    remaining: int
    #: Seconds until the limit is whole again (or, refused, until a retry can pass).
    reset: float

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(max(0, self.remaining)),
                "X-RateLimit-Reset": str(max(0, math.ceil(self.reset - _EPSILON))),
                "X-RateLimit-Scope": self.scope}


_HEADERS = web.RequestKey("rate_limit_headers", dict[str, str])
#: What :func:`reserve_renders` counted for a request, by tenant and month:
#: all :func:`refund_renders` may give back.
_COUNTED = web.RequestKey("rate_limit_counted", dict[tuple[str, str], int])


class RateLimited(ResourceExhausted):
    """A request over one of its limits: a 429 with ``Retry-After`` (the
    middleware answers it; raised from a handler, the errors middleware does,
    and the headers of :attr:`standing` are added all the same)."""

    def __init__(self, standing: Standing, detail: str) -> None:
        super().__init__(detail, retry_after=max(1, math.ceil(standing.reset - _EPSILON)))
        self.standing = standing

    def response(self) -> web.Response:
        headers = self.standing.headers()
        headers["Retry-After"] = str(int(self.retry_after))
        return problem(429, self.message, headers=headers)


class RateLimiter:
    """The middleware and what it keeps; see the module docstring.

    Wire it after authentication: ``middlewares=[..., auth_middleware,
    limiter.middleware, validation_middleware]`` and ``limiter.install(app)``
    (which adds the headers to every response, problem+json ones included).
    """

    def __init__(self, counters: SharedCounters, limits: TenantLimits, *,
                 lease_fraction: float = 0.1, lease_seconds: float = 1.0,
                 store_timeout: float = 0.5,
                 render_routes: Collection[tuple[str, str]] = RENDER_ROUTES,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 < lease_fraction <= 1:
            raise ValueError("lease_fraction is in (0, 1]")
        self._counters = counters
        self._limits = limits
        self._lease_fraction = lease_fraction
        self._lease_seconds = lease_seconds
        self._timeout = store_timeout
        self._render_routes = frozenset(render_routes)
        self._clock = clock
        self._buckets: dict[_Which, _Bucket] = {}
        self._refunds: set[asyncio.Task[None]] = set()
        self._warned = -math.inf

    def install(self, app: web.Application) -> None:
        app[LIMITER] = self
        app.on_response_prepare.append(_add_headers)
        app.on_cleanup.append(self._drain)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.get(API_KEY)
        if key is None:
            return await handler(request)
        route = request.match_info.route
        resource = route.resource
        renders = 1 if (resource is not None and
                        (request.method, resource.canonical) in self._render_routes) else 0
        try:
            standings = await self.admit(key.tenant_id, key.key_id, renders=renders)
        except RateLimited as exc:
            return exc.response()
        if standings:
            request[_HEADERS] = min(standings, key=_tightness).headers()
        # The month's standing is there only when the render was counted
        # (not when the store failed): only then is anything given back.
        if not renders or not standings or standings[-1].scope != "tenant-renders-month":
            return await handler(request)
        month, _ = month_of(self._clock())
        try:
            response = await handler(request)
        except Exception:
            await self._give_back(key.tenant_id, month, renders)
            raise
        except BaseException:  # cancelled: give back in the background
            self._refund(key.tenant_id, month, renders)
            raise
        # A failed render, or an Idempotency-Key replay of one already counted.
        if response.status >= 400 or response.headers.get(REPLAYED_HEADER) == "true":
            await self._give_back(key.tenant_id, month, renders)
        return response

    async def admit(self, tenant_id: str, key_id: str | None, *,
                    renders: int = 0) -> list[Standing]:
        """Take one request of the key (none for a public URL) and of the
        tenant, and ``renders`` of the tenant's month: where each limit
        stands (the month last, and only when the renders were counted), or
        RateLimited."""
        limits = await self._limits_of(tenant_id)
        standings = []
        if key_id is not None and limits.key_per_second > 0:
            standings.append(await self._take(
                ("key", key_id, limits.key_per_second, limits.key_burst)))
        if limits.per_second > 0:
            # The limit is in the bucket's name: a ``tat`` means nothing at
            # another rate, so a changed limit starts a fresh bucket.
            standings.append(await self._take(
                ("tenant", tenant_id, limits.per_second, limits.burst)))
        if renders and limits.renders_per_month > 0:
            month = await self._reserve(tenant_id, renders, limits.renders_per_month)
            if month is not None:
                standings.append(month)
        return standings

    async def reserve_renders(self, tenant_id: str, count: int) -> Standing | None:
        """Count ``count`` renders (a batch's items) against the tenant's month;
        RateLimited when they do not fit; None when nothing was counted (the
        tenant has no quota, or the store failed and they pass uncounted), so
        nothing is to be given back."""
        limits = await self._limits_of(tenant_id)
        if count <= 0 or limits.renders_per_month <= 0:
            return None
        return await self._reserve(tenant_id, count, limits.renders_per_month)

    def refund_renders(self, tenant_id: str, month: str, count: int) -> None:
        """Give back renders of ``month`` that :meth:`reserve_renders` counted
        (their work failed), in the background."""
        if count > 0:
            self._refund(tenant_id, month, count)

    async def _limits_of(self, tenant_id: str) -> Limits:
        known = self._limits.cached(tenant_id)
        if known is not None:
            return known
        try:
            async with asyncio.timeout(self._timeout):
                return await self._limits.of(tenant_id)
        except Exception as exc:  # fail open, loudly
            self._warn(exc)
            return self._limits.defaults

    async def _take(self, which: _Which) -> Standing:
        scope, _, rate, burst = which
        now = self._clock()
        bucket = self._bucket(which)
        if bucket.refused_until > now:
            raise self._refusal(scope, rate, burst, bucket.refused_until - now)
        if bucket.held < 1 or bucket.lease_until <= now:
            async with bucket.lock:
                now = self._clock()
                if bucket.held < 1 or bucket.lease_until <= now:
                    await self._lease(bucket, which, now)
            if bucket.held < 1:
                wait = max(bucket.refused_until - now, 1.0 / rate)
                raise self._refusal(scope, rate, burst, wait)
        bucket.held -= 1
        shared_tat = bucket.tat if bucket.tat is not None else now
        shared = max(0, math.floor(burst - max(0.0, shared_tat - now) * rate + _EPSILON))
        return Standing(scope, burst, min(burst, bucket.held + shared),
                        max(0.0, shared_tat - now))

    async def _lease(self, bucket: _Bucket, which: _Which, now: float) -> None:
        scope, owner, rate, burst = which
        name = f"b:{scope[0]}:{owner}:{rate:g}:{burst}"
        if bucket.held > 0:  # a lease that lapsed unspent: the next one is smaller
            bucket.lease_size = max(1, bucket.lease_size // 2)
        elif bucket.lease_until > now:  # spent in time: the next one is larger
            bucket.lease_size = bucket.lease_size * 2
        bucket.lease_size = min(bucket.lease_size,
                                max(1, math.floor(burst * self._lease_fraction)), burst)
        bucket.held = 0
        try:
            async with asyncio.timeout(self._timeout):
                taken, tat = await self._counters.take(
                    name, bucket.lease_size, rate=rate, burst=burst, now=now, hint=bucket.tat)
        except Exception as exc:  # fail open, loudly
            self._warn(exc)
            taken, tat = 1, now
        bucket.tat = tat
        bucket.held = taken
        bucket.lease_until = now + self._lease_seconds
        if taken < 1:
            # The next token is due when tat - now falls to burst - 1 periods.
            bucket.refused_until = tat - (burst - 1) / rate
            bucket.lease_size = 1

    async def _reserve(self, tenant_id: str, count: int, quota: int) -> Standing | None:
        """The month's standing once ``count`` renders are counted; None when
        the store failed and they pass uncounted; RateLimited."""
        now = self._clock()
        month, next_month = month_of(now)
        try:
            async with asyncio.timeout(self._timeout):
                used = await self._counters.reserve_renders(tenant_id, month, count, quota)
        except Exception as exc:  # fail open, loudly, and uncounted
            self._warn(exc)
            return None
        if used is None:
            try:
                async with asyncio.timeout(self._timeout):
                    left = max(0, quota - await self._counters.renders(tenant_id, month))
            except Exception as exc:  # refused all the same
                self._warn(exc)
                left = 0
            wanted = "" if count == 1 else f" ({count} asked, {left} left)"
            raise RateLimited(
                Standing("tenant-renders-month", quota, left, next_month - now),
                f"the tenant's quota of {quota} renders in {month} (UTC) is used up{wanted}; "
                "it renews at the start of next month (LITHO_GATEWAY_RENDERS_PER_MONTH, or "
                "the tenant's override)")
        return Standing("tenant-renders-month", quota, quota - used, next_month - now)

    async def _give_back(self, tenant_id: str, month: str, count: int) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._counters.refund_renders(tenant_id, month, count)
        except Exception as exc:  # the render stays counted
            self._warn(exc)

    def _refund(self, tenant_id: str, month: str, count: int) -> None:
        task = asyncio.get_running_loop().create_task(self._give_back(tenant_id, month, count))
        self._refunds.add(task)
        task.add_done_callback(self._refunds.discard)

    async def _drain(self, _app: web.Application) -> None:
        if self._refunds:
            await asyncio.wait(set(self._refunds), timeout=self._timeout)

    def _refusal(self, scope: str, rate: float, burst: int, wait: float) -> RateLimited:
        who = "this API key" if scope == "key" else "the tenant"
        setting = ("LITHO_GATEWAY_KEY_RATE_LIMIT_PER_SECOND" if scope == "key"
                   else "LITHO_GATEWAY_RATE_LIMIT_PER_SECOND")
        return RateLimited(
            Standing(scope, burst, 0, wait),
            f"too many requests for {who}: {rate:g} per second, {burst} at once "
            f"({setting}, or the tenant's override); retry after {max(1, math.ceil(wait))} s")

    def _bucket(self, which: _Which) -> _Bucket:
        bucket = self._buckets.get(which)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_idle()
            bucket = self._buckets[which] = _Bucket()
        return bucket

    def _forget_idle(self) -> None:
        now = self._clock()
        idle = [n for n, b in self._buckets.items()
                if b.lease_until <= now and b.refused_until <= now and not b.lock.locked()]
        for which in idle:
            del self._buckets[which]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning("rate limits not enforced: the counter store failed",
                        error=type(exc).__name__)


LIMITER = web.AppKey("rate_limiter", RateLimiter)


def _tightness(standing: Standing) -> tuple[float, int]:
    """Closest to exhaustion first: the smallest share left, then the fewest."""
    return (standing.remaining / standing.limit if standing.limit else math.inf,
            standing.remaining)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = request.get(_HEADERS)
    if headers:
        response.headers.update(headers)


async def reserve_renders(request: web.Request, tenant_id: str, count: int) -> None:
    """Count ``count`` renders against ``tenant_id``'s month for a handler
    that learns the count itself (a batch's items, a binding image the
    renderer had to render); raises RateLimited, a ResourceExhausted the
    errors middleware answers as a 429 with ``Retry-After`` (and the quota's
    headers). A no-op when the app has no limiter."""
    limiter = request.app.get(LIMITER)
    if limiter is None:
        return
    month = month_of(limiter._clock())[0]
    try:
        standing = await limiter.reserve_renders(tenant_id, count)
    except RateLimited as exc:
        request[_HEADERS] = exc.standing.headers()
        raise
    if standing is not None:
        request[_HEADERS] = standing.headers()
        counted = request.get(_COUNTED)
        if counted is None:
            counted = request[_COUNTED] = {}
        counted[tenant_id, month] = counted.get((tenant_id, month), 0) + count


#: What a public URL answers over its owner's quota when the image is not
#: stored yet: nothing of the owner's quota or usage, and a short wait (an
#: end-of-month Retry-After would keep crawlers away after a raise).
PUBLIC_OVER_QUOTA = "this image cannot be rendered right now; try again later"
PUBLIC_RETRY_AFTER = 3600


async def public_render(request: web.Request, tenant_id: str,
                        render: Callable[[bool], Awaitable[_T]], *,
                        new: Callable[[_T], bool]) -> _T:
    """``render(stored_only)`` for a public URL (no key) of ``tenant_id``,
    counted as one render of the tenant's month when ``new(result)`` says
    this call made it: reserved before, given back when nothing was rendered
    or it raised. Over the quota, ``render(True)`` (the renderer answers a
    stored output and never renders) still serves what exists; else a 429
    that names nothing of the owner. A view takes none of the tenant's
    per-second limit (a popular public URL must not starve the tenant's API
    calls) and carries no ``X-RateLimit-*`` headers (the owner's limits are
    not a visitor's business). A bare ``render(False)`` without a limiter."""
    limiter = request.app.get(LIMITER)
    if limiter is None:
        return await render(False)
    try:
        standing = await limiter.reserve_renders(tenant_id, 1)
    except RateLimited as exc:
        try:
            return await render(True)
        except FailedPrecondition:
            raise ResourceExhausted(
                PUBLIC_OVER_QUOTA, retry_after=min(exc.retry_after, PUBLIC_RETRY_AFTER)
            ) from None
    if standing is None or standing.scope != "tenant-renders-month":
        return await render(False)
    month, _ = month_of(limiter._clock())
    try:
        result = await render(False)
    except Exception:
        await limiter._give_back(tenant_id, month, 1)
        raise
    except BaseException:  # cancelled: give back in the background
        limiter._refund(tenant_id, month, 1)
        raise
    if not new(result):
        await limiter._give_back(tenant_id, month, 1)
    return result


async def count_public_render(request: web.Request, tenant_id: str) -> None:
    """Count a render a public view has already caused (``/b/``: the owner is
    known only from the renderer's answer) in the owner's month; over the
    quota, the public 429 of :func:`public_render` (the output stays stored,
    and later views of it are hits)."""
    limiter = request.app.get(LIMITER)
    if limiter is None:
        return
    try:
        await limiter.reserve_renders(tenant_id, 1)
    except RateLimited as exc:
        raise ResourceExhausted(
            PUBLIC_OVER_QUOTA, retry_after=min(exc.retry_after, PUBLIC_RETRY_AFTER)) from None


def refund_renders(request: web.Request, tenant_id: str, count: int) -> None:
    """Give back what :func:`reserve_renders` counted when the work it was
    for failed (a batch the renderer refused): at most what it counted for
    this request, in the month it counted them; nothing when the store
    failed and the renders passed uncounted."""
    limiter = request.app.get(LIMITER)
    counted = request.get(_COUNTED)
    if limiter is None or not counted:
        return
    for (tenant, month), held in list(counted.items()):
        back = min(held, count)
        if tenant != tenant_id or back <= 0:
            continue
        limiter.refund_renders(tenant_id, month, back)
        count -= back
        if held > back:
            counted[tenant, month] = held - back
        else:
            del counted[tenant, month]


def limiter_from(store: DocumentStore, defaults: Limits, *, overrides_ttl: float = 30.0,
                 lease_fraction: float = 0.1, lease_seconds: float = 1.0,
                 store_timeout: float = 0.5,
                 clock: Callable[[], float] = time.time) -> RateLimiter:
    """A limiter over ``store``: ``defaults``, each tenant's override (kept
    ``overrides_ttl`` seconds) and the counters every replica shares."""
    return RateLimiter(SharedCounters(store), TenantLimits(store, defaults, ttl=overrides_ttl),
                       lease_fraction=lease_fraction, lease_seconds=lease_seconds,
                       store_timeout=store_timeout, clock=clock)


__all__ = [
    "COUNTERS",
    "LIMITER",
    "OVERRIDES",
    "RENDER_ROUTES",
    "Limits",
    "RateLimited",
    "RateLimiter",
    "SharedCounters",
    "Standing",
    "TenantLimits",
    "limiter_from",
    "month_of",
    "public_render",
    "refund_renders",
    "reserve_renders",
]
