"""PDFs: Chromium prints; pypdf merges, fixes page sizes and makes bytes repeatable.

``print_pdf`` is the only async function and does no CPU work of its own. The
rest is synchronous pypdf work for an executor:

    raw = await print_pdf(page, options)
    pdf = await loop.run_in_executor(
        None, functools.partial(normalise_pdf, raw, page_size_pt=options.page_size_pt()))

Page size, first that applies: a preset or a custom size; the document's CSS
``@page { size }``; the template's own size (the render's width × height in
CSS pixels, 1 px = 0.75 pt, so a 1200×630 card prints on a 900×472.5 pt page
that it fills); A4 only when no template size is given (``print_pdf`` used on
its own). ``landscape`` turns a preset, custom or A4 size, never a CSS one or
the template's, which already has the orientation it was designed in.
Margins are the page margins outside the content; a template's ``@page {
margin }`` overrides them, as in any browser. Chromium rounds them down to whole
CSS pixels (1cm prints as 37px, 27.75 pt).

Chromium rounds page sizes up by up to ~0.6 pt (A4 comes out 595.92 x 841.92),
so ``normalise_pdf`` trims each page box back to the size asked for, keeping
the top-left corner where it was. It also drops Chromium's creation and
modification dates, its Creator (the browser's user agent) and Producer
(keeping a title the template set), and sets the file identifier to a digest
of the file, so the same content always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from playwright.async_api import Page
from pypdf import PdfReader, PdfWriter
from pypdf.errors import PyPdfError
from pypdf.generic import ArrayObject, ByteStringObject, FloatObject, RectangleObject

from litho.errors import FieldError, InvalidArgument

#: (width, height) in millimetres, portrait.
PDF_PRESETS: Final[dict[str, tuple[float, float]]] = {
    "A3": (297.0, 420.0),
    "A4": (210.0, 297.0),
    "A5": (148.0, 210.0),
    "Letter": (215.9, 279.4),
    "Legal": (215.9, 355.6),
}
FALLBACK_PRESET: Final = "A4"
MIN_PAGE_MM: Final = 1.0
MAX_PAGE_MM: Final = 5000.0
#: A number with at most 4 integer and 3 decimal digits, and a unit; or a bare 0.
#: ASCII digits only, and matched with fullmatch (``$`` would allow a trailing newline).
LENGTH_RE: Final = re.compile(r"0|([0-9]{1,4}(?:\.[0-9]{1,3})?)(mm|cm|in|px)")

_MM_PER_UNIT: Final = {"mm": 1.0, "cm": 10.0, "in": 25.4, "px": 25.4 / 96}
_PT_PER_MM: Final = 72 / 25.4
_PT_PER_PX: Final = 0.75
#: Chromium's rounding of page sizes stays well under this; anything bigger is
#: not rounding (a CSS page size, say) and is left alone.
_ROUNDING_PT: Final = 1.5
_PRODUCER: Final = "Litho"
#: Chromium titles a page without <title> by its URL (or that URL's host):
#: such a title is none, and is left out.
_UNTITLED: Final = frozenset({"about:blank"})
_ID_PLACEHOLDER: Final = b"\x00" * 16


@dataclass(frozen=True)
class PdfOptions:
    """How to print. Errors name fields as the public API does (``pdf.widthMm``)."""

    preset: str | None = None
    width_mm: float | None = None
    height_mm: float | None = None
    landscape: bool = False
    margin_top: str = "0"
    margin_right: str = "0"
    margin_bottom: str = "0"
    margin_left: str = "0"
    #: The template's own (width, height) in CSS pixels: the page size when
    #: neither a preset nor a custom size is given and the document's CSS sets none.
    template_px: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        errors = self._size_errors()
        errors += self._margin_errors(check_fit=not errors)
        if errors:
            raise InvalidArgument("the PDF options are invalid", errors=errors)

    def requested(self) -> bool:
        """A preset or a custom size: the document's CSS page size does not apply."""
        return self.preset is not None or None not in (self.width_mm, self.height_mm)

    def page_size_mm(self) -> tuple[float, float] | None:
        """The page's (width, height) unless the document's CSS sets one: the
        requested size after ``landscape``, else the template's; None without either."""
        if self.preset is not None:
            width, height = PDF_PRESETS[self.preset]
        elif self.width_mm is not None and self.height_mm is not None:
            width, height = self.width_mm, self.height_mm
        elif self.template_px is not None:
            px_mm = _MM_PER_UNIT["px"]
            return self.template_px[0] * px_mm, self.template_px[1] * px_mm
        else:
            return None
        return (height, width) if self.landscape else (width, height)

    def page_size_pt(self) -> tuple[float, float] | None:
        if not self.requested() and self.template_px is not None:
            # Exact in points: no round trip through millimetres.
            return self.template_px[0] * _PT_PER_PX, self.template_px[1] * _PT_PER_PX
        size = self.page_size_mm()
        if size is None:
            return None
        return size[0] * _PT_PER_MM, size[1] * _PT_PER_MM

    def margins_mm(self) -> tuple[float, float, float, float]:
        """(top, right, bottom, left)."""
        return (
            _length_mm(self.margin_top),
            _length_mm(self.margin_right),
            _length_mm(self.margin_bottom),
            _length_mm(self.margin_left),
        )

    def _size_errors(self) -> list[FieldError]:
        if self.template_px is not None and min(self.template_px) < 1:
            raise ValueError(f"not a template size: {self.template_px!r}")
        custom = (self.width_mm, self.height_mm)
        if self.preset is not None:
            if self.preset not in PDF_PRESETS:
                return [FieldError("pdf.preset", f"must be one of {', '.join(PDF_PRESETS)}")]
            if custom != (None, None):
                return [FieldError("pdf.preset", "give a preset or a custom size, not both")]
            return []
        if custom == (None, None):
            return []
        errors = []
        for name, value in (("pdf.widthMm", self.width_mm), ("pdf.heightMm", self.height_mm)):
            if value is None:
                errors.append(FieldError(name, "a custom width and height go together"))
            elif not MIN_PAGE_MM <= value <= MAX_PAGE_MM:
                errors.append(FieldError(name, f"must be {MIN_PAGE_MM:g}-{MAX_PAGE_MM:g} mm"))
        return errors

    def _margin_errors(self, *, check_fit: bool) -> list[FieldError]:
        errors = []
        for side in ("top", "right", "bottom", "left"):
            if not LENGTH_RE.fullmatch(getattr(self, f"margin_{side}")):
                errors.append(FieldError(f"pdf.margins.{side}",
                                         "must be a length like 10mm, 1.5cm, 0.5in or 24px, or 0"))
        if errors or not check_fit:
            return errors
        top, right, bottom, left = self.margins_mm()
        width, height = self.page_size_mm() or _fallback_size_mm(self.landscape)
        if left + right >= width:
            errors.append(FieldError("pdf.margins.left", "left and right margins leave no page"))
        if top + bottom >= height:
            errors.append(FieldError("pdf.margins.top", "top and bottom margins leave no page"))
        return errors


