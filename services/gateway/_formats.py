"""Output formats and render options of the public API, and their proto form."""

from __future__ import annotations

from typing import Any

from litho.renderer.v1 import renderer_pb2 as pb
from services.gateway._requests import integer

_BY_NAME = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "jpg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
    "pdf": pb.IMAGE_FORMAT_PDF,
    "gif": pb.IMAGE_FORMAT_GIF,
}
#: Enum value → canonical name (``jpg`` is an alias of ``jpeg``).
FORMATS: dict[int, str] = {
    pb.IMAGE_FORMAT_PNG: "png",
    pb.IMAGE_FORMAT_JPEG: "jpeg",
    pb.IMAGE_FORMAT_WEBP: "webp",
    pb.IMAGE_FORMAT_PDF: "pdf",
    pb.IMAGE_FORMAT_GIF: "gif",
}


def format_enum(name: str) -> pb.ImageFormat.ValueType:
    return _BY_NAME[name]


def options_from_json(body: dict[str, Any]) -> pb.RenderOptions:
    """The render options of a (schema-validated) request body."""
    pdf = body.get("pdf", {})
    margins = pdf.get("margins", {})
    gif = body.get("gif", {})
    return pb.RenderOptions(
        width=integer(body.get("width", 0)),
        height=integer(body.get("height", 0)),
        device_scale_factor=body.get("deviceScaleFactor", 0),
        quality=integer(body.get("quality", 0)),
        transparent=body.get("transparent", False),
        selector=body.get("selector", ""),
        pdf=pb.PdfOptions(
            preset=pdf.get("preset", ""),
            page_width_mm=pdf.get("widthMm", 0),
            page_height_mm=pdf.get("heightMm", 0),
            landscape=pdf.get("landscape", False),
            margin_top=margins.get("top", ""),
            margin_right=margins.get("right", ""),
            margin_bottom=margins.get("bottom", ""),
            margin_left=margins.get("left", ""),
        ),
        gif=pb.GifOptions(fps=integer(gif.get("fps", 0)),
                          duration_ms=integer(gif.get("duration", 0))),
    )


def render_json(response: pb.RenderTemplateResponse, base_url: str) -> dict[str, Any]:
    ext = FORMATS[response.format]
    out: dict[str, Any] = {
        "url": f"{base_url}/images/{response.render_id}.{ext}",
        "id": response.render_id,
        "width": response.width,
        "height": response.height,
        "format": ext,
        "cached": response.cached,
        "templateVersion": response.template_version,
        "size": response.size_bytes,
    }
    if ext == "pdf":
        out["pageCount"] = response.page_count
        out["pageSize"] = {"width": round(response.page_width_pt, 2),
                           "height": round(response.page_height_pt, 2), "unit": "pt"}
    if ext == "gif":
        out["frameCount"] = response.frame_count
    return out
