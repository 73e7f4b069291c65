"""Chromium for tests that drive Litho's pages, launched as the renderer
launches it, but able to reach the stack on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from services.renderer._chromium import executable_path, launch_args

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium with the renderer's flags, but loopback reachable:
    the renderer sends even loopback to a dead proxy (the outbound guard
    fetches for it); here only loopback is direct, every other address still
    goes to that dead proxy and every other host name fails to resolve."""
    args = []
    for arg in launch_args():
        if arg.startswith("--proxy-bypass-list="):
            continue  # loopback bypasses the proxy again
        if arg.startswith("--host-resolver-rules="):
            arg = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
        args.append(arg)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable_path(""),
                                           args=args, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
