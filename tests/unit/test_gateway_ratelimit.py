"""Rate limits and render quotas: a tiny aiohttp app per "replica" with the
limiter after a fake authentication (a header names the tenant and key), its
counters in a real document store (SQLite, and MongoDB's protocol on
nx-27017), two replicas on their own connections to the same data. Time is
a shared fake clock, so nothing here sleeps."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.typedefs import Handler

from litho.docstore import DocumentStore
from litho.errors import InvalidArgument, NotFound
from services.gateway import limits as limits_command
from services.gateway._keys import ApiKey, KeyStore
from services.gateway._middleware import errors_middleware
from services.gateway._ratelimit import (
    Limits,
    RateLimiter,
    SharedCounters,
    TenantLimits,
    month_of,
    refund_renders,
    reserve_renders,
)
from services.gateway._state import API_KEY

#: One minute before a new year (UTC): the monthly tests cross into January.
START = datetime(2026, 12, 31, 23, 59, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@web.middleware
async def fake_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``X-Test-Key: tenant/key`` is the caller; no header: a public route."""
    who = request.headers.get("X-Test-Key")
    if who is not None:
        tenant, _, key = who.partition("/")
        request[API_KEY] = ApiKey(tenant_id=tenant, name="test", key_id=key,
                                  signing_secret="unused")
    return await handler(request)


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _render(request: web.Request) -> web.Response:
    """Answers the status the query asks for (a failed render is given back),
    or as an Idempotency-Key replay."""
    headers = {"Idempotent-Replayed": "true"} if "replayed" in request.query else None
    return web.json_response({}, status=int(request.query.get("status", "200")),
                             headers=headers)


async def _missing(request: web.Request) -> web.Response:
    raise NotFound("no such template")


async def _batch(request: web.Request) -> web.Response:
    """Counts ``items``; with ``refund``, its work "fails" and that many are
    given back (a handler's mistake may ask for more than it counted)."""
    tenant_id = request[API_KEY].tenant_id
    await reserve_renders(request, tenant_id, int(request.query["items"]))
    if "refund" in request.query:
        refund_renders(request, tenant_id, int(request.query["refund"]))
        return web.json_response({}, status=503)
    return web.json_response({}, status=202)


@dataclass
class Replica:
    url: str
    limiter: RateLimiter
    counters: CountingCounters


class CountingCounters(SharedCounters):
    """The real counters, counting the calls that reach the store."""

    def __init__(self, store: DocumentStore) -> None:
        super().__init__(store)
        self.takes = 0
        self.fail = False
        self.fail_renders = False

    async def take(self, bucket: str, wanted: int, *, rate: float, burst: int, now: float,
                   hint: float | None = None) -> tuple[int, float]:
        self.takes += 1
        if self.fail:
            raise ConnectionError("the store is down")
        return await super().take(bucket, wanted, rate=rate, burst=burst, now=now, hint=hint)

    async def reserve_renders(self, tenant_id: str, month: str, count: int,
                              quota: int) -> int | None:
        if self.fail_renders:
            raise TimeoutError("the store is slower than the limiter's timeout")
        return await super().reserve_renders(tenant_id, month, count, quota)


