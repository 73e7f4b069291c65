"""Tracing and request ids, errors to problem+json, and Bearer authentication
(with each operation's scope, from ``_scopes.py``)."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from litho import telemetry
from litho.errors import LithoError, PermissionDenied, Unauthenticated
from litho.logs import get_logger
from services.gateway._problems import from_error, problem
from services.gateway._requests import check_url_text
from services.gateway._scopes import scope_needed
from services.gateway._state import API_KEY, MAX_BODY_BYTES, deps
from services.gateway._validation import operation_of

log = get_logger(__name__)

#: Routes without an API key: images are public by their unguessable content
#: hash, signed render URLs carry their own HMAC, and probes say only whether
#: the gateway (and what it needs) answers.
PUBLIC_PREFIXES = ("/images/", "/r/", "/openapi.json", "/healthz", "/livez", "/readyz")
#: A binding's image (its unguessable id is the credential) and its push
#: endpoint (the binding's push secret is): exactly these shapes, by method.
_PUBLIC_PATHS = (
    (frozenset({"GET", "HEAD"}), re.compile(r"/b/[^/]+")),
    (frozenset({"POST"}), re.compile(r"/b/[^/]+/push")),
    # An experiment's image and click URL: a tenant's public handle and a slug.
    (frozenset({"GET", "HEAD"}), re.compile(r"/s/[^/]+/[^/]+")),
    (frozenset({"GET"}), re.compile(r"/s/[^/]+/[^/]+/click")),
    # The pages for browsers and the files they load (services/gateway/_web.py).
    (frozenset({"GET", "HEAD"}), re.compile(r"/|/docs|/editor|/assets/.*")),
)


def is_public(method: str, path: str) -> bool:
    """Whether ``method path`` is answered without an API key."""
    if path.startswith(PUBLIC_PREFIXES):
        return True
    return any(method in methods and pattern.fullmatch(path)
               for methods, pattern in _PUBLIC_PATHS)


def tracing_middlewares(*, trust_client_trace: bool = False) -> list[Middleware]:
    """The outermost middlewares: a server span per request (a trace of its
    own: a client's ``traceparent`` is only linked, unless
    ``LITHO_GATEWAY_TRUST_CLIENT_TRACE``), and ``traceparent`` and
    ``X-Request-Id`` on every response, the problem+json ones included (they
    sit outside :func:`errors_middleware`)."""
    return telemetry.http_middlewares(trust_client_trace=trust_client_trace)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LithoError as exc:
        return from_error(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY_BYTES]
        return problem(413, f"the request body is larger than {limit} bytes "
                            "(LITHO_GATEWAY_MAX_BODY_BYTES)")
    except web.RequestPayloadError:
        # Raised while reading a body that its headers misdescribe (say
        # Content-Encoding: gzip over bytes that are not gzip): the client's
        # fault, whatever aiohttp's wording.
        return problem(400, "the request body could not be read: it does not match "
                            "its Content-Encoding or Transfer-Encoding")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason, headers={
            k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return problem(500, "internal error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_public(request.method, request.path):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    keys = deps(request).keys
    key = await keys.verify(token.strip())
    if key is None:
        raise Unauthenticated("invalid API key")
    operation = operation_of(request)
    # None: no route matched, and the handler answers 404 or 405.
    if operation is not None:
        needed = scope_needed(operation)
        if not key.allows(needed):
            raise PermissionDenied(
                f"this API key's scopes are {', '.join(sorted(key.scopes))}; "
                f"{operation} needs the '{needed}' scope")
    keys.used(key)
    request[API_KEY] = key
    return await handler(request)


@web.middleware
async def url_text_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every path segment and query parameter must be valid UTF-8 text."""
    check_url_text(request.raw_path)
    return await handler(request)
