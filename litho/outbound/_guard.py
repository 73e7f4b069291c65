"""The one HTTP client every server-side fetch in Litho goes through."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry import trace
from yarl import URL

from litho.config import OutboundSettings
from litho.errors import (
    OutboundDenied,
    OutboundError,
    OutboundTimeout,
    OutboundTooLarge,
    OutboundUnresolved,
)
from litho.outbound._policy import DENIED_MESSAGE, AllowList, deny, vet_url
from litho.outbound._resolver import DeniedAddress, SocketGate, VettingResolver

_tracer = trace.get_tracer("litho.outbound")

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024

# Meaningful for one connection only (RFC 9110 7.6.1), or describing a framing
# that no longer holds once aiohttp has de-chunked the body.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# The codings aiohttp decodes itself; any other Content-Encoding is passed through.
_DECODED_ENCODINGS = frozenset({"gzip", "deflate", "br", "zstd"})
# Credentials the caller meant for the first origin only.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A fully read response. ``headers`` has lower-case names and no hop-by-hop
    fields; repeated fields are joined with ``", "`` (``set-cookie`` with a
    newline, as Playwright expects), so it can go straight to ``route.fulfill``."""

    url: str
    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str


class OutboundGuard:
    """Fetches URLs while refusing non-public destinations, on every redirect hop.

    Create it inside a running loop and ``start()`` it (or use ``async with``).
    ``resolver`` replaces the DNS lookup behind the vetting, for tests; its
    answers are vetted exactly like the system resolver's, and it is not closed.
    """

    def __init__(
        self, settings: OutboundSettings, *, resolver: AbstractResolver | None = None
    ) -> None:
        self._allow = AllowList.parse(settings.allow)
        self._max_bytes = settings.max_bytes
        self._timeout = settings.timeout
        self._max_redirects = settings.max_redirects
        self._upstream = resolver
        self._session: aiohttp.ClientSession | None = None
        self._resolver: VettingResolver | None = None

    @property
    def allow(self) -> AllowList:
        return self._allow

    @property
    def timeout(self) -> float:
        """The default time limit of a fetch, in seconds (``LITHO_OUTBOUND_TIMEOUT``)."""
        return self._timeout

    @property
    def max_bytes(self) -> int:
        """The default size limit of a fetch (``LITHO_OUTBOUND_MAX_BYTES``)."""
        return self._max_bytes

    async def start(self) -> None:
        if self._session is not None:
            return
        owns = self._upstream is None
        upstream = self._upstream or aiohttp.ThreadedResolver()
        # The connector does not close a resolver it was given; close() does.
        self._resolver = VettingResolver(upstream, self._allow, owns=owns)
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            # Every new connection must ask the vetting resolver, never a cache.
            use_dns_cache=False,
            socket_factory=SocketGate(self._allow),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # One session serves every tenant: keep no cookies between fetches,
            # and ignore proxy settings from the environment.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    async def __aenter__(self) -> OutboundGuard:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def check_url(self, url: str | URL) -> None:
        """Synchronous pre-check without DNS; see :func:`litho.outbound.check_url`."""
        vet_url(url, self._allow)

    async def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_bytes: int | None = None,
        # A per-fetch budget is the API callers want; it is applied with asyncio.timeout.
        timeout: float | None = None,  # noqa: ASYNC109
        follow_redirects: bool = True,
        truncate: bool = False,
        secret_headers: Collection[str] = (),
    ) -> FetchResult:
        """Fetch ``url``, following up to ``max_redirects`` redirects by hand.

        A redirect to another origin drops the credential headers
        (``Authorization``, ``Cookie``, ``Proxy-Authorization``) and any named
        in ``secret_headers`` (a caller's own API-key header).

        ``follow_redirects=False`` answers a 3xx as it came (webhooks treat it
        as a failure); ``truncate=True`` keeps the first ``max_bytes`` of a
        longer body instead of raising :class:`OutboundTooLarge` (for callers
        that only need the status).

        Raises :class:`OutboundDenied` (generic message, reason logged) when any
        hop's scheme, host or resolved address is refused, and
        :class:`OutboundError` on connection failure, too many redirects, a body
        over ``max_bytes`` or a total time over ``timeout`` seconds.
        """
        if self._session is None:
            raise RuntimeError("OutboundGuard.start() has not been called")
        limit = max_bytes if max_bytes is not None else self._max_bytes
        seconds = timeout if timeout is not None else self._timeout
        request_headers = _request_headers(headers)
        # The host only (a path or query may carry secrets), and no trace
        # context is sent: the destination is anyone's.
        with _tracer.start_as_current_span(
            "outbound fetch", kind=trace.SpanKind.CLIENT, attributes={
                "server.address": _host(url), "http.request.method": method.upper()},
            record_exception=False, set_status_on_exception=False,
        ) as span:
            outcome = "error"
            try:
                async with asyncio.timeout(seconds):
                    result = await self._follow(
                        self._session, url, method.upper(), request_headers, body, limit,
                        seconds, follow=follow_redirects, truncate=truncate,
                        secret_headers=secret_headers)
                outcome = "ok"
                span.set_attribute("http.response.status_code", result.status)
                return result
            except TimeoutError as exc:
                outcome = "timeout"
                raise OutboundTimeout(f"outbound fetch timed out after {seconds:g}s") from exc
            except OutboundDenied:
                outcome = "denied"
                raise
            finally:
                span.set_attribute("litho.outbound.outcome", outcome)
                if outcome != "ok":
                    span.set_status(trace.StatusCode.ERROR, outcome)

    async def _follow(
        self,
        session: aiohttp.ClientSession,
        url: str,
        method: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        limit: int,
        seconds: float,
        *,
        follow: bool = True,
        truncate: bool = False,
        secret_headers: Collection[str] = (),
    ) -> FetchResult:
        next_url: str | URL = url
        for _ in range(self._max_redirects + 1):
            target = vet_url(next_url, self._allow)
            try:
                async with session.request(
                    method,
                    target,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    # asyncio.timeout in fetch() bounds all hops together; this
                    # only keeps the session default from cutting a longer budget.
                    timeout=aiohttp.ClientTimeout(total=seconds),
                ) as response:
                    location = response.headers.get("Location")
                    if (not follow or response.status not in _REDIRECT_STATUSES
                            or location is None):
                        return await _read(response, target, limit, truncate=truncate)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, DeniedAddress):
                    raise OutboundDenied(DENIED_MESSAGE) from exc
                if isinstance(exc, aiohttp.ClientConnectorDNSError):
                    raise OutboundUnresolved(f"{target.raw_host} does not resolve") from exc
                raise OutboundError(f"could not connect to {target.raw_host}: {exc}") from exc
            except TimeoutError as exc:
                # aiohttp's own timeouts (ServerTimeoutError is a TimeoutError).
                raise OutboundTimeout(
                    f"outbound fetch from {target.raw_host} timed out after {seconds:g}s") from exc
            except aiohttp.InvalidURL as exc:
                raise deny(f"aiohttp refused the URL: {exc}", target.raw_host, target.port) from exc
            except aiohttp.ClientError as exc:
                raise OutboundError(f"outbound fetch from {target.raw_host} failed: {exc}") from exc
            except UnicodeError as exc:
                # A host name IDNA cannot encode (an empty or over-long label,
                # "a..b", "xn--a"): the resolver raises it and aiohttp does not
                # wrap it. No such name resolves.
                raise OutboundUnresolved(f"{target.raw_host} is not a valid host name") from exc
            try:
                following = target.join(URL(location))
            except ValueError as exc:
                raise OutboundError(f"invalid redirect location from {target.raw_host}") from exc
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
            if _origin(following) != _origin(target):
                for name in (*_CREDENTIAL_HEADERS, *secret_headers):
                    headers.popall(name, None)
            next_url = following
        raise OutboundError(f"too many redirects (more than {self._max_redirects})")


