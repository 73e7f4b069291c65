"""What a render asks for, validated: formats, sizes and per-format options."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from litho import formats
from litho.errors import FieldError, InvalidArgument

PDF_PRESETS = ("A3", "A4", "A5", "Letter", "Legal")
_CSS_LENGTH = re.compile(r"0|[0-9]{1,4}(\.[0-9]{1,3})?(mm|cm|in|px)")


@dataclass(frozen=True)
class Limits:
    max_dimension: int
    max_pixels: int
    max_scale: float
    max_gif_fps: int
    max_gif_duration_ms: int
    max_gif_frames: int
    max_pdf_pages: int
    #: Variable sets in one PDF: each is a page load and a print of its own.
    max_pdf_documents: int = 30
    #: Captured frames × pixels of each frame, for one GIF.
    max_gif_pixels: int = 60_000_000
    #: Pixels of one WebP: Chromium's WebP encoder is the slowest.
    max_webp_pixels: int = 16_000_000


@dataclass(frozen=True)
class PdfSpec:
    """PDF page setup. Without a preset or custom size the page is the document's
    CSS ``@page { size }``, else the template's own size (``_pdf.PdfOptions``)."""

    preset: str = ""
    width_mm: float = 0.0
    height_mm: float = 0.0
    landscape: bool = False
    margins: tuple[str, str, str, str] = ("", "", "", "")  # top, right, bottom, left


@dataclass(frozen=True)
class GifSpec:
    fps: int = 15
    duration_ms: int = 0  # 0: the longest animation, capped


@dataclass(frozen=True)
class RenderOptions:
    width: int = 0
    height: int = 0
    scale: float = 0.0
    quality: int = 0
    transparent: bool = False
    selector: str = ""
    pdf: PdfSpec = field(default_factory=PdfSpec)
    gif: GifSpec = field(default_factory=GifSpec)


#: For each format that takes a quality.
DEFAULT_QUALITY = {f.name: 90 for f in formats.ALL if f.quality}


def check_options(fmt: str, o: RenderOptions, limits: Limits) -> None:
    """Collect every problem with the options of a ``fmt`` render and raise them together."""
    p: list[FieldError] = []
    f = formats.by_name(fmt)
    if f is None:
        p.append(FieldError("format", f"must be one of {', '.join(formats.names())}"))
    for name in ("width", "height"):
        value = getattr(o, name)
        if value and not 1 <= value <= limits.max_dimension:
            p.append(FieldError(name, f"must be between 1 and {limits.max_dimension}"))
    if o.scale and not 1 <= o.scale <= limits.max_scale:
        p.append(FieldError("deviceScaleFactor", f"must be between 1 and {limits.max_scale:g}"))
    if o.quality:
        if f is None or not f.quality:
            p.append(FieldError("quality", f"applies to {_spoken(lambda g: g.quality)} only"))
        elif not 1 <= o.quality <= 100:
            p.append(FieldError("quality", "must be between 1 and 100"))
    if o.transparent and (f is None or not f.transparent):
        p.append(FieldError("transparent", f"applies to {_spoken(lambda g: g.transparent)} only"))
    if len(o.selector) > 500:
        p.append(FieldError("selector", "must be at most 500 characters"))
    if f is not None and f.pdf:
        p += _check_pdf(o.pdf)
    elif o.pdf != PdfSpec():
        p.append(FieldError("pdf", f"applies to the {_spoken(lambda g: g.pdf)} format only"))
    if f is not None and f.gif:
        p += _check_gif(o.gif, limits)
    elif o.gif != GifSpec():
        p.append(FieldError("gif", f"applies to the {_spoken(lambda g: g.gif)} format only"))
    if p:
        raise InvalidArgument("the render options are invalid", errors=p)


def _spoken(applies: Callable[[formats.Format], bool]) -> str:
    """The formats an option applies to, for a message (``jpeg and webp``)."""
    return formats.spoken(f for f in formats.ALL if applies(f))


def _check_pdf(pdf: PdfSpec) -> list[FieldError]:
    p = []
    if pdf.preset and pdf.preset not in PDF_PRESETS:
        p.append(FieldError("pdf.preset", f"must be one of {', '.join(PDF_PRESETS)}"))
    custom = (pdf.width_mm, pdf.height_mm)
    if any(custom):
        if pdf.preset:
            p.append(FieldError("pdf.preset", "give a preset or a custom size, not both"))
        if not all(1 <= v <= 5000 for v in custom):
            p.append(FieldError("pdf.widthMm", "custom width and height must both be 1-5000 mm"))
    for side, value in zip(("top", "right", "bottom", "left"), pdf.margins, strict=True):
        if value and not _CSS_LENGTH.fullmatch(value):
            p.append(FieldError(f"pdf.margins.{side}",
                                "must be a length like 10mm, 1.5cm, 0.5in or 24px"))
    return p


def _check_gif(gif: GifSpec, limits: Limits) -> list[FieldError]:
    p = []
    if not 1 <= gif.fps <= limits.max_gif_fps:
        p.append(FieldError("gif.fps", f"must be between 1 and {limits.max_gif_fps}"))
    if gif.duration_ms and not 1 <= gif.duration_ms <= limits.max_gif_duration_ms:
        p.append(FieldError("gif.duration",
                            f"must be between 1 and {limits.max_gif_duration_ms} ms"))
    if gif.duration_ms and gif.fps * gif.duration_ms / 1000 > limits.max_gif_frames:
        p.append(FieldError("gif", f"fps × duration must give at most {limits.max_gif_frames} "
                                   "frames"))
    return p


