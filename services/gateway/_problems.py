"""RFC 9457 problem+json responses, and the one gRPC-status → HTTP mapping."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from litho.errors import LithoError, ResourceExhausted

HTTP_STATUS_BY_GRPC: dict[str, int] = {
    "INVALID_ARGUMENT": 422,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "FAILED_PRECONDITION": 409,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
}


_GENERIC_5XX = {
    503: "a service is unavailable; retry shortly",
    504: "the request took too long",
}


def http_status(grpc_status: str) -> int:
    return HTTP_STATUS_BY_GRPC.get(grpc_status, 500)


def problem(
    status: int,
    detail: str | None = None,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def from_error(exc: LithoError) -> web.Response:
    status = http_status(exc.status)
    if status >= 500:
        # 5xx bodies never carry internal text.
        return problem(status, _GENERIC_5XX.get(status, "internal error"))
    headers = None
    if isinstance(exc, ResourceExhausted):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="litho"'}
    return problem(status, exc.message, errors=[e.to_json() for e in exc.errors], headers=headers)
