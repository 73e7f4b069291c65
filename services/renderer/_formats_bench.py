"""Capture + encode time per format on a loaded page, for ``make bench``.

Three paths, all on the page as it is (no ``set_content`` in the timing):

- ``floor_*``: Playwright's ``page.screenshot()``, the naive path (PNG, JPEG);
- ``chromium_*``: ``Page.captureScreenshot`` encoding in Chromium (PNG default,
  JPEG, WebP), for reference;
- ``litho_*``: a fast PNG from Chromium, then ``encode`` in a worker thread, as
  the renderer does.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from collections.abc import Awaitable, Callable

from playwright.async_api import CDPSession, Page

from services.renderer._encode import capture_fast_png, encode


async def measure_formats(
    page: Page, cdp: CDPSession, *, samples: int = 15, quality: int = 90
) -> dict[str, dict[str, float]]:
    """{path_format: {"p50_ms", "min_ms", "bytes"}} over ``samples`` runs after 2 warm-ups."""

    async def chromium(fmt: str) -> bytes:
        params: dict[str, object] = {"format": fmt}
        if fmt != "png":
            params["quality"] = quality
        result = await cdp.send("Page.captureScreenshot", params)
        return base64.b64decode(result["data"])

    async def litho(fmt: str) -> bytes:
        frame = await capture_fast_png(cdp)
        return await asyncio.to_thread(
            encode, frame, format=fmt, quality=quality, transparent=False
        )

    paths: dict[str, Callable[[], Awaitable[bytes]]] = {
        "floor_png": lambda: page.screenshot(type="png"),
        "floor_jpeg": lambda: page.screenshot(type="jpeg", quality=quality),
        "chromium_png": lambda: chromium("png"),
        "chromium_jpeg": lambda: chromium("jpeg"),
        "chromium_webp": lambda: chromium("webp"),
        "litho_png": lambda: litho("png"),
        "litho_jpeg": lambda: litho("jpeg"),
        "litho_webp": lambda: litho("webp"),
    }
    report = {}
    for name, run in paths.items():
        times = []
        size = 0
        for i in range(samples + 2):
            started = time.perf_counter()
            size = len(await run())
            if i >= 2:
                times.append((time.perf_counter() - started) * 1000)
        report[name] = {"p50_ms": round(statistics.median(times), 1),
                        "min_ms": round(min(times), 1), "bytes": size}
    return report
