"""gRPC translation for the renderer."""

from __future__ import annotations

from typing import Any

import grpc

from litho import formats
from litho.renderer.v1 import renderer_pb2 as pb
from litho.renderer.v1 import renderer_pb2_grpc as pb_grpc
from services.renderer._assets import MAX_WARNINGS
from services.renderer._pipeline import (
    InlineSource,
    RenderPipeline,
    RenderRequest,
    RenderResult,
)
from services.renderer._spec import GifSpec, PdfSpec, RenderOptions


def options_from_proto(o: pb.RenderOptions) -> RenderOptions:
    return RenderOptions(
        width=o.width, height=o.height, scale=o.device_scale_factor, quality=o.quality,
        transparent=o.transparent, selector=o.selector,
        pdf=PdfSpec(
            preset=o.pdf.preset, width_mm=o.pdf.page_width_mm, height_mm=o.pdf.page_height_mm,
            landscape=o.pdf.landscape,
            margins=(o.pdf.margin_top, o.pdf.margin_right, o.pdf.margin_bottom,
                     o.pdf.margin_left),
        ),
        gif=GifSpec(fps=o.gif.fps or GifSpec.fps, duration_ms=o.gif.duration_ms),
    )


def _result_fields(r: RenderResult) -> dict[str, Any]:
    """The fields of either response: RenderPdfResponse repeats RenderTemplateResponse's."""
    fmt = formats.by_name(r.format)
    return dict(
        render_id=r.render_id, blob_key=r.blob_key,
        format=fmt.enum if fmt else pb.IMAGE_FORMAT_UNSPECIFIED,
        content_type=r.content_type, width=r.width, height=r.height, cached=r.cached,
        template_version=r.template_version, size_bytes=r.size_bytes, page_count=r.page_count,
        page_width_pt=r.page_width_pt, page_height_pt=r.page_height_pt,
        frame_count=r.frame_count,
        warnings=[pb.AssetWarning(url=w.url, outcome=w.outcome.value, reason=w.reason,
                                  hint=w.hint) for w in r.warnings[:MAX_WARNINGS]],
    )


def _request(o: pb.RenderOptions, **fields: Any) -> RenderRequest:
    """A pipeline request with the options and policies of ``o``."""
    return RenderRequest(options=options_from_proto(o),
                         strict_assets=o.assets == pb.ASSET_POLICY_STRICT,
                         refresh=o.cache == pb.CACHE_POLICY_REFRESH, **fields)


class RendererServicer(pb_grpc.RendererServiceServicer):
    def __init__(self, pipeline: RenderPipeline) -> None:
        self._pipeline = pipeline

    async def RenderTemplate(
        self, request: pb.RenderTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RenderTemplateResponse:
        result = await self._pipeline.render(_request(
            request.options, tenant_id=request.tenant_id, template_id=request.template_id,
            version=request.version, variable_sets=(request.variables_json,),
            format=(formats.by_enum(request.format) or formats.DEFAULT).name,
            coerce_strings=request.variables_from_query,
            # An anonymous signed-URL GET: reuse a recent render with warnings.
            reuse_warned=request.variables_from_query,
        ))
        return pb.RenderTemplateResponse(**_result_fields(result))

    async def RenderHtml(
        self, request: pb.RenderHtmlRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RenderHtmlResponse:
        result = await self._pipeline.render(_request(
            request.options, tenant_id=request.tenant_id, template_id="", version=0,
            variable_sets=(request.variables_json,),
            format=(formats.by_enum(request.format) or formats.DEFAULT).name,
            inline=InlineSource(request.html, request.width, request.height),
        ))
        return pb.RenderHtmlResponse(**_result_fields(result))

    async def RenderPdf(
        self, request: pb.RenderPdfRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RenderPdfResponse:
        result = await self._pipeline.render(_request(
            request.options, tenant_id=request.tenant_id, template_id=request.template_id,
            version=request.version, variable_sets=tuple(request.variable_sets_json),
            format=formats.PDF.name,
        ))
        return pb.RenderPdfResponse(**_result_fields(result))
