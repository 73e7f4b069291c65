"""Handlers for signed on-the-fly render URLs (see ``_signing`` for the scheme)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from litho import formats
from litho.errors import FieldError, InvalidArgument, NotFound, PermissionDenied
from litho.renderer.v1 import renderer_pb2
from services.gateway import _signing
from services.gateway._formats import (
    data_sources_header,
    parse_format,
    response_format,
    stored_output_only,
)
from services.gateway._images import image_response
from services.gateway._ratelimit import public_render
from services.gateway._state import caller, deps
from services.gateway._validation import body as json_body

_DENIED = "this URL's signature is missing, invalid or expired"
_SIG = re.compile(r"[0-9a-fA-F]{64}")


async def create_signed_url(request: web.Request) -> web.Response:
    """``POST /v1/signed-urls``: sign a render URL with the caller's key."""
    body = json_body(request)
    key = caller(request)
    ext = parse_format(body.get("format", formats.DEFAULT.name)).extension
    variables = body.get("variables", {})
    params = _signing.flatten(variables)
    # Refuse here what the render URL would refuse (unflatten raises) or read
    # back differently (a dotted name would become a nested object).
    if not _round_trips(variables, params):
        raise InvalidArgument(
            "these variables cannot travel in a URL: names must not contain dots or be empty",
            errors=[FieldError("variables", "names must not contain dots or be empty")])
    params.append(("kid", key.key_id))
    expires_at: int | None = None
    if "expiresIn" in body:
        expires_at = int(time.time()) + int(body["expiresIn"])
    elif "expiresAt" in body:
        expires_at = int(body["expiresAt"])
        now = int(time.time())
        if expires_at <= now:
            # A URL that is refused from its first use is a mistake, not a URL.
            raise InvalidArgument(
                f"expiresAt {expires_at} is in the past (now {now}): the URL would never work",
                errors=[FieldError("expiresAt", f"must be later than now ({now}, Unix seconds)")])
    if expires_at is not None:
        params.append(("exp", str(expires_at)))
    path = f"/r/{body['templateId']}.{ext}"
    sig = _signing.sign(key.signing_secret, path, params)
    return web.json_response({
        "url": f"{deps(request).base_url}{path}?{_signing.canonical_query(params)}&sig={sig}",
        "expiresAt": expires_at,
    }, status=201)


def _round_trips(variables: dict[str, Any], params: list[tuple[str, str]]) -> bool:
    """Whether the URL form reads back as the same shape (values become text)."""

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        return None

    return bool(shape(_signing.unflatten(params)) == shape(variables))


async def get_signing_key(request: web.Request) -> web.Response:
    """``GET /v1/signing-key``: what a client needs to sign URLs itself."""
    key = caller(request)
    return web.json_response({"keyId": key.key_id, "secret": key.signing_secret,
                              "webhookSecret": _signing.batch_webhook_secret(key.signing_secret)})


async def render_signed(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /r/{templateId}.{ext}?…&kid=&exp=&sig=``: render on the fly."""
    template_id, _, ext = request.match_info["file"].rpartition(".")
    params = list(request.query.items())
    names = [k for k, _ in params]
    if len(names) != len(set(names)):
        raise InvalidArgument("a query parameter is repeated",
                              errors=[FieldError("query", "each parameter at most once")])
    query = dict(params)
    if not _SIG.fullmatch(query.get("sig", "")):
        raise PermissionDenied(_DENIED)
    key = await deps(request).keys.by_key_id(query.get("kid", ""))
    if key is None or not _signing.signature_matches(
        key.signing_secret, request.path, params, query["sig"]
    ):
        raise PermissionDenied(_DENIED)
    if "exp" in query:
        try:
            expired = int(query["exp"]) < time.time()
        except ValueError:
            expired = True
        if expired:
            raise PermissionDenied(_DENIED)
    variables: dict[str, Any] = _signing.unflatten(params)
    render_request = renderer_pb2.RenderTemplateRequest(
        tenant_id=key.tenant_id, template_id=template_id,
        variables_json=json.dumps(variables), format=parse_format(ext, "file").enum,
        variables_from_query=True)
    # Only past the signature: a render a view causes counts as one of the
    # signing tenant's month (not a view of an image already rendered). A
    # view takes none of the tenant's request rate: a popular og:image that
    # crawlers fetch must not starve the tenant's API calls, and each signed
    # variable set renders once.
    response = await public_render(
        request, key.tenant_id,
        lambda stored_only: deps(request).renderer.RenderTemplate(
            stored_output_only(render_request) if stored_only else render_request),
        new=lambda r: r.rendered)
    # An output with warnings (an asset did not load) must not be kept by a
    # CDN or browser: once the cause is fixed, the same URL renders it right.
    warnings = response.warnings
    if warnings:
        cache_control = "no-store"
    elif response.data_sources:
        # The image follows live data: caches ask again every time (a 304
        # by ETag while the data is unchanged), never keep it for an hour.
        cache_control = "public, no-cache"
    else:
        cache_control = deps(request).signed_cache_control
    found = await image_response(request, response.render_id,
                                 response_format(response.format).extension,
                                 cache_control=cache_control)
    if found is None:
        raise NotFound("the rendered image disappeared; retry")
    if warnings:
        found.headers["Litho-Warnings"] = warnings_header(warnings)
    sources = data_sources_header(response.data_sources)
    if sources:
        found.headers["Litho-Data-Sources"] = sources
    return found


def warnings_header(warnings: Sequence[renderer_pb2.AssetWarning]) -> str:
    """A short, header-safe summary: how many assets did not load, and the
    first one's outcome and hint (its URL is the template's, so it is left out)."""
    first = warnings[0]
    text = f"{len(warnings)} asset(s) did not load; first: {first.outcome}: {first.hint}"
    return text.encode("ascii", "replace").decode()[:300]
