"""A template's subresources go through the outbound guard, not straight from Chromium."""

from __future__ import annotations

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create, fetch_image, render


async def test_denied_image_is_missing_and_allowed_image_is_drawn(live: Live) -> None:
    html = f"""<html><body style="margin:0;background:#ffffff">
      <img src="{live.allowed.url('ok.png')}" style="position:absolute;left:0;top:0">
      <img src="{live.secret.url('secret.png')}" style="position:absolute;left:100px;top:0">
    </body></html>"""
    template = await create(live, html=html, width=200, height=60)
    result = await render(live, template["id"], {})
    image, _ = await fetch_image(live, result["url"])
    rgb = image.convert("RGB")
    assert rgb.getpixel((25, 25)) == (0, 200, 0)
    assert rgb.getpixel((125, 25)) != (255, 0, 255)
    assert "/ok.png" in live.allowed.hits
    assert live.secret.hits == []


async def test_local_files_and_other_schemes_never_load(live: Live) -> None:
    import io

    from pypdf import PdfReader

    html = """<html><body>
      <iframe src="file:///etc/passwd" width="400" height="200"></iframe>
      <object data="file:///etc/hostname" width="400" height="50"></object>
      <img src="file:///etc/passwd"><link rel="stylesheet" href="ftp://127.0.0.1/x.css">
      <p>end</p></body></html>"""
    template = await create(live, html=html, width=500, height=400)
    result = await render(live, template["id"], {"format": "pdf"})
    async with live.http.get(result["url"]) as r:
        text = PdfReader(io.BytesIO(await r.read())).pages[0].extract_text()
    assert "end" in text and "root:" not in text
