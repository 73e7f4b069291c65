"""The binding service's domain on the real SQLite store, fetching through a
real OutboundGuard from a loopback aiohttp data server allowed by the
allow-list. Only the template service (mapping) and the events are fakes,
behind ``services.binding._ports``."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from litho.config import OutboundSettings
from litho.docstore import DocumentStore, open_document_store
from litho.errors import (
    Conflict,
    FailedPrecondition,
    FieldError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from litho.outbound import AllowList, OutboundGuard
from services.binding import _bindings as _bindings_module
from services.binding._bindings import PUSH_REFUSED, SOURCE_FAILED, Bindings
from services.binding._fetch import Fetcher, FetchSlots
from services.binding._model import (
    ACTIVE,
    ERROR,
    PAUSED,
    BindingSpec,
    Limits,
    Output,
    PolicyInput,
    SourceInput,
    decode_token,
    deep_merge,
    encode_token,
    is_binding_id,
)
from services.binding._secrets import SecretBox, sign_push
from services.binding._sources import DataSources, SourceCall
from services.binding._store import BindingStore

T1, T2 = "tenant-1", "tenant-2"
TEMPLATE = "tpl_1"
KEY = "k" * 40
START = 1_700_000_000.0


# --------------------------------------------------------------- fakes ----

class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTemplates:
    """Mapping expressions are dotted paths into the data (``a.b``, or
    ``data`` for the whole of it); one holding ``((`` does not parse, and a
    path that meets a non-object fails, as an expression error would."""

    def __init__(self) -> None:
        self.templates = {(T1, TEMPLATE), (T2, TEMPLATE)}
        self.evaluations = 0

    async def evaluate(self, mapping: Mapping[str, str], data_json: str, *,
                       check_only: bool) -> str:
        for name, expr in mapping.items():
            if "((" in expr:
                raise InvalidArgument("the mapping has errors", errors=[FieldError(
                    f"mapping.{name}", f"line 1, column {expr.index('((') + 1}: unexpected '('")])
        if check_only:
            return "{}"
        self.evaluations += 1
        data = json.loads(data_json)
        out: dict[str, Any] = {}
        for name, expr in mapping.items():
            value: Any = data
            if expr != "data":
                for part in expr.split("."):
                    if value is None:
                        break
                    if not isinstance(value, dict):
                        raise InvalidArgument("the mapping failed", errors=[FieldError(
                            f"mapping.{name}", f"line 1, column 1: {part!r} of a non-object")])
                    value = value.get(part)
            target = out
            *parents, leaf = name.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
        return json.dumps(out)

    async def template_exists(self, tenant_id: str, template_id: str) -> bool:
        return (tenant_id, template_id) in self.templates


class GatedTemplates(FakeTemplates):
    """Holds its calls while ``gate`` is clear: the syntax checks of an update
    (or, with ``gate_mapping``, the mapping of data), so that something else
    can happen in the meantime; ``waiting`` is set when one waits."""

    def __init__(self, *, gate_mapping: bool = False) -> None:
        super().__init__()
        self.gate_mapping = gate_mapping
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def evaluate(self, mapping: Mapping[str, str], data_json: str, *,
                       check_only: bool) -> str:
        if check_only != self.gate_mapping and not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return await super().evaluate(mapping, data_json, check_only=check_only)


class FakeEvents:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.changes: list[str] = []

    async def changed(self, binding_id: str) -> None:
        self.changes.append(binding_id)

    async def updated(self, *, binding_id: str, tenant_id: str, template_id: str,
                      data_hash: str, format: str, source: str, fetched_at: float,
                      at: float) -> None:
        self.updates.append({"binding_id": binding_id, "tenant_id": tenant_id,
                             "data_hash": data_hash, "format": format, "source": source})

    async def failed(self, *, binding_id: str, tenant_id: str, template_id: str,
                     error: str, status: str, at: float) -> None:
        self.failures.append({"binding_id": binding_id, "error": error, "status": status})


# --------------------------------------------------------- data server ----

@dataclass
class DataServer:
    """Loopback JSON sources; ``hits`` counts requests per path."""

    payload: Any = field(default_factory=lambda: {"price": 10, "name": "Lamp"})
    etag: bool = True
    status: int = 200
    hits: Counter[str] = field(default_factory=Counter)
    headers: list[Mapping[str, str]] = field(default_factory=list)
    base: str = ""
    port: int = 0
    #: Cleared, /items waits for it before answering (a fetch in flight).
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when a request waits at the closed gate.
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def url(self, path: str) -> str:
        return self.base + path

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/items", self._items)
        app.router.add_post("/items", self._items)
        app.router.add_get("/html", self._html)
        app.router.add_get("/big", self._big)
        app.router.add_get("/invalid", self._invalid)
        app.router.add_get("/private", self._private)
        app.router.add_get("/slow", self._slow)
        return app

    def _tag(self) -> str:
        return '"' + str(abs(hash(json.dumps(self.payload, sort_keys=True)))) + '"'

    async def _items(self, request: web.Request) -> web.StreamResponse:
        self.hits["/items"] += 1
        self.headers.append(dict(request.headers))
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        tag = self._tag()
        if self.etag and request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.json_response(self.payload, headers={"ETag": tag} if self.etag else {})

    async def _html(self, request: web.Request) -> web.StreamResponse:
        self.hits["/html"] += 1
        return web.Response(text="<html><body>hello</body></html>", content_type="text/html")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        self.hits["/big"] += 1
        body = b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
        return web.Response(body=body, content_type="application/json")

    async def _invalid(self, request: web.Request) -> web.StreamResponse:
        self.hits["/invalid"] += 1
        return web.Response(text='{"price": 10,', content_type="application/json")

    async def _private(self, request: web.Request) -> web.StreamResponse:
        self.hits["/private"] += 1
        raise web.HTTPFound("http://10.0.0.1/secrets.json")

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response({})


@pytest_asyncio.fixture
async def server() -> AsyncIterator[DataServer]:
    data = DataServer()
    async with TestServer(data.app(), host="127.0.0.1") as test_server:
        data.port = test_server.port or 0
        data.base = f"http://127.0.0.1:{data.port}"
        yield data


@dataclass
class World:
    server: DataServer
    store: DocumentStore
    bindings: Bindings
    sources: DataSources
    templates: FakeTemplates
    events: FakeEvents
    clock: Clock
    guard: OutboundGuard

    def url(self, path: str) -> str:
        return self.server.base + path


def build_bindings(store: DocumentStore, guard: OutboundGuard, allow: AllowList,
                   templates: FakeTemplates, events: FakeEvents, clock: Clock,
                   limits: Limits | None = None) -> Bindings:
    fetcher = Fetcher(guard, timeout=1.0, max_bytes=1024 * 1024)
    return Bindings(BindingStore(store), fetcher, templates, events,
                    SecretBox.from_setting(KEY), allow=allow,
                    limits=limits or Limits(max_per_tenant=5, lease_seconds=30.0), clock=clock)


@pytest_asyncio.fixture
async def world(server: DataServer, tmp_path: Path) -> AsyncIterator[World]:
    store = await open_document_store(f"sqlite:///{tmp_path / 'binding.db'}", "litho")
    allow = f"127.0.0.1:{server.port}"
    async with OutboundGuard(OutboundSettings(allow=allow)) as guard:
        templates, events, clock = FakeTemplates(), FakeEvents(), Clock()
        bindings = build_bindings(store, guard, AllowList.parse(allow), templates, events,
                                  clock)
        await bindings.store.prepare()
        sources = DataSources(store, Fetcher(guard, timeout=1.0, max_bytes=1024 * 1024),
                              allow=AllowList.parse(allow), max_sources=2, clock=clock)
        await sources.prepare()
        yield World(server, store, bindings, sources, templates, events, clock, guard)
    await store.close()


def spec(world: World | DataServer, *, path: str = "/items", policy: PolicyInput | None = None,
         source_type: str = "http", **overrides: Any) -> BindingSpec:
    base: dict[str, Any] = {
        "name": "price tag", "template_id": TEMPLATE,
        "data_source": SourceInput(type=source_type,
                                   url="" if source_type == "push" else world.url(path)),
        "mapping": {"price": "price", "product.name": "name"},
        "defaults_json": '{"price": 0, "product": {"name": "?", "colour": "red"}}',
        "refresh_policy": policy or PolicyInput(type="ttl", ttl_seconds=60),
        "output": Output(format="png", options_json='{"width": 600}'),
    }
    base.update(overrides)
    return BindingSpec(**base)


async def stored_count(world: World) -> int:
    return await world.store.collection("bindings").count({})


# ------------------------------------------------------------- create ----

async def test_create_fetches_maps_merges_defaults_and_publishes(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world))
    assert is_binding_id(binding.id)
    assert binding.status == ACTIVE and binding.fetched_at == START
    assert binding.data_hash and binding.push_secret == ""
    resolved = await world.bindings.resolve(binding.id)
    assert json.loads(resolved.variables_json) == {
        "price": 10, "product": {"name": "Lamp", "colour": "red"}}
    assert resolved.fresh_until == START + 60
    assert resolved.output == Output(format="png", options_json='{"width": 600}')
    assert [e["source"] for e in world.events.updates] == ["fetch"]
    assert world.events.updates[0]["data_hash"] == binding.data_hash
    data = await world.bindings.data(T1, binding.id)
    assert json.loads(data.data_json) == {"name": "Lamp", "price": 10}
    assert data.etag and data.source == "fetch"


async def test_create_refuses_bad_input_and_stores_nothing(world: World) -> None:
    cases: list[tuple[BindingSpec, str]] = [
        (spec(world, name=""), "name"),
        (spec(world, template_id="tpl_missing"), "templateId"),
        (spec(world, data_source=SourceInput(type="ftp", url="ftp://x")), "dataSource.type"),
        (spec(world, data_source=SourceInput(type="http", url="http://10.1.2.3/x")),
         "dataSource.url"),
        (spec(world, data_source=SourceInput(type="http", url=world.url("/items"),
                                             credentials={"type": "magic"})),
         "dataSource.credentials.type"),
        (spec(world, mapping={"price": "price(("}), "mapping.price"),
        (spec(world, policy=PolicyInput(type="cron", cron="* * * * *")), "refreshPolicy.cron"),
        (spec(world, policy=PolicyInput(type="ttl", ttl_seconds=1)), "refreshPolicy.ttlSeconds"),
    ]
    for bad, where in cases:
        with pytest.raises(InvalidArgument) as caught:
            await world.bindings.create(T1, bad)
        fields = [e.field for e in caught.value.errors]
        assert any(f.startswith(where) for f in fields), (where, fields, caught.value.message)
    assert await stored_count(world) == 0
    assert world.server.hits["/items"] == 0


async def test_a_mapping_syntax_error_names_line_and_column(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.bindings.create(T1, spec(world, mapping={"total": "a(("}))
    assert caught.value.errors[0].field == "mapping.total"
    assert "line 1, column 2" in caught.value.errors[0].message


async def test_redirect_into_private_space_at_create_is_422_and_nothing_stored(
        world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.bindings.create(T1, spec(world, path="/private"))
    assert caught.value.errors[0].field == "dataSource.url"
    assert "10.0.0.1" not in caught.value.message  # refusals stay generic
    assert world.server.hits["/private"] == 1
    assert await stored_count(world) == 0
    assert world.events.failures == world.events.updates == []


@pytest.mark.parametrize(("path", "says"), [
    ("/html", "text/html, not JSON"),
    ("/big", "LITHO_BINDING_MAX_DATA_BYTES"),
    ("/invalid", "not valid JSON"),
])
async def test_a_bad_source_stores_the_binding_in_error(world: World, path: str,
                                                        says: str) -> None:
    binding = await world.bindings.create(T1, spec(world, path=path))
    assert binding.status == ERROR
    assert says in binding.last_error
    assert binding.data_hash == "" and binding.fetched_at is None
    assert [f["error"] for f in world.events.failures] == [binding.last_error]
    assert world.events.updates == []
    # Nothing to serve but the defaults (serve_stale with no data).
    resolved = await world.bindings.resolve(binding.id)
    assert json.loads(resolved.variables_json)["product"]["name"] == "?"


async def test_test_data_source_reports_each_failure(world: World) -> None:
    good = await world.bindings.test_source(T1, SourceInput(type="http",
                                                            url=world.url("/items")))
    assert good.success and good.status == 200 and json.loads(good.data_json)["price"] == 10
    html = await world.bindings.test_source(T1, SourceInput(type="http",
                                                            url=world.url("/html")))
    assert not html.success and html.status == 200 and "text/html" in html.error
    private = await world.bindings.test_source(T1, SourceInput(type="http",
                                                               url=world.url("/private")))
    assert not private.success and "not allowed" in private.error
    with pytest.raises(InvalidArgument):  # a private literal is refused before any fetch
        await world.bindings.test_source(T1, SourceInput(type="http", url="http://127.0.0.2/"))


async def test_the_tenant_cap_is_a_429_naming_the_setting(world: World) -> None:
    for n in range(5):
        await world.bindings.create(T1, spec(world, name=f"b{n}"))
    with pytest.raises(ResourceExhausted, match="LITHO_BINDING_MAX_PER_TENANT"):
        await world.bindings.create(T1, spec(world, name="one too many"))
    await world.bindings.create(T2, spec(world))  # another tenant's count is its own


async def test_concurrent_creates_hold_the_tenant_cap(world: World) -> None:
    # Each create counts, then waits at the source before its insert.
    store = world.bindings.store
    count = store.count
    counted: list[str] = []
    all_counted = asyncio.Event()

    async def counting(tenant_id: str) -> int:
        n = await count(tenant_id)
        counted.append(tenant_id)
        if len(counted) == 12:
            all_counted.set()
        return n

    store.count = counting  # type: ignore[method-assign]
    world.server.gate.clear()
    creating = [asyncio.create_task(world.bindings.create(T1, spec(world, name=f"b{n}")))
                for n in range(12)]
    await asyncio.wait_for(all_counted.wait(), 5)  # all 12 saw room for one more
    world.server.gate.set()
    done = await asyncio.gather(*creating, return_exceptions=True)
    refused = [d for d in done if isinstance(d, ResourceExhausted)]
    assert len(refused) == 7 and all("LITHO_BINDING_MAX_PER_TENANT" in r.message
                                     for r in refused)
    assert await world.bindings.store.count(T1) == 5
    slots = {d["slot"] for d in await world.store.collection("bindings").find({})}
    assert slots == {0, 1, 2, 3, 4}
    # A delete frees a slot for the next create.
    made = [d for d in done if not isinstance(d, BaseException)]
    await world.bindings.delete(T1, made[2].id)
    await world.bindings.create(T1, spec(world, name="again"))
    with pytest.raises(ResourceExhausted):
        await world.bindings.create(T1, spec(world, name="one too many"))


async def test_every_fetch_takes_a_turn_of_the_bindings_tenant(world: World) -> None:
    fetcher = world.bindings._fetcher
    fetch = fetcher.fetch
    tenants: list[str] = []

    async def spying(*args: Any, **kwargs: Any) -> Any:
        tenants.append(kwargs.get("tenant", ""))
        return await fetch(*args, **kwargs)

    fetcher.fetch = spying  # type: ignore[method-assign]
    binding = await world.bindings.create(T2, spec(world))
    world.clock.now += 3600
    await world.bindings.resolve(binding.id)
    world.clock.now += 3600
    await world.bindings.refresh(T2, binding.id)
    await world.bindings.update(T2, binding.id, BindingSpec(data_source=SourceInput(
        type="http", url=world.url("/items?v=2"))))
    await world.bindings.test_source(T2, SourceInput(type="http", url=world.url("/items")))
    await world.bindings.preview(
        T2, template_id=TEMPLATE, data_source=SourceInput(type="http", url=world.url("/items")),
        sample_data_json="", mapping={"p": "price"}, defaults_json="")
    assert tenants == [T2] * 6


async def test_credentials_are_sealed_sent_and_never_answered(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, data_source=SourceInput(
        type="http", url=world.url("/items"), credentials={"type": "bearer",
                                                            "token": "tok-123"})))
    assert binding.credentials_type == "bearer"
    assert world.server.headers[-1]["Authorization"] == "Bearer tok-123"
    doc = await world.store.collection("bindings").get(binding.id)
    assert doc is not None and "tok-123" not in json.dumps(doc)
    again = await world.bindings.get(T1, binding.id)
    assert "tok-123" not in repr(again)


@pytest_asyncio.fixture
async def elsewhere() -> AsyncIterator[DataServer]:
    """A second data server: another origin (another port)."""
    data = DataServer()
    async with TestServer(data.app(), host="127.0.0.1") as test_server:
        data.port = test_server.port or 0
        data.base = f"http://127.0.0.1:{data.port}"
        yield data


async def test_kept_credentials_never_follow_the_source_to_another_origin(
        world: World, elsewhere: DataServer) -> None:
    allow = f"127.0.0.1:{world.server.port},127.0.0.1:{elsewhere.port}"
    async with OutboundGuard(OutboundSettings(allow=allow)) as guard:
        bindings = build_bindings(world.store, guard, AllowList.parse(allow), FakeTemplates(),
                                  FakeEvents(), world.clock)
        binding = await bindings.create(T1, spec(world, data_source=SourceInput(
            type="http", url=world.url("/items"),
            credentials={"type": "bearer", "token": "TOPSECRET"})))
        moves = [SourceInput(type="http", url=elsewhere.url("/items")),
                 SourceInput(type="http", url=world.url("/items").replace("http:", "https:")),
                 SourceInput(type="static", url=world.url("/items"))]
        for moved in moves:
            with pytest.raises(InvalidArgument) as caught:
                await bindings.update(T1, binding.id, BindingSpec(data_source=moved))
            assert caught.value.errors[0].field == "dataSource.credentials"
            assert "given again" in caught.value.errors[0].message
        assert elsewhere.hits["/items"] == 0 and world.server.hits["/items"] == 1
        kept = await bindings.get(T1, binding.id)
        assert kept.data_source["url"] == world.url("/items")
        assert kept.credentials_type == "bearer"
        # The same origin keeps them (a new path, the host's case, the explicit port)...
        same = world.url("/items?page=2").replace("127.0.0.1", "127.0.0.1")
        await bindings.update(T1, binding.id, BindingSpec(data_source=SourceInput(
            type="http", url=same)))
        assert world.server.headers[-1]["Authorization"] == "Bearer TOPSECRET"
        # ...and another origin takes new ones, or none.
        await bindings.update(T1, binding.id, BindingSpec(data_source=SourceInput(
            type="http", url=elsewhere.url("/items"),
            credentials={"type": "bearer", "token": "THEIRS"})))
        assert elsewhere.headers[-1]["Authorization"] == "Bearer THEIRS"
        await bindings.update(T1, binding.id, BindingSpec(data_source=SourceInput(
            type="http", url=world.url("/items")), clear_credentials=True))
        assert "Authorization" not in world.server.headers[-1]
        assert (await bindings.get(T1, binding.id)).credentials_type == ""


# ---------------------------------------------------------- freshness ----

async def test_ttl_expiry_refetches_on_resolve(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    assert world.server.hits["/items"] == 1
    world.clock.now += 29
    await world.bindings.resolve(binding.id)
    assert world.server.hits["/items"] == 1  # still fresh
    world.server.payload = {"price": 12, "name": "Lamp"}
    world.clock.now += 2
    resolved = await world.bindings.resolve(binding.id)
    assert world.server.hits["/items"] == 2
    assert json.loads(resolved.variables_json)["price"] == 12
    assert resolved.fresh_until == world.clock.now + 30
    assert len(world.events.updates) == 2


async def test_a_stale_get_serves_the_data_there_is_while_the_tenant_is_busy(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # One fetch per tenant, and it hangs: a GET of a stale binding waits its
    # bounded turn, then serves the data it has (no error, no failure event).
    monkeypatch.setattr(_bindings_module, "RESOLVE_FETCH_WAIT", 0.2)
    world.bindings._fetcher._slots = FetchSlots(per_tenant=1)
    world.bindings._fetcher._timeout = 10.0
    stale = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    busy = await world.bindings.create(T1, spec(world))
    world.clock.now += 61
    world.server.gate.clear()
    holding = asyncio.create_task(world.bindings.resolve(busy.id))
    await asyncio.wait_for(world.server.waiting.wait(), 5)
    resolved = await asyncio.wait_for(world.bindings.resolve(stale.id), 5)
    assert json.loads(resolved.variables_json)["price"] == 10  # the data it had
    world.server.gate.set()
    await holding
    assert (await world.bindings.get(T1, stale.id)).status == "active"
    assert world.events.failures == []


async def test_etag_revalidation_304_keeps_data_and_publishes_nothing(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    evaluations = world.templates.evaluations
    world.clock.now += 31
    resolved = await world.bindings.resolve(binding.id)
    assert world.server.hits["/items"] == 2
    assert world.server.headers[-1]["If-None-Match"] == world.server._tag()
    assert [e["source"] for e in world.events.updates] == ["fetch"]  # create's only
    assert world.templates.evaluations == evaluations  # nothing mapped again
    assert resolved.data_hash == binding.data_hash
    data = await world.bindings.data(T1, binding.id)
    assert data.fetched_at == world.clock.now  # only the time moved


async def test_same_data_without_etag_publishes_nothing(world: World) -> None:
    world.server.etag = False
    binding = await world.bindings.create(T1, spec(world))
    world.clock.now += 10  # LITHO_BINDING_MIN_TTL_SECONDS between refreshes
    refreshed, changed = await world.bindings.refresh(T1, binding.id)
    assert not changed and refreshed.data_hash == binding.data_hash
    assert len(world.events.updates) == 1
    world.server.payload = {"price": 11, "name": "Lamp"}
    world.clock.now += 10
    refreshed, changed = await world.bindings.refresh(T1, binding.id)
    assert changed and [e["source"] for e in world.events.updates] == ["fetch", "refresh"]


async def test_resolve_without_refresh_never_fetches(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    world.server.payload = {"price": 12, "name": "Lamp"}
    world.clock.now += 3600  # long stale
    resolved = await world.bindings.resolve(binding.id, refresh=False)
    assert world.server.hits["/items"] == 1
    assert json.loads(resolved.variables_json)["price"] == 10
    assert resolved.fresh_until == START + 30  # already past: no caching
    # Nor for a failing source, nor with the lease free.
    world.server.status = 503
    await world.bindings.resolve(binding.id)
    assert world.server.hits["/items"] == 2
    world.clock.now += 3600
    await world.bindings.resolve(binding.id, refresh=False)
    assert world.server.hits["/items"] == 2


async def test_a_manual_refresh_waits_the_shortest_ttl(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(type="manual")))
    world.clock.now += 4
    with pytest.raises(ResourceExhausted) as caught:
        await world.bindings.refresh(T1, binding.id)
    assert "LITHO_BINDING_MIN_TTL_SECONDS" in caught.value.message
    assert caught.value.retry_after == 6
    assert world.server.hits["/items"] == 1
    world.clock.now += 6
    world.server.status = 500
    refreshed, _ = await world.bindings.refresh(T1, binding.id)
    assert refreshed.status == ERROR and world.server.hits["/items"] == 2
    # A failed fetch counts as one: the source is not asked again at once.
    world.clock.now += 9
    with pytest.raises(ResourceExhausted):
        await world.bindings.refresh(T1, binding.id)
    world.clock.now += 1
    world.server.status = 200
    refreshed, _ = await world.bindings.refresh(T1, binding.id)
    assert refreshed.status == ACTIVE and world.server.hits["/items"] == 3


async def test_a_ttl_resolve_that_loses_the_lease_serves_the_current_data(
        world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    world.clock.now += 31
    held = await world.bindings.store.claim(binding.id, world.clock.now,
                                            world.clock.now + 30, "someone-else")
    assert held is not None
    resolved = await world.bindings.resolve(binding.id)
    assert world.server.hits["/items"] == 1
    assert resolved.data_hash == binding.data_hash


# ------------------------------------------------------------ onError ----

async def _failing(world: World, on_error: str) -> str:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30, on_error=on_error)))
    world.server.status = 503
    world.clock.now += 31
    return binding.id


async def test_on_error_serve_stale_serves_the_last_good_data(world: World) -> None:
    binding_id = await _failing(world, "serve_stale")
    resolved = await world.bindings.resolve(binding_id)
    assert resolved.status == ERROR
    assert json.loads(resolved.variables_json)["price"] == 10
    assert resolved.fresh_until == world.clock.now  # no caching of a failing binding
    [failed] = world.events.failures
    assert failed["error"] == "the source answered 503" and failed["status"] == ERROR


async def test_on_error_serve_error_refuses_and_keeps_the_detail_for_the_owner(
        world: World) -> None:
    binding_id = await _failing(world, "serve_error")
    with pytest.raises(FailedPrecondition) as caught:
        await world.bindings.resolve(binding_id)
    # Resolve answers the public /b/{id}.{ext}: what failed is not said there.
    assert caught.value.message == SOURCE_FAILED
    assert "503" not in caught.value.message and "127.0.0.1" not in caught.value.message
    assert (await world.bindings.get(T1, binding_id)).last_error == "the source answered 503"


async def test_on_error_serve_default_serves_the_defaults(world: World) -> None:
    binding_id = await _failing(world, "serve_default")
    resolved = await world.bindings.resolve(binding_id)
    assert json.loads(resolved.variables_json) == {
        "price": 0, "product": {"name": "?", "colour": "red"}}


async def test_a_failure_is_reported_once_and_recovery_clears_it(world: World) -> None:
    binding_id = await _failing(world, "serve_stale")
    await world.bindings.resolve(binding_id)
    world.clock.now += 31
    await world.bindings.resolve(binding_id)  # the same error again
    assert world.server.hits["/items"] == 3
    assert len(world.events.failures) == 1
    world.server.status = 200
    world.server.payload = {"price": 13, "name": "Lamp"}
    world.clock.now += 31
    resolved = await world.bindings.resolve(binding_id)
    assert resolved.status == ACTIVE and json.loads(resolved.variables_json)["price"] == 13
    data = await world.bindings.data(T1, binding_id)
    assert data.last_error == "the source answered 503"  # kept, for the record
    world.server.status = 503
    world.clock.now += 31
    await world.bindings.resolve(binding_id)
    assert len(world.events.failures) == 2  # a new failure after a recovery


# --------------------------------------------------------------- push ----

async def test_push_with_signature_or_secret_stores_and_publishes(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, source_type="push",
                                                   policy=PolicyInput(type="push")))
    assert binding.push_secret.startswith("lps_")
    assert world.server.hits["/items"] == 0
    body = json.dumps({"price": 7, "name": "Chair"}).encode()
    changed, digest = await world.bindings.push(
        binding.id, body, signature=sign_push(binding.push_secret, body), secret="")
    assert changed and digest
    resolved = await world.bindings.resolve(binding.id)
    assert json.loads(resolved.variables_json)["product"]["name"] == "Chair"
    assert resolved.fresh_until is None
    changed, _ = await world.bindings.push(binding.id, body, signature="",
                                           secret=binding.push_secret)
    assert not changed
    assert [e["source"] for e in world.events.updates] == ["push"]
    assert (await world.bindings.get(T1, binding.id)).push_secret == ""


async def test_push_with_a_bad_signature_stores_nothing(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, source_type="push",
                                                   policy=PolicyInput(type="push")))
    body = json.dumps({"price": 7}).encode()
    for signature, secret in [("", ""), (sign_push("lps_wrong", body), ""),
                              ("sha256=00", ""), ("", "lps_wrong"),
                              (sign_push(binding.push_secret, b"{}"), "")]:
        with pytest.raises(Unauthenticated):
            await world.bindings.push(binding.id, body, signature=signature, secret=secret)
    data = await world.bindings.data(T1, binding.id)
    assert data.data_json == "" and data.source == "none"
    assert world.events.updates == []


async def test_push_rules(world: World) -> None:
    pushed = await world.bindings.create(T1, spec(world, source_type="push",
                                                  policy=PolicyInput(type="push")))
    body = b'{"price": 1}'
    await world.bindings.pause(T1, pushed.id)
    with pytest.raises(FailedPrecondition, match="paused"):
        await world.bindings.push(pushed.id, body, signature="", secret=pushed.push_secret)
    await world.bindings.resume(T1, pushed.id)
    with pytest.raises(InvalidArgument):
        await world.bindings.push(pushed.id, b"{not json", signature="",
                                  secret=pushed.push_secret)
    assert (await world.bindings.data(T1, pushed.id)).data_json == ""


async def test_a_refused_push_says_nothing_about_the_id(world: World) -> None:
    """No such binding, not a push binding, a wrong secret, a paused binding
    with a wrong secret: one 401, the same words."""
    pushed = await world.bindings.create(T1, spec(world, source_type="push",
                                                  policy=PolicyInput(type="push")))
    fetched = await world.bindings.create(T1, spec(world))
    body = b'{"price": 1}'
    attempts = [("bnd_" + "0" * 36, sign_push(pushed.push_secret, body), ""),
                ("not-an-id", "", pushed.push_secret),
                (fetched.id, sign_push(pushed.push_secret, body), ""),
                (fetched.id, "", pushed.push_secret),
                (pushed.id, "", "lps_wrong"),
                (pushed.id, "", "")]
    messages = set()
    for binding_id, signature, secret in attempts:
        with pytest.raises(Unauthenticated) as caught:
            await world.bindings.push(binding_id, body, signature=signature, secret=secret)
        messages.add(caught.value.message)
    await world.bindings.pause(T1, pushed.id)
    with pytest.raises(Unauthenticated) as caught:
        await world.bindings.push(pushed.id, body, signature="sha256=00", secret="")
    messages.add(caught.value.message)
    assert messages == {PUSH_REFUSED}
    assert "wrong binding id or secret" in PUSH_REFUSED
    assert world.events.updates[1:] == []  # the fetched binding's create only


async def test_a_push_that_loses_to_a_pause_is_a_conflict_and_stores_nothing(
        world: World) -> None:
    templates = GatedTemplates(gate_mapping=True)
    world.bindings._templates = templates
    pushed = await world.bindings.create(T1, spec(world, source_type="push",
                                                  policy=PolicyInput(type="push")))
    templates.gate.clear()
    body = b'{"price": 5}'
    pushing = asyncio.create_task(world.bindings.push(
        pushed.id, body, signature="", secret=pushed.push_secret))
    await asyncio.wait_for(templates.waiting.wait(), 5)  # mapping the pushed data
    await world.bindings.pause(T1, pushed.id)
    templates.gate.set()
    with pytest.raises(Conflict, match="push again"):
        await pushing
    data = await world.bindings.data(T1, pushed.id)
    assert data.data_json == "" and data.status == PAUSED
    assert world.events.updates == []


# --------------------------------------------------- lifecycle and CRUD ----

async def test_pause_stops_refreshes_and_resume_restarts_them(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    paused = await world.bindings.pause(T1, binding.id)
    assert paused.status == PAUSED
    world.clock.now += 100
    resolved = await world.bindings.resolve(binding.id)
    assert world.server.hits["/items"] == 1 and resolved.fresh_until is None
    assert json.loads(resolved.variables_json)["price"] == 10
    with pytest.raises(FailedPrecondition):
        await world.bindings.refresh(T1, binding.id)
    assert (await world.bindings.resume(T1, binding.id)).status == ACTIVE
    await world.bindings.resolve(binding.id)
    assert world.server.hits["/items"] == 2


async def test_every_write_that_changes_what_renders_notes_the_change(world: World) -> None:
    """Renderer replicas memoise resolved bindings until a change note: every
    write a resolve would see sends one, and reads send none."""
    ttl = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    push = await world.bindings.create(T1, spec(world, source_type="push",
                                                policy=PolicyInput(type="push")))
    world.events.changes.clear()
    await world.bindings.get(T1, ttl.id)
    await world.bindings.resolve(ttl.id)  # fresh: nothing written
    await world.bindings.data(T1, ttl.id)
    assert world.events.changes == []
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("update", lambda: world.bindings.update(T1, ttl.id, spec(world, name="renamed"))),
        ("pause", lambda: world.bindings.pause(T1, ttl.id)),
        ("resume", lambda: world.bindings.resume(T1, ttl.id)),
        ("push", lambda: world.bindings.push(push.id, b'{"price": 3}', signature="",
                                             secret=push.push_secret)),
    ]
    for name, step in steps:
        world.events.changes.clear()
        await step()
        assert world.events.changes, name
    world.clock.now += 100  # stale: the resolve refreshes and stores
    world.events.changes.clear()
    await world.bindings.resolve(ttl.id)
    assert world.events.changes == [ttl.id]
    world.clock.now += 100
    world.events.changes.clear()
    await world.bindings.refresh(T1, ttl.id)
    assert world.events.changes == [ttl.id]
    world.events.changes.clear()
    await world.bindings.delete(T1, ttl.id)
    assert world.events.changes == [ttl.id]


async def test_ids_and_page_tokens_are_checked_whole(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world))
    assert is_binding_id(binding.id)
    assert not is_binding_id(binding.id + "\n") and not is_binding_id(" " + binding.id)
    assert not is_binding_id(binding.id + "0")
    assert decode_token(encode_token(binding.id)) == binding.id
    with pytest.raises(InvalidArgument) as caught:  # "$" alone let the newline by
        decode_token(encode_token(binding.id + "\n"))
    assert caught.value.errors[0].field == "pageToken"
    with pytest.raises(NotFound):
        await world.bindings.resolve(binding.id + "\n")


async def test_tenants_are_isolated_and_list_is_newest_first(world: World) -> None:
    ids = []
    for n in range(4):
        world.clock.now += 1
        ids.append((await world.bindings.create(T1, spec(world, name=f"b{n}"))).id)
    other = await world.bindings.create(T2, spec(world))
    with pytest.raises(NotFound):
        await world.bindings.get(T1, other.id)
    with pytest.raises(NotFound):
        await world.bindings.delete(T1, other.id)
    with pytest.raises(NotFound):
        await world.bindings.get(T1, "not-an-id")
    page, token = await world.bindings.list_bindings(T1, page_size=3, page_token="")
    assert [b.id for b in page] == ids[::-1][:3] and token
    rest, token2 = await world.bindings.list_bindings(T1, page_size=3, page_token=token)
    assert [b.id for b in rest] == [ids[0]] and token2 == ""
    with pytest.raises(InvalidArgument):
        await world.bindings.list_bindings(T1, page_size=3, page_token="garbage")
    await world.bindings.pause(T1, ids[1])
    paused, _ = await world.bindings.list_bindings(T1, page_size=10, page_token="",
                                                   status=PAUSED)
    assert [b.id for b in paused] == [ids[1]]
    none, _ = await world.bindings.list_bindings(T1, page_size=10, page_token="",
                                                 template_id="tpl_other")
    assert none == []
    await world.bindings.delete(T1, ids[0])
    with pytest.raises(NotFound):
        await world.bindings.resolve(ids[0])


async def test_update_keeps_absent_fields_and_remaps(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, data_source=SourceInput(
        type="http", url=world.url("/items"), credentials={"type": "bearer", "token": "t"})))
    updated = await world.bindings.update(T1, binding.id, BindingSpec(
        mapping={"price": "price", "label": "name"}))
    assert updated.name == "price tag" and updated.credentials_type == "bearer"
    resolved = await world.bindings.resolve(binding.id)
    assert json.loads(resolved.variables_json)["label"] == "Lamp"
    assert world.server.hits["/items"] == 1  # remapped from the stored data
    cleared = await world.bindings.update(T1, binding.id, BindingSpec(clear_credentials=True))
    assert cleared.credentials_type == ""
    with pytest.raises(InvalidArgument):
        await world.bindings.update(T1, binding.id, BindingSpec(
            data_source=SourceInput(type="http", url=world.url("/private"))))
    assert (await world.bindings.get(T1, binding.id)).data_source["url"] == world.url("/items")


async def test_a_fetch_for_an_older_configuration_is_dropped(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world, policy=PolicyInput(
        type="ttl", ttl_seconds=30)))
    world.clock.now += 31
    world.server.gate.clear()
    world.server.payload = {"price": 50, "name": "Lamp"}
    resolving = asyncio.create_task(world.bindings.resolve(binding.id))
    await asyncio.wait_for(world.server.waiting.wait(), 5)  # the refresh is in flight
    await world.bindings.update(T1, binding.id, BindingSpec(mapping={"price": "price"}))
    world.server.gate.set()
    resolved = await resolving
    assert json.loads(resolved.variables_json)["price"] == 10  # the old data, remapped
    assert len(world.events.updates) == 1  # only the create's


async def test_an_update_never_undoes_a_push_that_lands_meanwhile(world: World) -> None:
    templates = GatedTemplates()
    world.bindings._templates = templates
    binding = await world.bindings.create(T1, spec(world, source_type="push",
                                                   policy=PolicyInput(type="push")))
    secret = binding.push_secret
    old = b'{"price": 1, "name": "old"}'
    await world.bindings.push(binding.id, old, signature=sign_push(secret, old), secret="")
    templates.gate.clear()
    updating = asyncio.create_task(world.bindings.update(
        T1, binding.id, BindingSpec(mapping={"price": "price"})))
    await asyncio.wait_for(templates.waiting.wait(), 5)  # the update has read the binding
    new = b'{"price": 999, "name": "new"}'
    await world.bindings.push(binding.id, new, signature=sign_push(secret, new), secret="")
    templates.gate.set()
    with pytest.raises(Conflict, match="retry"):
        await updating
    data = await world.bindings.data(T1, binding.id)
    assert json.loads(data.data_json)["price"] == 999
    assert json.loads(data.variables_json)["product"]["name"] == "new"  # the old mapping
    # Done again, the update maps the new data.
    await world.bindings.update(T1, binding.id, BindingSpec(mapping={"price": "price"}))
    assert json.loads((await world.bindings.data(T1, binding.id)).variables_json) == {
        "price": 999, "product": {"name": "?", "colour": "red"}}


async def test_a_rename_while_a_push_lands_is_no_conflict(world: World) -> None:
    # Only an update that writes data or status guards them: a client that
    # renames a busy push binding must not get a 409 it did nothing to cause.
    templates = GatedTemplates()
    world.bindings._templates = templates
    binding = await world.bindings.create(T1, spec(world, source_type="push",
                                                   policy=PolicyInput(type="push")))
    templates.gate.clear()
    renaming = asyncio.create_task(world.bindings.update(
        T1, binding.id, BindingSpec(name="renamed")))
    await asyncio.wait_for(templates.waiting.wait(), 5)  # the update has read the binding
    body = b'{"price": 7, "name": "pushed"}'
    await world.bindings.push(binding.id, body, signature=sign_push(binding.push_secret, body),
                              secret="")
    templates.gate.set()
    renamed = await renaming
    assert renamed.name == "renamed"
    data = await world.bindings.data(T1, binding.id)
    assert json.loads(data.data_json)["price"] == 7  # the push is kept


async def test_an_update_never_resumes_a_binding_paused_meanwhile(world: World) -> None:
    templates = GatedTemplates()
    world.bindings._templates = templates
    binding = await world.bindings.create(T1, spec(world))
    templates.gate.clear()
    updating = asyncio.create_task(world.bindings.update(
        T1, binding.id, BindingSpec(mapping={"price": "price"})))
    await asyncio.wait_for(templates.waiting.wait(), 5)
    await world.bindings.pause(T1, binding.id)
    templates.gate.set()
    with pytest.raises(Conflict):
        await updating
    after = await world.bindings.get(T1, binding.id)
    assert after.status == PAUSED and after.mapping == {"price": "price",
                                                        "product.name": "name"}
    updated = await world.bindings.update(T1, binding.id, BindingSpec(
        mapping={"price": "price"}))
    assert updated.status == PAUSED and updated.mapping == {"price": "price"}


async def test_a_source_that_becomes_push_gets_a_secret_once(world: World) -> None:
    binding = await world.bindings.create(T1, spec(world))
    updated = await world.bindings.update(T1, binding.id, BindingSpec(
        data_source=SourceInput(type="push"), refresh_policy=PolicyInput(type="push")))
    assert updated.push_secret.startswith("lps_")
    assert (await world.bindings.get(T1, binding.id)).push_secret == ""
    with pytest.raises(InvalidArgument) as caught:  # the policy must change with it
        await world.bindings.update(T1, binding.id, BindingSpec(
            data_source=SourceInput(type="http", url=world.url("/items"))))
    assert caught.value.errors[0].field == "refreshPolicy"
    back = await world.bindings.update(T1, binding.id, BindingSpec(
        data_source=SourceInput(type="http", url=world.url("/items")),
        refresh_policy=PolicyInput(type="manual")))
    assert back.push_secret == "" and world.server.hits["/items"] == 2  # fetched again


async def test_preview_maps_sample_data_or_a_fetch_and_saves_nothing(world: World) -> None:
    variables, data = await world.bindings.preview(
        T1, template_id=TEMPLATE, data_source=None,
        sample_data_json='{"price": 3, "name": "Cup"}', mapping={"p": "price"},
        defaults_json='{"q": 1}')
    assert json.loads(variables) == {"p": 3, "q": 1} and json.loads(data)["name"] == "Cup"
    variables, _ = await world.bindings.preview(
        T1, template_id=TEMPLATE, data_source=SourceInput(type="http", url=world.url("/items")),
        sample_data_json="", mapping={"p": "price"}, defaults_json="")
    assert json.loads(variables) == {"p": 10}
    with pytest.raises(InvalidArgument) as caught:
        await world.bindings.preview(
            T1, template_id=TEMPLATE, data_source=SourceInput(type="http",
                                                              url=world.url("/html")),
            sample_data_json="", mapping={"p": "price"}, defaults_json="")
    assert caught.value.errors[0].field == "dataSource"
    assert await stored_count(world) == 0


def test_deep_merge_fills_nulls_only() -> None:
    assert deep_merge({"a": 1, "b": {"c": 2, "d": 3}}, {"a": None, "b": {"c": 5}}) == {
        "a": 1, "b": {"c": 5, "d": 3}}
    assert deep_merge({"a": {"x": 1}}, {"a": 0}) == {"a": 0}


# ------------------------------------------------ template data sources ----

async def test_template_sources_are_cached_then_revalidated(world: World) -> None:
    call = SourceCall(name="inventory", url=world.url("/items"), ttl_seconds=60)
    [first] = await world.sources.fetch(T1, [call])
    assert not first.from_cache and json.loads(first.data_json)["price"] == 10
    [second] = await world.sources.fetch(T1, [call])
    assert second.from_cache and world.server.hits["/items"] == 1
    [other_tenant] = await world.sources.fetch(T2, [call])
    assert not other_tenant.from_cache and world.server.hits["/items"] == 2
    world.clock.now += 61
    [third] = await world.sources.fetch(T1, [call])
    assert third.from_cache and third.fetched_at == world.clock.now  # a 304
    assert world.server.hits["/items"] == 3
    world.server.payload = {"price": 99}
    world.clock.now += 61
    [fourth] = await world.sources.fetch(T1, [call])
    assert not fourth.from_cache and json.loads(fourth.data_json) == {"price": 99}
    world.clock.now += 2 * 86400
    assert await world.sources.sweep() == 2


async def test_template_source_failures_name_each_source(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.sources.fetch(T1, [
            SourceCall(name="page", url=world.url("/html")),
            SourceCall(name="hidden", url=world.url("/private"))])
    fields = {e.field: e.message for e in caught.value.errors}
    assert "text/html" in fields["dataSources.page"]
    assert "not allowed" in fields["dataSources.hidden"]
    with pytest.raises(InvalidArgument, match="LITHO_BINDING_MAX_TEMPLATE_SOURCES"):
        await world.sources.fetch(T1, [SourceCall(name=f"s{n}", url=world.url("/items"))
                                       for n in range(3)])
