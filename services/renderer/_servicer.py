"""gRPC translation for the renderer."""

from __future__ import annotations

from typing import Any

import grpc

from litho.renderer.v1 import renderer_pb2 as pb
from litho.renderer.v1 import renderer_pb2_grpc as pb_grpc
from services.renderer._pipeline import RenderPipeline, RenderRequest

_FORMATS = {pb.IMAGE_FORMAT_PNG: "png", pb.IMAGE_FORMAT_JPEG: "jpeg"}
_FORMAT_ENUMS = {v: k for k, v in _FORMATS.items()}


class RendererServicer(pb_grpc.RendererServiceServicer):
    def __init__(self, pipeline: RenderPipeline) -> None:
        self._pipeline = pipeline

    async def RenderTemplate(
        self, request: pb.RenderTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RenderTemplateResponse:
        result = await self._pipeline.render(RenderRequest(
            tenant_id=request.tenant_id, template_id=request.template_id,
            version=request.version, variables_json=request.variables_json,
            format=_FORMATS.get(request.format, "png"), width=request.width,
            height=request.height, quality=request.quality,
        ))
        return pb.RenderTemplateResponse(
            render_id=result.render_id, blob_key=result.blob_key,
            format=_FORMAT_ENUMS[result.format], content_type=result.content_type,
            width=result.width, height=result.height, cached=result.cached,
            template_version=result.template_version,
        )
