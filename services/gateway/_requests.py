"""Reading requests: JSON bodies and parameters, validated against the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.gateway._state import deps


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON: no NaN or Infinity (Python's json accepts them), and a
    nesting too deep to parse is a client error, not a crash."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


async def json_body(request: web.Request, operation_id: str) -> dict[str, Any]:
    raw = await request.read()
    body: Any = None
    if raw.strip():
        try:
            body = parse_json(raw)
        except ValueError as exc:
            raise web.HTTPBadRequest(reason=f"the request body is not valid JSON: {exc}") from exc
    deps(request).validator.check_body(operation_id, body)
    return body if isinstance(body, dict) else {}


def check_path(request: web.Request, operation_id: str) -> None:
    deps(request).validator.check_params(
        operation_id, {("path", k): v for k, v in request.match_info.items()})


def integer(value: Any) -> int:
    """A JSON Schema ``integer`` may arrive as ``394.0``; protobuf wants an int."""
    return int(value)
