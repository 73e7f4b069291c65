"""HTTP handlers: validate against the OpenAPI document, call gRPC, shape JSON."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from litho import rpc
from litho.errors import FieldError, InvalidArgument, LithoError
from litho.renderer.v1 import renderer_pb2
from litho.template.v1 import template_pb2
from services.gateway._formats import (
    data_sources_json,
    format_enum,
    options_from_json,
    render_json,
)
from services.gateway._problems import problem
from services.gateway._requests import integer, rfc3339
from services.gateway._state import caller, deps
from services.gateway._validation import body as json_body
from services.gateway._validation import query as query_of
from services.gateway._web import respond


def template_json(t: template_pb2.Template) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name, "html": t.html, "width": t.width, "height": t.height,
        "sampleVariables": json.loads(t.sample_variables_json or "{}"),
        "variables": json.loads(t.variable_definitions_json or "[]"),
        "discoveredVariables": list(t.discovered_variables),
        "tags": list(t.tags),
        "dataSources": json.loads(t.data_sources_json or "[]"),
        "version": t.version, "createdAt": rfc3339(t.create_time),
        "updatedAt": rfc3339(t.update_time),
    }


def _spec(body: dict[str, Any]) -> template_pb2.TemplateSpec:
    spec = template_pb2.TemplateSpec()
    if "name" in body:
        spec.name = body["name"]
    if "html" in body:
        spec.html = body["html"]
    if "width" in body:
        spec.width = integer(body["width"])
    if "height" in body:
        spec.height = integer(body["height"])
    if "sampleVariables" in body:
        spec.sample_variables_json = json.dumps(body["sampleVariables"])
    if "variables" in body:
        spec.variable_definitions_json = json.dumps(body["variables"])
    if "tags" in body:
        spec.tags.values.extend(body["tags"])
        spec.tags.SetInParent()  # present even when empty: [] clears the tags
    if "dataSources" in body:  # [] removes them
        spec.data_sources_json = json.dumps(body["dataSources"])
    return spec


async def create_template(request: web.Request) -> web.Response:
    body = json_body(request)
    response = await deps(request).templates.CreateTemplate(template_pb2.CreateTemplateRequest(
        tenant_id=caller(request).tenant_id, spec=_spec(body)))
    return web.json_response(template_json(response.template), status=201)


async def list_templates(request: web.Request) -> web.Response:
    page_size, page_token = _page_query(request)
    query = query_of(request)
    response = await deps(request).templates.ListTemplates(template_pb2.ListTemplatesRequest(
        tenant_id=caller(request).tenant_id, page_size=page_size, page_token=page_token,
        name_prefix=query.get("namePrefix", ""), tag=query.get("tag", "")))
    return web.json_response({
        "templates": [template_json(t) for t in response.templates],
        "nextPageToken": response.next_page_token or None,
    })


async def get_template(request: web.Request) -> web.Response:
    response = await deps(request).templates.GetTemplate(template_pb2.GetTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"]))
    return web.json_response(template_json(response.template))


def _page_query(request: web.Request) -> tuple[int, str]:
    query = query_of(request)
    return query.get("pageSize", 50), query.get("pageToken", "")


async def list_versions(request: web.Request) -> web.Response:
    page_size, page_token = _page_query(request)
    response = await deps(request).templates.ListTemplateVersions(
        template_pb2.ListTemplateVersionsRequest(
            tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
            page_size=page_size, page_token=page_token))
    return web.json_response({
        "versions": [template_json(t) for t in response.versions],
        "nextPageToken": response.next_page_token or None,
    })


async def validate_expression(request: web.Request) -> web.Response:
    body = json_body(request)
    message = (template_pb2.ValidateExpressionRequest(template=body["template"])
               if "template" in body
               else template_pb2.ValidateExpressionRequest(expression=body["expression"]))
    response = await deps(request).templates.ValidateExpression(message)
    out: dict[str, Any] = {
        "valid": response.valid,
        "errors": [{"message": e.message, "line": e.line, "column": e.column}
                   for e in response.errors],
    }
    if "template" in body:
        out["variables"] = list(response.variables)
    return web.json_response(out)


async def test_expression(request: web.Request) -> web.Response:
    body = json_body(request)
    response = await deps(request).templates.TestExpression(template_pb2.TestExpressionRequest(
        expression=body["expression"], variables_json=json.dumps(body.get("variables", {}))))
    return web.json_response({"result": json.loads(response.result_json),
                              "resultType": response.result_type})


async def list_functions(request: web.Request) -> web.Response:
    response = await deps(request).templates.ListFunctions(template_pb2.ListFunctionsRequest())
    return web.json_response({"functions": [
        {"name": f.name, "signature": f.signature, "description": f.description,
         "category": f.category, "example": f.example,
         "exampleVariables": json.loads(f.example_variables_json or "{}"),
         "exampleResult": json.loads(f.example_result_json or "null")}
        for f in response.functions
    ]})


async def update_template(request: web.Request) -> web.Response:
    body = json_body(request)
    response = await deps(request).templates.UpdateTemplate(template_pb2.UpdateTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        spec=_spec(body)))
    return web.json_response(template_json(response.template))


async def delete_template(request: web.Request) -> web.Response:
    await deps(request).templates.DeleteTemplate(template_pb2.DeleteTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"]))
    return web.Response(status=204)


async def render_template(request: web.Request) -> web.Response:
    body = json_body(request)
    fmt = body.get("format")
    alias = body.get("fileExtension")
    if fmt and alias and format_enum(fmt) != format_enum(alias):
        raise InvalidArgument("format and fileExtension disagree", errors=[
            FieldError("fileExtension", f"is an alias of format; {alias!r} != {fmt!r}")])
    response = await deps(request).renderer.RenderTemplate(renderer_pb2.RenderTemplateRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        version=integer(body.get("version", 0)),
        variables_json=json.dumps(body.get("variables", {})),
        format=format_enum(fmt or alias or "png"), options=options_from_json(body)))
    out = render_json(response, deps(request).image_url)
    out["dataSources"] = data_sources_json(response.data_sources)
    return web.json_response(out)


async def render_html(request: web.Request) -> web.Response:
    """``POST /v1/render``: a one-shot HTML document, no stored template."""
    body = json_body(request)
    response = await deps(request).renderer.RenderHtml(renderer_pb2.RenderHtmlRequest(
        tenant_id=caller(request).tenant_id, html=body["html"],
        width=integer(body["width"]), height=integer(body["height"]),
        variables_json=json.dumps(body.get("variables", {})),
        format=format_enum(body.get("format", "png")),
        # width and height are the document's own size here, not an override.
        options=options_from_json({k: v for k, v in body.items()
                                   if k not in ("width", "height")})))
    return web.json_response(render_json(response, deps(request).image_url))


async def render_pdf(request: web.Request) -> web.Response:
    """``POST /v1/templates/{id}/pdf``: one page per variable set, in one PDF."""
    body = json_body(request)
    response = await deps(request).renderer.RenderPdf(renderer_pb2.RenderPdfRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        version=integer(body.get("version", 0)),
        variable_sets_json=[json.dumps(v) for v in body["variableSets"]],
        options=options_from_json(body)))
    return web.json_response(render_json(response, deps(request).image_url))


async def get_openapi(request: web.Request) -> web.Response:
    """The document, with an ETag (304 on a match) and gzip when accepted:
    ``/docs`` loads it on every visit."""
    return respond(request, deps(request).openapi_file, cache_control="no-cache", headers={})


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
