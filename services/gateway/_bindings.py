"""``/v1/bindings``, ``/v1/data-sources/test`` and the public ``/b/`` URLs:
the binding service's bindings translated to JSON (that service owns the
rules), a binding's image rendered by the renderer, and pushes.

Credentials are write-only: they go to the binding service and only their
type ever comes back. A binding's push secret is answered once, by create.
``/b/{id}.{ext}`` and ``/b/{id}/push`` need no API key: the unguessable id is
the image's credential, the push secret the push's.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from litho import formats
from litho.binding.v1 import binding_pb2 as pb
from litho.errors import FieldError, InvalidArgument, NotFound, Unauthenticated, Unavailable
from litho.renderer.v1 import renderer_pb2
from services.gateway._formats import (
    data_sources_header,
    format_enum,
    options_from_json,
    options_to_json,
    response_format,
    warnings_json,
)
from services.gateway._images import image_response
from services.gateway._problems import problem
from services.gateway._ratelimit import count_public_render
from services.gateway._requests import (
    TooLarge,
    integer,
    json_or,
    optional_time,
    parse_json,
    read_limited,
)
from services.gateway._signed import warnings_header
from services.gateway._state import caller, deps
from services.gateway._validation import body as json_body
from services.gateway._validation import query as query_of

if TYPE_CHECKING:
    from litho.binding.v1.binding_pb2_grpc import BindingServiceAsyncStub

#: ``/b/{bindingFile}``: a binding id and an image extension.
_IMAGE_FILE = re.compile(r"(bnd_[0-9a-f]{36})\.(png|jpg|jpeg|webp|pdf|gif)")
_NO_IMAGE = "no such binding image"
#: Pushed data up to this size is checked on the event loop, larger in a thread.
_INLINE_JSON_BYTES = 64 * 1024
#: The headers a push authenticates with (see the binding service).
SIGNATURE_HEADER = "X-Litho-Signature"
SECRET_HEADER = "X-Litho-Push-Secret"
_CREDENTIAL_FIELDS = (("token", "token"), ("username", "username"), ("password", "password"),
                      ("headerName", "header_name"), ("headerValue", "header_value"))


def _stub(request: web.Request) -> BindingServiceAsyncStub:
    stub = deps(request).bindings
    if stub is None:
        raise Unavailable("the binding service is not configured")
    return stub


# ---------------------------------------------------------------- JSON ----

def binding_json(b: pb.Binding, base_url: str, *, with_secret: bool = False
                 ) -> dict[str, Any]:
    """A binding as the API shows it: never its credentials, only their type;
    its push secret only when ``with_secret`` (the create answer)."""
    fmt = formats.by_enum(b.output.format) or formats.DEFAULT
    s = b.data_source
    source: dict[str, Any] = {"type": s.type}
    if s.type != "push":
        source.update(url=s.url, method=s.method or "GET", headers=dict(s.headers))
        if s.body:
            source["body"] = s.body
    if b.credentials_type:
        source["credentials"] = {"type": b.credentials_type}
    policy: dict[str, Any] = {"type": b.refresh_policy.type}
    if b.refresh_policy.ttl_seconds:
        policy["ttlSeconds"] = b.refresh_policy.ttl_seconds
    if b.refresh_policy.cron:
        policy["cron"] = b.refresh_policy.cron
    policy["onError"] = b.refresh_policy.on_error or "serve_stale"
    out: dict[str, Any] = {
        "id": b.id, "name": b.name, "templateId": b.template_id, "dataSource": source,
        "mapping": dict(b.mapping), "defaults": json_or(b.defaults_json, {}),
        "refreshPolicy": policy,
        "output": {"format": fmt.name, **options_to_json(b.output.options)},
        "status": b.status, "lastError": b.last_error or None,
        "lastErrorAt": optional_time(b, "last_error_time"),
        "fetchedAt": optional_time(b, "fetch_time"),
        "nextRefreshAt": optional_time(b, "next_refresh_time"),
        "dataHash": b.data_hash or None,
        "createdAt": optional_time(b, "create_time"),
        "updatedAt": optional_time(b, "update_time"),
        "imageUrl": f"{base_url}/b/{b.id}.{fmt.extension}",
    }
    if s.type == "push":
        out["pushUrl"] = f"{base_url}/b/{b.id}/push"
        if with_secret and b.push_secret:
            out["pushSecret"] = b.push_secret
    return out



def data_source(value: dict[str, Any]) -> pb.DataSource:
    """A (schema-checked) ``dataSource`` object as the proto message."""
    message = pb.DataSource(type=value.get("type", ""), url=value.get("url", ""),
                            method=value.get("method", ""), headers=value.get("headers", {}),
                            body=value.get("body", ""))
    credentials = value.get("credentials")
    if isinstance(credentials, dict):
        message.credentials.CopyFrom(pb.Credentials(
            type=credentials.get("type", ""),
            **{field: credentials.get(name, "") for name, field in _CREDENTIAL_FIELDS}))
    return message


def binding_spec(body: dict[str, Any]) -> pb.BindingSpec:
    """The fields a (schema-checked) create or update body gives; what it
    leaves out stays unset, so an update keeps it."""
    spec = pb.BindingSpec()
    if "name" in body:
        spec.name = body["name"]
    if "templateId" in body:
        spec.template_id = body["templateId"]
    if "dataSource" in body:
        source = body["dataSource"]
        spec.data_source.CopyFrom(data_source(source))
        # Absent credentials keep the stored ones; null removes them.
        spec.clear_credentials = "credentials" in source and source["credentials"] is None
    if "mapping" in body:
        spec.mapping.update(body["mapping"])
        spec.has_mapping = True
    if "defaults" in body:
        spec.defaults_json = json.dumps(body["defaults"])
    if "refreshPolicy" in body:
        policy = body["refreshPolicy"]
        spec.refresh_policy.CopyFrom(pb.RefreshPolicy(
            type=policy.get("type", ""), ttl_seconds=integer(policy.get("ttlSeconds", 0)),
            cron=policy.get("cron", ""), on_error=policy.get("onError", "")))
    if "output" in body:
        spec.output.CopyFrom(binding_output(body["output"]))
    return spec


def binding_output(value: dict[str, Any]) -> pb.BindingOutput:
    """``output``: a format (unset: the binding service's default, png) and
    the render options of ``POST /v1/templates/{id}/render``."""
    fmt = value.get("format")
    return pb.BindingOutput(
        format=format_enum(fmt) if fmt else renderer_pb2.IMAGE_FORMAT_UNSPECIFIED,
        options=options_from_json({k: v for k, v in value.items() if k != "format"}))


def _data_json(r: pb.GetBindingDataResponse) -> dict[str, Any]:
    return {
        "data": json_or(r.data_json, None), "variables": json_or(r.variables_json, None),
        "fetchedAt": optional_time(r, "fetch_time"), "etag": r.etag or None,
        "lastModified": r.last_modified or None, "status": r.status,
        "lastError": r.last_error or None, "lastErrorAt": optional_time(r, "last_error_time"),
        "dataHash": r.data_hash or None, "source": r.source or "none",
    }


# ------------------------------------------------------------- handlers ----

def _ids(request: web.Request) -> tuple[str, str]:
    return caller(request).tenant_id, request.match_info["bindingId"]


async def create_binding(request: web.Request) -> web.Response:
    response = await _stub(request).CreateBinding(pb.CreateBindingRequest(
        tenant_id=caller(request).tenant_id, spec=binding_spec(json_body(request))))
    out = binding_json(response.binding, deps(request).base_url, with_secret=True)
    return web.json_response(out, status=201, headers={"Location": f"/v1/bindings/{out['id']}"})


async def list_bindings(request: web.Request) -> web.Response:
    query = query_of(request)
    response = await _stub(request).ListBindings(pb.ListBindingsRequest(
        tenant_id=caller(request).tenant_id, page_size=query.get("pageSize", 50),
        page_token=query.get("pageToken", ""), template_id=query.get("templateId", ""),
        status=query.get("status", "")))
    base = deps(request).base_url
    return web.json_response({"bindings": [binding_json(b, base) for b in response.bindings],
                              "nextPageToken": response.next_page_token or None})


async def get_binding(request: web.Request) -> web.Response:
    tenant, binding = _ids(request)
    response = await _stub(request).GetBinding(pb.GetBindingRequest(
        tenant_id=tenant, binding_id=binding))
    return web.json_response(binding_json(response.binding, deps(request).base_url))


async def update_binding(request: web.Request) -> web.Response:
    tenant, binding = _ids(request)
    response = await _stub(request).UpdateBinding(pb.UpdateBindingRequest(
        tenant_id=tenant, binding_id=binding, spec=binding_spec(json_body(request))))
    # An update that makes a push binding answers its new secret, this once.
    return web.json_response(binding_json(response.binding, deps(request).base_url,
                                          with_secret=True))


async def delete_binding(request: web.Request) -> web.Response:
    tenant, binding = _ids(request)
    await _stub(request).DeleteBinding(pb.DeleteBindingRequest(
        tenant_id=tenant, binding_id=binding))
    return web.Response(status=204)


async def pause_binding(request: web.Request) -> web.Response:
    tenant, binding = _ids(request)
    response = await _stub(request).PauseBinding(pb.PauseBindingRequest(
        tenant_id=tenant, binding_id=binding))
    return web.json_response(binding_json(response.binding, deps(request).base_url))


async def resume_binding(request: web.Request) -> web.Response:
    tenant, binding = _ids(request)
    response = await _stub(request).ResumeBinding(pb.ResumeBindingRequest(
        tenant_id=tenant, binding_id=binding))
    return web.json_response(binding_json(response.binding, deps(request).base_url))


async def refresh_binding(request: web.Request) -> web.Response:
    tenant, binding = _ids(request)
    response = await _stub(request).RefreshBinding(pb.RefreshBindingRequest(
        tenant_id=tenant, binding_id=binding))
    return web.json_response({"binding": binding_json(response.binding,
                                                      deps(request).base_url),
                              "changed": response.changed})


async def get_binding_data(request: web.Request) -> web.Response:
    tenant, binding = _ids(request)
    response = await _stub(request).GetBindingData(pb.GetBindingDataRequest(
        tenant_id=tenant, binding_id=binding))
    return web.json_response(_data_json(response))


async def preview_binding(request: web.Request) -> web.Response:
    """``POST /v1/bindings/preview``: map a source's data (or sample data) and
    render the template with the variables; nothing about the binding is saved."""
    body = json_body(request)
    tenant = caller(request).tenant_id
    message = pb.PreviewBindingRequest(
        tenant_id=tenant, template_id=body["templateId"], mapping=body["mapping"],
        defaults_json=json.dumps(body["defaults"]) if "defaults" in body else "")
    if "dataSource" in body:
        message.data_source.CopyFrom(data_source(body["dataSource"]))
    else:
        message.sample_data_json = json.dumps(body["sampleData"])
    preview = await _stub(request).PreviewBinding(message)
    output = binding_output(body.get("output", {}))
    render = await deps(request).renderer.RenderTemplate(renderer_pb2.RenderTemplateRequest(
        tenant_id=tenant, template_id=body["templateId"],
        variables_json=preview.variables_json,
        format=output.format or formats.DEFAULT.enum, options=output.options))
    fmt = response_format(render.format)
    return web.json_response({
        "variables": json_or(preview.variables_json, {}),
        "data": json_or(preview.data_json, None),
        "imageUrl": deps(request).image_url(render.render_id, fmt.extension),
        "width": render.width, "height": render.height, "cached": render.cached,
        "warnings": warnings_json(render),
    })


async def test_data_source(request: web.Request) -> web.Response:
    """``POST /v1/data-sources/test``: one fetch through the guard, nothing saved."""
    response = await _stub(request).TestDataSource(pb.TestDataSourceRequest(
        tenant_id=caller(request).tenant_id, data_source=data_source(json_body(request))))
    return web.json_response({
        "success": response.success, "status": response.status,
        "data": json_or(response.data_json, None),
        "durationMs": round(response.duration_ms, 3), "error": response.error or None,
    })


# -------------------------------------------------- public, without a key ----

def _header_text(request: web.Request, name: str) -> str:
    """A push credential header: printable ASCII or refused (aiohttp decodes
    bytes that are not UTF-8 to lone surrogates, which protobuf cannot carry)."""
    value = request.headers.get(name, "")
    if value and not (value.isascii() and value.isprintable()):
        raise Unauthenticated("the push signature or secret is invalid")
    return value


async def push_binding_data(request: web.Request) -> web.Response:
    """``POST /b/{bindingId}/push``: JSON for a push binding, authenticated by
    its push secret (an HMAC-SHA256 signature of the body, or the secret)."""
    limit = deps(request).binding_max_push_bytes
    signature = _header_text(request, SIGNATURE_HEADER)
    secret = _header_text(request, SECRET_HEADER)
    try:
        if (request.content_length or 0) > limit:
            raise TooLarge()
        data = await read_limited(request.content, limit)
    except TooLarge:
        return problem(413, f"the pushed data is larger than {limit} bytes "
                            "(LITHO_BINDING_MAX_PUSH_BYTES)")
    await _check_json(request, data)
    response = await _stub(request).PushBindingData(pb.PushBindingDataRequest(
        binding_id=request.match_info["bindingId"], body=data, signature=signature,
        secret=secret))
    return web.json_response({"changed": response.changed, "dataHash": response.data_hash})


async def _check_json(request: web.Request, data: bytes) -> None:
    """The edge's one JSON check (strict, within the JSON limits) on pushed
    data; the bytes themselves go on as they came, since the signature covers them."""
    if not data.strip():
        raise InvalidArgument("the pushed data is empty: send a JSON value",
                              errors=[FieldError("body", "is required")])
    limits = deps(request).json_limits
    try:
        if len(data) <= _INLINE_JSON_BYTES:
            parse_json(data, limits)
        else:
            await asyncio.to_thread(parse_json, data, limits)
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=f"the pushed data is not valid JSON: {exc}") from exc


async def get_binding_image(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /b/{bindingId}.{ext}``: the image of the binding's current
    data, cacheable until the data goes stale; an ETag of its render id."""
    found = _IMAGE_FILE.fullmatch(request.match_info["bindingFile"])
    if found is None:
        raise NotFound(_NO_IMAGE)  # no id of ours: no call
    binding_id, ext = found.groups()
    fmt = formats.parse(ext)
    assert fmt is not None  # the pattern lists only known spellings
    response = await deps(request).renderer.RenderBinding(renderer_pb2.RenderBindingRequest(
        binding_id=binding_id, format=fmt.enum))
    render = response.render
    if render.rendered:
        # A render this view caused counts in the owner's month (the owner is
        # known only now, so it is counted after; over the quota, a 429).
        await count_public_render(request, response.tenant_id)
    warnings = render.warnings
    if warnings:
        # As for signed URLs: an output an asset was missing from is never kept.
        cache_control = "no-store"
    elif render.data_sources:
        # The template's own sources have freshness of their own: ask again.
        cache_control = "public, no-cache"
    elif response.HasField("fresh_until"):
        left = response.fresh_until.ToNanoseconds() / 1e9 - time.time()
        cache_control = f"public, max-age={max(0, math.floor(left))}"
    else:
        cache_control = "no-cache"
    answer = await image_response(request, render.render_id,
                                  response_format(render.format).extension,
                                  cache_control=cache_control, etag=f'"{render.render_id}"')
    if answer is None:
        raise NotFound("the rendered image disappeared; retry")
    # Whether this GET found the image already rendered (after a change of
    # data, the renderer renders it at once, so it usually has).
    answer.headers["Litho-Cache"] = "hit" if render.cached else "miss"
    if warnings:
        answer.headers["Litho-Warnings"] = warnings_header(warnings)
    sources = data_sources_header(render.data_sources)
    if sources:
        answer.headers["Litho-Data-Sources"] = sources
    return answer