async def print_pdf(page: Page, options: PdfOptions, *, max_pages: int | None = None) -> bytes:
    """Chromium's PDF of the loaded page; pass it through ``normalise_pdf``.

    ``max_pages`` prints only the first pages: Chromium still lays out the
    whole document, but never paints or writes the pages past it, so a
    document with thousands of page breaks costs no more than its layout.
    """
    if max_pages is not None and max_pages < 1:
        raise ValueError("max_pages must be at least 1")
    width, height = options.page_size_mm() or _fallback_size_mm(options.landscape)
    top, right, bottom, left = options.margins_mm()
    return await page.pdf(
        width=_inches(width),
        height=_inches(height),
        # Chromium's CSS page size wins over width and height only when asked to.
        prefer_css_page_size=not options.requested(),
        print_background=True,
        margin={"top": _inches(top), "right": _inches(right),
                "bottom": _inches(bottom), "left": _inches(left)},
        # Chromium caps a range at the document's last page.
        page_ranges=f"1-{max_pages}" if max_pages is not None else None,
    )


def normalise_pdf(data: bytes, *, page_size_pt: tuple[float, float] | None = None) -> bytes:
    """``data`` with fixed metadata and ID and, given ``page_size_pt``, exact page boxes."""
    return merge_pdfs([data], page_size_pt=page_size_pt)


