from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from litho import errors
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._problems import from_error, http_status


@pytest.mark.parametrize(("status", "code"), [
    ("INVALID_ARGUMENT", 422), ("NOT_FOUND", 404), ("UNAUTHENTICATED", 401),
    ("PERMISSION_DENIED", 403), ("RESOURCE_EXHAUSTED", 429), ("DEADLINE_EXCEEDED", 504),
    ("UNAVAILABLE", 503), ("ABORTED", 409), ("INTERNAL", 500), ("DATA_LOSS", 500),
])
def test_grpc_status_to_http(status: str, code: int) -> None:
    assert http_status(status) == code


def test_problem_bodies() -> None:
    busy = from_error(errors.ResourceExhausted("full", retry_after=2.4))
    assert busy.status == 429 and busy.headers["Retry-After"] == "2"
    assert busy.content_type == "application/problem+json"
    hidden = from_error(errors.Unavailable("cannot connect to 10.0.0.5:4222"))
    assert hidden.status == 503 and "10.0.0.5" not in (hidden.text or "")
    invalid = from_error(errors.InvalidArgument("bad", errors=[errors.FieldError("w", "m")]))
    assert json.loads(invalid.text or "")["errors"] == [{"field": "w", "message": "m"}]


def test_validator_checks_bodies_and_params() -> None:
    validator = RequestValidator(load_document())
    validator.check_body("createTemplate", {"name": "n", "html": "h", "width": 1, "height": 1})
    with pytest.raises(errors.InvalidArgument) as info:
        validator.check_body("createTemplate", {"name": "", "html": "h", "width": 0})
    fields = {e.field for e in info.value.errors}
    assert fields == {"/", "/name", "/width"}
    with pytest.raises(errors.InvalidArgument):
        validator.check_body("createTemplate", None)
    validator.check_body("renderTemplate", None)
    with pytest.raises(errors.InvalidArgument):
        validator.check_params("getTemplate", {("path", "templateId"): "../etc"})
    with pytest.raises(errors.InvalidArgument):
        validator.check_params("listTemplates", {("query", "pageSize"): 1000})


