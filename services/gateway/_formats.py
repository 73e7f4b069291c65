"""Output formats and render options of the public API, and their proto form."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from litho import formats
from litho.errors import FieldError, InvalidArgument
from litho.renderer.v1 import renderer_pb2 as pb
from services.gateway._requests import integer, optional_time


def parse_format(text: str, field: str = "format") -> formats.Format:
    """The format a request names (``jpg`` is ``jpeg``). The OpenAPI document
    already limits the spellings; this keeps a stray one a 422, not a 500."""
    found = formats.parse(text)
    if found is None:
        raise InvalidArgument(f"unknown {field} {text[:20]!r}", errors=[
            FieldError(field, f"must be one of {', '.join(formats.spellings())}")])
    return found


def format_enum(name: str) -> pb.ImageFormat.ValueType:
    return parse_format(name).enum


def response_format(value: int) -> formats.Format:
    """The format of a renderer answer; the renderer never answers one unknown here."""
    found = formats.by_enum(value)
    if found is None:
        raise ValueError(f"the renderer answered an unknown format {value}")
    return found


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
        assets=_ASSET_POLICIES[body.get("assets", "warn")],
        cache=_CACHE_POLICIES[body.get("cache", "use")],
    )


_ASSET_POLICIES = {"warn": pb.ASSET_POLICY_WARN, "strict": pb.ASSET_POLICY_STRICT}
_CACHE_POLICIES = {"use": pb.CACHE_POLICY_USE, "refresh": pb.CACHE_POLICY_REFRESH}
_ASSET_NAMES = {v: k for k, v in _ASSET_POLICIES.items()}


def options_to_json(options: pb.RenderOptions) -> dict[str, Any]:
    """The request form of stored render options (what :func:`options_from_json`
    reads), leaving out what is unset: reading it back gives the same options."""
    out: dict[str, Any] = {}
    for name, value in (("width", options.width), ("height", options.height),
                        ("deviceScaleFactor", options.device_scale_factor),
                        ("quality", options.quality), ("transparent", options.transparent),
                        ("selector", options.selector)):
        if value:
            out[name] = value
    p = options.pdf
    pdf: dict[str, Any] = {k: v for k, v in (
        ("preset", p.preset), ("widthMm", p.page_width_mm), ("heightMm", p.page_height_mm),
        ("landscape", p.landscape)) if v}
    margins = {k: v for k, v in (("top", p.margin_top), ("right", p.margin_right),
                                 ("bottom", p.margin_bottom), ("left", p.margin_left)) if v}
    if margins:
        pdf["margins"] = margins
    if pdf:
        out["pdf"] = pdf
    gif = {k: v for k, v in (("fps", options.gif.fps), ("duration", options.gif.duration_ms))
           if v}
    if gif:
        out["gif"] = gif
    if options.assets == pb.ASSET_POLICY_STRICT:  # warn is the default
        out["assets"] = _ASSET_NAMES[options.assets]
    return out


#: Every renderer answer has the same fields under the same numbers.
AnyRenderResponse = pb.RenderTemplateResponse | pb.RenderPdfResponse | pb.RenderHtmlResponse


def warnings_json(response: AnyRenderResponse) -> list[dict[str, str]]:
    return [{"url": w.url, "outcome": w.outcome, "reason": w.reason, "hint": w.hint}
            for w in response.warnings]


def render_json(response: AnyRenderResponse,
                image_url: Callable[[str, str], str]) -> dict[str, Any]:
    """The answer to a render; ``image_url(renderId, extension)`` is its URL."""
    fmt = response_format(response.format)
    out: dict[str, Any] = {
        "url": image_url(response.render_id, fmt.extension),
        "id": response.render_id,
        "width": response.width,
        "height": response.height,
        "format": fmt.name,
        "cached": response.cached,
        "size": response.size_bytes,
        "warnings": warnings_json(response),
    }
    if response.template_version:  # a one-shot HTML render has none
        out["templateVersion"] = response.template_version
    if fmt.pdf:
        out["pageCount"] = response.page_count
        out["pageSize"] = {"width": round(response.page_width_pt, 2),
                           "height": round(response.page_height_pt, 2), "unit": "pt"}
    if fmt.gif:
        out["frameCount"] = response.frame_count
    return out


def data_sources_json(uses: Iterable[pb.DataSourceUse]) -> list[dict[str, Any]]:
    """Which of the template's data sources a render used, and how fresh each was."""
    return [{"name": u.name, "origin": u.origin, "fetchedAt": optional_time(u, "fetch_time"),
             "ageSeconds": round(u.age_seconds, 3) if u.HasField("fetch_time") else None}
            for u in uses]


def data_sources_header(uses: Iterable[pb.DataSourceUse]) -> str | None:
    """``Litho-Data-Sources`` of a binary answer: ``name;origin=cache;age=12.5``
    per source, comma-separated (names are identifiers: header-safe)."""
    parts = []
    for u in uses:
        part = f"{u.name};origin={u.origin}"
        if u.HasField("fetch_time"):
            part += f";age={round(u.age_seconds, 1)}"
        parts.append(part)
    text = "".join(c for c in ", ".join(parts) if c.isascii() and c.isprintable())
    return text[:500] or None


def stored_output_only(request: pb.RenderTemplateRequest
                       ) -> pb.RenderTemplateRequest:
    """``request`` as one the renderer answers from what is stored, never
    rendering (CACHE_POLICY_STORED)."""
    copy = pb.RenderTemplateRequest()
    copy.CopyFrom(request)
    copy.options.cache = pb.CACHE_POLICY_STORED
    return copy