@dataclass
class Edge:
    peers: list[DocumentStore]
    clock: Clock
    http: aiohttp.ClientSession
    runners: list[web.AppRunner] = field(default_factory=list)

    async def replica(self, defaults: Limits, *, store: int = 0,
                      lease_fraction: float = 0.1) -> Replica:
        counters = CountingCounters(self.peers[store])
        limits = TenantLimits(self.peers[store], defaults, ttl=0)
        limiter = RateLimiter(counters, limits, lease_fraction=lease_fraction,
                              clock=self.clock)
        app = web.Application(middlewares=[errors_middleware, fake_auth, limiter.middleware])
        limiter.install(app)
        app.router.add_get("/v1/templates", _ok)
        app.router.add_get("/v1/templates/{templateId}", _missing)
        app.router.add_post("/v1/render", _render)
        app.router.add_post("/v1/templates/{templateId}/render", _missing)
        app.router.add_post("/v1/templates/{templateId}/batch-render", _batch)
        app.router.add_get("/images/{file}", _ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return Replica(f"http://127.0.0.1:{runner.addresses[0][1]}", limiter, counters)

    async def call(self, replica: Replica, who: str | None, method: str = "GET",
                   path: str = "/v1/templates") -> tuple[int, dict[str, Any], Any]:
        headers = {} if who is None else {"X-Test-Key": who}
        async with self.http.request(method, replica.url + path, headers=headers) as r:
            return r.status, json.loads(await r.read() or b"{}"), r.headers


@pytest_asyncio.fixture
async def edge(peers: list[DocumentStore]) -> AsyncIterator[Edge]:
    async with aiohttp.ClientSession() as http:
        made = Edge(peers, Clock(), http)
        try:
            yield made
        finally:
            for runner in made.runners:
                await runner.cleanup()


def limits(**changes: Any) -> Limits:
    base = {"per_second": 100.0, "burst": 100, "key_per_second": 100.0, "key_burst": 100}
    return Limits(**{**base, **changes})


async def test_every_authenticated_response_carries_the_headers(edge: Edge) -> None:
    replica = await edge.replica(limits(key_burst=40))
    status, _, headers = await edge.call(replica, "t1/k1")
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "40"
    assert headers["X-RateLimit-Remaining"] == "39"
    assert headers["X-RateLimit-Scope"] == "key"
    assert 0 <= int(headers["X-RateLimit-Reset"]) <= 1
    # A problem+json answer made outside the limiter carries them too.
    status, body, headers = await edge.call(replica, "t1/k1", path="/v1/templates/nope")
    assert (status, body["detail"]) == (404, "no such template")
    assert headers["X-RateLimit-Remaining"] == "38"
    # A public route (no caller) is not limited and says nothing.
    status, _, headers = await edge.call(replica, None, path="/images/a.png")
    assert status == 200 and "X-RateLimit-Limit" not in headers


async def test_past_the_burst_a_429_names_the_key_limit_with_retry_after(edge: Edge) -> None:
    replica = await edge.replica(limits(key_per_second=0.5, key_burst=3))
    assert [(await edge.call(replica, "t1/k1"))[0] for _ in range(3)] == [200] * 3
    status, body, headers = await edge.call(replica, "t1/k1")
    assert status == 429
    assert headers["Content-Type"].startswith("application/problem+json")
    assert headers["Retry-After"] == "2"  # one token every 2 seconds
    assert headers["X-RateLimit-Scope"] == "key"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert "API key" in body["detail"] and "LITHO_GATEWAY_KEY_RATE_LIMIT" in body["detail"]
    edge.clock.now += 1.0
    assert (await edge.call(replica, "t1/k1"))[0] == 429
    edge.clock.now += 1.0
    assert (await edge.call(replica, "t1/k1"))[0] == 200
    assert (await edge.call(replica, "t1/k1"))[0] == 429


async def test_the_tenant_limit_spans_its_keys_and_no_other_tenant(edge: Edge) -> None:
    replica = await edge.replica(limits(per_second=1.0, burst=4, key_per_second=1.0,
                                        key_burst=3))
    assert [(await edge.call(replica, "t1/a"))[0] for _ in range(3)] == [200] * 3
    status, _, headers = await edge.call(replica, "t1/a")
    assert (status, headers["X-RateLimit-Scope"]) == (429, "key")
    status, _, headers = await edge.call(replica, "t1/b")
    assert status == 200
    # The tenant's last token: its limit is now the tightest.
    assert (headers["X-RateLimit-Scope"], headers["X-RateLimit-Remaining"]) == ("tenant", "0")
    status, body, headers = await edge.call(replica, "t1/b")
    assert (status, headers["X-RateLimit-Scope"]) == (429, "tenant")
    assert "the tenant" in body["detail"]
    assert (await edge.call(replica, "t2/c"))[0] == 200


async def test_two_replicas_share_the_buckets(edge: Edge) -> None:
    one = await edge.replica(limits(per_second=1.0, burst=10), store=0)
    two = await edge.replica(limits(per_second=1.0, burst=10), store=1)
    statuses = [(await edge.call(one if i % 2 else two, f"t1/k{i % 3}"))[0] for i in range(30)]
    # A lease of at most 10% of 10 is one token: exactly the burst passes,
    # however the requests fall on the replicas (each alone would pass 10).
    assert statuses.count(200) == 10 and statuses[:10] == [200] * 10
    edge.clock.now += 3.0
    assert [(await edge.call(r, "t1/k9"))[0] for r in (one, two, one, two)] == [200] * 3 + [429]


async def test_leases_keep_most_requests_off_the_store(edge: Edge) -> None:
    replica = await edge.replica(limits(per_second=1.0, burst=200, key_per_second=0))
    statuses = [(await edge.call(replica, "t1/k"))[0] for _ in range(210)]
    # One replica is exact: 200 pass, then refusals.
    assert statuses == [200] * 200 + [429] * 10
    # Leases of 1, 2, 4, 8, 16 and then 20 (10% of the burst) tokens.
    assert replica.counters.takes <= 16
    # A refused bucket is remembered until its next token is due: no more calls.
    takes = replica.counters.takes
    for _ in range(20):
        assert (await edge.call(replica, "t1/k"))[0] == 429
    assert replica.counters.takes == takes


async def test_concurrent_requests_never_pass_the_burst(edge: Edge) -> None:
    one = await edge.replica(limits(per_second=1.0, burst=25, key_per_second=0), store=0)
    two = await edge.replica(limits(per_second=1.0, burst=25, key_per_second=0), store=1)
    calls = [edge.call(one if i % 2 else two, "t1/k") for i in range(60)]
    statuses = [s for s, _, _ in await asyncio.gather(*calls)]
    # Each replica may hold a lease of up to 2 (10% of 25) unspent: at least
    # 25 - 2 * (2 - 1) pass, and never more than the burst.
    assert 23 <= statuses.count(200) <= 25
    assert statuses.count(429) == 60 - statuses.count(200)


async def test_the_shared_bucket_has_one_winner_per_token(peers: list[DocumentStore]) -> None:
    clock_now = START
    counters = [SharedCounters(peers[i % 2]) for i in range(8)]
    taken = await asyncio.gather(*(
        c.take("b:t:race", 3, rate=1.0, burst=20, now=clock_now) for c in counters))
    assert sum(n for n, _ in taken) == 20
    # Tokens come back at the rate: 5 seconds later, 5 more.
    n, _ = await counters[0].take("b:t:race", 10, rate=1.0, burst=20, now=clock_now + 5)
    assert n == 5


async def test_the_monthly_render_quota(edge: Edge) -> None:
    replica = await edge.replica(limits(renders_per_month=3))
    post = ("POST", "/v1/render")
    status, _, headers = await edge.call(replica, "t1/k", *post)
    assert status == 200
    assert (headers["X-RateLimit-Scope"], headers["X-RateLimit-Limit"],
            headers["X-RateLimit-Remaining"]) == ("tenant-renders-month", "3", "2")
    assert headers["X-RateLimit-Reset"] == "60"  # a minute to the new year
    # A render that fails is given back.
    assert (await edge.call(replica, "t1/k", "POST", "/v1/render?status=422"))[0] == 422
    assert (await edge.call(replica, "t1/k", "POST", "/v1/render?replayed=1"))[0] == 200
    assert [(await edge.call(replica, "t1/k", *post))[0] for _ in range(3)] == [200, 200, 429]
    status, body, headers = await edge.call(replica, "t1/k", *post)
    assert status == 429 and headers["Retry-After"] == "60"
    assert headers["X-RateLimit-Scope"] == "tenant-renders-month"
    assert "quota of 3 renders in 2026-12" in body["detail"]
    # Other requests and other tenants go on.
    assert (await edge.call(replica, "t1/k"))[0] == 200
    assert (await edge.call(replica, "t2/k2", *post))[0] == 200
    # A new month (UTC), a new quota.
    edge.clock.now += 60
    assert month_of(edge.clock.now)[0] == "2027-01"
    assert (await edge.call(replica, "t1/k", *post))[0] == 200


async def test_a_render_that_raises_is_given_back_and_still_has_headers(edge: Edge) -> None:
    replica = await edge.replica(limits(renders_per_month=2))
    for _ in range(3):
        status, _, headers = await edge.call(replica, "t1/k", "POST", "/v1/templates/x/render")
        assert status == 404 and headers["X-RateLimit-Remaining"] == "1"
    assert await SharedCounters(edge.peers[1]).renders("t1", "2026-12") == 0


async def test_two_replicas_share_the_monthly_quota(edge: Edge) -> None:
    one = await edge.replica(limits(renders_per_month=5), store=0)
    two = await edge.replica(limits(renders_per_month=5), store=1)
    statuses = [(await edge.call(one if i % 2 else two, "t1/k", "POST", "/v1/render"))[0]
                for i in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    counted = await SharedCounters(edge.peers[0]).renders("t1", "2026-12")
    assert counted == 5


async def test_a_batch_counts_its_items_all_or_nothing(edge: Edge) -> None:
    replica = await edge.replica(limits(renders_per_month=6))
    path = "/v1/templates/tpl/batch-render?items="
    status, _, headers = await edge.call(replica, "t1/k", "POST", path + "5")
    assert (status, headers["X-RateLimit-Remaining"]) == (202, "1")
    status, body, headers = await edge.call(replica, "t1/k", "POST", path + "2")
    assert status == 429 and "(2 asked, 1 left)" in body["detail"]
    assert (headers["X-RateLimit-Scope"], headers["X-RateLimit-Remaining"]) == (
        "tenant-renders-month", "1")
    assert headers["Retry-After"] == "60"
    assert (await edge.call(replica, "t1/k", "POST", path + "1"))[0] == 202


async def _refunded(replica: Replica) -> None:
    """Wait for the refunds the replica runs in the background."""
    if replica.limiter._refunds:
        await asyncio.wait(set(replica.limiter._refunds))


async def test_a_failed_batch_gives_back_what_it_counted_and_no_more(edge: Edge) -> None:
    replica = await edge.replica(limits(renders_per_month=6))
    path = "/v1/templates/tpl/batch-render?items="
    assert (await edge.call(replica, "t1/k", "POST", path + "3"))[0] == 202
    assert (await edge.call(replica, "t1/k", "POST", path + "2&refund=5"))[0] == 503
    await _refunded(replica)
    assert await SharedCounters(edge.peers[1]).renders("t1", "2026-12") == 3
    assert (await edge.call(replica, "t1/k", "POST", path + "3"))[0] == 202
    assert (await edge.call(replica, "t1/k", "POST", path + "1"))[0] == 429


async def test_renders_admitted_while_the_store_fails_are_never_given_back(
        edge: Edge) -> None:
    replica = await edge.replica(limits(renders_per_month=3))
    render = ("POST", "/v1/render")
    assert [(await edge.call(replica, "t1/k", *render))[0] for _ in range(3)] == [200] * 3
    replica.counters.fail_renders = True
    # Admitted uncounted (fail-open); each of these would otherwise give one back.
    for _ in range(4):
        assert (await edge.call(replica, "t1/k", "POST", "/v1/render?status=422"))[0] == 422
        assert (await edge.call(replica, "t1/k", "POST", "/v1/render?replayed=1"))[0] == 200
        assert (await edge.call(replica, "t1/k", "POST", "/v1/templates/x/render"))[0] == 404
        assert (await edge.call(replica, "t1/k", "POST",
                                "/v1/templates/x/batch-render?items=2&refund=2"))[0] == 503
    replica.counters.fail_renders = False
    await _refunded(replica)
    assert await SharedCounters(edge.peers[1]).renders("t1", "2026-12") == 3
    assert (await edge.call(replica, "t1/k", *render))[0] == 429


async def test_a_refund_never_takes_the_counter_below_zero(peers: list[DocumentStore]) -> None:
    counters = SharedCounters(peers[0])
    assert await counters.reserve_renders("t1", "2026-12", 2, 10) == 2
    await counters.refund_renders("t1", "2026-12", 3)
    assert await counters.renders("t1", "2026-12") == 2
    await counters.refund_renders("t1", "2026-12", 2)
    await counters.refund_renders("t1", "2026-12", 1)
    assert await counters.renders("t1", "2026-12") == 0
    await counters.refund_renders("t1", "2027-01", 1)  # a month nothing counted in
    assert await SharedCounters(peers[1]).renders("t1", "2027-01") == 0
    assert await counters.reserve_renders("t1", "2026-12", 10, 10) == 10


def _args(*argv: str) -> argparse.Namespace:
    return limits_command.parser().parse_args(argv)


async def test_overrides_change_one_tenant_on_every_replica(edge: Edge) -> None:
    keys = KeyStore(edge.peers[0], cache_ttl=0)
    await keys.prepare()
    await keys.create("t1")
    one = await edge.replica(limits(), store=0)
    two = await edge.replica(limits(), store=1)
    answer = await limits_command.run(edge.peers[0], limits(), _args(
        "set", "--tenant", "t1", "--per-second", "1", "--burst", "2",
        "--renders-per-month", "1"))
    assert answer["override"]["burst"] == 2
    # The keys follow the tenant's override unless it names their own.
    assert answer["effective"]["key_burst"] == 2
    assert [(await edge.call(r, "t1/k"))[0] for r in (one, two, one)] == [200, 200, 429]
    assert (await edge.call(two, "t2/k2"))[0] == 200  # the defaults
    edge.clock.now += 10
    assert (await edge.call(two, "t1/k", "POST", "/v1/render"))[0] == 200
    status, _, headers = await edge.call(one, "t1/k", "POST", "/v1/render")
    assert (status, headers["X-RateLimit-Scope"]) == (429, "tenant-renders-month")
    shown = await limits_command.run(edge.peers[1], limits(), _args("show", "--tenant", "t1"),
                                     now=edge.clock.now)
    assert shown["rendersThisMonth"] == 1
    await limits_command.run(edge.peers[0], limits(), _args("unset", "--tenant", "t1"))
    assert (await edge.call(one, "t1/k", "POST", "/v1/render"))[0] == 200


async def test_an_override_of_an_unknown_tenant_or_value_is_a_clear_error(
        peers: list[DocumentStore]) -> None:
    with pytest.raises(InvalidArgument, match="unknown tenant 'ghost'") as unknown:
        await limits_command.run(peers[0], limits(), _args(
            "set", "--tenant", "ghost", "--burst", "5"))
    assert unknown.value.errors[0].field == "tenant"
    keys = KeyStore(peers[0], cache_ttl=0)
    await keys.prepare()
    await keys.create("t1")
    for flag, value, named in (("--burst", "0", "burst"), ("--per-second", "-1",
                                                           "requestsPerSecond"),
                               ("--renders-per-month", "-5", "rendersPerMonth"),
                               ("--per-second", "nan", "requestsPerSecond")):
        with pytest.raises(InvalidArgument) as bad:
            await limits_command.run(peers[0], limits(), _args(
                "set", "--tenant", "t1", flag, value))
        assert bad.value.errors[0].field == named
    with pytest.raises(InvalidArgument, match="at least one limit"):
        await limits_command.run(peers[0], limits(), _args("set", "--tenant", "t1"))
    assert await TenantLimits(peers[0], limits()).override("t1") is None


async def test_a_rate_of_zero_means_no_limit(edge: Edge) -> None:
    replica = await edge.replica(limits(per_second=0, key_per_second=0))
    status, _, headers = await edge.call(replica, "t1/k")
    assert status == 200 and "X-RateLimit-Limit" not in headers
    assert replica.counters.takes == 0


async def test_a_failing_store_admits_requests(edge: Edge) -> None:
    replica = await edge.replica(limits(per_second=1.0, burst=1, key_per_second=0))
    replica.counters.fail = True
    assert [(await edge.call(replica, "t1/k"))[0] for _ in range(3)] == [200] * 3
    replica.counters.fail = False
    edge.clock.now += 2  # the fail-open lease lapses
    assert [(await edge.call(replica, "t1/k"))[0] for _ in range(2)] == [200, 429]


def test_the_command_names_an_unknown_tenant_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LITHO_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LITHO_DOCSTORE_URL", raising=False)
    assert limits_command.main(["set", "--tenant", "ghost", "--renders-per-month", "10"]) == 2
    assert "unknown tenant 'ghost'" in capsys.readouterr().err
    assert limits_command.main(["show", "--tenant", "ghost"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["override"] is None and shown["effective"]["renders_per_month"] == 0


def test_an_override_sets_only_what_it_names_and_keys_follow_the_tenant() -> None:
    base = Limits(per_second=50, burst=100, key_per_second=20, key_burst=40,
                  renders_per_month=0)
    assert base.with_override({"_id": "t1", "tenantId": "t1", "updatedAt": "x"}) == base
    assert base.with_override({"rendersPerMonth": 7}) == Limits(50, 100, 20, 40, 7)
    assert base.with_override({"requestsPerSecond": 5, "burst": 10}) == Limits(5, 10, 5, 10, 0)
    assert base.with_override({"requestsPerSecond": 5, "keyRequestsPerSecond": 1,
                               "keyBurst": 2}) == Limits(5, 100, 1, 2, 0)
    with pytest.raises(InvalidArgument) as unknown:
        base.with_override({"rps": 1})
    assert unknown.value.errors[0].field == "rps"
    for name, value in (("burst", 2.5), ("burst", True), ("rendersPerMonth", "9"),
                        ("keyRequestsPerSecond", float("inf"))):
        with pytest.raises(InvalidArgument) as bad:
            base.with_override({name: value})
        assert bad.value.errors[0].field == name


async def test_a_replica_keeps_a_bounded_number_of_buckets(
        edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.gateway._ratelimit._MAX_BUCKETS", 4)
    replica = await edge.replica(limits(key_per_second=0))
    for n in range(10):
        assert (await edge.call(replica, f"t{n}/k"))[0] == 200
        edge.clock.now += 2  # each lease lapses: its bucket is idle
    assert len(replica.limiter._buckets) <= 4
