"""API keys over the API (``/v1/keys``) on a real gateway app and a real
SQLite key store: scopes enforced for every route from one table, the key
shown once and never its digest or secret, tenants apart, the last ``full``
key kept, the per-tenant cap, paging, and revocation across two replicas
(by note at once, by the cache's time to live otherwise)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from litho import errors
from litho.docstore import DocumentStore, open_document_store
from services.gateway._keys import FULL, RENDER, KeyStore, check_scopes
from services.gateway._middleware import is_public
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._scopes import PUBLIC, SCOPE_OF, scope_needed

# -- the scope table ---------------------------------------------------------


def _sample_path(canonical: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", canonical)


def test_every_route_has_a_scope_and_public_ones_are_exactly_the_keyless() -> None:
    from services.gateway._app import create_app

    validator = RequestValidator(load_document())
    app = create_app(None, max_body_bytes=10)  # type: ignore[arg-type]
    seen = set()
    for route in app.router.routes():
        assert route.resource is not None
        operation = validator.operation_for(route.method, route.resource.canonical)
        assert operation is not None, (route.method, route.resource.canonical)
        assert operation in SCOPE_OF, f"{operation} is not classified in _scopes.py"
        keyless = is_public(route.method, _sample_path(route.resource.canonical))
        assert (SCOPE_OF[operation] == PUBLIC) == keyless, (operation, SCOPE_OF[operation])
        seen.add(operation)
    # No stale rows: every classified operation is a route.
    assert set(SCOPE_OF) == seen == validator.operation_ids
    assert set(SCOPE_OF.values()) == {PUBLIC, RENDER, FULL}


def test_an_unclassified_operation_stops_start_up() -> None:
    from services.gateway._app import check_routes, create_app

    doc = load_document()
    doc["paths"]["/v1/unclassified"] = {"get": {
        "operationId": "unclassified", "responses": {"200": {"description": "ok"}}}}

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = create_app(None, max_body_bytes=10)  # type: ignore[arg-type]
    app.router.add_get("/v1/unclassified", handler)
    with pytest.raises(errors.ConfigError, match=r"_scopes\.py"):
        check_routes(app, RequestValidator(doc))


def test_render_keys_render_and_read_but_manage_nothing() -> None:
    for operation in ("renderTemplate", "renderHtml", "renderPdf", "batchRender",
                      "createSignedUrl", "listTemplates", "getBatch"):
        assert scope_needed(operation) == RENDER, operation
    for operation in ("createTemplate", "deleteTemplate", "createKey", "listKeys", "deleteKey",
                      "createWebhookSubscription", "testDataSource", "planCopilot"):
        assert scope_needed(operation) == FULL, operation
    assert scope_needed("somethingNew") == FULL  # unclassified: full keys only


def test_scopes_are_checked_and_ordered() -> None:
    assert check_scopes(["render", "full"]) == (FULL, RENDER)
    with pytest.raises(errors.InvalidArgument) as refused:
        check_scopes(["render", "admin"])
    assert refused.value.errors[0].field == "scopes[1]"
    assert "full, render" in refused.value.errors[0].message


# -- a gateway on a real key store ----------------------------------------------


@dataclass
class Gateway:
    url: str
    http: aiohttp.ClientSession
    keys: KeyStore
    store: DocumentStore
    key: str

    async def call(self, method: str, path: str, key: str | None = None,
                   **kwargs: Any) -> tuple[int, Any, str]:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else None), text


async def _serve(keys: KeyStore, store: DocumentStore, key: str,
                 http: aiohttp.ClientSession) -> tuple[web.AppRunner, Gateway]:
    from services.gateway._app import create_app
    from services.gateway._state import Deps

    doc = load_document()
    deps = Deps(keys=keys, templates=None, renderer=None, webhooks=None,  # type: ignore[arg-type]
                blobs=None, openapi=doc, validator=RequestValidator(doc))  # type: ignore[arg-type]
    runner = web.AppRunner(create_app(deps, max_body_bytes=1 << 20), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, Gateway(f"http://127.0.0.1:{runner.addresses[0][1]}", http, keys, store, key)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DocumentStore]:
    opened = await open_document_store(f"sqlite://{tmp_path / 'keys.db'}", "unused")
    yield opened
    await opened.close()


@pytest.fixture
async def gateway(store: DocumentStore) -> AsyncIterator[Gateway]:
    keys = KeyStore(store, cache_ttl=30, max_per_tenant=6, last_used_interval=60)
    await keys.prepare()
    key = await keys.create("tenant-a", "first")
    async with aiohttp.ClientSession() as http:
        runner, gw = await _serve(keys, store, key, http)
        try:
            yield gw
        finally:
            await runner.cleanup()
            await keys.close()


async def test_a_key_is_shown_once_and_never_its_digest_or_secret(gateway: Gateway) -> None:
    status, made, _ = await gateway.call("POST", "/v1/keys",
                                         json={"name": "ci", "scopes": ["render"]})
    assert status == 201, made
    assert set(made) == {"id", "name", "scopes", "createTime", "key"}
    assert made["scopes"] == ["render"] and made["name"] == "ci"
    assert made["id"].startswith("kid_") and made["key"].startswith("lk_")
    assert made["createTime"].endswith("Z")
    stored = [d async for d in _docs(gateway.store)]
    secrets = {d["_id"] for d in stored} | {d["signingSecret"] for d in stored}
    status, page, text = await gateway.call("GET", "/v1/keys")
    assert status == 200
    assert [k["id"] for k in page["keys"]][-1] == made["id"]
    for item in page["keys"]:
        assert set(item) == {"id", "name", "scopes", "createTime", "lastUsedTime"}
    for secret in [*secrets, made["key"], gateway.key]:
        assert secret not in text
    # The new key works, with its own scope.
    status, _, text = await gateway.call("GET", "/v1/keys", key=made["key"])
    assert status == 403 and "'full' scope" in text and "listKeys" in text


async def _docs(store: DocumentStore) -> AsyncIterator[dict[str, Any]]:
    for doc in await store.collection("api_keys").find({}):
        yield doc


async def test_a_render_key_is_refused_everything_but_renders_and_reads(
        gateway: Gateway) -> None:
    _, made, _ = await gateway.call("POST", "/v1/keys", json={"name": "r", "scopes": ["render"]})
    render = made["key"]
    status, body, _ = await gateway.call("POST", "/v1/templates", key=render,
                                         json={"name": "t", "html": "<p>", "width": 10,
                                               "height": 10})
    assert status == 403
    assert body["detail"] == ("this API key's scopes are render; createTemplate needs the "
                              "'full' scope")
    status, _, _ = await gateway.call("DELETE", f"/v1/keys/{made['id']}", key=render)
    assert status == 403
    # Allowed through: this test's gateway has no renderer, so the handler fails.
    status, _, _ = await gateway.call("POST", "/v1/render", key=render,
                                      json={"html": "<p>hi</p>", "width": 10, "height": 10})
    assert status not in (401, 403)
    # An unknown route is a 404 for any key, not a 403.
    status, _, _ = await gateway.call("GET", "/v1/nothing-here", key=render)
    assert status == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "scopes": ["admin"]}, "/scopes/0"),
    ({"name": "x", "scopes": ["render", "root"]}, "/scopes/1"),
    ({"name": "x", "scopes": []}, "/scopes"),
    ({"name": "x", "scopes": ["render", "render"]}, "/scopes"),
    ({"name": "", "scopes": ["full"]}, "/name"),
    ({"name": "a\u0000b", "scopes": ["full"]}, "/name"),
    ({"name": "x" * 101, "scopes": ["full"]}, "/name"),
    ({"scopes": ["full"]}, "/"),
    ({"name": "x", "scopes": ["full"], "tenant": "tenant-b"}, "/"),
])
async def test_bad_key_requests_are_422s_naming_the_field(
        gateway: Gateway, body: dict[str, Any], field: str) -> None:
    status, problem, _ = await gateway.call("POST", "/v1/keys", json=body)
    assert status == 422, problem
    assert field in [e["field"] for e in problem["errors"]], problem


async def test_an_unknown_scope_names_the_valid_ones(gateway: Gateway) -> None:
    _, problem, _ = await gateway.call("POST", "/v1/keys",
                                       json={"name": "x", "scopes": ["admin"]})
    assert "'full'" in problem["errors"][0]["message"]
    assert "'render'" in problem["errors"][0]["message"]


async def test_tenants_see_and_delete_only_their_own_keys(gateway: Gateway) -> None:
    other = await gateway.keys.create("tenant-b", "theirs")
    _, theirs, _ = await gateway.call("GET", "/v1/keys", key=other)
    their_id = theirs["keys"][0]["id"]
    _, mine, _ = await gateway.call("GET", "/v1/keys")
    assert their_id not in {k["id"] for k in mine["keys"]}
    status, problem, _ = await gateway.call("DELETE", f"/v1/keys/{their_id}")
    assert status == 404, problem
    status, _, _ = await gateway.call("DELETE", "/v1/keys/kid_" + "0" * 16)
    assert status == 404
    status, _, _ = await gateway.call("GET", "/v1/keys", key=other)
    assert status == 200  # untouched
    status, _, _ = await gateway.call("DELETE", "/v1/keys/not-a-key-id")
    assert status == 422


async def test_the_last_full_key_cannot_be_deleted(gateway: Gateway) -> None:
    _, page, _ = await gateway.call("GET", "/v1/keys")
    first = page["keys"][0]["id"]
    _, render, _ = await gateway.call("POST", "/v1/keys",
                                      json={"name": "r", "scopes": ["render"]})
    status, problem, _ = await gateway.call("DELETE", f"/v1/keys/{first}")
    assert status == 409
    assert "last key with the 'full' scope" in problem["detail"]
    status, _, _ = await gateway.call("GET", "/v1/keys")
    assert status == 200  # still there, and not left marked
    _, second, _ = await gateway.call("POST", "/v1/keys",
                                      json={"name": "second", "scopes": ["full"]})
    # A key may delete itself (rotation), when another full key remains.
    status, _, _ = await gateway.call("DELETE", f"/v1/keys/{first}")
    assert status == 204
    status, _, _ = await gateway.call("GET", "/v1/keys")
    assert status == 401  # deleted: refused at once on this replica
    status, problem, _ = await gateway.call("DELETE", f"/v1/keys/{second['id']}",
                                            key=second["key"])
    assert status == 409, problem
    # A render key never counts as a way back in.
    status, _, _ = await gateway.call("DELETE", f"/v1/keys/{render['id']}", key=second["key"])
    assert status == 204


async def test_racing_deletes_of_the_last_two_full_keys_keep_one(gateway: Gateway) -> None:
    await gateway.call("POST", "/v1/keys", json={"name": "b", "scopes": ["full"]})
    _, page, _ = await gateway.call("GET", "/v1/keys")
    ids = [k["id"] for k in page["keys"]]
    results = await asyncio.gather(*(gateway.keys.revoke("tenant-a", i) for i in ids),
                                   return_exceptions=True)
    assert sum(r is None for r in results) <= 1, results
    assert all(r is None or isinstance(r, errors.FailedPrecondition) for r in results)
    assert await gateway.store.collection("api_keys").count({"tenantId": "tenant-a"}) >= 1


async def test_a_key_made_before_scopes_is_full(gateway: Gateway, store: DocumentStore) -> None:
    await store.collection("api_keys").insert({
        "_id": "d" * 64, "tenantId": "tenant-c", "name": "old", "keyId": "kid_" + "c" * 16,
        "signingSecret": "lss_old", "createdAt": "2025-01-01T00:00:00+00:00"})
    key = await gateway.keys.by_key_id("kid_" + "c" * 16)
    assert key is not None and key.allows(FULL)
    page, _ = await gateway.keys.page("tenant-c", page_size=10)
    assert page[0].scopes == (FULL,)
    # ...and counts as a full key: the tenant's first API-made one can go.
    info, _ = await gateway.keys.issue("tenant-c", "new", [FULL])
    await gateway.keys.revoke("tenant-c", info.key_id)


async def test_keys_page_oldest_first(gateway: Gateway) -> None:
    made = [gateway.key]
    for n in range(4):
        _, key, _ = await gateway.call("POST", "/v1/keys", json={"name": f"k{n}",
                                                                 "scopes": ["render"]})
        made.append(key["id"])
    seen: list[str] = []
    token = ""
    for _ in range(10):
        status, page, _ = await gateway.call(
            "GET", "/v1/keys", params={"pageSize": "2", **({"pageToken": token} if token else {})})
        assert status == 200 and len(page["keys"]) <= 2
        seen += [k["id"] for k in page["keys"]]
        token = page["nextPageToken"] or ""
        if not token:
            break
    assert seen[1:] == made[1:] and len(seen) == len(set(seen)) == 5
    status, problem, _ = await gateway.call("GET", "/v1/keys", params={"pageToken": "bogus"})
    assert status == 422 and "pageToken" in problem["detail"]


async def test_a_tenant_holds_at_most_the_cap(gateway: Gateway) -> None:
    statuses = []
    for n in range(7):
        status, _, _ = await gateway.call("POST", "/v1/keys", json={"name": f"k{n}",
                                                                    "scopes": ["render"]})
        statuses.append(status)
    assert statuses == [201] * 5 + [429] * 2  # 6 with the fixture's first key
    _, problem, _ = await gateway.call("POST", "/v1/keys", json={"name": "x",
                                                                 "scopes": ["render"]})
    assert "LITHO_GATEWAY_MAX_KEYS_PER_TENANT" in problem["detail"]
    assert await gateway.store.collection("api_keys").count({"tenantId": "tenant-a"}) == 6


async def test_last_used_time_is_written_after_a_use(gateway: Gateway) -> None:
    _, page, _ = await gateway.call("GET", "/v1/keys")
    used = page["keys"][0]["lastUsedTime"]
    for _ in range(50):
        if used is not None:
            break
        await asyncio.sleep(0.02)
        _, page, _ = await gateway.call("GET", "/v1/keys")
        used = page["keys"][0]["lastUsedTime"]
    assert used is not None and used.endswith("Z")
    # Within the interval, further uses write nothing.
    writes = []
    original = gateway.keys.touch

    async def counting(key_id: str, when: Any) -> None:
        writes.append(key_id)
        await original(key_id, when)

    gateway.keys.touch = counting  # type: ignore[method-assign]
    for _ in range(5):
        await gateway.call("GET", "/v1/keys")
    await asyncio.sleep(0.05)
    assert writes == []


# -- revocation across replicas ----------------------------------------------------


@dataclass
class Bus:
    """Notes from one replica to the others, as core NATS would carry them."""

    replicas: list[KeyStore]
    lost: bool = False

    def announce_from(self, sender: int) -> Callable[[str], Awaitable[None]]:
        async def announce(key_id: str) -> None:
            if not self.lost:
                for n, replica in enumerate(self.replicas):
                    if n != sender:
                        replica.revoked(key_id)
        return announce


async def _replicas(store: DocumentStore, ttl: float, bus: Bus) -> list[KeyStore]:
    for n in range(2):
        bus.replicas.append(KeyStore(store, cache_ttl=ttl, announce=bus.announce_from(n)))
    await bus.replicas[0].prepare()
    return bus.replicas


async def test_a_deleted_key_is_refused_by_every_replica_at_once(store: DocumentStore) -> None:
    a, b = await _replicas(store, 60, Bus([]))
    await a.create("t", "keep")
    info, key = await a.issue("t", "doomed", [RENDER])
    assert await a.verify(key) is not None and await b.verify(key) is not None
    assert await b.by_key_id(info.key_id) is not None
    await a.revoke("t", info.key_id)
    # b kept both for 60 s; the note dropped them.
    assert await a.verify(key) is None and await b.verify(key) is None
    assert await b.by_key_id(info.key_id) is None


async def test_a_lost_note_leaves_the_cache_ttl_as_the_bound(store: DocumentStore) -> None:
    bus = Bus([], lost=True)
    a, b = await _replicas(store, 0.5, bus)
    await a.create("t", "keep")
    info, key = await a.issue("t", "doomed", [RENDER])
    assert await b.verify(key) is not None
    await a.revoke("t", info.key_id)
    assert await a.verify(key) is None
    assert await b.verify(key) is not None  # kept: the note was lost
    await asyncio.sleep(0.6)
    assert await b.verify(key) is None


async def test_a_lookup_under_way_when_the_note_comes_keeps_nothing(
        store: DocumentStore) -> None:
    a, b = await _replicas(store, 60, Bus([]))
    await a.create("t", "keep")
    info, key = await a.issue("t", "doomed", [RENDER])
    # b reads the key just before it is deleted, and the note overtakes the read.
    read, release = asyncio.Event(), asyncio.Event()
    real = b._keys

    class SlowReads:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def get(self, doc_id: str) -> Any:
            found = await real.get(doc_id)
            read.set()
            await release.wait()
            return found

    b._keys = SlowReads()
    lookup = asyncio.create_task(b.verify(key))
    await read.wait()
    await a.revoke("t", info.key_id)
    release.set()
    assert await lookup is not None  # it read the key before the delete...
    b._keys = real
    assert await b.verify(key) is None  # ...but did not keep it


async def test_unknown_keys_are_not_kept(store: DocumentStore) -> None:
    keys = KeyStore(store, cache_ttl=60)
    await keys.prepare()
    key = "lk_made-elsewhere"
    assert await keys.verify(key) is None
    # Stored after the miss (say by another replica): accepted at once.
    await store.collection("api_keys").insert({
        "_id": hashlib.sha256(key.encode()).hexdigest(), "tenantId": "t", "name": "n",
        "keyId": "kid_" + "e" * 16, "signingSecret": "lss_x", "scopes": [RENDER],
        "createdAt": "2026-01-01T00:00:00.000000+00:00"})
    found = await keys.verify(key)
    assert found is not None and found.scopes == {RENDER} and not found.allows(FULL)
