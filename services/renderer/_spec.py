"""What a render asks for, validated: formats, sizes and per-format options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from litho import renders
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


@dataclass(frozen=True)
class PdfSpec:
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


DEFAULT_QUALITY = {"jpeg": 90, "webp": 90}


def check_options(fmt: str, o: RenderOptions, limits: Limits) -> None:
    """Collect every problem with the options of a ``fmt`` render and raise them together."""
    p: list[FieldError] = []
    if fmt not in renders.CONTENT_TYPES:
        p.append(FieldError("format", f"must be one of {', '.join(renders.CONTENT_TYPES)}"))
    for name in ("width", "height"):
        value = getattr(o, name)
        if value and not 1 <= value <= limits.max_dimension:
            p.append(FieldError(name, f"must be between 1 and {limits.max_dimension}"))
    if o.scale and not 1 <= o.scale <= limits.max_scale:
        p.append(FieldError("deviceScaleFactor", f"must be between 1 and {limits.max_scale:g}"))
    if o.quality:
        if fmt not in DEFAULT_QUALITY:
            p.append(FieldError("quality", "applies to jpeg and webp only"))
        elif not 1 <= o.quality <= 100:
            p.append(FieldError("quality", "must be between 1 and 100"))
    if o.transparent and fmt not in ("png", "webp"):
        p.append(FieldError("transparent", "applies to png and webp only"))
    if len(o.selector) > 500:
        p.append(FieldError("selector", "must be at most 500 characters"))
    if fmt == "pdf":
        p += _check_pdf(o.pdf)
    elif o.pdf != PdfSpec():
        p.append(FieldError("pdf", "applies to the pdf format only"))
    if fmt == "gif":
        p += _check_gif(o.gif, limits)
    elif o.gif != GifSpec():
        p.append(FieldError("gif", "applies to the gif format only"))
    if p:
        raise InvalidArgument("the render options are invalid", errors=p)


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


def check_pixels(
    width: int, height: int, scale: float, limits: Limits, *, field: str = "width"
) -> None:
    """The output (or a selector's box) stays within the pixel and size limits."""
    pixels = width * height * scale * scale
    if pixels > limits.max_pixels:
        raise InvalidArgument(
            f"the output would be {width}×{height} at scale {scale:g} ({pixels:,.0f} pixels); "
            f"the limit is {limits.max_pixels:,} (LITHO_RENDERER_MAX_PIXELS)",
            errors=[FieldError(field, "width × height × deviceScaleFactor² is too large")])
