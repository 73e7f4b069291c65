"""Page isolation in the Playwright adapter, on real Chromium (the pool's
side, with a fake page, is in test_pool.py; end to end in
tests/e2e/test_isolation.py)."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from PIL import Image
from playwright.async_api import Browser

from litho.config import OutboundSettings
from litho.errors import InvalidArgument
from litho.outbound import OutboundGuard
from services.renderer._engine import ChromiumPage, PlaywrightEngine
from services.renderer._subresources import SubresourceFetcher

BASE = "http://document.invalid/"
#: A 1×1 GIF; data: URLs never reach the route handler, only the CSP.
PIXEL = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[ChromiumPage]:
    async with OutboundGuard(OutboundSettings()) as guard:
        engine = PlaywrightEngine(
            None,  # type: ignore[arg-type]  # only launch() needs Playwright
            executable_path=None, args=[], timeout=10, base_url=BASE,
            fetcher=SubresourceFetcher(guard, ttl=0, max_bytes=0),
        )
        made = await engine.new_page(browser)
        yield made
        await made.close()


async def test_a_new_page_is_blank_at_the_base_url(page: ChromiumPage) -> None:
    assert page.is_blank() and page.page.url == BASE
    await page.load("<p>x</p>")
    assert not page.is_blank()  # a document was written: only a reset makes it blank


async def test_a_reset_drops_frames_and_document_state(page: ChromiumPage) -> None:
    await page.load("<meta http-equiv='Content-Security-Policy' content=\"img-src 'none'\">"
                    "<meta name='color-scheme' content='dark'>"
                    "<iframe srcdoc='<p>inner'></iframe><iframe src='frame.html'></iframe>")
    assert len(page.page.frames) == 3
    await page.reset()
    assert page.is_blank()
    await page.load(f"<img src='{PIXEL}'>")
    # A new document, not the old one reopened (document.open keeps both the
    # CSP and the color scheme): the image loads, the canvas is white.
    assert await page.page.evaluate("document.images[0].naturalWidth") == 1
    await page.page.set_viewport_size({"width": 40, "height": 40})
    shot = await page.cdp.send("Page.captureScreenshot", {"format": "png"})
    image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    assert image.getpixel((30, 30)) == (255, 255, 255)


async def test_documents_cannot_navigate_the_page_or_its_frames(page: ChromiumPage) -> None:
    await page.load("<base href='http://evil.example/'>"
                    "<meta http-equiv='refresh' content='0;url=http://evil.example/'>"
                    "<iframe src='http://evil.example/frame'></iframe>"
                    "<form action='http://evil.example/f'><button autofocus>go</button></form>"
                    "<img src='logo.png'>")
    page.check_not_navigated()
    assert page.page.url == BASE
    assert all(f.url in ("about:blank", "") for f in page.page.frames[1:])
    # The document's own <base> is its own business; the page's URL is ours.
    assert await page.page.evaluate("document.baseURI") == "http://evil.example/"
    await page.reset()
    await page.load("<p>z</p>")
    assert await page.page.evaluate("document.baseURI") == BASE


async def test_a_navigation_we_did_not_make_spoils_the_page(page: ChromiumPage) -> None:
    await page.load("<p>x</p>")
    # Whatever might get past the sandbox and the route handler: a commit.
    await page.cdp.send("Page.navigate", {"url": "about:blank"})
    for _ in range(200):
        if page.hijacked:
            break
        await page.page.wait_for_timeout(10)
    with pytest.raises(InvalidArgument) as info:
        page.check_not_navigated()
    assert info.value.errors[0].field == "html"
    await page.reset()
    assert not page.is_blank()  # for good: the pool replaces it