def merge_pdfs(
    pdfs: Sequence[bytes], *, page_size_pt: tuple[float, float] | None = None,
    base_url: str = "",
) -> bytes:
    """The pages of ``pdfs`` in order, as one normalised PDF (see ``normalise_pdf``).

    ``base_url`` is the documents' URL: Chromium's fallback title for a
    document without ``<title>`` is that URL or its host, never kept."""
    untitled = _UNTITLED | {base_url, urlsplit(base_url).hostname or ""} - {""}
    if not pdfs:
        raise ValueError("nothing to merge")
    writer = PdfWriter()
    title = None
    try:
        for data in pdfs:
            reader = PdfReader(io.BytesIO(data))
            if title is None and reader.metadata is not None:
                title = reader.metadata.title
            writer.append(reader)
    except PyPdfError as exc:
        raise ValueError("not a PDF pypdf can read") from exc
    if page_size_pt is not None:
        for page in writer.pages:
            _fit_boxes(page.mediabox, page_size_pt)
            if "/CropBox" in page:
                _fit_boxes(page.cropbox, page_size_pt)
    info = {"/Producer": _PRODUCER}
    if title and title not in untitled:
        info["/Title"] = title
    writer.metadata = info
    writer._ID = ArrayObject([ByteStringObject(_ID_PLACEHOLDER)] * 2)  # see _stamp_id
    out = io.BytesIO()
    writer.write(out)
    return _stamp_id(out.getvalue())


def pdf_info(data: bytes) -> tuple[int, float, float]:
    """(page count, width, height) in points; the size is the first page's."""
    try:
        reader = PdfReader(io.BytesIO(data))
        box = reader.pages[0].mediabox
    except (PyPdfError, IndexError) as exc:
        raise ValueError("not a PDF pypdf can read") from exc
    return len(reader.pages), float(box.width), float(box.height)


def page_count(data: bytes) -> int:
    """Pages of one printed PDF (reads the page tree, not the content)."""
    try:
        return len(PdfReader(io.BytesIO(data)).pages)
    except PyPdfError as exc:
        raise ValueError("not a PDF pypdf can read") from exc


def _fit_boxes(box: RectangleObject, size_pt: tuple[float, float]) -> None:
    width, height = size_pt
    if abs(box.width - width) > _ROUNDING_PT or abs(box.height - height) > _ROUNDING_PT:
        return
    left, top = box.left, box.top
    box.lower_left = (FloatObject(left), FloatObject(round(top - height, 4)))
    box.upper_right = (FloatObject(round(left + width, 4)), FloatObject(top))


def _stamp_id(pdf: bytes) -> bytes:
    """Replace the placeholder file ID with a digest of the file (both halves).

    The ID sits in the trailer after the cross-reference table, and the digest
    has the placeholder's length, so no offset moves.
    """
    placeholder = b"<" + _ID_PLACEHOLDER.hex().encode() + b">"
    start = pdf.rfind(b"trailer")
    if start < 0 or pdf.count(placeholder, start) != 2:
        raise AssertionError("pypdf wrote the trailer in an unexpected form")
    digest = b"<" + hashlib.md5(pdf, usedforsecurity=False).hexdigest().encode() + b">"
    return pdf[:start] + pdf[start:].replace(placeholder, digest)


def _fallback_size_mm(landscape: bool) -> tuple[float, float]:
    width, height = PDF_PRESETS[FALLBACK_PRESET]
    return (height, width) if landscape else (width, height)


def _length_mm(length: str) -> float:
    match = LENGTH_RE.fullmatch(length)
    if match is None:
        raise ValueError(f"not a length: {length!r}")
    if match.group(1) is None:
        return 0.0
    return float(match.group(1)) * _MM_PER_UNIT[match.group(2)]


def _inches(mm: float) -> str:
    # Playwright turns "mm" into pixels at 3.78 px/mm; inches pass through exactly.
    return f"{mm / 25.4:.6f}in"

