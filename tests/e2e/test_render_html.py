"""``POST /v1/render``: raw HTML rendered once, with no stored template, through
the same template language, cache, outbound guard and warnings."""

from __future__ import annotations

import io
from typing import Any

from pypdf import PdfReader

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import fetch_image

CARD = """<body style="margin:0;background:{{ bg }}">
  {{ if featured }}<div style="width:40px;height:40px;background:#ff0000"></div>{{ end }}
</body>"""


async def post(live: Live, body: dict[str, Any], key: str | None = None
               ) -> tuple[int, dict[str, Any]]:
    async with live.http.post(f"{live.url}/v1/render", json=body,
                              headers=live.auth(key)) as r:
        return r.status, await r.json(content_type=None)


async def test_raw_html_renders_with_variables_and_is_cached(live: Live) -> None:
    body = {"html": CARD, "width": 120, "height": 60, "format": "PNG",
            "variables": {"bg": "#0000ff", "featured": True}}
    status, first = await post(live, body)
    assert status == 200, first
    assert (first["width"], first["height"], first["format"]) == (120, 60, "png")
    assert first["cached"] is False and first["warnings"] == []
    assert "templateVersion" not in first
    image, _ = await fetch_image(live, first["url"])
    rgb = image.convert("RGB")
    assert rgb.getpixel((20, 20)) == (255, 0, 0) and rgb.getpixel((100, 30)) == (0, 0, 255)
    status, again = await post(live, body)
    assert (status, again["cached"], again["id"]) == (200, True, first["id"])
    # Another tenant's identical request is its own render, under its own id.
    status, other = await post(live, body, key=live.other_key)
    assert status == 200 and other["id"] != first["id"] and other["cached"] is False


async def test_raw_html_renders_to_pdf_at_its_own_size(live: Live) -> None:
    status, result = await post(live, {"html": "<p>one shot</p>", "width": 400,
                                       "height": 200, "format": "pdf"})
    assert status == 200, result
    async with live.http.get(result["url"]) as r:
        page = PdfReader(io.BytesIO(await r.read())).pages[0]
    assert "one shot" in page.extract_text()
    assert (float(page.mediabox.width), float(page.mediabox.height)) == (300.0, 150.0)


async def test_a_denied_image_in_raw_html_is_a_warning(live: Live) -> None:
    html = f'<img src="{live.secret.url("oneshot.png")}">'
    status, result = await post(live, {"html": html, "width": 100, "height": 100})
    assert status == 200 and result["cached"] is False
    assert [w["outcome"] for w in result["warnings"]] == ["denied"]
    status, problem = await post(live, {"html": html, "width": 100, "height": 100,
                                        "assets": "strict"})
    assert status == 422 and problem["errors"][0]["field"] == "assets"


async def test_bad_raw_html_is_a_422_naming_the_problem(live: Live) -> None:
    status, problem = await post(live, {"html": "<p>{{ if x }}open", "width": 100,
                                        "height": 100})
    assert status == 422
    assert problem["errors"][0]["field"].startswith("html")
    status, problem = await post(live, {"html": "<p>x</p>", "width": 6000, "height": 100})
    assert status == 422
    assert "LITHO_TEMPLATE_MAX_DIMENSION" in problem["errors"][0]["message"]
    status, problem = await post(live, {"width": 100, "height": 100})
    assert status == 422 and "html" in str(problem)
    status, problem = await post(live, {"html": "<p>x</p>", "width": 100, "height": 100,
                                        "version": 2})
    assert status == 422 and "version" in str(problem)