def _host(url: str) -> str:
    try:
        return URL(url).host or ""
    except ValueError:
        return ""


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return url.scheme, url.raw_host, url.port


def _request_headers(headers: Mapping[str, str] | None) -> CIMultiDict[str]:
    # Host and framing are the client's business; a caller-supplied Host could
    # otherwise reach another virtual host on an allowed address.
    return CIMultiDict(
        (k, v)
        for k, v in (headers or {}).items()
        if k.lower() not in _HOP_BY_HOP and k.lower() != "host"
    )


async def _read(response: aiohttp.ClientResponse, target: URL, limit: int, *,
                truncate: bool = False) -> FetchResult:
    declared = response.content_length
    if declared is not None and declared > limit and not truncate:
        response.close()
        raise OutboundTooLarge(
            f"response from {target.raw_host} declares {declared} bytes, "
            f"over the {limit}-byte limit"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit and truncate:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            response.close()
            break
        if size > limit:
            response.close()
            raise OutboundTooLarge(
                f"response from {target.raw_host} exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return FetchResult(
        url=str(target),
        status=response.status,
        headers=_response_headers(response.headers),
        body=b"".join(chunks),
        content_type=response.content_type,
    )


def _response_headers(raw: CIMultiDictProxy[str]) -> dict[str, str]:
    drop = set(_HOP_BY_HOP)
    for value in raw.getall("Connection", ()):
        drop.update(token.strip().lower() for token in value.split(","))
    if raw.get("Content-Encoding", "").strip().lower() in _DECODED_ENCODINGS:
        drop.add("content-encoding")
    out: dict[str, str] = {}
    for name, value in raw.items():
        key = name.lower()
        if key in drop:
            continue
        separator = "\n" if key == "set-cookie" else ", "
        out[key] = f"{out[key]}{separator}{value}" if key in out else value
    return out
