"""Playwright adapter of the pool's Engine port: launch, pages, and crash detection.

Page isolation. Every page lives at one known URL, the document base URL
(``LITHO_RENDERER_BASE_URL``). A render starts on a fresh, empty document
there (the route handler serves it, sandboxed, to our own navigation) and
writes its document into it with ``set_content``, so relative URLs resolve
against that base and nothing else. The sandbox (``_DOCUMENT_HEADERS``) is
inherited by the written document and every frame in it: Chromium refuses
meta refresh, forms, popups and plugins there. Every other navigation, of
the page or of any frame in it (``<iframe>``, ``<frame>``, ``<object>``,
``<embed>``, whatever the sandbox lets through), is answered ``204 No
Content``, which Chromium drops without committing anything: the page stays
where it was, with no error page, and nothing is fetched. After each render
the pool resets the page (``reset``: a navigation to a new empty document)
and takes it back only if it is blank again. A navigation that got past all
of that (one that never reaches the network cannot be intercepted) is seen
(``framenavigated``) and spoils the page: the render that met it is refused
(422) and the page replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry import trace
from playwright.async_api import (
    Browser,
    BrowserContext,
    CDPSession,
    Frame,
    Page,
    Playwright,
    Request,
    Route,
)
from playwright.async_api import Error as PlaywrightError

from litho.errors import FieldError, InvalidArgument
from litho.logs import get_logger
from services.renderer import _assets
from services.renderer._assets import AssetLog
from services.renderer._fonts import FontServer
from services.renderer._gif import freeze_timeline
from services.renderer._pipeline import FontFace
from services.renderer._pool import BrowserLike
from services.renderer._subresources import SubresourceFetcher

log = get_logger(__name__)
_tracer = trace.get_tracer("litho.renderer.engine")

_CRASH_MARKERS = ("Target crashed", "has been closed", "Browser closed", "Target closed",
                  "Connection closed")
#: The page's document is sandboxed (CSP ``sandbox``), and so is every document
#: later written into it and every frame in it: Chromium then refuses meta
#: refresh ("automatic features"), form submission, popups, plugins and
#: navigating the top page. ``allow-same-origin`` keeps the base URL's origin.
#: ``no-store`` keeps a document we navigate away from out of the back/forward
#: cache.
_DOCUMENT_HEADERS = {"Content-Type": "text/html; charset=utf-8",
                     "Content-Security-Policy": "sandbox allow-same-origin",
                     "Cache-Control": "no-store"}


@dataclass
class ChromiumPage:
    context: BrowserContext
    page: Page
    #: Chrome DevTools Protocol session of the page: fast capture paths.
    cdp: CDPSession
    #: The page's one URL: where it waits between renders and every
    #: document's base.
    base_url: str
    viewport: tuple[int, int] = field(default=(0, 0))
    transparent: bool = False
    #: The main frame committed a navigation we did not start: the page is
    #: spoiled until it is replaced.
    hijacked: bool = False
    #: A document was written since the last reset: not blank any more.
    written: bool = True
    #: Whose render the page is doing: subresources are cached per tenant.
    tenant: str = ""
    #: The outcome of every subresource request of the render in hand.
    assets: AssetLog | None = None
    #: The render's uploaded fonts by the URL their @font-face names.
    fonts: dict[str, FontFace] = field(default_factory=dict)
    #: The trace of the document being loaded: Playwright calls the route
    #: handler in a task of its own, so subresource fetches join it by hand.
    trace_context: otel_context.Context | None = None
    #: We are navigating (so a commit is ours); the route handler serves
    #: the empty document once.
    _navigating: bool = False
    _expecting: bool = False

    def is_closed(self) -> bool:
        return self.page.is_closed()

    async def close(self) -> None:
        await self.context.close()

    def is_blank(self) -> bool:
        """A fresh empty document at the base URL, no frame but the main one,
        never navigated by a document: the state every render starts from."""
        return (not self.hijacked and not self.written and not self._navigating
                and self.page.url == self.base_url and len(self.page.frames) == 1)

    async def reset(self) -> None:
        """Navigate to a new, empty document at the base URL.

        A navigation, not ``document.open``: a new document drops everything
        the last one left (frames, pending loads and refreshes, and the state
        ``document.open`` keeps, such as a ``<meta>`` CSP that would block the
        next render's images, or its ``color-scheme``). The pool runs it after
        the answer is sent, then checks ``is_blank``.
        """
        self._navigating = self._expecting = True
        try:
            await self.page.goto(self.base_url, wait_until="load")
        finally:
            self._navigating = self._expecting = False
        self.written = False

    async def load(self, html: str) -> None:
        """Write ``html`` into the page (at the base URL) and wait for its load.

        The first document of a render goes into the fresh empty document the
        pool handed out; the next pages of a multi-page PDF follow without a
        navigation (one per page would cost more than the page), so what one
        page leaves can only meet later pages of the same render.
        """
        self.check_not_navigated()
        self.written = True
        with _tracer.start_as_current_span("page load", attributes={
                "litho.document.chars": len(html)}):
            self.trace_context = otel_context.get_current()
            try:
                await self.page.set_content(html, wait_until="load")
            finally:
                self.trace_context = None
        self.check_not_navigated()

    def check_not_navigated(self) -> None:
        """Refuse a render whose document navigated the page (see the module docs)."""
        if self.hijacked or self.page.url != self.base_url:
            raise InvalidArgument(
                "the document navigated away from itself while it rendered (a meta refresh "
                "to a URL such as about:blank?); documents cannot navigate",
                errors=[FieldError("html", "must not navigate (meta refresh)")])

    # --------------------------------------------------------- event hooks

    def _on_navigated(self, frame: Frame) -> None:
        if frame == self.page.main_frame and not self._navigating:
            self.hijacked = True
            log.warning("a document navigated its page; the page will be replaced",
                        url=frame.url[:200])

    def _is_ours(self, request: Request) -> bool:
        """Whether this is the navigation ``reset`` made (true once)."""
        if not self._expecting or request.url != self.base_url:
            return False
        try:
            if request.frame != self.page.main_frame:
                return False
        except PlaywrightError:  # a frame that does not exist yet is not the main one
            return False
        self._expecting = False
        return True


class PlaywrightEngine:
    def __init__(
        self,
        playwright: Playwright,
        *,
        executable_path: str | None,
        args: list[str],
        fetcher: SubresourceFetcher,
        timeout: float,
        base_url: str,
        fonts: FontServer | None = None,
    ) -> None:
        self._timeout_ms = timeout * 1000
        self._pw = playwright
        self._executable = executable_path
        self._args = args
        self._fetcher = fetcher
        self._fonts = fonts
        self.base_url = base_url

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
        try:
            page = await context.new_page()
            # A popup is a page nobody routes or watches: close it at once.
            context.on("page", _close_popup(page))
            # Playwright's own 30 s default must not cut in before the render deadline.
            page.set_default_timeout(self._timeout_ms)
            cdp = await context.new_cdp_session(page)
            chromium_page = ChromiumPage(context=context, page=page, cdp=cdp,
                                         base_url=self.base_url)

            async def route(route: Route) -> None:
                await self._route(chromium_page, route)

            await page.route("**/*", route)
            page.on("framenavigated", chromium_page._on_navigated)
            # No animation advances by itself: output never depends on timing.
            await freeze_timeline(cdp)
            await chromium_page.reset()
        except BaseException:
            await context.close()
            raise
        if not chromium_page.is_blank():
            await context.close()
            raise RuntimeError(f"a new page did not settle at {self.base_url}")
        return chromium_page

    async def _route(self, page: ChromiumPage, route: Route) -> None:
        request = route.request
        if not request.is_navigation_request():
            await self._subresource(page, route)
            return
        if page._is_ours(request):
            await route.fulfill(status=200, headers=_DOCUMENT_HEADERS, body=b"")
            return
        # 204: Chromium abandons the navigation and commits nothing. A frame
        # (iframe, object, embed) stays empty: the render says so.
        log.debug("blocked a navigation started by a document", url=request.url[:200])
        if page.assets is not None:
            page.assets.finish(page.assets.start(request.url, "document"),
                               _assets.frame_blocked(request.url))
        await route.fulfill(status=204, body=b"")

    async def _subresource(self, page: ChromiumPage, route: Route) -> None:
        request = route.request
        if "prefetch" in request.headers.get("sec-purpose", ""):
            # A hint for a later page, never part of this one's pixels.
            await route.abort("blockedbyclient")
            return
        token = otel_context.attach(page.trace_context or otel_context.Context())
        record = page.assets
        slot = record.start(request.url, request.resource_type) if record is not None else -1
        face = page.fonts.get(request.url) if request.method == "GET" else None
        asset: _assets.Asset | None = None
        try:
            if face is not None and self._fonts is not None:
                asset = await self._fonts.serve(route, face, page.tenant)
            else:
                asset = await self._fetcher.handle(route, page.tenant)
        finally:
            otel_context.detach(token)
            if record is not None:
                # A handler that raised (the page closed under it) is a failure,
                # not a request "still loading".
                record.finish(slot, asset or _assets.failed(
                    request.url, "the page went away while it loaded"))

    def is_crash(self, exc: BaseException) -> bool:
        return isinstance(exc, PlaywrightError) and any(m in str(exc) for m in _CRASH_MARKERS)


_closing: set[asyncio.Task[None]] = set()


def _close_popup(ours: Page) -> Callable[[Page], None]:
    def close(page: Page) -> None:
        if page is not ours:
            task = asyncio.ensure_future(_close_quietly(page))
            _closing.add(task)
            task.add_done_callback(_closing.discard)
    return close


async def _close_quietly(page: Page) -> None:
    try:
        await page.close()
    except PlaywrightError:
        pass
