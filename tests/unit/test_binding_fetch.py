"""The binding fetcher against a real aiohttp data server on loopback, through
a real outbound guard that allow-lists that server's port only."""

from __future__ import annotations

import asyncio
import bz2
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from litho.config import OutboundSettings
from litho.errors import ResourceExhausted
from litho.outbound import OutboundGuard
from services.binding._fetch import (
    DENIED_TEXT,
    Fetcher,
    FetchFailed,
    FetchSlots,
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
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _app(seen: list[dict[str, str]], release: asyncio.Event,
         entered: asyncio.Event | None = None) -> web.Application:
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
        if entered is not None:
            entered.set()
        await release.wait()
        return web.json_response({})

    async def charset(request: web.Request) -> web.Response:
        name = request.match_info["charset"]
        try:
            body = '{"n": "é"}'.encode(name)
        except LookupError:  # bytes-to-bytes and str-to-str codecs, unknown names
            body = b'{"n": 1}'
        if name == "bz2":  # 1 MB of JSON in 50-odd bytes
            body = bz2.compress(b'["' + b"a" * 1_000_000 + b'"]')
        return web.Response(body=body, headers={
            "Content-Type": f"application/json; charset={name}"})

    async def floats(request: web.Request) -> web.Response:
        # 50 KB here, 190 KB once written out canonically (1e15 is 1000000000000000.0).
        return web.Response(text="[" + ",".join(["1e15"] * 10_000) + "]",
                            content_type="application/json")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["status"]), text="nope")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "body": await request.text()})

    app = web.Application(middlewares=[web.middleware(record)])
    for path, handler in (("/price", price), ("/etag", etag), ("/modified", modified),
                          ("/html", html), ("/plain", plain), ("/huge", huge),
                          ("/invalid", invalid), ("/bad-utf8", bad_utf8), ("/deep", deep),
                          ("/redirect", redirect), ("/slow", slow),
                          ("/status/{status}", fail), ("/charset/{charset}", charset),
                          ("/floats", floats)):
        app.router.add_get(path, handler)
    app.router.add_route("*", "/echo", echo)
    return app


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    seen: list[dict[str, str]] = []
    release, entered = asyncio.Event(), asyncio.Event()
    async with TestServer(_app(seen, release, entered), host="127.0.0.1") as server:
        assert server.port is not None
        yield Source(server.port, seen, release, entered)
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
            request = SourceRequest(
                source.url(f"/redirect?to={to}"), headers={"X-Shop-Key": "shop-secret"},
                credentials={"type": "header", "headerName": "X-Api-Key",
                             "headerValue": "secret"})
            got = await fetcher.fetch(request)
    assert got.data["price"] == 12.5
    assert source.seen[-1]["X-Api-Key"] == "secret"
    assert source.seen[-1]["X-Shop-Key"] == "shop-secret"
    assert [seen[":path"] for seen in other_seen] == ["/price"]
    # Neither the credential nor the source's own headers follow to another origin.
    assert "X-Api-Key" not in other_seen[-1]
    assert "X-Shop-Key" not in other_seen[-1]


async def test_an_unresolvable_host_reads_as_a_denied_one(fetcher: Fetcher,
                                                          source: Source) -> None:
    # Else a tenant could tell the operator's internal names from names that
    # do not exist (review-b #15).
    with pytest.raises(FetchFailed) as unresolved:
        await fetcher.fetch(SourceRequest("http://no-such-host.invalid/"))
    to = f"http://127.0.0.2:{source.port}/price"
    with pytest.raises(FetchFailed) as denied:
        await fetcher.fetch(SourceRequest(source.url(f"/redirect?to={to}")))
    assert unresolved.value.message == denied.value.message == DENIED_TEXT
    assert unresolved.value.denied and unresolved.value.status == 0
    assert "no-such-host" not in unresolved.value.message


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


# --- charsets ---------------------------------------------------------------

@pytest.mark.parametrize("charset", ["bz2", "zlib", "base64", "hex", "rot13", "punycode",
                                     "unicode_escape", "no-such-charset"])
async def test_only_text_charsets_are_read(fetcher: Fetcher, source: Source,
                                           charset: str) -> None:
    # bz2 was a decompression bomb past the byte limit, rot13 a 500 (review-b #1, #2).
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url(f"/charset/{charset}")))
    assert "not a text encoding Litho reads; send UTF-8" in caught.value.message


@pytest.mark.parametrize("charset", ["utf-16", "iso-8859-1", "windows-1252", "gb18030"])
async def test_text_charsets_are_decoded(fetcher: Fetcher, source: Source,
                                         charset: str) -> None:
    got = await fetcher.fetch(SourceRequest(source.url(f"/charset/{charset}")))
    assert got.data == {"n": "é"}


