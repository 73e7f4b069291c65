"""The outbound guard against real aiohttp servers on loopback.

Server A's ``127.0.0.1:<port>`` is allow-listed; server B, on another loopback
port, is not, and counts its hits so a denial is shown to reach nothing. No test
connects to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import BaseTestServer, TestServer
from aiohttp.typedefs import Handler

from litho.config import OutboundSettings
from litho.errors import ConfigError, OutboundDenied, OutboundError, OutboundUnresolved
from litho.outbound import (
    DENIED_MESSAGE,
    AllowList,
    FetchResult,
    OutboundGuard,
    check_url,
    is_public_address,
)
from litho.outbound._resolver import DeniedAddress, SocketGate

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2


@dataclass
class Server:
    server: BaseTestServer
    hits: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _app(hits: list[str]) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        resp = web.Response(body=PNG, content_type="image/png")
        resp.headers.add("Set-Cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        resp.headers["Connection"] = "keep-alive, X-Private"
        resp.headers["X-Private"] = "hop-by-hop by Connection"
        resp.headers["X-Kept"] = "yes"
        return resp

    async def redirect(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["to"]})

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(text="end of chain")
        return web.Response(status=302, headers={"Location": f"/chain/{left - 1}"})

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.match_info["n"]))

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        left = int(request.match_info["n"])
        while left:
            step = min(left, 256)
            await resp.write(b"y" * step)
            left -= step
        await resp.write_eof()
        return resp

    async def slow_headers(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="too late")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first bytes")
        await asyncio.sleep(5)
        return resp

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(PNG),
            headers={"Content-Encoding": "gzip", "Content-Type": "image/png"},
        )

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "body": body.decode(),
                "host": request.host,
                "x_test": request.headers.get("X-Test"),
                "authorization": request.headers.get("Authorization"),
            }
        )

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        hits.append(request.path_qs)
        return await handler(request)

    app = web.Application(middlewares=[count])
    app.router.add_get("/ok", ok)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/bytes/{n}", sized)
    app.router.add_get("/chunked/{n}", chunked)
    app.router.add_get("/slow-headers", slow_headers)
    app.router.add_get("/slow-body", slow_body)
    app.router.add_get("/gzip", gzipped)
    app.router.add_route("*", "/echo", echo)
    return app


@asynccontextmanager
async def _serve() -> AsyncIterator[Server]:
    hits: list[str] = []
    async with TestServer(_app(hits), host="127.0.0.1") as server:
        yield Server(server, hits)


@pytest.fixture
async def server_a() -> AsyncIterator[Server]:
    async with _serve() as server:
        yield server


@pytest.fixture
async def server_b() -> AsyncIterator[Server]:
    async with _serve() as server:
        yield server


def _settings(allow: str = "", **limits: float) -> OutboundSettings:
    return OutboundSettings(
        allow=allow,
        max_bytes=int(limits.get("max_bytes", 1000)),
        timeout=limits.get("timeout", 5.0),
        max_redirects=int(limits.get("max_redirects", 2)),
    )


@pytest.fixture
async def guard(server_a: Server) -> AsyncIterator[OutboundGuard]:
    async with OutboundGuard(_settings(f"127.0.0.1:{server_a.port}")) as guard:
        yield guard


class FakeResolver(AbstractResolver):
    """DNS behind the port: made-up names answer with fixed addresses."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self.answers[host]
        ]

    async def close(self) -> None:
        pass


# --- fetching from the allowed server ---------------------------------------


async def test_allow_listed_loopback_server_is_fetched(
    guard: OutboundGuard, server_a: Server
) -> None:
    result = await guard.fetch(server_a.url("/ok"))

    assert isinstance(result, FetchResult)
    assert result.status == 200
    assert result.body == PNG
    assert result.content_type == "image/png"
    assert result.url == server_a.url("/ok")
    assert result.headers["content-type"] == "image/png"
    assert result.headers["x-kept"] == "yes"
    assert result.headers["set-cookie"] == "a=1\nb=2"
    for dropped in ("content-length", "transfer-encoding", "connection", "x-private"):
        assert dropped not in result.headers
    assert server_a.hits == ["/ok"]


async def test_decompressed_body_drops_content_encoding(
    guard: OutboundGuard, server_a: Server
) -> None:
    result = await guard.fetch(server_a.url("/gzip"))

    assert result.body == PNG
    assert "content-encoding" not in result.headers
    assert result.headers["content-type"] == "image/png"


