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
