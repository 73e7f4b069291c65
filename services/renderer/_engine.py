"""Playwright adapter of the pool's Engine port: launch, pages, and crash detection."""

from __future__ import annotations

from dataclasses import dataclass, field

from playwright.async_api import Browser, BrowserContext, CDPSession, Page, Playwright, Route
from playwright.async_api import Error as PlaywrightError

from services.renderer._gif import freeze_timeline
from services.renderer._pool import BrowserLike
from services.renderer._subresources import SubresourceFetcher

_CRASH_MARKERS = ("Target crashed", "has been closed", "Browser closed", "Target closed",
                  "Connection closed")


@dataclass
class ChromiumPage:
    context: BrowserContext
    page: Page
    #: Chrome DevTools Protocol session of the page: fast capture paths.
    cdp: CDPSession
    viewport: tuple[int, int] = field(default=(0, 0))
    transparent: bool = False

    def is_closed(self) -> bool:
        return self.page.is_closed()

    async def close(self) -> None:
        await self.context.close()


class PlaywrightEngine:
    def __init__(
        self,
        playwright: Playwright,
        *,
        executable_path: str | None,
        args: list[str],
        fetcher: SubresourceFetcher,
        timeout: float,
    ) -> None:
        self._timeout_ms = timeout * 1000
        self._pw = playwright
        self._executable = executable_path
        self._args = args
        self._fetcher = fetcher

    async def launch(self) -> Browser:
        return await self._pw.chromium.launch(
            executable_path=self._executable, args=self._args, headless=True
        )

    async def new_page(self, browser: BrowserLike) -> ChromiumPage:
        assert isinstance(browser, Browser)
        # Template scripts never run; service workers could bypass interception.
        context = await browser.new_context(
            java_script_enabled=False, service_workers="block", viewport={"width": 1, "height": 1}
        )
        page = await context.new_page()
        # Playwright's own 30 s default must not cut in before the render deadline.
        page.set_default_timeout(self._timeout_ms)
        await page.route("**/*", self._route)
        cdp = await context.new_cdp_session(page)
        # No animation advances by itself: output never depends on timing.
        await freeze_timeline(cdp)
        return ChromiumPage(context=context, page=page, cdp=cdp)

    async def _route(self, route: Route) -> None:
        await self._fetcher.handle(route)

    def is_crash(self, exc: BaseException) -> bool:
        return isinstance(exc, PlaywrightError) and any(m in str(exc) for m in _CRASH_MARKERS)