async def test_method_body_and_headers_are_sent_but_host_is_not_overridable(
    guard: OutboundGuard, server_a: Server
) -> None:
    result = await guard.fetch(
        server_a.url("/echo"),
        method="post",
        headers={"X-Test": "1", "Host": "internal.example"},
        body=b"payload",
    )

    assert result.status == 200
    assert result.content_type == "application/json"
    assert b'"method": "POST"' in result.body
    assert b'"body": "payload"' in result.body
    assert b'"x_test": "1"' in result.body
    assert f'"host": "127.0.0.1:{server_a.port}"'.encode() in result.body


async def test_error_status_is_returned_not_raised(guard: OutboundGuard, server_a: Server) -> None:
    result = await guard.fetch(server_a.url("/missing"))

    assert result.status == 404


# --- loopback that is not allow-listed --------------------------------------


async def test_second_loopback_server_on_another_port_is_denied(
    guard: OutboundGuard, server_b: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="litho.outbound"):
        with pytest.raises(OutboundDenied) as info:
            await guard.fetch(server_b.url("/ok"))

    assert str(info.value) == DENIED_MESSAGE
    assert server_b.hits == []
    denial = [r for r in caplog.records if r.name.startswith("litho.outbound")]
    assert denial and denial[0].levelno == logging.INFO
    assert "not public and not allow-listed" in denial[0].getMessage()


# Hosts that all mean loopback (or "this host") to some parser on the way.
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0x7F.0.0.1",
    "127.1",
    "127.0.1",
    "0177.0.0.1",
    "017700000001",
    "127.0.0.1.",
    "①②⑦.0.0.1",
    "127。0。0。1",
    "0.0.0.0",
    "0",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::1]",
    "localhost",
    "LOCALHOST.",
    "app.localhost",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_loopback_spellings_are_denied(
    guard: OutboundGuard, server_a: Server, server_b: Server, host: str
) -> None:
    url = f"http://{host}:{server_b.port}/ok"

    with pytest.raises(OutboundDenied):
        check_url(url, guard.allow)
    with pytest.raises(OutboundDenied):
        guard.check_url(url)
    with pytest.raises(OutboundDenied):
        await guard.fetch(url)

    assert server_b.hits == []
    assert server_a.hits == []


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.1", "127.1", "0177.0.0.1", "127.0.0.1.", "localhost"]
)
async def test_odd_spellings_are_denied_even_on_the_allowed_port(
    guard: OutboundGuard, server_a: Server, host: str
) -> None:
    with pytest.raises(OutboundDenied):
        await guard.fetch(f"http://{host}:{server_a.port}/ok")

    assert server_a.hits == []


async def test_userinfo_cannot_disguise_the_host(
    guard: OutboundGuard, server_a: Server, server_b: Server
) -> None:
    with pytest.raises(OutboundDenied):
        await guard.fetch(f"http://127.0.0.1:{server_a.port}@127.0.0.1:{server_b.port}/ok")

    assert server_b.hits == []


async def test_ipv4_mapped_form_of_an_allowed_address_is_allowed(
    guard: OutboundGuard, server_a: Server
) -> None:
    result = await guard.fetch(f"http://[::ffff:127.0.0.1]:{server_a.port}/ok")

    assert result.status == 200


@pytest.mark.parametrize(
    "template",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1:{port}/ok",
        "gopher://127.0.0.1:{port}/_GET%20/ok",
        "ws://127.0.0.1:{port}/ok",
        "data:text/plain,hello",
        "javascript:alert(1)",
        "//127.0.0.1:{port}/ok",
        "http:///ok",
        "http://127.0.0.1:0/ok",
        "http://[::1/ok",
    ],
)
async def test_non_http_schemes_and_malformed_urls_are_denied(
    guard: OutboundGuard, server_a: Server, template: str
) -> None:
    url = template.format(port=server_a.port)

    with pytest.raises(OutboundDenied):
        guard.check_url(url)
    with pytest.raises(OutboundDenied):
        await guard.fetch(url)

    assert server_a.hits == []


async def test_connection_refused_is_an_outbound_error_not_a_denial() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async with OutboundGuard(_settings(f"127.0.0.1:{port}")) as guard:
        with pytest.raises(OutboundError) as info:
            await guard.fetch(f"http://127.0.0.1:{port}/")

    assert not isinstance(info.value, OutboundDenied)


