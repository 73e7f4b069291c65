"""Fetching a data source: one request through the outbound guard, its answer
held to the binding limits and parsed as JSON.

Every failure is a :class:`FetchFailed` whose message says what went wrong in
words a tenant can act on (and names the setting when a limit was hit); a
refused address stays generic, as every outbound refusal in Litho does, and a
name that does not resolve reads the same (else a tenant could map the
operator's internal names).

Fetches take turns (:class:`FetchSlots`): at most
``LITHO_BINDING_TENANT_FETCHES`` per tenant and ``LITHO_BINDING_MAX_FETCHES``
in all are under way at once; the rest wait first come, first served, at most
``LITHO_BINDING_TENANT_FETCH_QUEUE`` per tenant (past it: 429).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from litho import jsonlimits
from litho.errors import (
    InvalidArgument,
    OutboundDenied,
    OutboundError,
    OutboundTimeout,
    OutboundTooLarge,
    OutboundUnresolved,
    ResourceExhausted,
    clip,
)
from litho.outbound import FetchResult, OutboundGuard, check_outbound_headers
from services.binding._settings import DEFAULT_JSON_LIMITS

#: Media types read as JSON without a second thought.
_JSON_TYPES: Final = frozenset({"application/json", "text/json"})
#: Media types servers send for JSON files they know nothing about: read as
#: JSON when the body parses (as a missing Content-Type is).
_MAYBE_JSON_TYPES: Final = frozenset({"", "text/plain", "application/octet-stream"})
#: Charsets read as UTF-8 (JSON's only encoding between systems, RFC 8259).
_UTF8: Final = frozenset({"", "utf-8", "utf8", "us-ascii", "ascii"})
#: The other charsets an answer may declare, by Python codec name: text
#: encodings only. ``codecs.lookup`` also finds bytes-to-bytes codecs (bz2,
#: zlib, base64: a decompression bomb past the size limit) and str-to-str ones
#: (rot13), and text codecs no server sends (punycode, unicode-escape).
_CHARSETS: Final = frozenset({
    "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
    "utf-32-be", "ascii", *(f"iso8859-{n}" for n in range(1, 17)),
    *(f"cp{n}" for n in range(1250, 1259)), "cp437", "cp850", "cp866", "cp874", "cp932",
    "cp949", "cp950", "koi8-r", "koi8-u", "mac-roman", "shift_jis", "shift_jis_2004",
    "euc_jp", "iso2022_jp", "gb18030", "gbk", "gb2312", "big5", "big5hkscs", "euc_kr",
})
#: Answers larger than this are parsed off the event loop.
_PARSE_INLINE_BYTES: Final = 64 * 1024
#: The setting that bounds a binding's data (the default byte limit).
MAX_DATA_SETTING: Final = "LITHO_BINDING_MAX_DATA_BYTES"


@dataclass(frozen=True)
class SourceRequest:
    """One fetch. ``credentials`` is the opened credentials object
    (``{"type": "bearer", "token": …}``, see :func:`credential_headers`);
    its headers are added at fetch time and dropped on a redirect to another
    origin."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    credentials: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fetched:
    """A source's answer. When ``not_modified`` (a 304 to a conditional
    request) ``data`` is None and ``data_json``/``data_hash`` are empty: the
    stored data stands. ``etag``/``last_modified`` are the answer's, or the
    ones sent when a 304 repeats none."""

    status: int
    data: Any
    data_json: str
    data_hash: str
    etag: str
    last_modified: str
    not_modified: bool
    duration_ms: float


