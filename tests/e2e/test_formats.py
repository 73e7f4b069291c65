"""Every output format and option, decoded: pixels, PDF pages and sizes, GIF frames."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from pypdf import PdfReader

from litho import renders
from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create, render

pytestmark = pytest.mark.production

BOXES = """<!doctype html><html><head><style>
  html, body { margin: 0; }
  body { background: #ff0000; }
  .blue { position: absolute; left: 0; top: 0; width: 100px; height: 100px; background: #0000ff; }
  #badge { position: absolute; left: 200px; top: 50px; width: 80px; height: 40px;
           background: #00ff00; }
</style></head><body><div class="blue"></div><div id="badge">{{ title }}</div></body></html>"""

FLOATING = """<!doctype html><html><head><style>
  html, body { margin: 0; background: transparent; }
  .dot { position: absolute; left: 10px; top: 10px; width: 30px; height: 30px;
         background: #0000ff; }
</style></head><body><div class="dot"></div></body></html>"""

ANIMATED = """<!doctype html><html><head><style>
  html, body { margin: 0; background: #ffffff; }
  @keyframes slide { from { left: 0; } to { left: 150px; } }
  .dot { position: absolute; top: 10px; left: 0; width: 50px; height: 50px;
         background: #0000ff; animation: slide 1s linear forwards; }
</style></head><body><div class="dot"></div></body></html>"""

PAGES = """<!doctype html><html><head><style>
  body { margin: 0; font: 20px sans-serif; }
  .page { page-break-after: always; }
</style></head><body><div class="page">{{ title }} one</div><div class="page">two</div>
<div>three</div></body></html>"""


async def fetch(live: Live, url: str) -> bytes:
    async with live.http.get(url) as r:
        assert r.status == 200
        return await r.read()


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.mark.parametrize(("fmt", "mime"), [
    ("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP"), ("gif", "GIF")])
async def test_image_formats_decode_with_the_right_pixels(live: Live, fmt: str, mime: str) -> None:
    template = await create(live, html=BOXES, width=300, height=150)
    result = await render(live, template["id"], {"format": fmt, "variables": {"title": fmt}})
    assert result["format"] == fmt and result["url"].endswith(f".{fmt}")
    data = await fetch(live, result["url"])
    image = Image.open(io.BytesIO(data))
    assert image.format == mime and image.size == (300, 150)
    assert result["size"] == len(data)
    r, g, b = rgb(data).getpixel((50, 50))  # type: ignore[misc]
    assert b > 200 and r < 60 and g < 60
    r, g, b = rgb(data).getpixel((250, 120))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60


async def test_quality_scale_and_selector(live: Live) -> None:
    template = await create(live, html=BOXES, width=300, height=150)
    low = await render(live, template["id"], {"format": "jpeg", "quality": 5})
    high = await render(live, template["id"], {"format": "jpeg", "quality": 95})
    assert low["size"] < high["size"]

    double = await render(live, template["id"], {"deviceScaleFactor": 2})
    assert (double["width"], double["height"]) == (600, 300)
    image = rgb(await fetch(live, double["url"]))
    assert image.size == (600, 300) and image.getpixel((190, 190)) == (0, 0, 255)

    crop = await render(live, template["id"], {"selector": "#badge"})
    assert (crop["width"], crop["height"]) == (80, 40)
    assert rgb(await fetch(live, crop["url"])).getpixel((40, 20)) == (0, 255, 0)

    resized = await render(live, template["id"], {"width": 120, "height": 60})
    assert rgb(await fetch(live, resized["url"])).size == (120, 60)


@pytest.mark.parametrize("fmt", ["png", "webp"])
async def test_transparent_background(live: Live, fmt: str) -> None:
    template = await create(live, html=FLOATING, width=60, height=60)
    opaque = await render(live, template["id"], {"format": fmt})
    clear = await render(live, template["id"], {"format": fmt, "transparent": True})
    opaque_image = Image.open(io.BytesIO(await fetch(live, opaque["url"]))).convert("RGBA")
    clear_image = Image.open(io.BytesIO(await fetch(live, clear["url"]))).convert("RGBA")
    assert opaque_image.getpixel((55, 55)) == (255, 255, 255, 255)
    assert clear_image.getpixel((55, 55))[3] == 0  # type: ignore[index]
    r, g, b, a = clear_image.getpixel((20, 20))  # type: ignore[misc]
    assert a == 255 and b > 250 and r < 5 and g < 5  # lossy WebP may be off by one


async def test_gif_steps_css_animation_deterministically(live: Live) -> None:
    template = await create(live, html=ANIMATED, width=200, height=70)
    result = await render(live, template["id"], {"format": "gif", "gif": {"fps": 10}})
    data = await fetch(live, result["url"])
    image = Image.open(io.BytesIO(data))
    assert image.format == "GIF" and image.size == (200, 70)
    assert image.info["loop"] == 0
    assert getattr(image, 'n_frames', 1) == result["frameCount"] == 11  # 0, 100, …, 1000 ms
    assert image.info["duration"] == 100
    image.seek(0)
    assert image.convert("RGB").getpixel((25, 35)) == (0, 0, 255)
    image.seek(getattr(image, 'n_frames', 1) - 1)
    last = image.convert("RGB")
    assert last.getpixel((25, 35)) == (255, 255, 255)
    assert last.getpixel((175, 35)) == (0, 0, 255)


async def test_gif_frame_count_is_what_the_file_holds(live: Live) -> None:
    # Two jumps in a second: 11 captured frames, only 3 different pictures.
    html = ANIMATED.replace("1s linear forwards", "1s steps(2, end) forwards")
    template = await create(live, html=html, width=200, height=70)
    result = await render(live, template["id"], {"format": "gif", "gif": {"fps": 10}})
    image = Image.open(io.BytesIO(await fetch(live, result["url"])))
    assert getattr(image, "n_frames", 1) == result["frameCount"] == 3


async def test_still_image_of_an_animated_template_shows_the_end_state(live: Live) -> None:
    template = await create(live, html=ANIMATED, width=200, height=70)
    image = rgb(await fetch(live, (await render(live, template["id"], {}))["url"]))
    assert image.getpixel((175, 35)) == (0, 0, 255)


async def test_static_template_as_gif_is_one_frame(live: Live) -> None:
    template = await create(live, html=BOXES, width=300, height=150)
    result = await render(live, template["id"], {"format": "gif"})
    image = Image.open(io.BytesIO(await fetch(live, result["url"])))
    assert getattr(image, 'n_frames', 1) == 1 and result["frameCount"] == 1


async def test_pdf_presets_margins_and_css_page_breaks(live: Live) -> None:
    template = await create(live, html=PAGES, width=600, height=400)
    a4 = await render(live, template["id"], {"format": "pdf", "pdf": {"preset": "A4"},
                                             "variables": {"title": "Hi"}})
    assert a4["pageCount"] == 3
    assert a4["pageSize"] == {"width": 595.28, "height": 841.89, "unit": "pt"}
    reader = PdfReader(io.BytesIO(await fetch(live, a4["url"])))
    assert len(reader.pages) == 3
    assert "Hi one" in reader.pages[0].extract_text()
    box = reader.pages[0].mediabox
    assert (round(float(box.width), 2), round(float(box.height), 2)) == (595.28, 841.89)

    letter = await render(live, template["id"], {"format": "pdf", "pdf": {
        "preset": "Letter", "landscape": True,
        "margins": {"top": "1in", "left": "1in", "right": "0", "bottom": "0"}}})
    assert letter["pageSize"] == {"width": 792.0, "height": 612.0, "unit": "pt"}
    custom = await render(live, template["id"], {"format": "pdf", "pdf": {
        "widthMm": 100, "heightMm": 50}})
    assert custom["pageSize"]["width"] == pytest.approx(283.46, abs=0.01)


CARD = """<!doctype html><html><head><style>
  html, body { margin: 0; }
  .card { width: 100vw; height: 100vh; background: #4f46e5; color: white;
          font: bold 64px sans-serif; }
</style></head><body><div class="card">{{ title }}</div></body></html>"""


def page_box(data: bytes) -> list[tuple[float, float]]:
    reader = PdfReader(io.BytesIO(data))
    return [(round(float(p.mediabox.width), 2), round(float(p.mediabox.height), 2))
            for p in reader.pages]


async def test_pdf_without_a_size_is_one_page_of_the_templates_size(live: Live) -> None:
    template = await create(live, html=CARD, width=1200, height=630)
    card = await render(live, template["id"], {"format": "pdf", "variables": {"title": "Hi"}})
    # 1 CSS px = 0.75 pt: the card fills one page of its own size, not half an A4.
    assert card["pageCount"] == 1
    assert card["pageSize"] == {"width": 900.0, "height": 472.5, "unit": "pt"}
    data = await fetch(live, card["url"])
    assert page_box(data) == [(900.0, 472.5)]
    assert "Hi" in PdfReader(io.BytesIO(data)).pages[0].extract_text()
    # The render's width and height are the template's size for that render.
    resized = await render(live, template["id"], {"format": "pdf", "width": 600, "height": 400})
    assert resized["pageSize"] == {"width": 450.0, "height": 300.0, "unit": "pt"}
    assert page_box(await fetch(live, resized["url"])) == [(450.0, 300.0)]
    # A preset or a custom size still wins, and is unchanged.
    a4 = await render(live, template["id"], {"format": "pdf", "pdf": {"preset": "A4"}})
    assert a4["pageSize"] == {"width": 595.28, "height": 841.89, "unit": "pt"}
    custom = await render(live, template["id"], {"format": "pdf", "pdf": {
        "widthMm": 100, "heightMm": 50}})
    assert custom["pageSize"] == {"width": 283.46, "height": 141.73, "unit": "pt"}


async def test_pdf_css_page_size_wins_over_the_templates_size(live: Live) -> None:
    html = CARD.replace("<style>", "<style>@page { size: 100mm 150mm; margin: 0; }")
    template = await create(live, html=html, width=1200, height=630)
    result = await render(live, template["id"], {"format": "pdf"})
    assert result["pageSize"]["width"] == pytest.approx(100 * 72 / 25.4, abs=1)
    assert result["pageSize"]["height"] == pytest.approx(150 * 72 / 25.4, abs=1)
    a5 = await render(live, template["id"], {"format": "pdf", "pdf": {"preset": "A5"}})
    assert a5["pageSize"] == {"width": 419.53, "height": 595.28, "unit": "pt"}


async def test_multi_page_pdf_of_cards_has_card_pages(live: Live) -> None:
    template = await create(live, html=CARD, width=1200, height=630)
    body = {"variableSets": [{"title": t} for t in ("one", "two")]}
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/pdf", json=body,
                              headers=live.auth()) as r:
        assert r.status == 200, await r.text()
        result = await r.json()
    assert result["pageCount"] == 2
    data = await fetch(live, result["url"])
    assert page_box(data) == [(900.0, 472.5)] * 2
    assert [p.extract_text().strip() for p in PdfReader(io.BytesIO(data)).pages] == ["one", "two"]


async def test_multi_page_pdf_one_page_per_variable_set(live: Live) -> None:
    template = await create(live, html="<h1>{{ name }}</h1>", width=600, height=400)
    body: dict[str, Any] = {"variableSets": [{"name": n} for n in ("Ada", "Grace", "Alan")],
                            "pdf": {"preset": "A5"}}
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/pdf", json=body,
                              headers=live.auth()) as r:
        assert r.status == 200, await r.text()
        result = await r.json()
    assert result["pageCount"] == 3 and result["format"] == "pdf"
    reader = PdfReader(io.BytesIO(await fetch(live, result["url"])))
    assert [p.extract_text().strip() for p in reader.pages] == ["Ada", "Grace", "Alan"]
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/pdf", json=body,
                              headers=live.auth()) as r:
        again = await r.json()
    assert again["cached"] is True and again["url"] == result["url"]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif", "pdf"])
async def test_same_input_same_bytes(live: Live, fmt: str) -> None:
    template = await create(live, html=ANIMATED if fmt == "gif" else BOXES, width=200, height=70)
    body = {"format": fmt, "variables": {"title": "same"}}
    first = await render(live, template["id"], body)
    data = await fetch(live, first["url"])
    # Forget the stored output so the second request really renders again.
    await live.delete_blobs(renders.blob_key(first["id"], fmt), renders.meta_key(first["id"], fmt))
    second = await render(live, template["id"], body)
    assert second["cached"] is False and second["url"] == first["url"]
    assert await fetch(live, second["url"]) == data


@pytest.mark.parametrize(("body", "fields"), [
    ({"format": "bmp"}, {"/format"}),
    ({"format": "png", "quality": 80}, {"quality"}),
    ({"format": "jpeg", "transparent": True}, {"transparent"}),
    ({"deviceScaleFactor": 9}, {"/deviceScaleFactor"}),
    ({"format": "pdf", "pdf": {"preset": "A4", "margins": {"top": "1 mile"}}},
     {"pdf.margins.top"}),
    ({"format": "pdf", "pdf": {"preset": "B7"}}, {"/pdf/preset"}),
    ({"format": "png", "pdf": {"preset": "A4"}}, {"pdf"}),
    ({"format": "gif", "gif": {"fps": 51}}, {"/gif/fps"}),
    ({"format": "gif", "gif": {"fps": 31}}, {"gif.fps"}),
    ({"selector": "#nothing-here"}, {"selector"}),
    ({"selector": "]]bad["}, {"selector"}),
])
async def test_bad_options_are_422_naming_the_field(
    live: Live, body: dict[str, Any], fields: set[str]
) -> None:
    template = await create(live, html=BOXES, width=300, height=150)
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/render", json=body,
                              headers=live.auth()) as r:
        assert r.status == 422, await r.text()
        problem = await r.json()
    assert {e["field"] for e in problem["errors"]} == fields