# --- redirects -----------------------------------------------------------------


async def test_redirect_within_the_allowed_server_is_followed(
    guard: OutboundGuard, server_a: Server
) -> None:
    result = await guard.fetch(server_a.url("/redirect?to=/ok"))

    assert result.status == 200
    assert result.url == server_a.url("/ok")
    assert server_a.hits == ["/redirect?to=/ok", "/ok"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_a_denied_loopback_server_is_denied(
    guard: OutboundGuard, server_a: Server, server_b: Server, status: int
) -> None:
    with pytest.raises(OutboundDenied) as info:
        await guard.fetch(server_a.url(f"/redirect?status={status}&to={server_b.url('/ok')}"))

    assert str(info.value) == DENIED_MESSAGE
    assert len(server_a.hits) == 1
    assert server_b.hits == []


async def test_redirect_to_a_non_http_scheme_is_denied(
    guard: OutboundGuard, server_a: Server
) -> None:
    with pytest.raises(OutboundDenied):
        await guard.fetch(server_a.url("/redirect?to=file:///etc/passwd"))


async def test_see_other_turns_post_into_get_and_keeps_nothing_of_the_body(
    guard: OutboundGuard, server_a: Server
) -> None:
    result = await guard.fetch(
        server_a.url("/redirect?status=303&to=/echo"), method="POST", body=b"payload"
    )

    assert b'"method": "GET"' in result.body
    assert b'"body": ""' in result.body


async def test_redirect_chain_up_to_the_limit_is_followed(
    guard: OutboundGuard, server_a: Server
) -> None:
    result = await guard.fetch(server_a.url("/chain/2"))

    assert result.body == b"end of chain"
    assert len(server_a.hits) == 3


async def test_redirect_chain_over_the_limit_fails(guard: OutboundGuard, server_a: Server) -> None:
    with pytest.raises(OutboundError, match="too many redirects"):
        await guard.fetch(server_a.url("/chain/3"))

    assert len(server_a.hits) == 3


# --- size and time limits ------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "chunked"])
async def test_body_at_the_limit_is_read(guard: OutboundGuard, server_a: Server, kind: str) -> None:
    result = await guard.fetch(server_a.url(f"/{kind}/1000"))

    assert len(result.body) == 1000


async def test_too_large_body_with_content_length_fails(
    guard: OutboundGuard, server_a: Server
) -> None:
    with pytest.raises(OutboundError, match="declares 1001 bytes"):
        await guard.fetch(server_a.url("/bytes/1001"))


async def test_too_large_chunked_body_fails_while_streaming(
    guard: OutboundGuard, server_a: Server
) -> None:
    with pytest.raises(OutboundError, match="exceeds the 1000-byte limit"):
        await guard.fetch(server_a.url("/chunked/1001"))


async def test_per_call_max_bytes_overrides_the_setting(
    guard: OutboundGuard, server_a: Server
) -> None:
    with pytest.raises(OutboundError, match="exceeds the 10-byte limit"):
        await guard.fetch(server_a.url("/chunked/11"), max_bytes=10)


@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body"])
async def test_slow_server_times_out(server_a: Server, path: str) -> None:
    # The server answers after 5 s: only the guard's own timeout can raise this
    # (no wall-clock assertion, which a loaded machine could break).
    async with OutboundGuard(_settings(f"127.0.0.1:{server_a.port}", timeout=0.3)) as guard:
        with pytest.raises(OutboundError, match=r"timed out after 0\.3s"):
            await guard.fetch(server_a.url(path))


async def test_per_call_timeout_overrides_the_setting(
    guard: OutboundGuard, server_a: Server
) -> None:
    with pytest.raises(OutboundError, match=r"timed out after 0\.2s"):
        await guard.fetch(server_a.url("/slow-headers"), timeout=0.2)


# --- resolution is vetted --------------------------------------------------------


async def test_name_resolving_to_loopback_is_denied(
    server_a: Server, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = FakeResolver({"rebind.test": ["127.0.0.1"]})
    url = f"http://rebind.test:{server_a.port}/ok"

    async with OutboundGuard(_settings(), resolver=resolver) as guard:
        guard.check_url(url)  # a name passes the cheap check; DNS decides
        with caplog.at_level(logging.INFO, logger="litho.outbound"):
            with pytest.raises(OutboundDenied) as info:
                await guard.fetch(url)

    assert str(info.value) == DENIED_MESSAGE
    assert resolver.asked == [("rebind.test", server_a.port)]
    assert server_a.hits == []
    assert any("resolves to denied address 127.0.0.1" in r.getMessage() for r in caplog.records)


async def test_name_resolving_to_an_allow_listed_address_is_fetched(server_a: Server) -> None:
    resolver = FakeResolver({"rebind.test": ["127.0.0.1"]})

    async with OutboundGuard(_settings(f"127.0.0.1:{server_a.port}"), resolver=resolver) as guard:
        result = await guard.fetch(f"http://rebind.test:{server_a.port}/ok")

    assert result.status == 200
    assert result.body == PNG


async def test_name_is_denied_if_any_answer_is_denied(server_a: Server) -> None:
    resolver = FakeResolver({"rebind.test": ["127.0.0.1", "127.0.0.2"]})

    async with OutboundGuard(_settings(f"127.0.0.1:{server_a.port}"), resolver=resolver) as guard:
        with pytest.raises(OutboundDenied):
            await guard.fetch(f"http://rebind.test:{server_a.port}/ok")

    assert server_a.hits == []


async def test_every_redirect_hop_is_resolved_and_vetted(
    server_a: Server, server_b: Server
) -> None:
    resolver = FakeResolver({"rebind.test": ["127.0.0.1"]})
    allowed_hop = f"http://rebind.test:{server_a.port}/ok"
    denied_hop = f"http://rebind.test:{server_b.port}/ok"

    async with OutboundGuard(_settings(f"127.0.0.1:{server_a.port}"), resolver=resolver) as guard:
        result = await guard.fetch(server_a.url(f"/redirect?to={allowed_hop}"))
        with pytest.raises(OutboundDenied):
            await guard.fetch(server_a.url(f"/redirect?to={denied_hop}"))

    assert result.url == allowed_hop
    assert ("rebind.test", server_b.port) in resolver.asked
    assert server_b.hits == []


async def test_credentials_are_dropped_when_a_redirect_changes_origin(server_a: Server) -> None:
    resolver = FakeResolver({"rebind.test": ["127.0.0.1"]})
    other_origin = f"http://rebind.test:{server_a.port}/echo"
    credentials = {"Authorization": "Bearer secret", "X-Test": "kept"}

    async with OutboundGuard(_settings(f"127.0.0.1:{server_a.port}"), resolver=resolver) as guard:
        same = await guard.fetch(server_a.url("/redirect?to=/echo"), headers=credentials)
        cross = await guard.fetch(server_a.url(f"/redirect?to={other_origin}"), headers=credentials)

    assert b'"authorization": "Bearer secret"' in same.body
    assert b'"authorization": null' in cross.body
    assert b'"x_test": "kept"' in cross.body


async def test_named_secret_headers_are_dropped_across_origins_too(server_a: Server) -> None:
    resolver = FakeResolver({"rebind.test": ["127.0.0.1"]})
    other_origin = f"http://rebind.test:{server_a.port}/echo"
    headers = {"X-Test": "api-key-value"}

    async with OutboundGuard(_settings(f"127.0.0.1:{server_a.port}"), resolver=resolver) as guard:
        same = await guard.fetch(server_a.url("/redirect?to=/echo"), headers=headers,
                                 secret_headers=("X-Test",))
        cross = await guard.fetch(server_a.url(f"/redirect?to={other_origin}"),
                                  headers=headers, secret_headers=("x-test",))

    assert b'"x_test": "api-key-value"' in same.body
    assert b'"x_test": null' in cross.body


async def test_unresolvable_name_is_an_outbound_error() -> None:
    async with OutboundGuard(_settings(), resolver=FakeResolver({})) as guard:
        with pytest.raises(OutboundError) as info:
            await guard.fetch("http://nowhere.test/")

    assert not isinstance(info.value, OutboundDenied)
    # Its own class: the renderer reports it like a denial, so that a tenant
    # cannot tell "private" from "does not exist".
    assert isinstance(info.value, OutboundUnresolved)


@pytest.mark.parametrize("url", ["http://a..b/", "http://" + "a" * 64 + ".com/",
                                 "http://xn--a.com/", "http://\u2488.com/"])
async def test_a_host_name_idna_cannot_encode_is_unresolved_not_a_crash(url: str) -> None:
    # The system resolver raises UnicodeError for these, which aiohttp does
    # not wrap: a webhook target or an asset URL must still end cleanly.
    async with OutboundGuard(_settings()) as guard:
        with pytest.raises(OutboundUnresolved):
            await guard.fetch(url)


def test_socket_gate_refuses_denied_socket_addresses() -> None:
    gate = SocketGate(AllowList.parse("127.0.0.1:8081"))
    tcp = (socket.AF_INET, socket.SOCK_STREAM, 6, "")

    with pytest.raises(DeniedAddress):
        gate((*tcp, ("127.0.0.1", 8082)))
    with gate((*tcp, ("127.0.0.1", 8081))) as sock:
        assert sock.family == socket.AF_INET


# --- lifecycle ---------------------------------------------------------------------


async def test_fetch_before_start_is_a_programming_error() -> None:
    guard = OutboundGuard(_settings())

    with pytest.raises(RuntimeError, match="start"):
        await guard.fetch("http://127.0.0.1/")
    await guard.close()
    await guard.close()


# --- the pure rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.255.255.255",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "169.254.169.254",
        "0.0.0.0",
        "0.1.2.3",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "192.0.0.8",
        "192.0.2.1",
        "198.18.0.1",
        "198.51.100.7",
        "203.0.113.9",
        "::",
        "::1",
        "fe80::1",
        "fe80::1%eth0",
        "febf:ffff::1",
        "fc00::1",
        "fd12:3456:789a::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "::127.0.0.1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
        "2002:c0a8:101::1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2001::1",
        "2001:db8::1",
        "100::1",
        "not-an-ip",
        "",
    ],
)
def test_non_public_addresses_are_denied(ip: str) -> None:
    assert not is_public_address(ip, 80)
    assert not is_public_address(ip, 80, AllowList())


