"""gRPC translation for the template service: proto in, domain call, proto out."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from litho.errors import FailedPrecondition, FieldError
from litho.jsonlimits import JsonLimits
from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc
from services.template._copilot import Applied, NewTemplate, Step
from services.template._copilot_plans import step_ref
from services.template._copilots import Copilot
from services.template._data_sources import MAX_SOURCES_SETTING, max_json_bytes
from services.template._fonts import Font, FontLibrary
from services.template._model import (
    DEFAULT_JSON_LIMITS,
    Spec,
    Template,
    parse_json_list,
    parse_json_object,
)
from services.template._service import Templates


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def template_to_proto(t: Template) -> pb.Template:
    return pb.Template(
        id=t.id, tenant_id=t.tenant_id, name=t.name, html=t.html, width=t.width,
        height=t.height, sample_variables_json=json.dumps(t.sample_variables),
        version=t.version, create_time=_timestamp(t.create_time),
        update_time=_timestamp(t.update_time),
        variable_definitions_json=json.dumps(t.variable_definitions),
        discovered_variables=t.input_variables, tags=t.tags,
        data_sources_json=json.dumps(t.data_sources),
    )


def font_to_proto(f: Font) -> pb.Font:
    return pb.Font(
        id=f.id, tenant_id=f.tenant_id, family=f.family, weight=f.weight, style=f.style,
        format=f.format, sha256=f.sha256, size_bytes=f.size, blob_key=f.blob_key,
        create_time=_timestamp(f.create_time), full_name=f.full_name, file_name=f.file_name,
    )


_POSITION = re.compile(r"^line (\d+), column (\d+): ")


def source_errors(errors: list[FieldError]) -> list[pb.SourceError]:
    out = []
    for e in errors:
        match = _POSITION.match(e.message)
        line, column = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        out.append(pb.SourceError(message=e.message, line=line, column=column))
    return out


def spec_from_proto(
    spec: pb.TemplateSpec, *, max_variables_bytes: int,
    json_limits: JsonLimits = DEFAULT_JSON_LIMITS, max_data_sources: int = 5,
) -> Spec:
    return Spec(
        name=spec.name if spec.HasField("name") else None,
        html=spec.html if spec.HasField("html") else None,
        width=spec.width if spec.HasField("width") else None,
        height=spec.height if spec.HasField("height") else None,
        sample_variables=(
            parse_json_object(spec.sample_variables_json, field="sampleVariables",
                              max_bytes=max_variables_bytes, json_limits=json_limits)
            if spec.HasField("sample_variables_json")
            else None
        ),
        variable_definitions=(
            parse_json_list(spec.variable_definitions_json, field="variables",
                            max_bytes=max_variables_bytes, json_limits=json_limits)
            if spec.HasField("variable_definitions_json")
            else None
        ),
        tags=list(spec.tags.values) if spec.HasField("tags") else None,
        data_sources=(
            parse_json_list(spec.data_sources_json, field="dataSources",
                            max_bytes=max_json_bytes(max_data_sources),
                            json_limits=json_limits, setting=MAX_SOURCES_SETTING)
            if spec.HasField("data_sources_json")
            else None
        ),
    )


class TemplateServicer(pb_grpc.TemplateServiceServicer):
    def __init__(
        self, templates: Templates, *, max_variables_bytes: int,
        json_limits: JsonLimits = DEFAULT_JSON_LIMITS, fonts: FontLibrary | None = None,
        max_data_sources: int = 5, copilot: Copilot | None = None,
    ) -> None:
        self._templates = templates
        self._fonts = fonts
        self._copilot = copilot
        self._max_variables = max_variables_bytes
        self._json_limits = json_limits
        self._max_data_sources = max_data_sources

    def _spec(self, spec: pb.TemplateSpec) -> Spec:
        return spec_from_proto(spec, max_variables_bytes=self._max_variables,
                               json_limits=self._json_limits,
                               max_data_sources=self._max_data_sources)

    async def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateTemplateResponse:
        spec = self._spec(request.spec)
        template = await self._templates.create(request.tenant_id, spec)
        return pb.CreateTemplateResponse(template=template_to_proto(template))

    async def GetTemplate(
        self, request: pb.GetTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTemplateResponse:
        template = await self._templates.get(request.tenant_id, request.template_id)
        return pb.GetTemplateResponse(template=template_to_proto(template))

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTemplatesResponse:
        items, token = await self._templates.list_templates(
            request.tenant_id, request.page_size, request.page_token,
            name_prefix=request.name_prefix, tag=request.tag,
        )
        return pb.ListTemplatesResponse(
            templates=[template_to_proto(t) for t in items], next_page_token=token
        )

    async def UpdateTemplate(
        self, request: pb.UpdateTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateTemplateResponse:
        spec = self._spec(request.spec)
        template = await self._templates.update(request.tenant_id, request.template_id, spec)
        return pb.UpdateTemplateResponse(template=template_to_proto(template))

    async def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteTemplateResponse:
        await self._templates.delete(request.tenant_id, request.template_id)
        if self._copilot is not None:
            await self._copilot.forget(request.tenant_id, request.template_id)
        return pb.DeleteTemplateResponse()

    async def ListTemplateVersions(
        self, request: pb.ListTemplateVersionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTemplateVersionsResponse:
        items, token = await self._templates.versions(
            request.tenant_id, request.template_id, request.page_size, request.page_token)
        return pb.ListTemplateVersionsResponse(
            versions=[template_to_proto(t) for t in items], next_page_token=token)

    async def ValidateExpression(
        self, request: pb.ValidateExpressionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidateExpressionResponse:
        which = request.WhichOneof("source")
        result = await self._templates.validate(
            expression=request.expression if which == "expression" else None,
            template=request.template if which == "template" else None,
        )
        return pb.ValidateExpressionResponse(
            valid=not result.errors, errors=source_errors(result.errors),
            variables=result.variables)

    async def TestExpression(
        self, request: pb.TestExpressionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TestExpressionResponse:
        value, kind = await self._templates.test(request.expression, request.variables_json)
        return pb.TestExpressionResponse(result_json=json.dumps(value), result_type=kind)

    async def ListFunctions(
        self, request: pb.ListFunctionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListFunctionsResponse:
        return pb.ListFunctionsResponse(functions=[
            pb.FunctionInfo(
                name=f.name, signature=f.signature, description=f.description,
                category=f.category, example=f.example,
                example_variables_json=json.dumps(f.example_variables),
                example_result_json=json.dumps(f.example_result),
            )
            for f in self._templates.functions()
        ])

    async def ExpandTemplate(
        self, request: pb.ExpandTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ExpandTemplateResponse:
        if request.HasField("inline"):
            spec = self._spec(request.inline)
            result = await self._templates.expand_inline(
                request.tenant_id, spec, request.variables_json)
        else:
            result = await self._templates.expand(
                request.tenant_id, request.template_id, request.version,
                request.variables_json, coerce=request.coerce_strings,
                data_json=request.data_json,
                known={k.name: (k.key, k.data_json) for k in request.known_data_sources},
            )
        return pb.ExpandTemplateResponse(
            template_id=result.template.id, version=result.template.version,
            html=result.html, width=result.template.width, height=result.template.height,
            fonts=[font_to_proto(f) for f in result.fonts],
            pending_data_sources=[
                pb.PendingDataSource(name=p.name, url=p.url, method=p.method,
                                     headers=p.headers, body=p.body,
                                     ttl_seconds=p.ttl_seconds)
                for p in result.pending],
            known_data_sources_used=result.known_used,
        )

    async def EvaluateMapping(
        self, request: pb.EvaluateMappingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EvaluateMappingResponse:
        variables_json = await self._templates.evaluate_mapping(
            request.mapping, request.data_json, check_only=request.check_only)
        return pb.EvaluateMappingResponse(variables_json=variables_json)

    def _library(self) -> FontLibrary:
        if self._fonts is None:
            raise FailedPrecondition("this template service stores no fonts")
        return self._fonts

    async def CreateFont(
        self, request: pb.CreateFontRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateFontResponse:
        font = await self._library().create(
            request.tenant_id, request.data, file_name=request.file_name,
            family=request.family)
        return pb.CreateFontResponse(font=font_to_proto(font))

    async def ListFonts(
        self, request: pb.ListFontsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListFontsResponse:
        fonts, token = await self._library().page(
            request.tenant_id, page_size=_font_page_size(request.page_size),
            page_token=request.page_token)
        return pb.ListFontsResponse(fonts=[font_to_proto(f) for f in fonts],
                                    next_page_token=token)

    async def DeleteFont(
        self, request: pb.DeleteFontRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteFontResponse:
        await self._library().delete(request.tenant_id, request.font_id)
        return pb.DeleteFontResponse()

    def _copilot_of(self) -> Copilot:
        if self._copilot is None:
            raise FailedPrecondition("this template service has no copilot")
        return self._copilot

    async def PlanCopilot(
        self, request: pb.PlanCopilotRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PlanCopilotResponse:
        planned = await self._copilot_of().plan(request.tenant_id, request.template_id,
                                                request.prompt, request.history_json)
        return pb.PlanCopilotResponse(
            plan_id=planned.plan_id, template_version=planned.template_version,
            planner=planned.planner,
            steps=[_step_to_proto(planned.plan_id, s) for s in planned.steps])

    async def PreviewCopilot(
        self, request: pb.PreviewCopilotRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PreviewCopilotResponse:
        template, applied = await self._copilot_of().preview(
            request.tenant_id, request.template_id, list(request.step_ids))
        return pb.PreviewCopilotResponse(
            template=_draft(template.name, applied),
            created=[_draft(n.name, n) for n in applied.created])

    async def ApplyCopilot(
        self, request: pb.ApplyCopilotRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ApplyCopilotResponse:
        result = await self._copilot_of().apply(request.tenant_id, request.template_id,
                                                list(request.step_ids))
        return pb.ApplyCopilotResponse(template=template_to_proto(result.template),
                                       created=[template_to_proto(t) for t in result.created])


def _step_to_proto(plan_id: str, step: Step) -> pb.CopilotStep:
    return pb.CopilotStep(
        id=step_ref(plan_id, step.id), description=step.description,
        operation_json="" if step.operation is None else json.dumps(step.operation.to_json()),
        error=step.error or "")


def _draft(name: str, made: Applied | NewTemplate) -> pb.CopilotDraft:
    return pb.CopilotDraft(name=name, html=made.html, width=made.width, height=made.height)


def _font_page_size(requested: int) -> int:
    # As for templates: 50 by default, at most 100.
    return min(requested if requested > 0 else 50, 100)