def test_openapi_document_is_valid_and_matches_the_routes() -> None:
    from openapi_spec_validator import validate

    from services.gateway._app import create_app

    doc = load_document()
    validate(doc)
    app = create_app(None, max_body_bytes=10)  # type: ignore[arg-type]
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        routes.add((info.get("path") or info.get("formatter"), route.method.lower()))
    documented = {(p, m) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    # aiohttp answers HEAD for every GET route; the document lists HEAD where it matters.
    assert routes - {(p, "head") for p, _ in routes} == documented - {
        (p, "head") for p, _ in documented}
    assert {(p, m) for p, m in documented if m == "head"} <= routes


@pytest.mark.parametrize(("raw", "field"), [
    ("/r/tpl_%ED%A0%80.png", "path"),
    ("/r/t.png?title=%ED%A0%80&sig=x", "title"),
    ("/r/t.png?ti%ED%B0%80tle=x", "ti\ufffd\ufffd\ufffdtle"),
    ("/v1/templates?pageToken=%FF", "pageToken"),
    ("/v1/templates?pageToken=a\ud800", "pageToken"),
])
def test_urls_that_are_not_utf8_text_are_refused(raw: str, field: str) -> None:
    from services.gateway._requests import check_url_text

    with pytest.raises(errors.InvalidArgument) as info:
        check_url_text(raw)
    assert info.value.errors[0].field == field
    check_url_text("/r/t.png?title=%F0%9F%98%80+x&a=%C3%A9")  # valid UTF-8 passes


# ------------------------------------------------ headers that are not text ----
# aiohttp decodes header bytes that are not UTF-8 to lone surrogates
# ("\xff" → "\udcff"); a header the gateway reads must never make that a 500.

_RENDER_ID = "ab" * 32
_OLD_ID = "cd" * 32


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    """The real app over a real SQLite key store and local blob store; gRPC
    stubs are absent, so every case must be answered before any gRPC call."""
    from aiohttp import web

    from litho import renders
    from litho.blobstore import open_blob_store
    from litho.config import S3Settings
    from litho.docstore import open_document_store
    from services.gateway._app import create_app
    from services.gateway._keys import KeyStore
    from services.gateway._state import Deps

    store = await open_document_store(f"sqlite://{tmp_path / 'keys.db'}", "unused")
    blobs = await open_blob_store((tmp_path / "blobs").as_uri(), S3Settings(endpoint_url=None))
    keys = KeyStore(store, cache_ttl=0)
    await keys.prepare()
    key = await keys.create("tenant-a")
    await blobs.put(renders.blob_key(_RENDER_ID, "png"), b"\x89PNG", content_type="image/png")
    # An output stored before render ids were keyed per tenant: its id could
    # be computed from a document, so it must never be served again.
    await blobs.put(f"renders/{_OLD_ID[:2]}/{_OLD_ID}.png", b"\x89PNG", content_type="image/png")
    doc = load_document()
    deps = Deps(keys=keys, templates=None, renderer=None, webhooks=None,  # type: ignore[arg-type]
                blobs=blobs,
                openapi=doc, validator=RequestValidator(doc))
    runner = web.AppRunner(create_app(deps, max_body_bytes=1 << 20), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1], key
    finally:
        await runner.cleanup()
        await blobs.close()
        await store.close()


async def _exchange(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _request(line: str, *headers: bytes, body: bytes = b"") -> bytes:
    host = [] if any(h.lower().startswith(b"host:") for h in headers) else [b"Host: gw"]
    lines = [line.encode(), *host, *headers, b"Connection: close"]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize(("authorization", "detail"), [
    (b"Bearer lk_\xff", "invalid API key"),
    (b"Bearer lk_\xed\xa0\x80", "invalid API key"),  # UTF-8 of a lone surrogate
    (b"Bearer lk_\xc3\xa9", "invalid API key"),  # valid UTF-8, not ASCII
    (b"Bearer lk_a\tb", "invalid API key"),  # ASCII, not printable
    (b"Bearer {key}\xff", "invalid API key"),
    (b"\xff\xfe lk_a", "missing API key"),
])
async def test_an_authorization_header_that_is_not_printable_ascii_is_a_401(
    gateway: tuple[int, str], authorization: bytes, detail: str,
) -> None:
    port, key = gateway
    header = b"Authorization: " + authorization.replace(b"{key}", key.encode())
    status, body = await _exchange(port, _request("GET /v1/templates HTTP/1.1", header))
    assert status == 401
    assert json.loads(body)["detail"].startswith(detail)
    # The same key, well formed, is accepted (the request then fails further on).
    ok = b"Authorization: Bearer " + key.encode()
    status, _ = await _exchange(port, _request("POST /v1/templates HTTP/1.1", ok, body=b"{}"))
    assert status == 422


async def test_key_lookups_refuse_what_cannot_be_a_key() -> None:
    from services.gateway._keys import KeyStore

    class NoStore:
        def collection(self, name: str) -> Any:
            raise AssertionError("not reached")

    class Store:
        def collection(self, name: str) -> Any:
            return NoStore()

    keys = KeyStore(Store(), cache_ttl=0)  # type: ignore[arg-type]
    # Refused before hashing or any query (the collection would fail the test).
    assert await keys.verify("lk_\udcff") is None
    assert await keys.by_key_id("kid_\udcff") is None
    assert await keys.by_key_id("kid_\u00e9") is None


@pytest.mark.parametrize(("name", "headers", "expected"), [
    # Read by the gateway: compared as text, never encoded.
    ("if-none-match", [b'If-None-Match: "\xff"'], 200),
    ("if-none-match-list", [b"If-None-Match: \xff, *"], 304),
    # Not read by the gateway's code; aiohttp must not trip over them either.
    ("host", [b"Host: \xff"], 200),
    ("cookie", [b"Cookie: a=\xff"], 200),
])
async def test_other_headers_that_are_not_text_are_harmless_on_images(
    gateway: tuple[int, str], name: str, headers: list[bytes], expected: int,
) -> None:
    port, _ = gateway
    status, _ = await _exchange(
        port, _request(f"GET /images/{_RENDER_ID}.png HTTP/1.1", *headers))
    assert status == expected


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ([b"Content-Type: application/json; charset=\xff"], b"{}", 422),
    ([b"Content-Type: \xff/\xfe"], b"{}", 422),
    ([b"Idempotency-Key: \xff"], b"{}", 422),
    ([b"Content-Encoding: \xff"], b"{}", 422),
    # Bytes that do not match their Content-Encoding cannot be read: 400.
    ([b"Content-Encoding: gzip"], b"{}", 400),
    ([b"Content-Encoding: deflate"], b"not deflate", 400),
    ([b"Content-Encoding: br"], b"{}", 400),
    ([b"Transfer-Encoding: \xff"], b"", 400),
    ([b"Transfer-Encoding: chunked"], b"zz\r\n{}\r\n0\r\n\r\n", 400),
])
async def test_body_headers_that_are_not_text_or_lie_are_4xx(
    gateway: tuple[int, str], headers: list[bytes], body: bytes, expected: int,
) -> None:
    port, key = gateway
    auth = b"Authorization: Bearer " + key.encode()
    raw = b"\r\n".join([b"POST /v1/templates HTTP/1.1", b"Host: gw", auth, *headers,
                        b"Connection: close"])
    if not any(h.startswith(b"Transfer-Encoding") for h in headers):
        raw += b"\r\nContent-Length: %d" % len(body)
    status, _ = await _exchange(port, raw + b"\r\n\r\n" + body)
    assert status == expected