@pytest.mark.parametrize(
    "ip",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "2001:4860:4860::8888",
        "2606:2800:220:1:248:1893:25c8:1946",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "64:ff9b::808:808",
    ],
)
def test_public_addresses_are_allowed(ip: str) -> None:
    assert is_public_address(ip, 443)


@pytest.mark.parametrize(
    ("allow", "ip", "port", "expected"),
    [
        ("127.0.0.1:8081", "127.0.0.1", 8081, True),
        ("127.0.0.1:8081", "127.0.0.1", 8082, False),
        ("127.0.0.1:8081", "127.0.0.2", 8081, False),
        ("127.0.0.1:8081", "::ffff:127.0.0.1", 8081, True),
        ("127.0.0.1:8081", "::1", 8081, False),
        ("127.0.0.1", "127.0.0.1", 1, True),
        ("127.0.0.0/8:8081", "127.9.9.9", 8081, True),
        ("127.0.0.0/8:8081", "127.9.9.9", 80, False),
        ("10.0.0.0/8", "10.200.0.1", 5432, True),
        ("10.0.0.0/8", "11.0.0.1", 5432, True),  # public anyway
        ("10.0.0.0/8", "192.168.0.1", 5432, False),
        ("[::1]:9000", "::1", 9000, True),
        ("[::1]:9000", "::1", 9001, False),
        ("[fd00::/8]:9000", "fd12::1", 9000, True),
        ("::1", "::1", 22, True),
        ("fd00::/8", "fd12::1", 22, True),
        (" 192.168.0.0/16 , ,127.0.0.1:8081 ", "192.168.7.7", 80, True),
        ("", "127.0.0.1", 8081, False),
    ],
)
def test_allow_list_entries(allow: str, ip: str, port: int, expected: bool) -> None:
    assert is_public_address(ip, port, AllowList.parse(allow)) is expected


@pytest.mark.parametrize(
    "entry",
    [
        "localhost",
        "example.com:80",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:http",
        "127.0.0.1:+80",
        "10.0.0.1/8",
        "127.0.0.1/33",
        "300.1.1.1",
        "0177.0.0.1",
        "[::1",
        "[::1]9000",
        "[::1]:",
        "[127.0.0.1:80]",
        "*",
    ],
)
def test_malformed_allow_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(ConfigError, match="LITHO_OUTBOUND_ALLOW") as info:
        AllowList.parse(f"127.0.0.1:8081,{entry}")
    assert repr(entry) in str(info.value)

    with pytest.raises(ConfigError, match="LITHO_OUTBOUND_ALLOW"):
        OutboundGuard(_settings(entry))
