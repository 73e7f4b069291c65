"""Loading expanded documents into a page and turning them into output bytes.

Speed comes from two choices, measured on a 2-core machine for a 1200×630 card:
Chromium's own PNG encoder costs ~180 ms, so PNGs are captured with
``optimizeForSpeed`` (a barely compressed PNG, ~55 ms) and re-encoded by
libvips in a worker thread (~17 ms, a quarter of the size); JPEG (~33 ms) and
WebP (~68 ms) come straight from Chromium's encoders, which beat a re-encode.
Documents load with ``wait_until="load"`` (images and stylesheets), never
"network idle".

Isolation: each render writes its documents into a fresh, sandboxed, empty
document at the document base URL, and every navigation they start is
blocked (``_engine.py``).

Determinism: every page's animation clock is frozen when the page is made
(``_gif.freeze_timeline``), so no animation advances on its own. A still
image shows finite animations at their end and infinite ones at their start;
a GIF steps them frame by frame.

Fit-to-box text (``_fit.py``) runs right after each document loads, so
every path (stills, selector crops, GIFs, each page of a PDF) sees the
fitted layout; documents without ``data-fit`` skip it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from playwright.async_api import Error as PlaywrightError

from litho.errors import FieldError, InvalidArgument
from services.renderer import _encode, _fit, _fonts, _gif, _pdf
from services.renderer._engine import ChromiumPage
from services.renderer._pipeline import CaptureSpec, Output
from services.renderer._spec import Limits, check_pdf_pages, check_pixels

_tracer = trace.get_tracer("litho.renderer.capture")

_TRANSPARENT = {"color": {"r": 0, "g": 0, "b": 0, "a": 0}}
_NO_FRAME = "Unable to capture screenshot"
#: Attempts, 10 ms apart and more, to wait for a new document's first frame.
_FRAME_ATTEMPTS = 20
#: Waits for the document's web fonts and answers the families the browser
#: refused (malformed tables). Through the prototypes: ``<img name=fonts>``
#: shadows ``document.fonts``.
_FONTS_READY = """async () => {
  const fonts = Object.getOwnPropertyDescriptor(Document.prototype, 'fonts').get.call(document);
  await Object.getOwnPropertyDescriptor(FontFaceSet.prototype, 'ready').get.call(fonts);
  const refused = [];
  for (const face of FontFaceSet.prototype.values.call(fonts)) {
    if (face.status === 'error') {
      refused.push(String(face.family).slice(0, 200).replace(/^["']|["']$/g, ''));
    }
  }
  return refused.slice(0, 20);
}"""
_SETTLE = """() => {
  for (const a of document.getAnimations()) {
    const end = a.effect ? a.effect.getComputedTiming().endTime : Infinity;
    if (Number.isFinite(end)) a.finish(); else { a.pause(); a.currentTime = 0; }
  }
}"""


@dataclass(frozen=True)
class Capturer:
    limits: Limits
    executor: Executor | None = None
    #: How long a selector may take to match, in milliseconds.
    selector_timeout_ms: float = 1000
    #: Bounds of fit-to-box text (``_fit.py``).
    fit: _fit.FitLimits = field(default_factory=_fit.FitLimits)

    async def capture(self, page: ChromiumPage, spec: CaptureSpec) -> Output:
        if page.base_url != spec.base_url:
            raise RuntimeError("the page's base URL is not the one in the cache key")
        with _tracer.start_as_current_span("capture", attributes={
            "litho.render.format": spec.format, "litho.render.width": spec.width,
            "litho.render.height": spec.height, "litho.render.scale": spec.scale,
            "litho.render.documents": len(spec.documents),
            "litho.render.selector": bool(spec.selector),
        }) as span:
            try:
                output = await self._capture(page, spec)
            except PlaywrightError:
                # A document that navigated the page explains the failure: a 422.
                page.check_not_navigated()
                raise
            span.set_attribute("litho.render.size_bytes", len(output.data))
        # A document that navigated the page after its load may have changed
        # what was captured: that output is never stored.
        page.check_not_navigated()
        return output

    async def _capture(self, page: ChromiumPage, spec: CaptureSpec) -> Output:
        await _viewport(page, spec.width, spec.height)
        await _background(page, transparent=spec.transparent)
        if spec.format == "pdf":
            return await self._pdf(page, spec)
        await self._load(page, spec.documents[0], spec)
        clip = await self._clip(page, spec)
        if spec.format == "gif":
            return await self._gif(page, spec, clip)
        if "animation" in spec.documents[0]:
            await page.page.evaluate(_SETTLE)
        return await self._image(page, spec, clip)

    async def _load(self, page: ChromiumPage, html: str, spec: CaptureSpec) -> None:
        # "load" waits for images and stylesheets; never for an idle network.
        await page.load(_fonts.declare(html, spec.fonts))
        lowered = html.lower()
        if spec.fonts or any(m in lowered for m in ("@font-face", "<link", "@import")):
            # Web fonts may still be loading after "load": capture the text
            # in the font it is meant to be drawn in, and report the fonts
            # the browser refused (they were fetched, so no request failed).
            refused: list[str] = await page.page.evaluate(_FONTS_READY)
            if page.assets is not None:
                for family in refused:
                    page.assets.finish(page.assets.start(family, "font"),
                                       _fonts.refused(family, spec.fonts))
        # Fitting changes the layout: before a selector's box is measured,
        # animations settle, GIF frames or PDF pages are taken.
        if _fit.wanted(html):
            await _fit.fit_text(page.page, self.fit)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def _encode(self, codec: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with _tracer.start_as_current_span("encode", attributes={"litho.encode.codec": codec}):
            return await self._run(fn, *args, **kwargs)

    async def _image(self, page: ChromiumPage, spec: CaptureSpec, clip: dict[str, float]) -> Output:
        if spec.format == "png":
            frame = await _screenshot(page, spec, clip, fmt="png")
            data = await self._encode("png (libvips)", _encode.encode, frame, format="png",
                                      quality=100, transparent=spec.transparent)
        else:
            data = await _screenshot(page, spec, clip, fmt=spec.format, quality=spec.quality)
        width, height = await self._run(_encode.image_size, data)
        return Output(data=data, width=width, height=height)

    async def _gif(self, page: ChromiumPage, spec: CaptureSpec, clip: dict[str, float]) -> Output:
        await _first_frame(page)
        frames, delay_ms = await _gif.capture_gif_frames(
            page.page, page.cdp, fps=spec.gif.fps, duration_ms=spec.gif.duration_ms or None,
            max_duration_ms=self.limits.max_gif_duration_ms,
            max_frames=spec.gif_caps[1] or self.limits.max_gif_frames,
            max_pixels=self.limits.max_gif_pixels, clip=clip,
        )
        data = await self._encode("gif (pillow)", _gif.encode_gif, frames, delay_ms=delay_ms)
        width, height, frame_count = await self._run(_gif.gif_info, data)
        return Output(data=data, width=width, height=height, frame_count=frame_count)

    async def _pdf(self, page: ChromiumPage, spec: CaptureSpec) -> Output:
        top, right, bottom, left = (m or "0" for m in spec.pdf.margins)
        options = _pdf.PdfOptions(
            preset=spec.pdf.preset or None, width_mm=spec.pdf.width_mm or None,
            height_mm=spec.pdf.height_mm or None, landscape=spec.pdf.landscape,
            margin_top=top, margin_right=right, margin_bottom=bottom, margin_left=left,
            template_px=(spec.width, spec.height),
        )
        parts, pages = [], 0
        for document in spec.documents:
            await self._load(page, document, spec)
            # One page past the limit is printed, to see that it is over, and no more.
            part = await _pdf.print_pdf(page.page, options,
                                        max_pages=self.limits.max_pdf_pages - pages + 1)
            pages += await self._run(_pdf.page_count, part)
            check_pdf_pages(pages, self.limits)
            parts.append(part)
        data = await self._encode("pdf (pypdf merge)", _pdf.merge_pdfs, parts,
                                  page_size_pt=options.page_size_pt(), base_url=spec.base_url)
        pages, width_pt, height_pt = await self._run(_pdf.pdf_info, data)
        return Output(data=data, width=spec.width, height=spec.height, page_count=pages,
                      page_width_pt=width_pt, page_height_pt=height_pt)

    async def _clip(self, page: ChromiumPage, spec: CaptureSpec) -> dict[str, float]:
        if not spec.selector:
            return {"x": 0, "y": 0, "width": spec.width, "height": spec.height,
                    "scale": spec.scale}
        try:
            box = await page.page.locator(spec.selector).first.bounding_box(
                timeout=self.selector_timeout_ms)
        except PlaywrightError as exc:
            if page.is_closed() or "closed" in str(exc):
                raise  # the browser or page died: the pool's to handle, not the selector's
            message = str(exc).splitlines()[0]
            if "Timeout" in message:
                message = "matched no element"
            raise InvalidArgument(f"selector {spec.selector!r}: {message}",
                                  errors=[FieldError("selector", message)]) from exc
        if box is None or box["width"] < 1 or box["height"] < 1:
            raise InvalidArgument(f"selector {spec.selector!r} matched an element with no size",
                                  errors=[FieldError("selector", "matched nothing visible")])
        check_pixels(round(box["width"]), round(box["height"]), spec.scale, self.limits,
                     field="selector", fmt=spec.format)
        return {"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"],
                "scale": spec.scale}


async def _viewport(page: ChromiumPage, width: int, height: int) -> None:
    if page.viewport != (width, height):
        await page.page.set_viewport_size({"width": width, "height": height})
        page.viewport = (width, height)


async def _background(page: ChromiumPage, *, transparent: bool) -> None:
    if page.transparent != transparent:
        await page.cdp.send("Emulation.setDefaultBackgroundColorOverride",
                            _TRANSPARENT if transparent else {})
        page.transparent = transparent


async def _screenshot(
    page: ChromiumPage, spec: CaptureSpec, clip: dict[str, float], *, fmt: str, quality: int = 0
) -> bytes:
    params: dict[str, Any] = {"format": fmt, "clip": clip}
    if clip["x"] + clip["width"] > spec.width or clip["y"] + clip["height"] > spec.height:
        # Only a clip past the viewport needs this: it makes Chromium lay out again.
        params["captureBeyondViewport"] = True
    if fmt == "png":
        params["optimizeForSpeed"] = True
    else:
        params["quality"] = quality
    # JPEG and WebP are encoded by Chromium itself, inside this call.
    with _tracer.start_as_current_span("screenshot", attributes={
            "litho.encode.codec": f"{fmt} (chromium)"}):
        reply = await _capture_screenshot(page, params)
    return _encode.from_base64(reply["data"])


async def _capture_screenshot(page: ChromiumPage, params: dict[str, Any]) -> dict[str, Any]:
    """``Page.captureScreenshot``, waiting for a new document's first frame.

    Every render starts on a document that a navigation made moments before
    (``_engine.ChromiumPage.reset``), and for a few milliseconds after such
    a navigation Chromium may have no frame to copy ("Unable to capture
    screenshot"); the wait is bounded by a number of attempts."""
    for attempt in range(1, _FRAME_ATTEMPTS + 1):
        try:
            reply: dict[str, Any] = await page.cdp.send("Page.captureScreenshot", params)
            return reply
        except PlaywrightError as exc:
            if _NO_FRAME not in str(exc) or attempt == _FRAME_ATTEMPTS:
                raise
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


async def _first_frame(page: ChromiumPage) -> None:
    """Wait until the document has a frame to copy (see ``_capture_screenshot``)."""
    await _capture_screenshot(page, {"format": "png", "optimizeForSpeed": True,
                                     "clip": {"x": 0, "y": 0, "width": 1, "height": 1,
                                              "scale": 1}})
