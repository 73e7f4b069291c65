"""``/v1/fonts``: a tenant's uploaded fonts (the template service owns them).

The body is a font file, not JSON, so this handler reads it itself: raw
bytes, or a ``multipart/form-data`` part named ``file``, streamed and cut
off past ``LITHO_GATEWAY_MAX_FONT_BYTES`` (a 413 naming the setting) before
any of it is kept in full. Validation (is it a font, which family, weight
and style) is the template service's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from litho.errors import FieldError, InvalidArgument
from litho.template.v1 import template_pb2 as pb
from services.gateway._problems import problem
from services.gateway._requests import TooLarge, read_limited, rfc3339
from services.gateway._state import caller, deps
from services.gateway._validation import query as query_of

_RAW_TYPES = frozenset({
    "font/ttf", "font/otf", "font/woff", "font/woff2", "font/sfnt", "application/octet-stream",
    "application/font-woff", "application/font-woff2", "application/x-font-ttf",
    "application/x-font-otf", "application/vnd.ms-opentype",
})
_MAX_FAMILY_BYTES = 400
#: What a multipart form may add to the font's own bytes.
_FORM_OVERHEAD = 64 * 1024


async def create_font(request: web.Request) -> web.Response:
    """``POST /v1/fonts``: raw font bytes, or multipart with ``file`` (and ``family``)."""
    limit = deps(request).max_font_bytes
    family = str(query_of(request).get("family", ""))
    file_name = ""
    # The form's own bytes (boundaries, part headers, a preamble) count too.
    if (request.content_length or 0) > limit + _FORM_OVERHEAD:
        return _too_large(limit)
    try:
        if request.content_type == "multipart/form-data":
            data, file_name, form_family = await _read_form(request, limit)
            if request.content.total_bytes > limit + _FORM_OVERHEAD:
                return _too_large(limit)
            family = form_family or family
        elif request.content_type in _RAW_TYPES:
            data = await read_limited(request.content, limit)
        else:
            return problem(415, f"a font upload is raw font bytes (Content-Type font/ttf, "
                                f"font/otf, font/woff, font/woff2 or application/octet-stream) "
                                f"or multipart/form-data with a 'file' part; got "
                                f"{request.content_type[:60]!r}")
    except TooLarge:
        return _too_large(limit)
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        # aiohttp's multipart reader refuses a malformed form this way (a part
        # header with control characters is an InvalidHeader).
        return problem(400, f"the multipart body could not be read: {str(exc)[:200]}")
    if not data:
        raise InvalidArgument("the upload is empty: send a font file",
                              errors=[FieldError("file", "is required")])
    response = await deps(request).templates.CreateFont(pb.CreateFontRequest(
        tenant_id=caller(request).tenant_id, data=data, file_name=file_name[:200],
        family=family))
    return web.json_response(font_json(response.font), status=201)


def _too_large(limit: int) -> web.Response:
    return problem(413, f"the font is larger than {limit} bytes (LITHO_GATEWAY_MAX_FONT_BYTES)")


async def list_fonts(request: web.Request) -> web.Response:
    query = query_of(request)
    response = await deps(request).templates.ListFonts(pb.ListFontsRequest(
        tenant_id=caller(request).tenant_id, page_size=query.get("pageSize", 50),
        page_token=query.get("pageToken", "")))
    return web.json_response({"fonts": [font_json(f) for f in response.fonts],
                              "nextPageToken": response.next_page_token or None})


async def delete_font(request: web.Request) -> web.Response:
    await deps(request).templates.DeleteFont(pb.DeleteFontRequest(
        tenant_id=caller(request).tenant_id, font_id=request.match_info["fontId"]))
    return web.Response(status=204)


def font_json(f: pb.Font) -> dict[str, Any]:
    return {
        "id": f.id, "family": f.family, "weight": f.weight, "style": f.style,
        "format": f.format, "size": f.size_bytes, "sha256": f.sha256,
        "fullName": f.full_name, "fileName": f.file_name,
        "css": f'font-family: "{f.family}"; font-weight: {f.weight}; font-style: {f.style}',
        "createdAt": rfc3339(f.create_time),
    }


async def _read_form(request: web.Request, limit: int) -> tuple[bytes, str, str]:
    reader = await request.multipart()
    data: bytes | None = None
    file_name = family = ""
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise InvalidArgument("nested multipart bodies are not accepted",
                                  errors=[FieldError("body", "one level of parts")])
        if part.name == "file" and data is None:
            file_name = part.filename or ""
            data = await read_limited(part, limit)
        elif part.name == "family" and not family:
            raw = await read_limited(part, _MAX_FAMILY_BYTES)
            try:
                family = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InvalidArgument("the family is not UTF-8 text",
                                      errors=[FieldError("family", "must be text")]) from None
        else:
            raise InvalidArgument(
                f"unexpected form part {str(part.name)[:40]!r}",
                errors=[FieldError(str(part.name)[:40], "only 'file' and 'family', once each")])
    if data is None:
        raise InvalidArgument("the form has no 'file' part",
                              errors=[FieldError("file", "is required")])
    return data, file_name, family