async def test_the_stored_text_is_held_to_the_byte_limit(fetcher: Fetcher,
                                                          source: Source) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url("/floats")))
    assert "canonical JSON" in caught.value.message
    assert f"{MAX_BYTES} bytes (LITHO_BINDING_MAX_DATA_BYTES)" in caught.value.message


async def test_a_per_fetch_byte_limit_names_its_setting(fetcher: Fetcher,
                                                         source: Source) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.fetch(SourceRequest(source.url("/huge")), max_bytes=2048,
                            max_bytes_setting="LITHO_BINDING_MAX_SOURCE_BYTES")
    assert caught.value.message == ("the source's answer is larger than 2048 bytes "
                                    "(LITHO_BINDING_MAX_SOURCE_BYTES)")


# --- turns ------------------------------------------------------------------

async def _enter(slots: FetchSlots, tenant: str, log: list[str], name: str,
                 done: asyncio.Event, *, wait: float | None = None) -> None:
    async with slots.turn(tenant, wait=wait):
        log.append(name)
        await done.wait()


async def test_a_tenant_at_its_limit_waits_first_come_first_served() -> None:
    slots = FetchSlots(per_tenant=1, total=10, queue=5)
    log: list[str] = []
    hold, free = asyncio.Event(), asyncio.Event()
    free.set()
    holder = asyncio.create_task(_enter(slots, "a", log, "holder", hold))
    waiters = [asyncio.create_task(_enter(slots, "a", log, f"w{n}", free)) for n in range(3)]
    await asyncio.sleep(0)  # one loop turn: every task has run to its first wait
    assert log == ["holder"] and slots.waiting("a") == 3
    # Another tenant is not held up.
    await _enter(slots, "b", log, "other", free)
    hold.set()
    await asyncio.gather(holder, *waiters)
    assert log == ["holder", "other", "w0", "w1", "w2"]
    assert slots.busy("a") == slots.waiting("a") == 0


async def test_past_the_queue_a_fetch_is_refused_naming_the_setting() -> None:
    slots = FetchSlots(per_tenant=1, total=10, queue=1)
    log: list[str] = []
    hold = asyncio.Event()
    tasks = [asyncio.create_task(_enter(slots, "a", log, f"t{n}", hold)) for n in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="LITHO_BINDING_TENANT_FETCH_QUEUE"):
        await _enter(slots, "a", log, "refused", hold)
    hold.set()
    await asyncio.gather(*tasks)
    assert log == ["t0", "t1"]


async def test_a_wait_is_bounded_and_gives_its_place_up() -> None:
    slots = FetchSlots(per_tenant=1, total=1, queue=5)
    log: list[str] = []
    hold, free = asyncio.Event(), asyncio.Event()
    free.set()
    holder = asyncio.create_task(_enter(slots, "a", log, "holder", hold))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="LITHO_BINDING_TENANT_FETCHES"):
        await _enter(slots, "a", log, "late", free, wait=0.01)
    # The total is full too: another tenant waits on LITHO_BINDING_MAX_FETCHES.
    with pytest.raises(ResourceExhausted, match="LITHO_BINDING_MAX_FETCHES"):
        await _enter(slots, "b", log, "late-b", free, wait=0.01)
    cancelled = asyncio.create_task(_enter(slots, "a", log, "cancelled", free))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert slots.waiting("a") == 0
    hold.set()
    await holder
    await _enter(slots, "a", log, "after", free)
    assert log == ["holder", "after"]
    assert slots.busy("a") == 0


async def test_the_fetcher_takes_turns_per_tenant(source: Source) -> None:
    settings = OutboundSettings(allow=f"127.0.0.1:{source.port}")
    async with OutboundGuard(settings) as guard:
        fetcher = Fetcher(guard, timeout=5, max_bytes=MAX_BYTES,
                          slots=FetchSlots(per_tenant=1, total=10, queue=0))
        slow = asyncio.create_task(fetcher.fetch(SourceRequest(source.url("/slow")),
                                                 tenant="a"))
        await source.entered.wait()
        with pytest.raises(ResourceExhausted, match="LITHO_BINDING_TENANT_FETCH_QUEUE"):
            await fetcher.fetch(SourceRequest(source.url("/price")), tenant="a")
        got = await fetcher.fetch(SourceRequest(source.url("/price")), tenant="b")
        assert got.data["price"] == 12.5
        source.release.set()
        assert (await slow).data == {}
        assert fetcher.slots.busy("a") == 0