async def test_outputs_of_the_old_layout_are_not_served(gateway: tuple[int, str]) -> None:
    port, _ = gateway
    status, _ = await _exchange(port, _request(f"GET /images/{_RENDER_ID}.png HTTP/1.1"))
    assert status == 200
    status, _ = await _exchange(port, _request(f"GET /images/{_OLD_ID}.png HTTP/1.1"))
    assert status == 404


# ------------------------------------- every operation is validated, per route ----


def _operations() -> list[tuple[str, str, str, dict[str, Any]]]:
    doc = load_document()
    return [(op["operationId"], method.upper(), path,
             {**op, "parameters": [*item.get("parameters", []), *op.get("parameters", [])]})
            for path, item in doc["paths"].items()
            for method, op in item.items() if method != "parameters"]


def test_every_route_is_an_operation_and_every_operation_a_route() -> None:
    from services.gateway._app import check_routes, create_app

    validator = RequestValidator(load_document())
    app = create_app(None, max_body_bytes=10)  # type: ignore[arg-type]
    check_routes(app, validator)  # raises for a route the document lacks
    routed = set()
    for route in app.router.routes():
        assert route.resource is not None
        found = validator.operation_for(route.method, route.resource.canonical)
        assert found is not None, (route.method, route.resource.canonical)
        routed.add(found)
    assert routed == validator.operation_ids == {op for op, *_ in _operations()}

    async def undocumented(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/undocumented", undocumented)
    with pytest.raises(errors.ConfigError, match="/v1/undocumented"):
        check_routes(app, validator)


_VALID_PATH_VALUES = {"templateId": "tpl_" + "0" * 24, "file": "tpl_" + "0" * 24 + ".png",
                      "imageFile": "ab" * 32 + ".png", "batchId": "bat_" + "0" * 24,
                      "subscriptionId": "whs_" + "0" * 24, "deliveryId": "whd_" + "0" * 24,
                      "bindingId": "bnd_" + "0" * 36, "bindingFile": "bnd_" + "0" * 36 + ".png",
                      "experimentId": "exp_" + "0" * 22, "tenantHandle": "a" * 16,
                      "experimentFile": "spring-sale.png", "slug": "spring-sale"}
#: A binding image's file that is no binding id is a 404, as an unknown one
#: (test_gateway_bindings.py); any JSON value is valid pushed data.
_NOT_FOUND_WHEN_MALFORMED = frozenset({"getBindingImage", "headBindingImage",
                                       "getExperimentImage", "headExperimentImage",
                                       "clickExperiment"})
_ANY_JSON_BODY = frozenset({"pushBindingData"})


def _invalid_requests() -> list[tuple[str, str, str, bytes]]:
    """For each operation with something to check, one request that breaks it:
    a path parameter off its pattern, a query parameter of the wrong type, a
    body of the wrong shape."""
    cases = []
    for op, method, path, item in _operations():
        params = [*item.get("parameters", [])]
        url = path
        for p in params:
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", "not~valid")
        if "{" in url:
            continue
        ok_path = path
        for name, value in _VALID_PATH_VALUES.items():
            ok_path = ok_path.replace("{" + name + "}", value)
        for p in params:
            if p["in"] == "query" and p["schema"].get("type") == "integer":
                # On a valid path: only the query's type can be what is refused.
                cases.append((op, method, f"{ok_path}?{p['name']}=abc", b""))
        json_body = "application/json" in item.get("requestBody", {}).get("content", {})
        if url != path:
            cases.append((op, method, url, b"{}" if json_body else b""))
        if json_body and op not in _ANY_JSON_BODY:
            cases.append((op, method, ok_path, b"[1, 2]"))
    return cases


@pytest.mark.parametrize(("op", "method", "url", "body"), _invalid_requests(),
                         ids=lambda v: v if isinstance(v, str) else None)
async def test_every_operation_is_validated_before_its_handler(
    gateway: tuple[int, str], op: str, method: str, url: str, body: bytes,
) -> None:
    """The gateway's gRPC stubs are absent, so reaching a handler is a 500:
    a 4xx proves the middleware refused the request first."""
    port, key = gateway
    headers = [b"Authorization: Bearer " + key.encode()]
    if body:
        headers.append(b"Content-Type: application/json")
    status, raw = await _exchange(port, _request(f"{method} {url} HTTP/1.1", *headers,
                                                 body=body))
    expected = (404,) if op in _NOT_FOUND_WHEN_MALFORMED else (400, 422)
    assert status in expected, (op, status, raw[:300])


def test_the_validated_operations_cover_every_checkable_operation() -> None:
    checked = {op for op, *_ in _invalid_requests()}
    # createFont's body is a font, checked by its handler (the test below).
    checkable = {op for op, _, path, item in _operations()
                 if "application/json" in item.get("requestBody", {}).get("content", {})
                 or "{" in path
                 or any(p["in"] == "query" and p["schema"].get("type") != "string"
                        for p in item.get("parameters", []))}
    assert checkable - checked == set()


@pytest.mark.parametrize(("headers", "body", "status", "text"), [
    ([b"Content-Type: application/json"], b"{}", 415, "font/ttf"),
    ([b"Content-Type: font/ttf"], b"", 422, "empty"),
    ([b"Content-Type: font/woff2"], b"x" * (10 * 1024 * 1024 + 1), 413,
     "LITHO_GATEWAY_MAX_FONT_BYTES"),
    ([b"Content-Type: multipart/form-data; boundary=zz"],
     b"--zz\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--zz--\r\n",
     422, "unexpected form part"),
    ([b"Content-Type: multipart/form-data; boundary=zz"],
     b"--zz\r\nContent-Disposition: form-data; name=\"family\"\r\n\r\nX\r\n--zz--\r\n",
     422, "no 'file' part"),
    ([b"Content-Type: multipart/form-data"], b"--zz--\r\n", 400, "multipart"),
    # A preamble counts: 10 MiB of lines before a small font part.
    ([b"Content-Type: multipart/form-data; boundary=zz"],
     b"x\r\n" * (4 * 1024 * 1024) + b"--zz\r\nContent-Disposition: form-data; name=\"file\""
     b"\r\n\r\nfont\r\n--zz--\r\n", 413, "LITHO_GATEWAY_MAX_FONT_BYTES"),
    ([b"Content-Type: multipart/form-data; boundary=zz"],
     b"--zz\r\nContent-Disposition: form-data; name=\"fa\x13\"\r\n\r\nx\r\n--zz--\r\n",
     400, "multipart"),
])
async def test_a_font_upload_is_refused_before_the_template_service(
    gateway: tuple[int, str], headers: list[bytes], body: bytes, status: int, text: str,
) -> None:
    """The font's body is not JSON, so the handler checks it itself; the
    template service's stub is absent here, so reaching it would be a 500."""
    port, key = gateway
    got, raw = await _exchange(port, _request(
        "POST /v1/fonts HTTP/1.1", b"Authorization: Bearer " + key.encode(), *headers,
        body=body))
    assert got == status and text.encode() in raw, raw[:400]
