"""PDFs: options, Chromium's printing, merging and repeatable bytes."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Route
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, ByteStringObject

from litho.errors import InvalidArgument
from services.renderer._pdf import (
    PdfOptions,
    merge_pdfs,
    normalise_pdf,
    page_count,
    pdf_info,
    print_pdf,
)

MARK = """<!doctype html><html><head><title>Quarterly report</title><style>
  html, body { margin: 0; font: 12px sans-serif; }
</style></head><body><span>MARK</span></body></html>"""

PAGES = """<!doctype html><html><body style="margin:0">
  <div style="page-break-after: always">one</div>
  <div style="page-break-after: always">two</div>
  <div>three</div>
</body></html>"""

CSS_SIZE = """<!doctype html><html><head><style>
  @page { size: 100mm 150mm; margin: 0; }
</style></head><body>small</body></html>"""

CARD = """<!doctype html><html><head><style>html, body { margin: 0; }</style></head>
<body><div style="width: 1200px; height: 630px; background: #4f46e5; color: white;
  font: bold 72px sans-serif">CARD</div></body></html>"""

MM = 72 / 25.4


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(java_script_enabled=False)
    yield await context.new_page()
    await context.close()


async def printed(page: Page, html: str, options: PdfOptions) -> bytes:
    await page.set_content(html, wait_until="load")
    return normalise_pdf(await print_pdf(page, options), page_size_pt=options.page_size_pt())


def text_positions(data: bytes, page: int = 0) -> dict[str, tuple[float, float]]:
    """Where each text run starts, in PDF points from the bottom-left corner."""
    out: dict[str, tuple[float, float]] = {}

    def visit(text: str, cm: list[float], tm: list[float], *_: object) -> None:
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            out[text.strip()] = (x, y)

    PdfReader(io.BytesIO(data)).pages[page].extract_text(visitor_text=visit)
    return out


@pytest.mark.parametrize(("options", "size"), [
    (PdfOptions(preset="A4"), (595.28, 841.89)),
    (PdfOptions(preset="A3"), (841.89, 1190.55)),
    (PdfOptions(preset="A5"), (419.53, 595.28)),
    (PdfOptions(preset="Letter"), (612.0, 792.0)),
    (PdfOptions(preset="Legal"), (612.0, 1008.0)),
    (PdfOptions(preset="Letter", landscape=True), (792.0, 612.0)),
    (PdfOptions(width_mm=100, height_mm=50), (283.46, 141.73)),
])
async def test_page_sizes_are_exact(page: Page, options: PdfOptions,
                                    size: tuple[float, float]) -> None:
    count, width, height = pdf_info(await printed(page, MARK, options))
    assert count == 1
    assert (width, height) == pytest.approx(size, abs=0.01)


async def test_css_page_size_applies_only_without_a_requested_size(page: Page) -> None:
    for options in (PdfOptions(), PdfOptions(template_px=(1200, 630))):
        _, width, height = pdf_info(await printed(page, CSS_SIZE, options))
        assert (width, height) == pytest.approx((100 * MM, 150 * MM), abs=1)
    for options in (PdfOptions(preset="A5"), PdfOptions(preset="A5", template_px=(1200, 630))):
        _, width, height = pdf_info(await printed(page, CSS_SIZE, options))
        assert (width, height) == pytest.approx((419.53, 595.28), abs=0.01)
    # Without a CSS size or a template size (print_pdf on its own), A4.
    _, width, height = pdf_info(await printed(page, MARK, PdfOptions()))
    assert (width, height) == pytest.approx((595.28, 841.89), abs=1)


@pytest.mark.parametrize(("size_px", "size_pt"), [
    ((1200, 630), (900, 472.5)),
    ((1201, 631), (900.75, 473.25)),  # Chromium prints 900.96 x 474: trimmed back
    ((630, 1200), (472.5, 900)),
])
async def test_without_a_requested_or_css_size_the_page_is_the_templates(
        page: Page, size_px: tuple[int, int], size_pt: tuple[float, float]) -> None:
    await page.set_viewport_size({"width": size_px[0], "height": size_px[1]})
    html = CARD.replace("1200px", f"{size_px[0]}px").replace("630px", f"{size_px[1]}px")
    data = await printed(page, html, PdfOptions(template_px=size_px))
    assert pdf_info(data) == pytest.approx((1, *size_pt), abs=0.01)
    # landscape turns requested sizes only: the template has its own orientation.
    assert pdf_info(await printed(page, html, PdfOptions(template_px=size_px, landscape=True))
                    ) == pytest.approx((1, *size_pt), abs=0.01)


