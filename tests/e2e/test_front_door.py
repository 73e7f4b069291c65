"""Litho's pages for browsers, against the real stack: the front page without
a key, and the API reference at /docs rendered in real Chromium, offline,
under its Content-Security-Policy, from Litho's own files only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, Request

from tests.e2e._browser import chromium
from tests.e2e.conftest import Live

#: Set before any page script runs: every CSP violation the page reports.
_WATCH_CSP = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


class Watched:
    """A page with everything it asked for, logged and violated."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.console: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.console.append(f"pageerror {exc}"))

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type} {message.text}")

    async def violations(self) -> list[str]:
        found: list[str] = await self.page.evaluate("window.__violations")
        return found


async def _open(browser: Browser, url: str) -> Watched:
    page = await browser.new_page()
    await page.add_init_script(_WATCH_CSP)
    watched = Watched(page)
    response = await page.goto(url)
    assert response is not None and response.status == 200
    return watched


async def test_the_front_page_needs_no_key(live: Live) -> None:
    async with live.http.get(f"{live.url}/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        page = await r.text()
    assert "image generation API" in page
    for link in ('href="/editor"', 'href="/docs"', 'href="/openapi.json"'):
        assert link in page
    async with live.http.head(f"{live.url}/docs") as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) > 0
    async with live.http.get(f"{live.url}/v1/templates") as r:
        assert r.status == 401  # the API itself still needs a key


async def test_the_api_reference_renders_offline_in_chromium(live: Live, browser: Browser) -> None:
    async with live.http.get(f"{live.url}/openapi.json") as r:
        doc: dict[str, Any] = await r.json()
    summary = doc["paths"]["/v1/templates/{templateId}/render"]["post"]["summary"]
    watched = await _open(browser, f"{live.url}/docs")
    page = watched.page
    try:
        await page.get_by_text(summary, exact=True).first.wait_for(timeout=30_000)
        # Open an operation: its parameters and answers render too.
        await page.get_by_text(summary, exact=True).first.click()
        await page.locator(".opblock.is-open .responses-wrapper").first.wait_for(timeout=10_000)
        assert await page.locator(".opblock-summary").count() >= len(doc["paths"])
        assert await watched.violations() == []
        assert watched.console == []
        assert watched.requests and all(u.startswith(live.url + "/") for u in watched.requests), (
            [u for u in watched.requests if not u.startswith(live.url + "/")])
        assert f"{live.url}/openapi.json" in watched.requests
        # The watch itself works: an inline style attribute is refused, and seen.
        await page.evaluate("document.body.setAttribute('style', 'color: red')")
        await page.wait_for_function("window.__violations.length > 0", timeout=5_000)
        assert [v.split(" ")[0] for v in await watched.violations()] == ["style-src-attr"]
    finally:
        await page.close()


async def test_the_front_page_loads_cleanly_in_chromium(live: Live, browser: Browser) -> None:
    watched = await _open(browser, f"{live.url}/")
    try:
        await watched.page.get_by_role("link", name="API reference").wait_for(timeout=10_000)
        await watched.page.wait_for_load_state("load")
        assert await watched.violations() == []
        assert watched.console == []
        assert all(u.startswith(live.url + "/") for u in watched.requests), watched.requests
        assert f"{live.url}/assets/site.css" in watched.requests
    finally:
        await watched.page.close()