class FetchFailed(Exception):
    """``status`` is the HTTP status of the answer, 0 when none came;
    ``denied`` marks a destination the outbound guard refused."""

    def __init__(self, message: str, *, status: int = 0, denied: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.denied = denied


#: What a tenant reads when the guard refused the address or its name does
#: not resolve: one text for both (the guard logs which it was).
DENIED_TEXT: Final = (
    "the data source's address is not allowed: its host name does not resolve, or it is "
    "a private, loopback or other non-public address, which Litho does not fetch from "
    "unless LITHO_OUTBOUND_ALLOW lists it")


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, Unicode kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def data_hash(value: Any) -> str:
    """SHA-256 hex of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def credential_headers(creds: Mapping[str, str]) -> dict[str, str]:
    """The request headers that carry ``creds``: ``bearer`` (``token``),
    ``basic`` (``username``, ``password``) or ``header`` (``headerName``,
    ``headerValue``); nothing for an empty mapping. ``ValueError`` for an
    unknown type."""
    kind = creds.get("type", "")
    if not kind:
        return {}
    if kind == "bearer":
        return {"Authorization": f"Bearer {creds.get('token', '')}"}
    if kind == "basic":
        pair = f"{creds.get('username', '')}:{creds.get('password', '')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    if kind == "header":
        return {creds.get("headerName", ""): creds.get("headerValue", "")}
    raise ValueError(f"unknown credentials type {kind!r}")


class _Gate:
    """At most ``limit`` holders at once; the others wait, first come first served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    def free(self) -> bool:
        return self.active < self.limit and not self.waiting

    def idle(self) -> bool:
        return self.active == 0 and not self.waiting

    async def acquire(self, deadline: float | None) -> None:
        """Hold a slot; ``TimeoutError`` when none came by ``deadline`` (loop time)."""
        if self.free():
            self.active += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            async with asyncio.timeout_at(deadline):
                await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot as the wait ended: pass it on
            else:
                turn.cancel()
                if turn in self.waiting:
                    self.waiting.remove(turn)
            raise

    def release(self) -> None:
        self.active -= 1
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                self.active += 1
                turn.set_result(None)
                return


class FetchSlots:
    """Turns at fetching: at most ``per_tenant`` fetches of one tenant
    (``LITHO_BINDING_TENANT_FETCHES``) and ``total`` of all tenants
    (``LITHO_BINDING_MAX_FETCHES``) at once. A tenant at its limit waits its
    turn (FIFO); with ``queue`` of its fetches already waiting
    (``LITHO_BINDING_TENANT_FETCH_QUEUE``) the next is refused at once."""

    def __init__(self, *, per_tenant: int = 4, total: int = 32, queue: int = 64) -> None:
        self._per_tenant = per_tenant
        self._queue = queue
        self._total = _Gate(total)
        self._tenants: dict[str, _Gate] = {}

    def busy(self, tenant: str) -> int:
        """Fetches of ``tenant`` under way (not waiting)."""
        gate = self._tenants.get(tenant)
        return gate.active if gate else 0

    def waiting(self, tenant: str) -> int:
        gate = self._tenants.get(tenant)
        return len(gate.waiting) if gate else 0

    @asynccontextmanager
    async def turn(self, tenant: str, *, wait: float | None = None) -> AsyncIterator[None]:
        """Hold a turn for the block. ``tenant`` ``""`` is counted only in the
        total (tests). ``wait`` bounds the wait in seconds (None: until a turn
        comes or the caller is cancelled); :class:`ResourceExhausted` when the
        queue is full or the wait ran out."""
        deadline = None if wait is None else asyncio.get_running_loop().time() + wait
        gate: _Gate | None = None
        if tenant:
            gate = self._tenants.get(tenant)
            if gate is None:
                gate = self._tenants[tenant] = _Gate(self._per_tenant)
            if not gate.free() and len(gate.waiting) >= self._queue:
                raise ResourceExhausted(
                    f"this tenant already has {gate.active} data source fetches under way "
                    f"and {len(gate.waiting)} waiting, the most allowed "
                    "(LITHO_BINDING_TENANT_FETCH_QUEUE); try again shortly",
                    retry_after=1.0)
        try:
            if gate is not None:
                try:
                    await gate.acquire(deadline)
                except TimeoutError:
                    raise _waited(wait, "LITHO_BINDING_TENANT_FETCHES") from None
            try:
                try:
                    await self._total.acquire(deadline)
                except TimeoutError:
                    raise _waited(wait, "LITHO_BINDING_MAX_FETCHES") from None
                try:
                    yield
                finally:
                    self._total.release()
            finally:
                if gate is not None:
                    gate.release()
        finally:
            if gate is not None and gate.idle() and self._tenants.get(tenant) is gate:
                del self._tenants[tenant]


def _waited(wait: float | None, setting: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"no data source fetch could start within {wait or 0:g} s: the most under way at "
        f"once ({setting}) are busy; try again shortly", retry_after=1.0)


class Fetcher:
    """Fetches data sources through ``guard`` within ``timeout`` seconds
    (``LITHO_BINDING_FETCH_TIMEOUT``) and ``max_bytes``
    (``LITHO_BINDING_MAX_DATA_BYTES``, or a per-fetch limit), taking turns
    by ``slots``."""

    def __init__(self, guard: OutboundGuard, *, timeout: float, max_bytes: int,
                 limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS,
                 slots: FetchSlots | None = None) -> None:
        self._guard = guard
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._limits = limits
        self._slots = slots or FetchSlots()

    @property
    def limits(self) -> jsonlimits.JsonLimits:
        """The JSON limits the answers are held to."""
        return self._limits

    @property
    def slots(self) -> FetchSlots:
        return self._slots

    async def fetch(self, request: SourceRequest, *, etag: str = "",
                    last_modified: str = "", tenant: str = "",
                    max_bytes: int | None = None,
                    max_bytes_setting: str = MAX_DATA_SETTING,
                    wait: float | None = None) -> Fetched:
        """Fetch and parse ``request`` in one of ``tenant``'s turns (``""``:
        nobody's, for tests); conditional on ``etag`` / ``last_modified``
        when given. ``max_bytes`` (named ``max_bytes_setting``) replaces the
        byte limit for this fetch; it bounds the answer as read, decoded and
        as stored (canonical JSON). ``wait`` bounds the wait for a turn, in
        seconds. Raises :class:`FetchFailed`, and
        :class:`litho.errors.ResourceExhausted` when no turn came."""
        limit = self._max_bytes if max_bytes is None else max_bytes
        setting = MAX_DATA_SETTING if max_bytes is None else max_bytes_setting
        # The turn covers the parse too: it is the costly part of a quick answer.
        async with self._slots.turn(tenant, wait=wait):
            started = time.perf_counter()
            result = await self._get(request, etag=etag, last_modified=last_modified,
                                     limit=limit, setting=setting)
            new_etag = _validator(result.headers.get("etag", ""))
            new_modified = _validator(result.headers.get("last-modified", ""))
            if result.status == 304:
                if not (etag or last_modified):
                    raise FetchFailed("the source answered 304 Not Modified to a request "
                                      "that was not conditional", status=304)
                return Fetched(status=304, data=None, data_json="", data_hash="",
                               etag=new_etag or etag,
                               last_modified=new_modified or last_modified,
                               not_modified=True, duration_ms=_since(started))
            if not 200 <= result.status < 300:
                raise FetchFailed(f"the source answered {result.status}", status=result.status)
            if len(result.body) > _PARSE_INLINE_BYTES:
                data, text = await asyncio.to_thread(self._parse, result, limit, setting)
            else:
                data, text = self._parse(result, limit, setting)
        return Fetched(status=result.status, data=data, data_json=text,
                       data_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                       etag=new_etag, last_modified=new_modified, not_modified=False,
                       duration_ms=_since(started))

    async def _get(self, request: SourceRequest, *, etag: str, last_modified: str,
                   limit: int, setting: str) -> FetchResult:
        method = request.method.upper() or "GET"
        headers = {"Accept": "application/json"}
        headers.update(request.headers)
        if request.body and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            secret = credential_headers(request.credentials)
        except ValueError as exc:
            raise FetchFailed(f"the stored credentials cannot be used: {exc}") from exc
        headers.update(secret)
        try:
            body = request.body.encode("utf-8") if request.body else None
            # Every header the user gave may carry a key (X-Api-Key…): none
            # follows a redirect to another origin, as credentials do not.
            return await self._guard.fetch(
                request.url, method=method, headers=headers, body=body,
                max_bytes=limit, timeout=self._timeout,
                secret_headers=(*request.headers, *secret))
        except (OutboundDenied, OutboundUnresolved) as exc:
            raise FetchFailed(DENIED_TEXT, denied=True) from exc
        except OutboundTimeout as exc:
            raise FetchFailed(f"the source did not answer within {self._timeout:g} s "
                              "(LITHO_BINDING_FETCH_TIMEOUT)") from exc
        except OutboundTooLarge as exc:
            raise FetchFailed(_too_large(limit, setting)) from exc
        except OutboundError as exc:
            raise FetchFailed(clip(exc.message, 300)) from exc
        except (UnicodeError, ValueError) as exc:
            # The guard refuses what it can parse; this backstop keeps an odd
            # URL or header a failed fetch, never a crash.
            raise FetchFailed(f"the request cannot be sent ({type(exc).__name__}): "
                              "check the URL and headers") from exc

    def _parse(self, result: FetchResult, limit: int, setting: str) -> tuple[Any, str]:
        """The answer's data and its canonical text, within ``limit`` bytes."""
        raw_type = result.headers.get("content-type", "")
        media, params = _media_type(raw_type)
        if not (media in _JSON_TYPES or media.endswith("+json") or media in _MAYBE_JSON_TYPES):
            raise FetchFailed(f"the source answered {clip(jsonlimits.safe_text(media), 100)}, "
                              "not JSON", status=result.status)
        text = _decode(result.body, params.get("charset", "").lower(), result.status)
        if len(text) > limit:
            raise FetchFailed(_too_large(limit, setting), status=result.status)
        if not text.strip():
            raise FetchFailed("the source answered with an empty body, not JSON",
                              status=result.status)
        try:
            data = jsonlimits.loads(text, self._limits)
        except jsonlimits.JsonLimitError as exc:
            raise FetchFailed(f"the source's JSON at {exc.path or '(top level)'}: {exc.problem}",
                              status=result.status) from exc
        except json.JSONDecodeError as exc:
            named = f" ({clip(media, 100)})" if media else ""
            raise FetchFailed(f"the source's answer{named} is not valid JSON: {exc.msg} at "
                              f"line {exc.lineno}, column {exc.colno}",
                              status=result.status) from exc
        except ValueError as exc:
            raise FetchFailed(f"the source's answer is not valid JSON: {clip(str(exc), 200)}",
                              status=result.status) from exc
        canonical = canonical_json(data)
        # Re-serialised, a number can grow (1e15 is 1000000000000000.0): what
        # is stored and sent on is held to the limit too.
        size = len(canonical.encode("utf-8"))
        if size > limit:
            raise FetchFailed(
                f"the source's data is {size} bytes once written out as canonical JSON "
                f"(numbers in full), more than {limit} bytes ({setting})",
                status=result.status)
        return data, canonical


def _too_large(limit: int, setting: str) -> str:
    return f"the source's answer is larger than {limit} bytes ({setting})"


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    media, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            params[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def _decode(body: bytes, charset: str, status: int) -> str:
    if charset not in _UTF8:
        codec = _text_codec(charset)
        if codec is None:
            raise FetchFailed(f"the source's answer declares charset "
                              f"{clip(jsonlimits.safe_text(charset), 60)}, which is not a "
                              "text encoding Litho reads; send UTF-8", status=status)
        try:
            decoded = codec.decode(body)[0]
        except Exception as exc:  # a codec's failure, whatever its kind, is the answer's
            raise FetchFailed(f"the source's answer is not valid {codec.name}",
                              status=status) from exc
        if not isinstance(decoded, str):
            raise FetchFailed(f"the source's answer is not valid {codec.name}", status=status)
        return decoded
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FetchFailed(f"the source's answer is not valid UTF-8 (at byte {exc.start})",
                          status=status) from exc


def _text_codec(charset: str) -> codecs.CodecInfo | None:
    try:
        codec = codecs.lookup(charset)
    except Exception:  # any odd name (NUL, non-ASCII, …) is simply not known
        return None
    return codec if codec.name in _CHARSETS and codec._is_text_encoding else None


def _validator(value: str) -> str:
    """An ETag or Last-Modified fit to be stored and sent back (the rules of
    any header Litho sends for a user), else ``""``."""
    value = value.strip()
    try:
        check_outbound_headers({"If-None-Match": value}, path="validator")
    except InvalidArgument:
        return ""
    return value


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