async def test_a_card_fills_its_page(page: Page) -> None:
    await page.set_viewport_size({"width": 1200, "height": 630})
    data = await printed(page, CARD, PdfOptions(template_px=(1200, 630)))
    # One page of the card's size, the card's first line at its top-left corner
    # (A4 held the card in its top half, 0.75 pt for each CSS pixel).
    assert pdf_info(data) == pytest.approx((1, 900, 472.5), abs=0.01)
    x, y = text_positions(data)["CARD"]
    assert x == pytest.approx(0, abs=1)
    assert 472.5 - 72 * 0.75 * 1.5 < y < 472.5
    assert pdf_info(await printed(page, CARD, PdfOptions(preset="A4"))
                    ) == pytest.approx((1, 595.28, 841.89), abs=0.01)


async def test_page_breaks_make_pages(page: Page) -> None:
    data = await printed(page, PAGES, PdfOptions(preset="A5"))
    assert pdf_info(data)[0] == 3
    reader = PdfReader(io.BytesIO(data))
    assert [p.extract_text().strip() for p in reader.pages] == ["one", "two", "three"]


async def test_max_pages_prints_only_the_first_pages(page: Page) -> None:
    await page.set_content(PAGES, wait_until="load")
    options = PdfOptions(preset="A5")
    assert page_count(await print_pdf(page, options, max_pages=2)) == 2
    first = PdfReader(io.BytesIO(await print_pdf(page, options, max_pages=1)))
    assert [p.extract_text().strip() for p in first.pages] == ["one"]
    # A cap past the last page prints the whole document.
    assert page_count(await print_pdf(page, options, max_pages=50)) == 3
    with pytest.raises(ValueError):
        await print_pdf(page, options, max_pages=0)


async def test_margins_move_the_content(page: Page) -> None:
    x0, y0 = text_positions(await printed(page, MARK, PdfOptions(preset="A4")))["MARK"]
    options = PdfOptions(preset="A4", margin_left="20mm", margin_top="0.5in")
    x1, y1 = text_positions(await printed(page, MARK, options))["MARK"]
    assert x1 - x0 == pytest.approx(20 * MM, abs=0.75)
    assert y0 - y1 == pytest.approx(36, abs=0.01)  # 0.5in lower on the page
    # Chromium rounds margins down to whole CSS pixels (0.75 pt): 1cm is 37.8px.
    options = PdfOptions(preset="A4", margin_left="96px", margin_top="1cm")
    x2, y2 = text_positions(await printed(page, MARK, options))["MARK"]
    assert x2 - x0 == pytest.approx(72, abs=0.01)
    assert y0 - y2 == pytest.approx(37 * 0.75, abs=0.01)


async def test_same_page_same_bytes_whatever_chromium_stamps(page: Page) -> None:
    await page.set_content(MARK, wait_until="load")
    raw = await print_pdf(page, PdfOptions(preset="A4"))
    later = _restamped(raw)  # as if printed another day, by another run
    assert later != raw
    a, b = normalise_pdf(raw), normalise_pdf(later)
    assert a == b
    assert normalise_pdf(raw) == a
    reader = PdfReader(io.BytesIO(a))
    assert reader.metadata == {"/Producer": "Litho", "/Title": "Quarterly report"}
    file_id = reader.trailer["/ID"]
    assert isinstance(file_id, ArrayObject)
    assert file_id[0] == file_id[1] and len(file_id[0]) == 16
    assert b"CreationDate" not in a and b"HeadlessChrome" not in a


