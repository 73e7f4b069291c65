"""gRPC translation for the renderer."""

from __future__ import annotations

import json
from typing import Any

import grpc

from litho import formats
from litho.renderer.v1 import renderer_pb2 as pb
from litho.renderer.v1 import renderer_pb2_grpc as pb_grpc
from services.renderer import _batches
from services.renderer._assets import MAX_WARNINGS
from services.renderer._batches import Batches
from services.renderer._bindings import BindingRenders
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
        frame_count=r.frame_count, rendered=r.rendered,
        warnings=[pb.AssetWarning(url=w.url, outcome=w.outcome.value, reason=w.reason,
                                  hint=w.hint) for w in r.warnings[:MAX_WARNINGS]],
    )


def _data_sources(r: RenderResult) -> list[pb.DataSourceUse]:
    return [pb.DataSourceUse(name=u.name, fetch_time=_batches.timestamp(u.fetch_time),
                             age_seconds=u.age_seconds, origin=u.origin)
            for u in r.data_sources]


def _template_response(r: RenderResult) -> pb.RenderTemplateResponse:
    return pb.RenderTemplateResponse(**_result_fields(r), data_sources=_data_sources(r))


def _request(o: pb.RenderOptions, **fields: Any) -> RenderRequest:
    """A pipeline request with the options and policies of ``o``."""
    return RenderRequest(options=options_from_proto(o),
                         strict_assets=o.assets == pb.ASSET_POLICY_STRICT,
                         refresh=o.cache == pb.CACHE_POLICY_REFRESH,
                         stored_only=o.cache == pb.CACHE_POLICY_STORED, **fields)


def batch_message(doc: dict[str, Any]) -> pb.Batch:
    counts = doc.get("counts") or {}
    fmt = formats.by_name(doc["format"]) or formats.DEFAULT
    return pb.Batch(
        batch_id=doc["_id"], tenant_id=doc["tenantId"], template_id=doc["templateId"],
        template_version=doc["version"], format=fmt.enum, status=doc["status"],
        total_items=doc["totalItems"], completed_items=counts.get(_batches.SUCCEEDED, 0),
        failed_items=counts.get(_batches.FAILED, 0),
        cancelled_items=counts.get(_batches.CANCELLED, 0),
        create_time=_batches.timestamp(doc["createdAt"]),
        start_time=_batches.timestamp(doc.get("startedAt")),
        complete_time=_batches.timestamp(doc.get("completedAt")),
        metadata_json=json.dumps(doc.get("metadata") or {}),
    )


def result_message(doc: dict[str, Any]) -> pb.BatchResult:
    fmt = formats.by_name(doc.get("format", ""))
    return pb.BatchResult(
        index=doc["index"], status=doc["status"], render_id=doc.get("renderId", ""),
        format=fmt.enum if fmt else pb.IMAGE_FORMAT_UNSPECIFIED, width=doc.get("width", 0),
        height=doc.get("height", 0), cached=doc.get("cached", False),
        error_code=doc.get("errorCode", ""), error_message=doc.get("errorMessage", ""),
        size_bytes=doc.get("size", 0),
        warnings=[pb.AssetWarning(**w) for w in doc.get("warnings", [])],
    )


class RendererServicer(pb_grpc.RendererServiceServicer):
    def __init__(self, pipeline: RenderPipeline, batches: Batches,
                 bindings: BindingRenders) -> None:
        self._pipeline = pipeline
        self._batches = batches
        self._bindings = bindings

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
        return _template_response(result)

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
        return pb.RenderPdfResponse(**_result_fields(result), data_sources=_data_sources(result))

    async def RenderBinding(
        self, request: pb.RenderBindingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RenderBindingResponse:
        fmt = formats.by_enum(request.format)
        done = await self._bindings.render(request.binding_id, fmt.name if fmt else "")
        return pb.RenderBindingResponse(
            render=_template_response(done.result), tenant_id=done.tenant_id,
            fresh_until=_batches.timestamp(done.fresh_until), data_hash=done.data_hash)

    async def CreateBatch(
        self, request: pb.CreateBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateBatchResponse:
        return pb.CreateBatchResponse(batch=batch_message(await self._batches.create(request)))

    async def GetBatch(
        self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetBatchResponse:
        doc = await self._batches.get(request.tenant_id, request.batch_id)
        return pb.GetBatchResponse(batch=batch_message(doc))

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListBatchesResponse:
        docs, token = await self._batches.listing(
            request.tenant_id, page_size=request.page_size, page_token=request.page_token,
            status=request.status)
        return pb.ListBatchesResponse(batches=[batch_message(d) for d in docs],
                                      next_page_token=token)

    async def ListBatchResults(
        self, request: pb.ListBatchResultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListBatchResultsResponse:
        docs, token = await self._batches.results(
            request.tenant_id, request.batch_id, status=request.status,
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListBatchResultsResponse(results=[result_message(d) for d in docs],
                                           next_page_token=token)

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelBatchResponse:
        doc, cancelled = await self._batches.cancel(request.tenant_id, request.batch_id)
        return pb.CancelBatchResponse(batch=batch_message(doc), cancelled_items=cancelled)
