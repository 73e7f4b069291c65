"""Template data sources (DataSources): the cache in data_source_cache on the
real SQLite store, fetched through a real OutboundGuard from loopback aiohttp
servers allowed by the allow-list."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from litho.config import OutboundSettings
from litho.docstore import DocumentStore, open_document_store
from litho.errors import InvalidArgument, ResourceExhausted
from litho.outbound import AllowList, OutboundGuard
from services.binding._fetch import DENIED_TEXT, Fetcher, FetchSlots
from services.binding._sources import COLLECTION, DataSources, SourceCall

T1, T2 = "tenant-1", "tenant-2"
START = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Server:
    """Answers ``/v/{n}`` with ``{"v": n}`` (an ETag when ``etag``), counts hits."""

    etag: bool = False
    hits: Counter[str] = field(default_factory=Counter)
    headers: list[dict[str, str]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    base: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v/{n}", self._value)
        app.router.add_get("/held", self._held)
        app.router.add_get("/deep/{depth}", self._deep)
        app.router.add_get("/big", self._big)
        app.router.add_get("/redirect", self._redirect)
        self.gate.set()
        return app

    async def _value(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        self.headers.append(dict(request.headers))
        tag = f'"{request.match_info["n"]}"'
        if self.etag and request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.json_response({"v": request.match_info["n"]},
                                 headers={"ETag": tag} if self.etag else {})

    async def _held(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        self.entered.set()
        await self.gate.wait()
        return web.json_response({"held": True})

    async def _deep(self, request: web.Request) -> web.Response:
        depth = int(request.match_info["depth"])
        return web.Response(text="[" * depth + "]" * depth, content_type="application/json")

    async def _big(self, request: web.Request) -> web.Response:
        return web.json_response({"x": "a" * 4000})

    async def _redirect(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        raise web.HTTPFound(request.query["to"])


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    data = Server()
    async with TestServer(data.app(), host="127.0.0.1") as test_server:
        data.base = f"http://127.0.0.1:{test_server.port}"
        yield data
        data.gate.set()


@dataclass
class World:
    server: Server
    store: DocumentStore
    guard: OutboundGuard
    allow: AllowList
    clock: Clock

    def url(self, path: str) -> str:
        return self.server.base + path

    async def sources(self, *, slots: FetchSlots | None = None,
                      **options: int) -> DataSources:
        fetcher = Fetcher(self.guard, timeout=5.0, max_bytes=1024 * 1024, slots=slots)
        sources = DataSources(self.store, fetcher, allow=self.allow, clock=self.clock,
                              **options)
        await sources.prepare()
        return sources

    async def entries(self, tenant: str = T1) -> int:
        return await self.store.collection(COLLECTION).count({"tenantId": tenant})


@pytest_asyncio.fixture
async def world(server: Server, tmp_path: Path) -> AsyncIterator[World]:
    store = await open_document_store(f"sqlite:///{tmp_path / 'sources.db'}", "litho")
    allow = server.base.removeprefix("http://")
    async with OutboundGuard(OutboundSettings(allow=allow)) as guard:
        yield World(server, store, guard, AllowList.parse(allow), Clock())
    await store.close()


async def test_a_ttl_0_answer_is_stored_only_with_a_validator(world: World) -> None:
    sources = await world.sources()
    [got] = await sources.fetch(T1, [SourceCall("s", world.url("/v/1"), ttl_seconds=0)])
    assert json.loads(got.data_json) == {"v": "1"} and not got.from_cache
    assert await world.entries() == 0  # no later call could use it
    world.server.etag = True
    await sources.fetch(T1, [SourceCall("s", world.url("/v/1"), ttl_seconds=0)])
    assert await world.entries() == 1
    [again] = await sources.fetch(T1, [SourceCall("s", world.url("/v/1"), ttl_seconds=0)])
    assert again.from_cache  # revalidated: a 304
    assert world.server.hits["/v/1"] == 3
    assert world.server.headers[-1]["If-None-Match"] == '"1"'


async def test_each_call_is_fresh_by_its_own_ttl(world: World) -> None:
    sources = await world.sources()
    url = world.url("/v/1")
    await sources.fetch(T1, [SourceCall("long", url, ttl_seconds=3600)])
    world.clock.now += 10
    [short] = await sources.fetch(T1, [SourceCall("short", url, ttl_seconds=5)])
    assert not short.from_cache and world.server.hits["/v/1"] == 2
    [long] = await sources.fetch(T1, [SourceCall("long", url, ttl_seconds=3600)])
    assert long.from_cache and world.server.hits["/v/1"] == 2
    [zero] = await sources.fetch(T1, [SourceCall("zero", url, ttl_seconds=0)])
    assert not zero.from_cache and world.server.hits["/v/1"] == 3


async def test_entries_are_kept_ttl_plus_an_hour(world: World) -> None:
    sources = await world.sources()
    await sources.fetch(T1, [SourceCall("s", world.url("/v/1"), ttl_seconds=60)])
    world.clock.now += 60 + 3600
    assert await sources.sweep() == 0
    world.clock.now += 1
    assert await sources.sweep() == 1
    assert await world.entries() == 0


async def test_a_tenant_keeps_at_most_its_entries_and_is_served_past_them(
        world: World) -> None:
    sources = await world.sources(max_entries_per_tenant=2)
    for n in range(3):
        [got] = await sources.fetch(T1, [SourceCall("s", world.url(f"/v/{n}"))])
        assert json.loads(got.data_json) == {"v": str(n)}
    assert await world.entries(T1) == 2
    # A stored entry is still renewed; another tenant has its own room.
    world.clock.now += 61
    await sources.fetch(T1, [SourceCall("s", world.url("/v/0"))])
    assert await world.entries(T1) == 2
    await sources.fetch(T2, [SourceCall("s", world.url("/v/2"))])
    assert await world.entries(T2) == 1


async def test_identical_calls_at_once_share_one_fetch(world: World) -> None:
    sources = await world.sources()
    world.server.gate.clear()
    url = world.url("/held")
    calls = [asyncio.create_task(sources.fetch(T1, [SourceCall(f"s{n}", url)]))
             for n in range(5)]
    # Within one call, two names for one request share it too.
    both = asyncio.create_task(sources.fetch(T1, [SourceCall("a", url), SourceCall("b", url)]))
    await world.server.entered.wait()
    world.server.gate.set()
    results = [r for call in (*calls, both) for r in await call]
    assert world.server.hits["/held"] == 1
    assert {r.data_json for r in results} == {'{"held":true}'}
    assert [r.name for r in await both] == ["a", "b"]


async def test_a_source_as_deep_as_the_limit_is_too_deep_for_a_template(
        world: World) -> None:
    sources = await world.sources()
    [fine] = await sources.fetch(T1, [SourceCall("s", world.url("/deep/31"))])
    assert fine.data_json.startswith("[[")
    with pytest.raises(InvalidArgument) as caught:
        await sources.fetch(T1, [SourceCall("nested", world.url("/deep/32"))])
    [error] = caught.value.errors
    assert error.field == "dataSources.nested"
    assert "LITHO_BINDING_JSON_MAX_DEPTH - 1 = 31" in error.message
    assert await world.entries() == 1  # only the one that fits


async def test_a_source_is_held_to_its_own_byte_limit(world: World) -> None:
    sources = await world.sources(max_bytes=2048)
    with pytest.raises(InvalidArgument) as caught:
        await sources.fetch(T1, [SourceCall("big", world.url("/big"))])
    [error] = caught.value.errors
    assert error.field == "dataSources.big"
    assert "LITHO_BINDING_MAX_SOURCE_BYTES" in error.message


async def test_fetches_take_the_tenants_turns(world: World) -> None:
    sources = await world.sources(slots=FetchSlots(per_tenant=1, total=10, queue=0))
    world.server.gate.clear()
    held = asyncio.create_task(sources.fetch(T1, [SourceCall("s", world.url("/held"))]))
    await world.server.entered.wait()
    with pytest.raises(ResourceExhausted, match="LITHO_BINDING_TENANT_FETCH_QUEUE"):
        await sources.fetch(T1, [SourceCall("s", world.url("/v/1"))])
    [other] = await sources.fetch(T2, [SourceCall("s", world.url("/v/1"))])
    assert not other.from_cache
    world.server.gate.set()
    [done] = await held
    assert done.data_json == '{"held":true}'


async def test_custom_headers_do_not_follow_a_redirect_to_another_origin(
        world: World) -> None:
    other_seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        other_seen.append(dict(request.headers))
        return web.json_response({"other": True})

    other_app = web.Application()
    other_app.router.add_get("/x", record)
    async with TestServer(other_app, host="127.0.0.1") as other:
        allow = f"{world.server.base.removeprefix('http://')},127.0.0.1:{other.port}"
        async with OutboundGuard(OutboundSettings(allow=allow)) as guard:
            sources = DataSources(world.store, Fetcher(guard, timeout=5, max_bytes=4096),
                                  allow=AllowList.parse(allow), clock=world.clock)
            to = f"http://127.0.0.1:{other.port}/x"
            [got] = await sources.fetch(T1, [SourceCall(
                "s", world.url(f"/redirect?to={to}"), headers={"X-Api-Key": "sk_live"})])
    assert got.data_json == '{"other":true}'
    assert world.server.headers[-1]["X-Api-Key"] == "sk_live"
    assert "X-Api-Key" not in other_seen[-1]


async def test_credentials_in_a_source_url_are_refused(world: World) -> None:
    sources = await world.sources()
    url = world.url("/v/1").replace("http://", "http://user:secret@")
    with pytest.raises(InvalidArgument) as caught:
        await sources.fetch(T1, [SourceCall("s", url)])
    [error] = caught.value.errors
    assert error.field == "dataSources.s.url" and "credentials" in error.message
    assert world.server.hits["/v/1"] == 0


async def test_an_unresolvable_host_reads_as_not_allowed(world: World) -> None:
    sources = await world.sources()
    with pytest.raises(InvalidArgument) as caught:
        await sources.fetch(T1, [SourceCall("s", "http://no-such-host.invalid/x")])
    assert caught.value.errors[0].message == DENIED_TEXT


async def test_a_malformed_cache_entry_is_fetched_anew(world: World) -> None:
    sources = await world.sources()
    [first] = await sources.fetch(T1, [SourceCall("s", world.url("/v/1"))])
    docs = world.store.collection(COLLECTION)
    [doc] = await docs.find({"tenantId": T1})
    await docs.update({"_id": doc["_id"]}, {"$set": {"data": None}})
    [again] = await sources.fetch(T1, [SourceCall("s", world.url("/v/1"))])
    assert again.data_json == first.data_json and not again.from_cache
