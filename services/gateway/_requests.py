"""Reading requests: JSON bodies and parameters, validated against the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import BodyPartReader, web

from litho import jsonlimits
from litho.errors import FieldError, InvalidArgument
from services.gateway._state import deps

#: Bodies up to this size are parsed and checked on the event loop (well under
#: a millisecond); larger ones, which may take tens of milliseconds, in a thread.
_INLINE_BYTES = 64 * 1024
#: Bytes read at a time from a body stream.
_CHUNK = 64 * 1024


def parse_json(raw: bytes | str, limits: jsonlimits.JsonLimits) -> Any:
    """Strict JSON (no NaN or Infinity), within ``limits``: nesting, valid
    Unicode in every string and key, and the length of number literals.

    Raises ``InvalidArgument`` naming the first offending field, and
    ``ValueError`` for text that is not JSON at all."""
    try:
        return jsonlimits.loads(raw, limits)
    except jsonlimits.JsonLimitError as exc:
        field = exc.path or "body"
        raise InvalidArgument(f"the request body is invalid: {field} {exc.problem}",
                              errors=[FieldError(field, exc.problem)]) from None


async def read_json(request: web.Request, operation_id: str) -> dict[str, Any]:
    """Read, parse and check the JSON body of ``operation_id``'s request."""
    raw = await request.read()
    body: Any = None
    if raw.strip():
        limits = deps(request).json_limits
        try:
            if len(raw) <= _INLINE_BYTES:
                body = parse_json(raw, limits)
            else:
                body = await asyncio.to_thread(parse_json, raw, limits)
        except ValueError as exc:
            raise web.HTTPBadRequest(reason=f"the request body is not valid JSON: {exc}") from exc
    validator = deps(request).validator
    body = validator.fold_case(operation_id, body)
    validator.check_body(operation_id, body)
    return body if isinstance(body, dict) else {}


def check_url_text(raw_path: str) -> None:
    """Refuse a path or query whose percent-escapes are not UTF-8 (such as an
    encoded lone surrogate, ``%ED%A0%80``): decoded leniently they would turn
    into other text than the client sent, and a signature would cover neither."""
    path, _, query = raw_path.partition("?")
    if not _is_utf8(path):
        raise InvalidArgument("the URL path is not valid UTF-8 text",
                              errors=[FieldError("path", "is not valid UTF-8 text")])
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        if not (_is_utf8(name) and _is_utf8(value)):
            shown = jsonlimits.safe_text(
                unquote_to_bytes(jsonlimits.safe_text(name).replace("+", " "))
                .decode("utf-8", "replace"))
            raise InvalidArgument(
                f"the query parameter {shown!r} is not valid UTF-8 text",
                errors=[FieldError(shown, "is not valid UTF-8 text")])


def _is_utf8(encoded: str) -> bool:
    # A raw surrogate cannot arrive (aiohttp refuses non-ASCII request lines),
    # but a str built in-process may carry one; check it before encoding.
    if jsonlimits.has_surrogate(encoded):
        return False
    try:
        unquote_to_bytes(encoded.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def integer(value: Any) -> int:
    """A JSON Schema ``integer`` may arrive as ``394.0``; protobuf wants an int."""
    return int(value)


def rfc3339(ts: Any) -> str:
    """A protobuf Timestamp as the API writes times: UTC, milliseconds, ``Z``."""
    value: datetime = ts.ToDatetime()
    return value.isoformat(timespec="milliseconds") + "Z"


def optional_time(message: Any, name: str) -> str | None:
    """``message.<name>`` as :func:`rfc3339`, or None when the field is unset."""
    return rfc3339(getattr(message, name)) if message.HasField(name) else None


class TooLarge(Exception):
    """A body (or form part) passed the limit it was read with."""


async def read_limited(source: Any, limit: int) -> bytes:
    """Everything ``source`` (a body stream or a form part) gives, or
    :class:`TooLarge` as soon as it passes ``limit``; never more than one
    chunk past the limit is held."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if isinstance(source, BodyPartReader):
            chunk = await source.read_chunk(_CHUNK)
        else:
            chunk = await source.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)


def json_or(text: str, empty: Any) -> Any:
    """JSON text from a service (already checked there) as a value; ``empty``
    for no text."""
    return json.loads(text) if text else empty
