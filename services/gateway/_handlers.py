"""HTTP handlers: validate against the OpenAPI document, call gRPC, shape JSON."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from litho import renders, rpc
from litho.errors import FieldError, InvalidArgument, LithoError, NotFound
from litho.renderer.v1 import renderer_pb2
from litho.template.v1 import template_pb2
from services.gateway._problems import problem
from services.gateway._state import caller, deps

_FORMATS = {"png": renderer_pb2.IMAGE_FORMAT_PNG, "jpeg": renderer_pb2.IMAGE_FORMAT_JPEG,
            "jpg": renderer_pb2.IMAGE_FORMAT_JPEG}
_FORMAT_NAMES = {renderer_pb2.IMAGE_FORMAT_PNG: "png", renderer_pb2.IMAGE_FORMAT_JPEG: "jpeg"}
_IMMUTABLE = "public, max-age=31536000, immutable"


async def _json_body(request: web.Request, operation_id: str) -> dict[str, Any]:
    raw = await request.read()
    body: Any = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise web.HTTPBadRequest(reason=f"the request body is not valid JSON: {exc}") from exc
    deps(request).validator.check_body(operation_id, body)
    return body if isinstance(body, dict) else {}


def _check_path(request: web.Request, operation_id: str) -> None:
    deps(request).validator.check_params(
        operation_id, {("path", k): v for k, v in request.match_info.items()})


def _timestamp(ts: Any) -> str:
    value: datetime = ts.ToDatetime()
    return value.isoformat(timespec="milliseconds") + "Z"


def template_json(t: template_pb2.Template) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name, "html": t.html, "width": t.width, "height": t.height,
        "sampleVariables": json.loads(t.sample_variables_json or "{}"),
        "version": t.version, "createdAt": _timestamp(t.create_time),
        "updatedAt": _timestamp(t.update_time),
    }


def _spec(body: dict[str, Any]) -> template_pb2.TemplateSpec:
    spec = template_pb2.TemplateSpec()
    for key, attr in (("name", "name"), ("html", "html"), ("width", "width"),
                      ("height", "height")):
        if key in body:
            setattr(spec, attr, body[key])
    if "sampleVariables" in body:
        spec.sample_variables_json = json.dumps(body["sampleVariables"])
    return spec


async def create_template(request: web.Request) -> web.Response:
    body = await _json_body(request, "createTemplate")
    response = await deps(request).templates.CreateTemplate(template_pb2.CreateTemplateRequest(
        tenant_id=caller(request).tenant_id, spec=_spec(body)))
    return web.json_response(template_json(response.template), status=201)


async def list_templates(request: web.Request) -> web.Response:
    query: dict[tuple[str, str], Any] = {}
    if "pageSize" in request.query:
        try:
            query[("query", "pageSize")] = int(request.query["pageSize"])
        except ValueError as exc:
            raise InvalidArgument("pageSize must be an integer",
                                  errors=[FieldError("pageSize", "must be an integer")]) from exc
    if "pageToken" in request.query:
        query[("query", "pageToken")] = request.query["pageToken"]
    deps(request).validator.check_params("listTemplates", query)
    response = await deps(request).templates.ListTemplates(template_pb2.ListTemplatesRequest(
        tenant_id=caller(request).tenant_id, page_size=query.get(("query", "pageSize"), 50),
        page_token=query.get(("query", "pageToken"), "")))
    return web.json_response({
        "templates": [template_json(t) for t in response.templates],
        "nextPageToken": response.next_page_token or None,
    })


async def get_template(request: web.Request) -> web.Response:
    _check_path(request, "getTemplate")
    response = await deps(request).templates.GetTemplate(template_pb2.GetTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"]))
    return web.json_response(template_json(response.template))


async def update_template(request: web.Request) -> web.Response:
    _check_path(request, "updateTemplate")
    body = await _json_body(request, "updateTemplate")
    response = await deps(request).templates.UpdateTemplate(template_pb2.UpdateTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        spec=_spec(body)))
    return web.json_response(template_json(response.template))


async def delete_template(request: web.Request) -> web.Response:
    _check_path(request, "deleteTemplate")
    await deps(request).templates.DeleteTemplate(template_pb2.DeleteTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"]))
    return web.Response(status=204)


async def render_template(request: web.Request) -> web.Response:
    operation = request.match_info.route.name or "renderTemplate"
    _check_path(request, operation)
    body = await _json_body(request, operation)
    fmt = body.get("format")
    alias = body.get("fileExtension")
    if fmt and alias and _FORMATS[fmt] != _FORMATS[alias]:
        raise InvalidArgument("format and fileExtension disagree", errors=[
            FieldError("fileExtension", f"is an alias of format; {alias!r} != {fmt!r}")])
    response = await deps(request).renderer.RenderTemplate(renderer_pb2.RenderTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        version=body.get("version", 0), variables_json=json.dumps(body.get("variables", {})),
        format=_FORMATS[fmt or alias or "png"]))
    ext = _FORMAT_NAMES[response.format]
    return web.json_response({
        "url": f"{deps(request).base_url}/images/{response.render_id}.{ext}",
        "id": response.render_id, "width": response.width, "height": response.height,
        "format": ext, "cached": response.cached, "templateVersion": response.template_version,
    })


async def get_image(request: web.Request) -> web.StreamResponse:
    name = request.match_info["imageFile"]
    render_id, _, ext = name.partition(".")
    if not renders.is_render_id(render_id) or ext not in renders.CONTENT_TYPES:
        raise NotFound("no such image")
    blobs = deps(request).blobs
    key = renders.blob_key(render_id, ext)
    if request.method == "HEAD":
        info = await blobs.head(key)
        data = b""
    else:
        blob = await blobs.get(key)
        info, data = (blob.info, blob.data) if blob else (None, b"")
    if info is None:
        raise NotFound("no such image")
    headers = {"ETag": info.etag, "Cache-Control": _IMMUTABLE}
    if _etag_matches(request.headers.get("If-None-Match", ""), info.etag):
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(info.size)
        return web.Response(status=200, headers={**headers, "Content-Type": info.content_type})
    return web.Response(body=data, content_type=info.content_type, headers=headers)


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip() for c in header.split(",")]
    bare = etag.removeprefix("W/")
    return "*" in candidates or any(c.removeprefix("W/") == bare for c in candidates)


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(deps(request).openapi)


async def get_health(request: web.Request) -> web.Response:
    problems = []
    for name, channel in deps(request).backends.items():
        try:
            await rpc.wait_healthy(channel, timeout=2)
        except LithoError:
            problems.append(name)
    if problems:
        return problem(503, "not ready: " + ", ".join(problems))
    return web.json_response({"status": "serving"})
