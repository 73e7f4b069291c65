"""QR codes and barcodes in real renders: the PNG Chromium draws is decoded
with zxing-cpp, so these pass only when the pixels hold the values."""

from __future__ import annotations

import io
from typing import Any

import zxingcpp
from PIL import Image

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create, render

URL = "https://litho.dev/tickets/8841?seat=14C&name=Ada%20Lovelace"
SKU = "LITHO-8841"
EAN = "4006381333931"

AS_IMAGES = """<!doctype html><html><body style="margin:0;background:#fff">
<img src="{{ qr(url, 240) }}" style="position:absolute;left:20px;top:20px">
<img src="{{ barcode(sku, 'code128', 100) }}" style="position:absolute;left:320px;top:30px">
<div style="position:absolute;left:320px;top:170px;width:400px;height:100px;
            background:url({{ barcode(ean, 'ean13', 80, 2, false) }}) no-repeat"></div>
</body></html>"""

INLINE = """<!doctype html><html><body style="margin:0;background:#fff">
<div style="position:absolute;left:20px;top:20px">
  {{ raw qrSvg(url, 240, 4, '#1a237e', 'lightyellow') }}</div>
<div style="position:absolute;left:320px;top:40px">
  {{ raw barcodeSvg(sku, 'code39', 100, 2, true, 10, 'darkgreen') }}</div>
</body></html>"""


async def codes_in(live: Live, result: dict[str, Any]) -> dict[str, str]:
    async with live.http.get(result["url"]) as r:
        assert r.status == 200
        image = Image.open(io.BytesIO(await r.read())).convert("RGB")
    return {found.format.name: found.text for found in zxingcpp.read_barcodes(image)}


async def post(live: Live, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with live.http.post(f"{live.url}{path}", json=body, headers=live.auth()) as r:
        return r.status, await r.json(content_type=None)


async def test_codes_as_img_sources_decode_from_the_png(live: Live) -> None:
    template = await create(live, html=AS_IMAGES, width=800, height=300)
    result = await render(live, template["id"], {
        "variables": {"url": URL, "sku": SKU, "ean": EAN}, "format": "png"})
    assert not result.get("warnings")
    assert await codes_in(live, result) == {"QRCode": URL, "Code128": SKU, "EAN13": EAN}
    # Other values, other pixels: nothing is left over from the first render.
    other = await render(live, template["id"], {
        "variables": {"url": "https://litho.dev/2", "sku": "B-2", "ean": "590123412345"}})
    assert await codes_in(live, other) == {
        "QRCode": "https://litho.dev/2", "Code128": "B-2", "EAN13": "5901234123457"}


async def test_inline_svg_codes_in_colour_decode_from_the_png(live: Live) -> None:
    template = await create(live, html=INLINE, width=800, height=300)
    result = await render(live, template["id"], {"variables": {"url": URL, "sku": SKU}})
    assert await codes_in(live, result) == {"QRCode": URL, "Code39": SKU}
    async with live.http.get(result["url"]) as r:
        image = Image.open(io.BytesIO(await r.read())).convert("RGB")
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20) or []}
    assert (0x1A, 0x23, 0x7E) in colours  # the QR code's modules
    assert (0xFF, 0xFF, 0xE0) in colours  # its lightyellow background
    assert (0x00, 0x64, 0x00) in colours  # darkgreen bars


async def test_bad_code_input_is_a_422_naming_the_problem(live: Live) -> None:
    template = await create(live, html='<img src="{{ qr(url, 256, 4, colour) }}">'
                                       "{{ barcode(ean, 'ean13') }}")
    path = f"/v1/templates/{template['id']}/render"
    cases = [
        ({"url": "x" * 3000, "colour": "black", "ean": EAN},
         ["qr: the value is too long for a QR code", "at most 2331 bytes"]),
        ({"url": URL, "colour": 'red" onload="alert(1)', "ean": EAN},
         ["qr: color must be a CSS hex colour"]),
        ({"url": URL, "colour": "black", "ean": "4006381333932"},
         ["barcode: the check digit of an EAN-13 4006381333932 is wrong",
          "it should be 1"]),
    ]
    for variables, parts in cases:
        status, problem = await post(live, path, {"variables": variables})
        assert status == 422, problem
        assert [e["field"] for e in problem["errors"]] == ["html"]
        for part in parts:
            assert part in problem["detail"], problem
    status, problem = await post(live, "/v1/expressions/test", {
        "expression": "barcode('x', 'qrcode')"})
    assert status == 422, problem
    assert "the types are 'code128', 'code39', 'ean13', 'ean8', 'upca', 'isbn13', 'itf'" in (
        problem["detail"])


async def test_the_functions_are_listed(live: Live) -> None:
    async with live.http.get(f"{live.url}/v1/expressions/functions",
                             headers=live.auth()) as r:
        assert r.status == 200
        listing = await r.json()
    codes = {f["name"]: f for f in listing["functions"] if f["category"] == "codes"}
    assert set(codes) == {"qr", "qrSvg", "barcode", "barcodeSvg"}
    assert codes["qr"]["signature"].startswith("qr(value, size = 256")
