"""``/v1/templates/{id}/batch-render`` and ``/v1/batches``: many renders of one
template, queued and rendered by the renderer replicas (the renderer owns
batches). The body is JSON or CSV and can be far larger than other bodies,
so the create handler reads it itself, up to ``LITHO_BATCH_MAX_BYTES``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from stream_zip import NO_COMPRESSION_64, ZIP_64, async_stream_zip

from litho import formats, renders
from litho.errors import FieldError, InvalidArgument, OutboundDenied
from litho.logs import get_logger
from litho.outbound import check_url
from litho.renderer.v1 import renderer_pb2 as pb
from services.gateway import _csv
from services.gateway._formats import format_enum, options_from_json
from services.gateway._problems import problem
from services.gateway._ratelimit import refund_renders, reserve_renders
from services.gateway._requests import (
    TooLarge,
    integer,
    optional_time,
    parse_json,
    read_limited,
)
from services.gateway._state import Deps, caller, deps
from services.gateway._validation import query as query_of

log = get_logger(__name__)

_JSON_TYPES = frozenset({"application/json", ""})
#: Render options a CSV upload takes as query parameters.
_QUERY_OPTIONS = ("format", "version", "width", "height", "deviceScaleFactor", "quality",
                  "transparent", "selector", "assets", "cache", "webhookUrl")
#: Results fetched per call while an archive streams.
_ARCHIVE_PAGE = 500


def batch_json(b: pb.Batch) -> dict[str, Any]:
    done = b.completed_items + b.failed_items + b.cancelled_items
    return {
        "batchId": b.batch_id, "templateId": b.template_id,
        "templateVersion": b.template_version,
        "format": (formats.by_enum(b.format) or formats.DEFAULT).name,
        "status": b.status,
        "progress": 100 if done >= b.total_items else int(100 * done / b.total_items),
        "totalItems": b.total_items, "completedItems": b.completed_items,
        "failedItems": b.failed_items, "cancelledItems": b.cancelled_items,
        "createdAt": optional_time(b, "create_time"),
        "startedAt": optional_time(b, "start_time"),
        "completedAt": optional_time(b, "complete_time"),
        "metadata": json.loads(b.metadata_json or "{}"),
    }


def _result_json(r: pb.BatchResult, image_url: Callable[[str, str], str]) -> dict[str, Any]:
    fmt = formats.by_enum(r.format)
    ok = r.status == "succeeded" and fmt is not None
    out: dict[str, Any] = {
        "index": r.index, "status": r.status, "success": ok,
        "url": image_url(r.render_id, fmt.extension) if ok and fmt else None,
        "width": r.width if ok else None, "height": r.height if ok else None,
        "cached": r.cached if ok else None,
        "error": {"code": r.error_code, "message": r.error_message} if r.error_code else None,
    }
    if r.warnings:
        out["warnings"] = [{"url": w.url, "outcome": w.outcome, "reason": w.reason,
                            "hint": w.hint} for w in r.warnings]
    return out


def _batch_id() -> str:
    """Sortable by creation (milliseconds first), unguessable (48 random bits
    after them; ids are also checked against the tenant)."""
    return f"bat_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


async def create_batch(request: web.Request) -> web.StreamResponse:
    """``POST /v1/templates/{templateId}/batch-render``: JSON or CSV → 202."""
    d = deps(request)
    limit = d.batch_max_bytes
    content_type = request.content_type
    if content_type not in _JSON_TYPES and content_type != "text/csv":
        return problem(415, "a batch is JSON (application/json, with variableSets) or CSV "
                            f"(text/csv, a header row of variable names); got "
                            f"{content_type[:60]!r}")
    try:
        if (request.content_length or 0) > limit:
            raise TooLarge()
        data = await read_limited(request.content, limit)
    except TooLarge:
        return problem(413, f"the batch is larger than {limit} bytes (LITHO_BATCH_MAX_BYTES)")
    query = query_of(request)
    if content_type == "text/csv":
        body: dict[str, Any] = {k: query[k] for k in _QUERY_OPTIONS if k in query}
        from_text = True
    else:
        stray = sorted(k for k in _QUERY_OPTIONS if k in query)
        if stray:
            raise InvalidArgument("with a JSON body, options go in the body, not the query",
                                  errors=[FieldError(stray[0], "belongs in the JSON body")])
        body = {}
        from_text = False
    # Parsing, checking and encoding a body of up to LITHO_BATCH_MAX_BYTES
    # take a second or more: off the event loop.
    parsed, encoded = await asyncio.to_thread(_read_batch, d, data, from_text)
    body.update(parsed)
    if encoded is None:
        return problem(413, f"the batch's items come to more than {limit} bytes as JSON "
                            "(LITHO_BATCH_MAX_BYTES)")
    webhook_url = body.get("webhookUrl", "")
    if webhook_url:
        try:
            check_url(webhook_url, d.outbound_allow)
        except (OutboundDenied, ValueError) as exc:
            raise InvalidArgument(
                "webhookUrl must be a public http(s) URL (LITHO_OUTBOUND_ALLOW lists "
                "private destinations that are allowed)",
                errors=[FieldError("webhookUrl", "is not a public http(s) URL")]) from exc
    batch_id = _batch_id()
    tenant = caller(request)
    # Every item is a render of the tenant's monthly quota: all or nothing.
    await reserve_renders(request, tenant.tenant_id, len(encoded))
    try:
        if webhook_url and d.register_batch_webhook is not None:
            await d.register_batch_webhook(tenant, batch_id, webhook_url)
        response = await d.renderer.CreateBatch(pb.CreateBatchRequest(
            tenant_id=tenant.tenant_id, batch_id=batch_id,
            template_id=request.match_info["templateId"],
            version=integer(body.get("version", 0)),
            format=format_enum(body.get("format", "png")), options=options_from_json(body),
            variable_sets_json=encoded, variables_from_text=from_text,
            metadata_json=json.dumps(body.get("metadata", {}))))
    except BaseException:
        refund_renders(request, tenant.tenant_id, len(encoded))
        raise
    out = batch_json(response.batch)
    return web.json_response(out, status=202,
                             headers={"Location": f"/v1/batches/{out['batchId']}"})


def _read_batch(d: Deps, data: bytes, from_text: bool
                ) -> tuple[dict[str, Any], list[str] | None]:
    """The body's options and its items as compact JSON, checked: each item
    within LITHO_BATCH_MAX_ITEM_BYTES (a 422 naming it), all of them within
    LITHO_BATCH_MAX_BYTES (None: a 413), counted before they are kept."""
    if from_text:
        body: dict[str, Any] = {}
        sets: Iterable[Any] = _csv.variable_sets(
            data, max_items=d.batch_max_items, max_depth=d.json_limits.max_depth,
            max_columns=d.batch_max_csv_columns)
    else:
        body = _json_body(d, data)
        listed: list[Any] = body.pop("variableSets")
        sets = listed
        if len(listed) > d.batch_max_items:
            raise InvalidArgument(
                f"a batch has at most {d.batch_max_items} items (LITHO_BATCH_MAX_ITEMS); "
                f"got {len(listed)}", errors=[FieldError(
                    "/variableSets", f"must have at most {d.batch_max_items} items")])
    encoded: list[str] = []
    total = 0
    for index, variables in enumerate(sets):
        text = json.dumps(variables, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode())
        if size > d.batch_max_item_bytes:
            where = f"row {index + 2}" if from_text else f"/variableSets/{index}"
            raise InvalidArgument(
                f"{where} is {size} bytes as JSON, over {d.batch_max_item_bytes} "
                "(LITHO_BATCH_MAX_ITEM_BYTES)",
                errors=[FieldError(where, f"must be at most {d.batch_max_item_bytes} bytes "
                                          "as JSON")])
        total += size
        if total > d.batch_max_bytes:
            return body, None
        encoded.append(text)
    return body, encoded


def _json_body(d: Deps, data: bytes) -> dict[str, Any]:
    operation = "batchRender"
    try:
        body = parse_json(data, d.json_limits) if data.strip() else None
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=f"the request body is not valid JSON: {exc}") from exc
    body = d.validator.fold_case(operation, body)
    d.validator.check_body(operation, body)
    assert isinstance(body, dict)  # the schema requires an object
    return body


async def get_batch(request: web.Request) -> web.Response:
    response = await deps(request).renderer.GetBatch(pb.GetBatchRequest(
        tenant_id=caller(request).tenant_id, batch_id=request.match_info["batchId"]))
    return web.json_response(batch_json(response.batch))


async def list_batches(request: web.Request) -> web.Response:
    query = query_of(request)
    response = await deps(request).renderer.ListBatches(pb.ListBatchesRequest(
        tenant_id=caller(request).tenant_id, page_size=query.get("pageSize", 50),
        page_token=query.get("pageToken", ""), status=query.get("status", "")))
    return web.json_response({"batches": [batch_json(b) for b in response.batches],
                              "nextPageToken": response.next_page_token or None})


async def list_results(request: web.Request) -> web.Response:
    query = query_of(request)
    d = deps(request)
    response = await d.renderer.ListBatchResults(pb.ListBatchResultsRequest(
        tenant_id=caller(request).tenant_id, batch_id=request.match_info["batchId"],
        status=query.get("status", ""), page_size=query.get("pageSize", 100),
        page_token=query.get("pageToken", "")))
    return web.json_response({"results": [_result_json(r, d.image_url) for r in response.results],
                              "nextPageToken": response.next_page_token or None})


async def cancel_batch(request: web.Request) -> web.Response:
    response = await deps(request).renderer.CancelBatch(pb.CancelBatchRequest(
        tenant_id=caller(request).tenant_id, batch_id=request.match_info["batchId"]))
    return web.json_response({**batch_json(response.batch),
                              "cancelledNow": response.cancelled_items})


async def get_archive(request: web.Request) -> web.StreamResponse:
    """``GET /v1/batches/{batchId}/archive.zip``: every successful output, named
    by index, then ``manifest.json``; streamed entry by entry (one output, and
    one page of results, in memory at a time), ZIP64 when an entry needs it."""
    d = deps(request)
    tenant_id = caller(request).tenant_id
    batch = (await d.renderer.GetBatch(pb.GetBatchRequest(
        tenant_id=tenant_id, batch_id=request.match_info["batchId"]))).batch
    width = len(str(max(batch.total_items - 1, 0)))
    now = datetime.now(UTC).replace(tzinfo=None)

    async def pages() -> AsyncIterator[list[pb.BatchResult]]:
        token = ""
        while True:
            page = await d.renderer.ListBatchResults(pb.ListBatchResultsRequest(
                tenant_id=tenant_id, batch_id=batch.batch_id, page_size=_ARCHIVE_PAGE,
                page_token=token))
            yield list(page.results)
            token = page.next_page_token
            if not token:
                return

    def file_name(r: pb.BatchResult) -> str | None:
        fmt = formats.by_enum(r.format)
        ok = r.status == "succeeded" and fmt is not None
        return f"{r.index:0{width}d}.{fmt.extension}" if ok and fmt else None

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    async def manifest() -> AsyncIterator[bytes]:
        # A second pass over the results, a page at a time.
        yield b'{"batch": ' + json.dumps(batch_json(batch)).encode() + b', "items": ['
        first = True
        async for page in pages():
            for r in page:
                entry = _result_json(r, d.image_url)
                entry["file"] = file_name(r) if r.index not in missing else None
                if r.index in missing:
                    entry.update(success=False, error={
                        "code": "NOT_FOUND", "message": "the stored output is gone"})
                yield (b"" if first else b",\n") + json.dumps(entry).encode()
                first = False
        yield b"]}\n"

    missing: set[int] = set()

    async def members() -> AsyncIterator[Any]:
        async for page in pages():
            for r in page:
                name = file_name(r)
                if name is None:
                    continue
                blob = await d.blobs.get(renders.blob_key(r.render_id, name.rsplit(".", 1)[1]))
                if blob is None:
                    missing.add(r.index)
                    continue
                # Images are compressed already: stored as they are.
                yield name, now, 0o644, NO_COMPRESSION_64, one(blob.data)
        yield "manifest.json", now, 0o644, ZIP_64, manifest()

    chunks = async_stream_zip(members()).__aiter__()
    # The first results page is read before the answer starts, so a failure
    # there is still a proper error response.
    first_chunk = await anext(chunks, b"")
    response = web.StreamResponse(headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="{batch.batch_id}.zip"',
        "Cache-Control": "no-store",
    })
    await response.prepare(request)
    try:
        await response.write(first_chunk)
        async for chunk in chunks:
            await response.write(chunk)
    except Exception:
        # The status is sent: cut the connection, so the client sees a
        # truncated transfer, never a complete-looking archive.
        log.warning("a batch archive failed part-way", batch=batch.batch_id, exc_info=True)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