def check_documents(fmt: str, count: int, limits: Limits) -> None:
    """One variable set per render; several only for a PDF, and not too many.

    Each set gives at least one page, so the page limit bounds them too.
    """
    if count == 0 or (count > 1 and fmt != formats.PDF.name):
        raise InvalidArgument("one variable set per render; several only for a PDF",
                              errors=[FieldError("variableSets", "one set, or several for a PDF")])
    if count > limits.max_pdf_documents:
        raise InvalidArgument(
            f"a PDF may have at most {limits.max_pdf_documents} variable sets "
            f"(LITHO_RENDERER_MAX_PDF_DOCUMENTS); this one has {count}",
            errors=[FieldError("variableSets", f"at most {limits.max_pdf_documents} "
                                               "(LITHO_RENDERER_MAX_PDF_DOCUMENTS)")])
    if count > limits.max_pdf_pages:
        raise InvalidArgument(
            f"a PDF may have at most {limits.max_pdf_pages} pages "
            f"(LITHO_RENDERER_MAX_PDF_PAGES), and each of these {count} variable sets "
            "gives one at least",
            errors=[FieldError("variableSets", f"at most {limits.max_pdf_pages} "
                                               "(LITHO_RENDERER_MAX_PDF_PAGES)")])


def check_pdf_pages(pages: int, limits: Limits) -> None:
    """The pages printed so far (CSS page breaks included) are within the limit."""
    if pages > limits.max_pdf_pages:
        raise InvalidArgument(
            f"the PDF would have more than {limits.max_pdf_pages} pages "
            "(LITHO_RENDERER_MAX_PDF_PAGES); use fewer page breaks or variable sets",
            errors=[FieldError("pdf", f"at most {limits.max_pdf_pages} pages "
                                      "(LITHO_RENDERER_MAX_PDF_PAGES)")])


def gif_frame_cap(width: int, height: int, scale: float, limits: Limits) -> int:
    """Most frames a GIF of this size may capture: the frame limit, lowered so
    that frames × pixels stays within the GIF pixel budget (at least one frame)."""
    per_frame = max(1.0, width * height * scale * scale)
    return max(1, min(limits.max_gif_frames, int(limits.max_gif_pixels // per_frame)))


def check_gif_work(width: int, height: int, scale: float, gif: GifSpec, limits: Limits) -> None:
    """An explicit duration must fit the GIF pixel budget at this size; without
    one the frame cap (``gif_frame_cap``) keeps the natural duration within it."""
    if not gif.duration_ms:
        return
    delay = max(20, round(100 / gif.fps) * 10)  # as _gif.frame_delay_ms
    frames = -(-gif.duration_ms // delay) + 1  # every delay step, and the end state
    pixels = frames * width * height * scale * scale
    if pixels > limits.max_gif_pixels:
        cap = gif_frame_cap(width, height, scale, limits)
        raise InvalidArgument(
            f"the GIF would be {frames} frames of {width}×{height} at scale {scale:g} "
            f"({pixels:,.0f} pixels); the limit is {limits.max_gif_pixels:,} "
            f"(LITHO_RENDERER_MAX_GIF_PIXELS): at most {cap} frames at this size",
            errors=[FieldError("gif.duration", "frames × width × height × deviceScaleFactor² "
                                               "is too large (LITHO_RENDERER_MAX_GIF_PIXELS)")])


def check_pixels(
    width: int, height: int, scale: float, limits: Limits, *, field: str = "width",
    fmt: str = "",
) -> None:
    """The output (or a selector's box) stays within the pixel and size limits
    (and, for WebP, whose encoder is the slowest, within the WebP limit); each
    side within LITHO_RENDERER_MAX_DIMENSION (CSS pixels, as for width and
    height) and, in device pixels, within what the format can hold (WebP
    16,383, JPEG 65,535), so no output is one the encoder would fail on (a
    503 that retrying cannot fix)."""
    if max(width, height) > limits.max_dimension:
        raise InvalidArgument(
            f"the output would be {width}×{height}; a side may be at most "
            f"{limits.max_dimension} (LITHO_RENDERER_MAX_DIMENSION)",
            errors=[FieldError(field, f"a side must be at most {limits.max_dimension} "
                                      "(LITHO_RENDERER_MAX_DIMENSION)")])
    f = formats.by_name(fmt)
    most = f.max_side if f else None
    if most is not None and max(width, height) * scale > most:
        raise InvalidArgument(
            f"the output would be {round(width * scale)}×{round(height * scale)} device "
            f"pixels; a {fmt.upper()} side can be at most {most}",
            errors=[FieldError(field, f"a side × deviceScaleFactor must be at most {most} "
                                      f"for {fmt.upper()}")])
    pixels = width * height * scale * scale
    limit, setting, of = limits.max_pixels, "LITHO_RENDERER_MAX_PIXELS", ""
    if fmt == formats.WEBP.name and limits.max_webp_pixels < limit:
        limit, setting, of = limits.max_webp_pixels, "LITHO_RENDERER_MAX_WEBP_PIXELS", " of a WebP"
    if pixels > limit:
        raise InvalidArgument(
            f"the output would be {width}×{height} at scale {scale:g} ({pixels:,.0f} pixels); "
            f"the limit{of} is {limit:,} ({setting})",
            errors=[FieldError(field, f"width × height × deviceScaleFactor² is too large "
                                      f"({setting})")])
