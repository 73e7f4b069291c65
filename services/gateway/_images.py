"""Serving rendered images from the blob store, with HTTP caching semantics."""

from __future__ import annotations

from aiohttp import web

from litho import formats, renders
from litho.errors import NotFound
from services.gateway._state import deps


async def image_response(
    request: web.Request, render_id: str, ext: str, *, cache_control: str,
    etag: str | None = None,
) -> web.StreamResponse | None:
    """The image (or 304, or its headers for HEAD); None if no such blob.

    ``etag``, when given, is the answer's ETag instead of the blob's, and a
    request that matches it is answered 304 without reading the blob."""
    headers = {"ETag": etag or "", "Cache-Control": cache_control}
    if etag is not None and etag_matches(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=headers)
    blobs = deps(request).blobs
    key = renders.blob_key(render_id, ext)
    if request.method == "HEAD":
        info = await blobs.head(key)
        data = b""
    else:
        blob = await blobs.get(key)
        info, data = (blob.info, blob.data) if blob else (None, b"")
    if info is None:
        return None
    headers["ETag"] = etag or info.etag
    if etag_matches(request.headers.get("If-None-Match", ""), headers["ETag"]):
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(info.size)
        return web.Response(status=200, headers={**headers, "Content-Type": info.content_type})
    return web.Response(body=data, content_type=info.content_type, headers=headers)


async def get_image(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /images/{renderId}.{ext}``: immutable, content-addressed."""
    render_id, _, ext = request.match_info["imageFile"].partition(".")
    if renders.is_render_id(render_id) and formats.by_extension(ext) is not None:
        found = await image_response(request, render_id, ext,
                                     cache_control=renders.IMMUTABLE_CACHE_CONTROL)
        if found is not None:
            return found
    raise NotFound("no such image")


def etag_matches(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weakly, or ``*``)."""
    if not header:
        return False
    candidates = [c.strip() for c in header.split(",")]
    bare = etag.removeprefix("W/")
    return "*" in candidates or any(c.removeprefix("W/") == bare for c in candidates)
