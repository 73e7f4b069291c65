"""Every request is validated against the OpenAPI document before its handler
runs: the route's method and path name the operation, and that operation's
path and query parameters and JSON body are checked. Handlers read what was
checked (:func:`body`, :func:`query`), never the raw request."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from services.gateway._requests import read_json
from services.gateway._state import BODY, OPERATION, QUERY, deps


def operation_of(request: web.Request) -> str | None:
    """The operation id of the route ``request`` matched, or None when it
    matched none (aiohttp then answers 404 or 405)."""
    route = request.match_info.route
    resource = route.resource
    if resource is None or request.match_info.http_exception is not None:
        return None
    return deps(request).validator.operation_for(request.method, resource.canonical)


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    operation = operation_of(request)
    if operation is None:
        if request.match_info.http_exception is None:
            # A route the document does not describe: refused, never served
            # unvalidated (create_app makes this unreachable).
            raise web.HTTPNotFound()
        return await handler(request)
    validator = deps(request).validator
    query = validator.query_values(operation, request.query)
    values: dict[tuple[str, str], Any] = {("query", k): v for k, v in query.items()}
    values.update({("path", k): v for k, v in request.match_info.items()})
    validator.check_params(operation, values)
    request[OPERATION] = operation
    request[QUERY] = query
    if validator.has_body(operation):
        request[BODY] = await read_json(request, operation)
    return await handler(request)


def body(request: web.Request) -> dict[str, Any]:
    """The request's JSON body, validated against its operation's schema."""
    return request.get(BODY) or {}


def query(request: web.Request) -> dict[str, Any]:
    """The declared query parameters, typed and validated."""
    return request.get(QUERY) or {}
