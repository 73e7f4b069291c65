"""``Idempotency-Key`` (services/gateway/_idempotency.py) on a tiny aiohttp app
over a real socket, with the real SQLite document store and the gateway's
own errors middleware; a fake auth middleware sets the caller from
``X-Tenant``. "Two replicas" are two apps, each with its own store opened on
one SQLite file, as two gateway processes would be."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.typedefs import Handler

from litho.docstore import DocumentStore, open_document_store
from litho.errors import NotFound, ResourceExhausted, Unavailable
from litho.service import Endpoints, Host
from services._registry import registry
from services.gateway._app import _idempotency_keys, create_app
from services.gateway._idempotency import (
    HEADER,
    MAX_KEYS_SETTING,
    REDACTED,
    REPLAYED,
    ROUTES,
    SECRET_FIELDS,
    IdempotencyKeys,
    _Claim,
    idempotency_middleware,
)
from services.gateway._keys import ApiKey
from services.gateway._middleware import errors_middleware
from services.gateway._requests import read_limited
from services.gateway._settings import GatewaySettings
from services.gateway._state import API_KEY, MAX_BODY_BYTES

TEST_ROUTES = {"/things": True, "/read-first": True, "/form": True, "/other": True,
               "/fail": True, "/missing": True, "/crash": True, "/stream": True, "/big": True,
               "/free": False, "/secret": True, "/secret-text": True}
TEST_SECRETS = {"/secret": ("secret", "otherSecret"), "/secret-text": ("secret",)}
SECRET = "whsec_c2hvd24tb25jZS1hbmQtbmV2ZXIta2VwdA=="


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """What the handlers of every "replica" share: call counts and a gate."""

    calls: dict[str, int] = field(default_factory=dict)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    fail_first: int = 0

    def __post_init__(self) -> None:
        self.gate.set()

    def count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]


def _app(keys: IdempotencyKeys, backend: Backend) -> web.Application:
    @web.middleware
    async def fake_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[API_KEY] = ApiKey(tenant_id=request.headers.get("X-Tenant", "t1"), name="k",
                                  key_id="kid_1", signing_secret="s")
        return await handler(request)

    @web.middleware
    async def read_first(request: web.Request, handler: Handler) -> web.StreamResponse:
        # As the validation middleware does for JSON bodies: read before.
        if request.path == "/read-first":
            await request.read()
        return await handler(request)

    async def form(request: web.Request) -> web.Response:
        backend.count("form")
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader)
        return web.json_response({"name": part.name, "data": (await part.read()).decode()},
                                 status=201)

    async def things(request: web.Request) -> web.Response:
        n = backend.count("things")
        backend.entered.set()
        try:
            await backend.gate.wait()
        except asyncio.CancelledError:
            backend.cancelled.set()
            raise
        body = await request.read()
        return web.json_response({"n": n, "got": body.decode()}, status=201,
                                 headers={"Location": f"/things/{n}", "Set-Cookie": "s=1",
                                          "X-Other": "x"})

    async def other(request: web.Request) -> web.Response:
        backend.count("other")
        return web.json_response({}, status=201)

    async def fail(request: web.Request) -> web.Response:
        n = backend.count("fail")
        if n <= backend.fail_first:
            raise Unavailable("the renderer is down")
        return web.json_response({"n": n}, status=201)

    async def missing(request: web.Request) -> web.Response:
        backend.count("missing")
        raise NotFound("no template 'x' (templateId)")

    async def crash(request: web.Request) -> web.Response:
        if backend.count("crash") == 1:
            raise RuntimeError("a bug")
        return web.json_response({"ok": True}, status=201)

    async def stream(request: web.Request) -> web.Response:
        backend.count("stream")
        data = await read_limited(request.content, 1 << 20)
        return web.json_response({"size": len(data), "sha": hashlib.sha256(data).hexdigest(),
                                  "total": request.content.total_bytes}, status=201)

    async def big(request: web.Request) -> web.Response:
        backend.count("big")
        return web.Response(body=b"x" * 5000, content_type="application/octet-stream")

    async def free(request: web.Request) -> web.Response:
        return web.json_response({"n": backend.count("free")}, status=201)

    async def secret(request: web.Request) -> web.Response:
        n = backend.count("secret")
        return web.json_response({"id": f"s{n}", "secret": SECRET, "nested": {"secret": "x"}},
                                 status=201, headers={"Location": f"/secret/s{n}"})

    async def secret_text(request: web.Request) -> web.Response:
        backend.count("secret-text")
        return web.Response(text=SECRET, status=201)

    app = web.Application(middlewares=[errors_middleware, fake_auth, read_first,
                                       idempotency_middleware(keys, routes=TEST_ROUTES,
                                                              secret_fields=TEST_SECRETS)])
    app[MAX_BODY_BYTES] = 1 << 20
    for path, handler in [("/things", things), ("/read-first", things), ("/form", form),
                          ("/other", other), ("/fail", fail),
                          ("/missing", missing), ("/crash", crash), ("/stream", stream),
                          ("/big", big), ("/free", free), ("/secret", secret),
                          ("/secret-text", secret_text)]:
        app.router.add_post(path, handler)
    return app


@dataclass
class Gateways:
    backend: Backend
    clock: Clock
    urls: list[str]
    keys: list[IdempotencyKeys]
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.urls[0]

    async def post(self, path: str, body: Any = None, *, key: str | None = "k1",
                   replica: int = 0, tenant: str = "t1",
                   data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"X-Tenant": tenant}
        if key is not None:
            headers[HEADER] = key
        payload = data if data is not None else json.dumps(body or {"a": 1}).encode()
        async with self.http.post(self.urls[replica] + path, data=payload,
                                  headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()


StartGateways = Callable[..., Awaitable[Gateways]]


@pytest_asyncio.fixture(loop_scope="session")
async def start(tmp_path: Path) -> AsyncIterator[StartGateways]:
    stores: list[DocumentStore] = []
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def go(replicas: int = 1, *, handler_cancellation: bool = False,
                 **settings: Any) -> Gateways:
        backend, clock = Backend(), Clock()
        urls, all_keys = [], []
        for _ in range(replicas):
            store = await open_document_store(f"sqlite:///{tmp_path}/docs.sqlite", "litho")
            stores.append(store)
            keys = IdempotencyKeys(store, **{"clock": clock, **settings})
            await keys.prepare()
            all_keys.append(keys)
            runner = web.AppRunner(_app(keys, backend), access_log=None,
                                   handler_cancellation=handler_cancellation)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Gateways(backend, clock, urls, all_keys, http)

    yield go
    for http in sessions:
        await http.close()
    for runner in runners:
        await runner.cleanup()
    for store in stores:
        await store.close()


async def test_a_replay_returns_the_first_response(start: StartGateways) -> None:
    gw = await start()
    first = await gw.post("/things", {"name": "a"})
    again = await gw.post("/things", {"name": "a"})
    assert first[0] == again[0] == 201
    assert again[2] == first[2] and json.loads(first[2])["n"] == 1
    assert again[1]["Location"] == first[1]["Location"] == "/things/1"
    assert again[1]["Content-Type"].startswith("application/json")
    assert again[1][REPLAYED] == "true" and REPLAYED not in first[1]
    # Not kept: a cookie and headers outside the list.
    assert "Set-Cookie" in first[1] and "Set-Cookie" not in again[1]
    assert "X-Other" not in again[1]
    assert gw.backend.calls == {"things": 1}


async def test_without_a_key_or_on_other_routes_every_request_runs(
    start: StartGateways,
) -> None:
    gw = await start()
    await gw.post("/things", key=None)
    await gw.post("/things", key=None)
    for _ in range(2):
        status, headers, _ = await gw.post("/free", key="k1")
        assert status == 201 and REPLAYED not in headers
    assert gw.backend.calls == {"things": 2, "free": 2}


async def test_the_same_key_with_another_body_or_route_is_a_422_naming_the_header(
    start: StartGateways,
) -> None:
    gw = await start()
    assert (await gw.post("/things", {"name": "a"}))[0] == 201
    for status, _, body in [await gw.post("/things", {"name": "b"}),
                            await gw.post("/other", {"name": "a"}),
                            await gw.post("/things?x=1", {"name": "a"})]:
        problem = json.loads(body)
        assert status == 422
        assert problem["errors"][0]["field"] == HEADER
        assert HEADER in problem["detail"]
    assert gw.backend.calls == {"things": 1}


@pytest.mark.parametrize(("key", "ok"), [
    ("x" * 255, True),
    ("a b-C_9:~!", True),
    ("x" * 256, False),
    ("x" * 8000, False),  # near aiohttp's own header limit (8190 bytes: a 400)
    ("", False),
    ("clé", False),
])
async def test_keys_are_1_to_255_printable_ascii_characters(
    start: StartGateways, key: str, ok: bool,
) -> None:
    gw = await start()
    status, _, body = await gw.post("/things", key=key)
    if ok:
        assert status == 201
        return
    assert status == 422
    problem = json.loads(body)
    assert problem["errors"] == [{"field": HEADER,
                                  "message": "must be 1 to 255 printable ASCII characters"}]
    assert key[:50] not in problem["detail"] or not key
    assert gw.backend.calls == {}


async def test_two_keys_in_one_request_are_a_422(start: StartGateways) -> None:
    gw = await start()
    async with gw.http.post(gw.url + "/things", json={},
                            headers=[(HEADER, "a"), (HEADER, "b")]) as resp:
        assert resp.status == 422
        assert (await resp.json())["errors"][0]["field"] == HEADER
    assert gw.backend.calls == {}


async def test_keys_are_scoped_by_tenant(start: StartGateways) -> None:
    gw = await start()
    one = await gw.post("/things", tenant="t1")
    two = await gw.post("/things", tenant="t2", body={"other": "body"})
    assert one[0] == two[0] == 201 and REPLAYED not in two[1]
    assert gw.backend.calls == {"things": 2}


async def test_concurrent_duplicates_execute_once(start: StartGateways) -> None:
    gw = await start()
    gw.backend.gate.clear()
    tasks = [asyncio.create_task(gw.post("/things")) for _ in range(5)]
    await gw.backend.entered.wait()
    await asyncio.sleep(0.2)  # the duplicates are waiting, not running
    assert gw.backend.calls == {"things": 1}
    gw.backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert {a[0] for a in answers} == {201}
    assert {a[2] for a in answers} == {answers[0][2]}
    assert sum(a[1].get(REPLAYED) == "true" for a in answers) == 4
    assert gw.backend.calls == {"things": 1}


async def test_two_replicas_on_one_store_execute_once(start: StartGateways) -> None:
    gw = await start(replicas=2)
    gw.backend.gate.clear()
    tasks = [asyncio.create_task(gw.post("/things", replica=i % 2)) for i in range(6)]
    await gw.backend.entered.wait()
    await asyncio.sleep(0.2)
    gw.backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert {a[0] for a in answers} == {201}
    assert {a[2] for a in answers} == {answers[0][2]}
    assert gw.backend.calls == {"things": 1}
    # And a later retry on either replica is a replay.
    assert (await gw.post("/things", replica=1))[1][REPLAYED] == "true"


async def test_a_duplicate_that_outwaits_the_first_gets_a_409(start: StartGateways) -> None:
    gw = await start(wait_seconds=0.1)
    gw.backend.gate.clear()
    first = asyncio.create_task(gw.post("/things"))
    await gw.backend.entered.wait()
    status, headers, body = await gw.post("/things")
    assert status == 409 and headers["Retry-After"] == "1"
    assert "in progress" in json.loads(body)["detail"]
    gw.backend.gate.set()
    assert (await first)[0] == 201
    assert (await gw.post("/things"))[1][REPLAYED] == "true"
    assert gw.backend.calls == {"things": 1}


async def test_a_5xx_releases_the_key_so_a_retry_runs(start: StartGateways) -> None:
    gw = await start()
    gw.backend.fail_first = 1
    assert (await gw.post("/fail"))[0] == 503
    status, headers, body = await gw.post("/fail")
    assert status == 201 and REPLAYED not in headers and json.loads(body) == {"n": 2}
    assert (await gw.post("/fail"))[1][REPLAYED] == "true"
    assert gw.backend.calls == {"fail": 2}


async def test_an_unexpected_error_releases_the_key(start: StartGateways) -> None:
    gw = await start()
    status, _, body = await gw.post("/crash")
    assert status == 500 and b"a bug" not in body
    assert (await gw.post("/crash"))[0] == 201
    assert gw.backend.calls == {"crash": 2}


async def test_a_4xx_is_kept_and_replayed(start: StartGateways) -> None:
    gw = await start()
    first = await gw.post("/missing")
    again = await gw.post("/missing")
    assert first[0] == again[0] == 404
    assert again[2] == first[2] and again[1][REPLAYED] == "true"
    assert again[1]["Content-Type"].startswith("application/problem+json")
    assert gw.backend.calls == {"missing": 1}


async def test_a_cancelled_request_releases_the_key(start: StartGateways) -> None:
    gw = await start(handler_cancellation=True)
    gw.backend.gate.clear()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(gw.post("/things"), 0.3)  # the client gives up
    await asyncio.wait_for(gw.backend.cancelled.wait(), 10)
    gw.backend.gate.set()
    status, headers, _ = await gw.post("/things")
    assert status == 201 and REPLAYED not in headers
    assert gw.backend.calls == {"things": 2}


async def test_records_expire(start: StartGateways) -> None:
    gw = await start(seconds=60)
    await gw.post("/things")
    gw.clock.now += 59
    assert (await gw.post("/things"))[1][REPLAYED] == "true"
    gw.clock.now += 2
    # Expired: ignored and taken over, even with another body.
    status, headers, body = await gw.post("/things", {"another": "body"})
    assert status == 201 and REPLAYED not in headers and json.loads(body)["n"] == 2
    assert await gw.keys[0].sweep() == 0  # the new record is fresh
    gw.clock.now += 61
    assert await gw.keys[0].sweep() == 1
    assert gw.backend.calls == {"things": 2}


async def test_the_key_of_a_replica_that_died_is_free_after_its_lease(
    start: StartGateways,
) -> None:
    gw = await start(lock_seconds=30, wait_seconds=0.1)
    fingerprint = hashlib.sha256(b"POST\n/things\n" + json.dumps({"a": 1}).encode())
    # A claim whose holder never finishes (the process died).
    await gw.keys[0].begin("t1", "k1", fingerprint.hexdigest())
    gw.clock.now += 29
    assert (await gw.post("/things"))[0] == 409  # still held
    gw.clock.now += 2
    status, headers, _ = await gw.post("/things")
    assert status == 201 and REPLAYED not in headers
    assert gw.backend.calls == {"things": 1}


async def test_a_running_request_keeps_its_lease(start: StartGateways) -> None:
    # Real time: leases of 1 s, renewed every third of a second while the
    # handler runs (a lapse needs a renewal 0.67 s late).
    gw = await start(lock_seconds=1.0, wait_seconds=5, clock=time.time)
    gw.backend.gate.clear()
    first = asyncio.create_task(gw.post("/things"))
    await gw.backend.entered.wait()
    await asyncio.sleep(2.5)  # over two leases
    second = asyncio.create_task(gw.post("/things"))
    await asyncio.sleep(0.3)
    gw.backend.gate.set()
    assert (await first)[2] == (await second)[2]
    assert gw.backend.calls == {"things": 1}


async def test_a_streamed_body_reaches_the_handler_whole(start: StartGateways) -> None:
    gw = await start(max_request_bytes=300_000)
    data = bytes(range(256)) * 1000  # 256,000 bytes, not JSON
    status, _, body = await gw.post("/stream", data=data)
    assert status == 201
    assert json.loads(body) == {"size": len(data), "sha": hashlib.sha256(data).hexdigest(),
                                "total": len(data)}
    assert (await gw.post("/stream", data=data))[1][REPLAYED] == "true"
    assert (await gw.post("/stream", data=data[:-1]))[0] == 422
    status, _, body = await gw.post("/stream", data=data + b"x" * 50_000, key="k2")
    assert status == 413 and b"LITHO_GATEWAY_IDEMPOTENCY_MAX_REQUEST_BYTES" in body
    assert gw.backend.calls == {"stream": 1}


async def test_a_body_read_before_the_middleware_is_fingerprinted(
    start: StartGateways,
) -> None:
    gw = await start()
    first = await gw.post("/read-first", {"name": "a"})
    assert first[0] == 201 and json.loads(first[2])["got"] == '{"name": "a"}'
    assert (await gw.post("/read-first", {"name": "a"}))[1][REPLAYED] == "true"
    assert (await gw.post("/read-first", {"name": "b"}))[0] == 422
    assert gw.backend.calls == {"things": 1}


async def test_a_multipart_body_reaches_the_handler(start: StartGateways) -> None:
    gw = await start()
    form = aiohttp.FormData()
    form.add_field("file", b"font bytes", filename="a.ttf")
    async with gw.http.post(gw.url + "/form", data=form,
                            headers={HEADER: "f1", "X-Tenant": "t1"}) as resp:
        assert resp.status == 201
        assert await resp.json() == {"name": "file", "data": "font bytes"}
    assert gw.backend.calls == {"form": 1}


async def test_a_response_too_large_to_keep_is_not_run_again(start: StartGateways) -> None:
    gw = await start(max_response_bytes=4096)
    first = await gw.post("/big")
    assert first[0] == 200 and len(first[2]) == 5000
    status, _, body = await gw.post("/big")
    assert status == 409
    assert "larger than 4096 bytes" in json.loads(body)["detail"]
    assert gw.backend.calls == {"big": 1}


def test_every_post_route_of_the_gateway_is_classified() -> None:
    # Without deps: the routes only, not the check against openapi.json.
    app = create_app(None, max_body_bytes=1 << 20)  # type: ignore[arg-type]
    posts = {route.resource.canonical for route in app.router.routes()
             if route.method == "POST" and route.resource is not None}
    assert posts - ROUTES.keys() == set(), "classify these POST routes in ROUTES"
    assert ROUTES.keys() - posts == set(), "ROUTES names routes that do not exist"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        IdempotencyKeys(None, seconds=0)  # type: ignore[arg-type]


async def _raw_records(tmp_path: Path) -> list[dict[str, Any]]:
    """Every stored record, read as another process would."""
    store = await open_document_store(f"sqlite:///{tmp_path}/docs.sqlite", "litho")
    try:
        return await store.collection("idempotency_keys").find({})
    finally:
        await store.close()


async def test_a_tenant_at_its_cap_gets_a_429_naming_the_setting_until_records_expire(
    start: StartGateways, tmp_path: Path,
) -> None:
    gw = await start(max_keys_per_tenant=3, seconds=60)
    for key in ("k1", "k2", "k3"):
        assert (await gw.post("/things", key=key))[0] == 201
    gw.clock.now += 20
    status, headers, body = await gw.post("/things", key="k4")
    assert status == 429
    assert MAX_KEYS_SETTING in json.loads(body)["detail"]
    assert headers["Retry-After"] == "40"  # when the oldest record expires
    # A replay needs no slot; nor does a request without a key, nor another tenant.
    assert (await gw.post("/things", key="k1"))[1][REPLAYED] == "true"
    assert (await gw.post("/things", key=None))[0] == 201
    assert (await gw.post("/things", key="k4", tenant="t2"))[0] == 201
    assert gw.backend.calls == {"things": 5}
    # Expired records free their slots without waiting for the sweep.
    gw.clock.now += 41
    status, headers, _ = await gw.post("/things", key="k4")
    assert status == 201 and REPLAYED not in headers
    assert len([r for r in await _raw_records(tmp_path) if r["tenantId"] == "t1"]) == 1


async def test_replicas_racing_for_the_last_slots_never_pass_the_cap(
    start: StartGateways, tmp_path: Path,
) -> None:
    gw = await start(replicas=2, max_keys_per_tenant=4)
    answers = await asyncio.gather(*[gw.post("/things", key=f"k{i}", replica=i % 2)
                                     for i in range(16)])
    assert sorted(a[0] for a in answers) == [201] * 4 + [429] * 12
    assert gw.backend.calls == {"things": 4}
    slots = sorted(r["slot"] for r in await _raw_records(tmp_path))
    assert len(slots) == 4 and len(set(slots)) == 4 and max(slots) < 4


async def test_a_released_key_frees_its_slot(start: StartGateways) -> None:
    gw = await start(max_keys_per_tenant=1)
    gw.backend.fail_first = 1
    assert (await gw.post("/fail", key="a"))[0] == 503  # released
    assert (await gw.post("/fail", key="b"))[0] == 201
    assert (await gw.post("/things", key="c"))[0] == 429


async def test_records_kept_before_the_cap_are_deleted_at_start(tmp_path: Path) -> None:
    store = await open_document_store(f"sqlite:///{tmp_path}/old.sqlite", "litho")
    try:
        old = store.collection("idempotency_keys")
        now = time.time()
        for i in range(3):  # as the gateway kept them before slots
            await old.insert({"_id": _doc_id("t1", f"old{i}"), "tenantId": "t1",
                              "fingerprint": "f", "claim": "c", "state": "done",
                              "response": {"status": 201}, "createdAt": now,
                              "lockedUntil": now, "expiresAt": now + 3600})
        await old.insert({"_id": "kept", "tenantId": "t2", "slot": 0, "state": "done",
                          "expiresAt": now + 3600})
        keys = IdempotencyKeys(store, max_keys_per_tenant=2)
        await keys.prepare()  # the unique index on (tenantId, slot) needs them gone
        assert [d["_id"] for d in await old.find({})] == ["kept"]
        # A retry of a request made before the upgrade runs again.
        assert isinstance(await keys.begin("t1", "old0", "f"), _Claim)
        await keys.begin("t1", "new1", "f1")
        with pytest.raises(ResourceExhausted, match=MAX_KEYS_SETTING):
            await keys.begin("t1", "new2", "f2")
        await keys.prepare()  # a second start deletes nothing
        assert await old.count({}) == 3
    finally:
        await store.close()


@pytest.mark.parametrize("slot", [2, 2**40], ids=["cap-lowered", "numbered-before"])
async def test_an_expired_record_above_the_cap_is_claimed_anew_and_counts(
    tmp_path: Path, slot: int,
) -> None:
    store = await open_document_store(f"sqlite:///{tmp_path}/docs.sqlite", "litho")
    try:
        clock = Clock()
        keys = IdempotencyKeys(store, seconds=60, max_keys_per_tenant=2, clock=clock)
        await keys.prepare()
        records = store.collection("idempotency_keys")
        # Kept in a slot the cap does not reach (a cap lowered since, or the
        # previous release's numbering of records from before slots).
        await records.insert({"_id": _doc_id("t1", "high"), "tenantId": "t1", "slot": slot,
                              "fingerprint": "f", "claim": "c", "state": "done",
                              "response": {"status": 201}, "createdAt": clock.now,
                              "lockedUntil": clock.now, "expiresAt": clock.now + 60})
        clock.now += 30
        await keys.begin("t1", "low", "f")
        await keys.begin("t1", "other", "f")  # the high slot counts against nothing
        await records.delete({"_id": _doc_id("t1", "other")})
        clock.now += 31  # "high" has expired; "low" has not
        claim = await keys.begin("t1", "high", "f2")
        assert isinstance(claim, _Claim)
        taken = await records.get(_doc_id("t1", "high"))
        assert taken is not None and taken["slot"] < 2 and taken["fingerprint"] == "f2"
        with pytest.raises(ResourceExhausted, match=MAX_KEYS_SETTING):
            await keys.begin("t1", "third", "f")
    finally:
        await store.close()


def _doc_id(tenant: str, key: str) -> str:
    return hashlib.sha256(f"{tenant}\n{key}".encode()).hexdigest()


async def test_a_secret_shown_once_is_not_kept_and_a_replay_says_so(
    start: StartGateways, tmp_path: Path,
) -> None:
    gw = await start()
    status, headers, body = await gw.post("/secret")
    assert status == 201 and json.loads(body)["secret"] == SECRET
    status, headers, body = await gw.post("/secret")
    assert status == 201 and headers[REPLAYED] == "true"
    assert headers[REDACTED] == "secret" and headers["Location"] == "/secret/s1"
    # Top-level fields only: the answer's shape is the route's, minus them.
    assert json.loads(body) == {"id": "s1", "nested": {"secret": "x"}}
    assert gw.backend.calls == {"secret": 1}
    stored = json.dumps(await _raw_records(tmp_path))
    assert "whsec_" not in stored
    assert all("whsec_" not in base64.b64decode(r["response"]["body"]).decode()
               for r in await _raw_records(tmp_path))


async def test_an_answer_that_may_hold_a_secret_and_is_not_json_is_not_kept(
    start: StartGateways, tmp_path: Path,
) -> None:
    gw = await start()
    assert (await gw.post("/secret-text"))[2].decode() == SECRET
    status, _, body = await gw.post("/secret-text")
    assert status == 409 and "may hold a secret" in json.loads(body)["detail"]
    assert gw.backend.calls == {"secret-text": 1}
    assert "whsec_" not in json.dumps(await _raw_records(tmp_path))


def _top_level_properties(schema: dict[str, Any], spec: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return _top_level_properties(spec["components"]["schemas"][name], spec)
    found = set(schema.get("properties", {}))
    for part in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
        found |= _top_level_properties(part, spec)
    return found


def test_every_secret_an_idempotent_route_answers_is_left_out_of_its_kept_copy() -> None:
    spec = json.loads((Path(__file__).parents[2] / "services/gateway/openapi.json").read_text())
    missing = []
    for path, ops in spec["paths"].items():
        post = ops.get("post")
        if post is None or not ROUTES.get(path, False):
            continue
        for code, answer in post["responses"].items():
            if not code.startswith("2") or "content" not in answer:
                continue
            schema = answer["content"].get("application/json", {}).get("schema", {})
            secret_like = {name for name in _top_level_properties(schema, spec)
                           if "secret" in name.lower()}
            shown_once = "shown again" in answer.get("description", "")
            if secret_like - set(SECRET_FIELDS.get(path, ())) or (
                    shown_once and path not in SECRET_FIELDS):
                missing.append(path)
    assert missing == [], "list these routes' secrets in SECRET_FIELDS"
    assert set(SECRET_FIELDS) <= {p for p, kept in ROUTES.items() if kept}


async def test_the_gateway_builds_its_records_with_the_configured_cap(tmp_path: Path) -> None:
    settings = GatewaySettings(data_dir=tmp_path, gateway_idempotency_max_keys_per_tenant=3)
    async with AsyncExitStack() as stack:
        host = Host(registry()["gateway"], settings, Endpoints(), stack)
        store = await host.document_store()
        keys = await _idempotency_keys(host, store)
        assert keys.max_keys_per_tenant == 3