def _restamped(raw: bytes) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(raw)), keep_initial_header=True)
    writer.add_metadata({"/CreationDate": "D:20300101000000Z", "/ModDate": "D:20300101000000Z"})
    writer._ID = ArrayObject([ByteStringObject(b"0123456789abcdef")] * 2)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_merge_keeps_order_and_is_repeatable(page: Page) -> None:
    options = PdfOptions(preset="A5")
    parts = []
    for html in (MARK, PAGES, MARK.replace("MARK", "LAST")):
        await page.set_content(html, wait_until="load")
        parts.append(await print_pdf(page, options))
    merged = merge_pdfs(parts, page_size_pt=options.page_size_pt())
    assert pdf_info(merged) == pytest.approx((5, 419.53, 595.28), abs=0.01)
    reader = PdfReader(io.BytesIO(merged))
    texts = [p.extract_text().strip() for p in reader.pages]
    assert texts == ["MARK", "one", "two", "three", "LAST"]
    assert merge_pdfs([_restamped(p) for p in parts],
                      page_size_pt=options.page_size_pt()) == merged
    assert merge_pdfs(parts) != merged  # Chromium's rounded sizes, not the asked-for ones


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"preset": "B5"}, "pdf.preset"),
    ({"preset": "A4", "width_mm": 100, "height_mm": 100}, "pdf.preset"),
    ({"width_mm": 100}, "pdf.heightMm"),
    ({"width_mm": 0.5, "height_mm": 100}, "pdf.widthMm"),
    ({"width_mm": 100, "height_mm": 6000}, "pdf.heightMm"),
    ({"margin_top": "10"}, "pdf.margins.top"),
    ({"margin_right": "10 mm"}, "pdf.margins.right"),
    ({"margin_bottom": "-1mm"}, "pdf.margins.bottom"),
    ({"margin_left": "1e3mm"}, "pdf.margins.left"),
    ({"margin_left": "10pt"}, "pdf.margins.left"),
    ({"margin_left": "10mm;x"}, "pdf.margins.left"),
    ({"margin_left": "10mm\n"}, "pdf.margins.left"),
    ({"margin_left": "\u0663mm"}, "pdf.margins.left"),  # an Arabic-Indic 3
    ({"margin_left": "12345mm"}, "pdf.margins.left"),
    ({"preset": "A5", "margin_left": "100mm", "margin_right": "48mm"}, "pdf.margins.left"),
    ({"preset": "A5", "margin_top": "10cm", "margin_bottom": "11cm"}, "pdf.margins.top"),
    # Margins meet the template's size when it is the page: 300 px is 79.4 mm.
    ({"template_px": (300, 200), "margin_left": "40mm", "margin_right": "40mm"},
     "pdf.margins.left"),
])
def test_bad_options_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        PdfOptions(**kwargs)  # type: ignore[arg-type]
    assert [e.field for e in caught.value.errors] == [field]


def test_good_options() -> None:
    options = PdfOptions(width_mm=100, height_mm=200, landscape=True, margin_top="0",
                         margin_right="1.5cm", margin_bottom="0.25in", margin_left="24px")
    assert options.page_size_mm() == (200, 100)
    assert options.margins_mm() == pytest.approx((0, 15, 6.35, 6.35))
    assert PdfOptions().page_size_pt() is None
    assert PdfOptions(template_px=(1200, 630)).page_size_pt() == (900, 472.5)
    assert PdfOptions(template_px=(1200, 630)).page_size_mm() == pytest.approx((317.5, 166.6875))
    assert PdfOptions(preset="A5", template_px=(1200, 630)).page_size_pt() == pytest.approx(
        (419.53, 595.28), abs=0.01)
    assert not PdfOptions(template_px=(1200, 630)).requested()
    assert PdfOptions(preset="A5").requested() and PdfOptions(width_mm=1, height_mm=1).requested()
    with pytest.raises(ValueError):
        PdfOptions(template_px=(0, 630))


def test_not_a_pdf() -> None:
    with pytest.raises(ValueError, match="not a PDF"):
        pdf_info(b"%PDF-1.4 nonsense")
    with pytest.raises(ValueError, match="not a PDF"):
        merge_pdfs([b"hello"])
    with pytest.raises(ValueError, match="nothing"):
        merge_pdfs([])


async def test_a_document_without_title_gets_none_not_its_url(page: Page) -> None:
    # Pages sit at the renderer's base URL; Chromium titles an untitled one
    # by that URL's host, which must not become the PDF's title.
    base = "http://document.invalid/"

    async def serve(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html",
                            body=MARK.replace("<title>Quarterly report</title>", ""))

    await page.route(base, serve)
    try:
        await page.goto(base, wait_until="load")
        raw = await print_pdf(page, PdfOptions(preset="A4"))
    finally:
        await page.unroute(base, serve)
    assert b"document.invalid" in raw  # what Chromium stamps
    reader = PdfReader(io.BytesIO(merge_pdfs([raw], base_url=base)))
    assert reader.metadata == {"/Producer": "Litho"}
