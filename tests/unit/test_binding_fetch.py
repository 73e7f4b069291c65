"""The binding fetcher against a real aiohttp data server on loopback, through
a real outbound guard that allow-lists that server's port only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from litho.config import OutboundSettings
from litho.outbound import OutboundGuard
from services.binding._fetch import (
    Fetcher,
    FetchFailed,
    SourceRequest,
    canonical_json,
    credential_headers,
    data_hash,
)

ETAG = '"v1"'
MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"
MAX_BYTES = 64 * 1024


@dataclass
class Source:
    port: int
    seen: list[dict[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _app(seen: list[dict[str, str]], release: asyncio.Event) -> web.Application:
    async def record(request: web.Request, handler: object) -> web.StreamResponse:
        seen.append({**request.headers, ":path": request.path_qs,
                     ":method": request.method, ":body": (await request.text())})
        return await handler(request)  # type: ignore[operator, no-any-return]

    async def price(request: web.Request) -> web.Response:
        return web.json_response({"price": 12.5, "name": "Füße"})

    async def etag(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers={"ETag": ETAG})
        return web.json_response({"v": 1}, headers={"ETag": ETAG})

    async def modified(request: web.Request) -> web.Response:
        if request.headers.get("If-Modified-Since") == MODIFIED:
            return web.Response(status=304)
        return web.json_response({"v": 2}, headers={"Last-Modified": MODIFIED})

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>hi</html>", content_type="text/html")

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text='{"plain": true}', content_type="text/plain")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"x": "')
        chunk = b"a" * 65536
        for _ in range(160):  # 10 MiB
            await resp.write(chunk)
        await resp.write(b'"}')
        return resp

    async def invalid(request: web.Request) -> web.Response:
        return web.Response(text='{"a": 1,', content_type="application/json")

    async def bad_utf8(request: web.Request) -> web.Response:
        return web.Response(body=b'{"a": "\xff"}', content_type="application/json")

    async def deep(request: web.Request) -> web.Response:
        return web.Response(text="[" * 40 + "]" * 40, content_type="application/json")

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.query["to"]})

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["status"]), text="nope")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "body": await request.text()})

    app = web.Application(middlewares=[web.middleware(record)])
    for path, handler in (("/price", price), ("/etag", etag), ("/modified", modified),
                          ("/html", html), ("/plain", plain), ("/huge", huge),
                          ("/invalid", invalid), ("/bad-utf8", bad_utf8), ("/deep", deep),
                          ("/redirect", redirect), ("/slow", slow),
                          ("/status/{status}", fail)):
        app.router.add_get(path, handler)
    app.router.add_route("*", "/echo", echo)
    return app


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    seen: list[dict[str, str]] = []
    release = asyncio.Event()
    async with TestServer(_app(seen, release), host="127.0.0.1") as server:
        assert server.port is not None
        yield Source(server.port, seen, release)
        release.set()


@pytest.fixture
async def fetcher(source: Source) -> AsyncIterator[Fetcher]:
    settings = OutboundSettings(allow=f"127.0.0.1:{source.port}", max_bytes=10 * 1024 * 1024,
                                timeout=30.0, max_redirects=3)
    async with OutboundGuard(settings) as guard:
        yield Fetcher(guard, timeout=0.5, max_bytes=MAX_BYTES)


async def test_json_is_parsed_and_hashed_canonically(fetcher: Fetcher, source: Source) -> None:
    got = await fetcher.fetch(SourceRequest(source.url("/price")))
    assert got.status == 200 and not got.not_modified
    assert got.data == {"price": 12.5, "name": "Füße"}
    assert got.data_json == '{"name":"Füße","price":12.5}'
    assert got.data_hash == data_hash({"price": 12.5, "name": "Füße"})
    assert got.duration_ms > 0
    assert source.seen[-1]["Accept"] == "application/json"


async def test_etag_is_sent_back_and_304_keeps_the_data(fetcher: Fetcher, source: Source) -> None:
    first = await fetcher.fetch(SourceRequest(source.url("/etag")))
    assert first.etag == ETAG and first.data == {"v": 1}
    assert "If-None-Match" not in source.seen[-1]
    again = await fetcher.fetch(SourceRequest(source.url("/etag")), etag=first.etag)
    assert source.seen[-1]["If-None-Match"] == ETAG
    assert again.not_modified and again.status == 304
    assert again.data is None and again.data_json == "" and again.data_hash == ""
    assert again.etag == ETAG


async def test_last_modified_is_sent_back(fetcher: Fetcher, source: Source) -> None:
    first = await fetcher.fetch(SourceRequest(source.url("/modified")))
    assert first.last_modified == MODIFIED and not first.not_modified
    again = await fetcher.fetch(SourceRequest(source.url("/modified")),
                                last_modified=first.last_modified)
    assert source.seen[-1]["If-Modified-Since"] == MODIFIED
    # The 304 repeated no Last-Modified: the one sent stands.
    assert again.not_modified and again.last_modified == MODIFIED


async def test_an_unconditional_304_is_a_failure(fetcher: Fetcher, source: Source) -> None:
    with pytest.raises(FetchFailed, match="not conditional") as caught:
        await fetcher.fetch(SourceRequest(source.url("/status/304")))
    assert caught.value.status == 304


async def test_html_answer_names_its_content_type(fetcher: Fetcher, source: Source) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url("/html")))
    assert caught.value.message == "the source answered text/html, not JSON"
    assert caught.value.status == 200 and not caught.value.denied


async def test_text_plain_json_is_accepted(fetcher: Fetcher, source: Source) -> None:
    got = await fetcher.fetch(SourceRequest(source.url("/plain")))
    assert got.data == {"plain": True}


async def test_ten_megabytes_is_refused_naming_the_setting(
        fetcher: Fetcher, source: Source) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url("/huge")))
    assert "LITHO_BINDING_MAX_DATA_BYTES" in caught.value.message
    assert str(MAX_BYTES) in caught.value.message


async def test_invalid_json_says_where(fetcher: Fetcher, source: Source) -> None:
    with pytest.raises(FetchFailed, match=r"not valid JSON: .* line 1, column 9"):
        await fetcher.fetch(SourceRequest(source.url("/invalid")))


async def test_invalid_utf8_is_refused(fetcher: Fetcher, source: Source) -> None:
    with pytest.raises(FetchFailed, match="not valid UTF-8"):
        await fetcher.fetch(SourceRequest(source.url("/bad-utf8")))


async def test_json_deeper_than_the_limit_is_refused(fetcher: Fetcher, source: Source) -> None:
    with pytest.raises(FetchFailed, match="LITHO_BINDING_JSON_MAX_DEPTH"):
        await fetcher.fetch(SourceRequest(source.url("/deep")))


async def test_redirect_into_private_space_is_denied(fetcher: Fetcher, source: Source) -> None:
    # 127.0.0.2 is loopback, and not on the allow-list (only the port of 127.0.0.1 is).
    to = f"http://127.0.0.2:{source.port}/price"
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url(f"/redirect?to={to}")))
    assert caught.value.denied and caught.value.status == 0
    assert "LITHO_OUTBOUND_ALLOW" in caught.value.message
    assert "127.0.0.2" not in caught.value.message


async def test_redirect_within_the_allowed_server_is_followed(
        fetcher: Fetcher, source: Source) -> None:
    got = await fetcher.fetch(SourceRequest(source.url("/redirect?to=/price")))
    assert got.data["price"] == 12.5


async def test_timeout_names_the_setting(fetcher: Fetcher, source: Source) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url("/slow")))
    assert caught.value.message == ("the source did not answer within 0.5 s "
                                    "(LITHO_BINDING_FETCH_TIMEOUT)")


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_error_status_is_a_failure(fetcher: Fetcher, source: Source, status: int) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url(f"/status/{status}")))
    assert caught.value.message == f"the source answered {status}"
    assert caught.value.status == status


async def test_post_body_and_headers_and_credentials_are_sent(
        fetcher: Fetcher, source: Source) -> None:
    request = SourceRequest(source.url("/echo"), method="post", headers={"X-Shop": "1"},
                            body='{"q": 1}', credentials={"type": "bearer", "token": "t0k"})
    got = await fetcher.fetch(request)
    assert got.data == {"method": "POST", "body": '{"q": 1}'}
    sent = source.seen[-1]
    assert sent["X-Shop"] == "1" and sent["Authorization"] == "Bearer t0k"
    assert sent["Content-Type"] == "application/json"


async def test_a_header_credential_is_not_sent_across_origins(source: Source) -> None:
    other_seen: list[dict[str, str]] = []
    async with TestServer(_app(other_seen, asyncio.Event()), host="127.0.0.1") as other:
        settings = OutboundSettings(allow=f"127.0.0.1:{source.port},127.0.0.1:{other.port}")
        async with OutboundGuard(settings) as guard:
            fetcher = Fetcher(guard, timeout=5, max_bytes=MAX_BYTES)
            to = f"http://127.0.0.1:{other.port}/price"
            request = SourceRequest(source.url(f"/redirect?to={to}"), credentials={
                "type": "header", "headerName": "X-Api-Key", "headerValue": "secret"})
            got = await fetcher.fetch(request)
    assert got.data["price"] == 12.5
    assert source.seen[-1]["X-Api-Key"] == "secret"
    assert [seen[":path"] for seen in other_seen] == ["/price"]
    assert "X-Api-Key" not in other_seen[-1]


async def test_unresolvable_host_is_a_failure_not_a_denial(fetcher: Fetcher) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest("http://no-such-host.invalid/"))
    assert not caught.value.denied and caught.value.status == 0


def test_canonical_json_and_hash_ignore_key_order() -> None:
    assert canonical_json({"b": [1, 2], "a": "é"}) == '{"a":"é","b":[1,2]}'
    assert data_hash({"a": 1, "b": 2}) == data_hash({"b": 2, "a": 1})
    assert data_hash({"a": 1}) != data_hash({"a": 2})
    assert len(data_hash([])) == 64


def test_credential_headers() -> None:
    assert credential_headers({}) == {}
    assert credential_headers({"type": "bearer", "token": "x"}) == {"Authorization": "Bearer x"}
    assert credential_headers({"type": "basic", "username": "u", "password": "p"}) == {
        "Authorization": "Basic dTpw"}
    assert credential_headers({"type": "header", "headerName": "X-K", "headerValue": "v"}) == {
        "X-K": "v"}
    with pytest.raises(ValueError, match="unknown"):
        credential_headers({"type": "oauth"})


async def test_a_huge_body_is_parsed_off_the_loop(fetcher: Fetcher, source: Source) -> None:
    # Not a timing test: that a body over the inline limit parses the same.
    big = {"items": [{"n": i} for i in range(6000)]}
    assert len(json.dumps(big)) > 64 * 1024 // 2
    got = await Fetcher(fetcher._guard, timeout=5, max_bytes=1024 * 1024).fetch(
        SourceRequest(source.url("/echo"), method="POST", body=json.dumps(big)))
    assert json.loads(got.data["body"]) == big
