"""One real Chromium for the unit tests of the capture, GIF and PDF modules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from services.renderer import _chromium


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=_chromium.executable_path(""), args=_chromium.launch_args()
        )
        yield launched
        await launched.close()
