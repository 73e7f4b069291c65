"""Loading an expanded document into a page and capturing it."""

from __future__ import annotations

from dataclasses import dataclass

from services.renderer._engine import ChromiumPage


@dataclass(frozen=True)
class CaptureSpec:
    html: str
    width: int
    height: int
    format: str  # "png" | "jpeg"
    quality: int  # JPEG only; 1-100


async def capture(page: ChromiumPage, spec: CaptureSpec) -> bytes:
    if page.viewport != (spec.width, spec.height):
        await page.page.set_viewport_size({"width": spec.width, "height": spec.height})
        page.viewport = (spec.width, spec.height)
    # "load" waits for images and stylesheets; never for an idle network.
    await page.page.set_content(spec.html, wait_until="load")
    if spec.format == "jpeg":
        return await page.page.screenshot(type="jpeg", quality=spec.quality, caret="hide")
    return await page.page.screenshot(type="png", caret="hide")
