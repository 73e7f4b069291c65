"""Fetching a data source: one request through the outbound guard, its answer
held to the binding limits and parsed as JSON.

Every failure is a :class:`FetchFailed` whose message says what went wrong in
words a tenant can act on (and names the setting when a limit was hit); a
refused address stays generic, as every outbound refusal in Litho does.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from litho import jsonlimits
from litho.errors import (
    OutboundDenied,
    OutboundError,
    OutboundTimeout,
    OutboundTooLarge,
    clip,
)
from litho.outbound import FetchResult, OutboundGuard
from services.binding._settings import DEFAULT_JSON_LIMITS

#: Media types read as JSON without a second thought.
_JSON_TYPES: Final = frozenset({"application/json", "text/json"})
#: Media types servers send for JSON files they know nothing about: read as
#: JSON when the body parses (as a missing Content-Type is).
_MAYBE_JSON_TYPES: Final = frozenset({"", "text/plain", "application/octet-stream"})
#: Charsets read as UTF-8 (JSON's only encoding between systems, RFC 8259).
_UTF8: Final = frozenset({"", "utf-8", "utf8", "us-ascii", "ascii"})
#: Answers larger than this are parsed off the event loop.
_PARSE_INLINE_BYTES: Final = 64 * 1024
#: Longest ETag or Last-Modified kept (they are sent back on the next fetch).
_MAX_VALIDATOR_CHARS: Final = 1000
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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


DENIED_TEXT: Final = (
    "the data source's address is not allowed: Litho does not fetch from private, "
    "loopback or other non-public addresses unless LITHO_OUTBOUND_ALLOW lists them")


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


class Fetcher:
    """Fetches data sources through ``guard`` within ``timeout`` seconds
    (``LITHO_BINDING_FETCH_TIMEOUT``) and ``max_bytes``
    (``LITHO_BINDING_MAX_DATA_BYTES``)."""

    def __init__(self, guard: OutboundGuard, *, timeout: float, max_bytes: int,
                 limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS) -> None:
        self._guard = guard
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._limits = limits

    async def fetch(self, request: SourceRequest, *, etag: str = "",
                    last_modified: str = "") -> Fetched:
        """Fetch and parse ``request``; conditional on ``etag`` /
        ``last_modified`` when given. Raises :class:`FetchFailed`."""
        started = time.perf_counter()
        result = await self._get(request, etag=etag, last_modified=last_modified)
        new_etag = _validator(result.headers.get("etag", ""))
        new_modified = _validator(result.headers.get("last-modified", ""))
        if result.status == 304:
            if not (etag or last_modified):
                raise FetchFailed("the source answered 304 Not Modified to a request that "
                                  "was not conditional", status=304)
            return Fetched(status=304, data=None, data_json="", data_hash="",
                           etag=new_etag or etag, last_modified=new_modified or last_modified,
                           not_modified=True, duration_ms=_since(started))
        if not 200 <= result.status < 300:
            raise FetchFailed(f"the source answered {result.status}", status=result.status)
        if len(result.body) > _PARSE_INLINE_BYTES:
            data = await asyncio.to_thread(self._parse, result)
        else:
            data = self._parse(result)
        text = canonical_json(data)
        return Fetched(status=result.status, data=data, data_json=text,
                       data_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                       etag=new_etag, last_modified=new_modified, not_modified=False,
                       duration_ms=_since(started))

    async def _get(self, request: SourceRequest, *, etag: str,
                   last_modified: str) -> FetchResult:
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
            return await self._guard.fetch(
                request.url, method=method, headers=headers, body=body,
                max_bytes=self._max_bytes, timeout=self._timeout,
                secret_headers=tuple(secret))
        except OutboundDenied as exc:
            raise FetchFailed(DENIED_TEXT, denied=True) from exc
        except OutboundTimeout as exc:
            raise FetchFailed(f"the source did not answer within {self._timeout:g} s "
                              "(LITHO_BINDING_FETCH_TIMEOUT)") from exc
        except OutboundTooLarge as exc:
            raise FetchFailed(f"the source's answer is larger than {self._max_bytes} bytes "
                              "(LITHO_BINDING_MAX_DATA_BYTES)") from exc
        except OutboundError as exc:
            raise FetchFailed(clip(exc.message, 300)) from exc
        except (UnicodeError, ValueError) as exc:
            # The guard refuses what it can parse; this backstop keeps an odd
            # URL or header a failed fetch, never a crash.
            raise FetchFailed(f"the request cannot be sent ({type(exc).__name__}): "
                              "check the URL and headers") from exc

    def _parse(self, result: FetchResult) -> Any:
        raw_type = result.headers.get("content-type", "")
        media, params = _media_type(raw_type)
        if not (media in _JSON_TYPES or media.endswith("+json") or media in _MAYBE_JSON_TYPES):
            raise FetchFailed(f"the source answered {clip(jsonlimits.safe_text(media), 100)}, "
                              "not JSON", status=result.status)
        text = _decode(result.body, params.get("charset", "").lower(), result.status)
        if not text.strip():
            raise FetchFailed("the source answered with an empty body, not JSON",
                              status=result.status)
        try:
            return jsonlimits.loads(text, self._limits)
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
        try:
            codec = codecs.lookup(charset)
        except LookupError:
            raise FetchFailed(f"the source's answer declares charset "
                              f"{clip(jsonlimits.safe_text(charset), 60)}, which is not known; "
                              "send UTF-8", status=status) from None
        try:
            return codec.decode(body)[0]
        except (UnicodeError, ValueError) as exc:
            raise FetchFailed(f"the source's answer is not valid {codec.name}",
                              status=status) from exc
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FetchFailed(f"the source's answer is not valid UTF-8 (at byte {exc.start})",
                          status=status) from exc


def _validator(value: str) -> str:
    """An ETag or Last-Modified fit to be stored and sent back, else ``""``."""
    if (len(value) > _MAX_VALIDATOR_CHARS or _CONTROL.search(value)
            or jsonlimits.has_surrogate(value)):
        return ""
    return value.strip()


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
