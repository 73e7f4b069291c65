"""Work bounded up front: PDF documents and pages, GIF and WebP pixels.

Each bound is a 422 that names the field, the limit and its setting; work
that cannot be predicted from the request is bounded by the render deadline
(the pool's, tested with a fake engine in ``test_pool.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from litho.config import load
from litho.errors import ConfigError, InvalidArgument, ResourceExhausted
from services.renderer._gif import frames_within
from services.renderer._pool import PageLike, PagePool
from services.renderer._settings import RendererSettings
from services.renderer._spec import (
    GifSpec,
    Limits,
    check_documents,
    check_gif_work,
    check_pdf_pages,
    check_pixels,
    gif_frame_cap,
)
from tests.unit.test_pool import Crash, FakeBrowser, FakeEngine, FakePage

LIMITS = Limits(max_dimension=5000, max_pixels=40_000_000, max_scale=4, max_gif_fps=30,
                max_gif_duration_ms=10_000, max_gif_frames=300, max_pdf_pages=20,
                max_pdf_documents=10, max_gif_pixels=6_000_000, max_webp_pixels=1_000_000)


def refusal(exc: pytest.ExceptionInfo[InvalidArgument]) -> tuple[str, list[str], str]:
    """(message, fields, field messages joined)."""
    e = exc.value
    return e.message, [f.field for f in e.errors], " ".join(f.message for f in e.errors)


def test_variable_sets_are_bounded_by_the_document_limit() -> None:
    check_documents("pdf", 10, LIMITS)
    with pytest.raises(InvalidArgument) as exc:
        check_documents("pdf", 11, LIMITS)
    message, fields, detail = refusal(exc)
    assert fields == ["variableSets"]
    assert "at most 10" in message and "LITHO_RENDERER_MAX_PDF_DOCUMENTS" in message
    assert "LITHO_RENDERER_MAX_PDF_DOCUMENTS" in detail


def test_variable_sets_are_bounded_by_the_page_limit_too() -> None:
    limits = replace(LIMITS, max_pdf_documents=100, max_pdf_pages=5)
    check_documents("pdf", 5, limits)
    with pytest.raises(InvalidArgument) as exc:
        check_documents("pdf", 6, limits)
    message, fields, _ = refusal(exc)
    assert fields == ["variableSets"]
    assert "at most 5" in message and "LITHO_RENDERER_MAX_PDF_PAGES" in message


@pytest.mark.parametrize(("fmt", "count"), [("png", 0), ("png", 2), ("pdf", 0), ("gif", 3)])
def test_one_set_except_for_a_pdf(fmt: str, count: int) -> None:
    with pytest.raises(InvalidArgument, match="several only for a PDF") as exc:
        check_documents(fmt, count, LIMITS)
    assert refusal(exc)[1] == ["variableSets"]


def test_printed_pages_are_bounded() -> None:
    check_pdf_pages(20, LIMITS)
    with pytest.raises(InvalidArgument) as exc:
        check_pdf_pages(21, LIMITS)
    message, fields, detail = refusal(exc)
    assert fields == ["pdf"]
    assert "more than 20 pages" in message and "LITHO_RENDERER_MAX_PDF_PAGES" in message
    assert "LITHO_RENDERER_MAX_PDF_PAGES" in detail


def test_webp_has_its_own_lower_pixel_limit() -> None:
    check_pixels(1000, 1000, 1, LIMITS, fmt="webp")
    check_pixels(2000, 2000, 1, LIMITS, fmt="png")  # 4 MP: fine for other formats
    with pytest.raises(InvalidArgument) as exc:
        check_pixels(2000, 2000, 1, LIMITS, fmt="webp")
    message, fields, detail = refusal(exc)
    assert fields == ["width"]
    assert "1,000,000" in message and "LITHO_RENDERER_MAX_WEBP_PIXELS" in message
    assert "LITHO_RENDERER_MAX_WEBP_PIXELS" in detail
    # Scale counts squared, and the selector's box names its own field.
    with pytest.raises(InvalidArgument) as exc:
        check_pixels(600, 600, 2, LIMITS, field="selector", fmt="webp")
    assert refusal(exc)[1] == ["selector"]


def test_the_general_pixel_limit_still_names_its_setting() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_pixels(5000, 5000, 2, LIMITS, fmt="jpeg")
    assert "LITHO_RENDERER_MAX_PIXELS" in refusal(exc)[0]
    # A WebP limit above the general one never raises it.
    with pytest.raises(InvalidArgument, match="LITHO_RENDERER_MAX_PIXELS"):
        check_pixels(5000, 5000, 2, replace(LIMITS, max_webp_pixels=10**9), fmt="webp")


def test_gif_frame_cap_shrinks_with_the_frame() -> None:
    assert gif_frame_cap(100, 100, 1, LIMITS) == 300  # the frame limit
    assert gif_frame_cap(1000, 1000, 1, LIMITS) == 6  # 6 MP / 1 MP
    assert gif_frame_cap(1000, 1000, 2, LIMITS) == 1  # 4 MP a frame
    assert gif_frame_cap(5000, 5000, 4, LIMITS) == 1  # never none: a still GIF


def test_an_explicit_gif_duration_must_fit_the_pixel_budget() -> None:
    # 10 fps → 100 ms a frame; 400 ms is 4 steps and the end: 5 frames of 1 MP.
    check_gif_work(1000, 1000, 1, GifSpec(fps=10, duration_ms=400), LIMITS)
    with pytest.raises(InvalidArgument) as exc:
        check_gif_work(1000, 1000, 1, GifSpec(fps=10, duration_ms=600), LIMITS)
    message, fields, detail = refusal(exc)
    assert fields == ["gif.duration"]
    assert "7 frames" in message and "at most 6 frames" in message
    assert "6,000,000" in message and "LITHO_RENDERER_MAX_GIF_PIXELS" in message
    assert "LITHO_RENDERER_MAX_GIF_PIXELS" in detail
    # Without a duration the frame cap fits it instead: never refused here.
    check_gif_work(5000, 5000, 4, GifSpec(fps=30), LIMITS)


def test_frames_within_a_clip() -> None:
    clip = {"x": 0.0, "y": 0.0, "width": 1000.0, "height": 1000.0, "scale": 1.0}
    assert frames_within(6_000_000, clip, 300) == 6
    assert frames_within(6_000_000, {**clip, "scale": 2.0}, 300) == 1
    assert frames_within(10**12, clip, 300) == 300
    assert frames_within(10, clip, 300) == 1


def test_defaults_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITHO_RENDERER_RENDER_ID_SECRET", "s" * 32)
    defaults = load(RendererSettings)
    assert defaults.renderer_max_pdf_pages == 100
    assert defaults.renderer_max_pdf_documents == 30
    assert defaults.renderer_max_gif_pixels == 60_000_000
    assert defaults.renderer_max_webp_pixels == 16_000_000
    monkeypatch.setenv("LITHO_RENDERER_MAX_PDF_DOCUMENTS", "7")
    monkeypatch.setenv("LITHO_RENDERER_MAX_GIF_PIXELS", "123")
    monkeypatch.setenv("LITHO_RENDERER_MAX_WEBP_PIXELS", "456")
    changed = load(RendererSettings)
    assert (changed.renderer_max_pdf_documents, changed.renderer_max_gif_pixels,
            changed.renderer_max_webp_pixels) == (7, 123, 456)


class ClosingBrowser(FakeBrowser):
    """A browser whose pages' pending calls fail when it closes, as Playwright's do."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.gone = asyncio.Event()

    async def close(self) -> None:
        await super().close()
        self.gone.set()


class ClosingEngine(FakeEngine):
    async def launch(self) -> ClosingBrowser:
        browser = ClosingBrowser(len(self.browsers) + 1)
        self.browsers.append(browser)
        return browser


async def test_an_overrun_restarts_chromium_and_other_renders_are_retried_not_failed() -> None:
    """The deadline bounds what cannot be predicted: the overrunning render is
    a 422 naming LITHO_RENDERER_TIMEOUT; Chromium is replaced at once (its
    shared compositor would go on drawing the page), and a render that was
    in flight beside it runs again on the new browser instead of failing,
    without spending its own retry: it still survives a real crash after."""
    engine = ClosingEngine()
    pool = PagePool(engine, size=2, max_queue=4, restart_after=100, timeout=1.0)
    await pool.start()
    started = asyncio.Event()
    attempts = 0

    async def paint_heavy(page: PageLike) -> None:
        started.set()
        await asyncio.Event().wait()  # never done: only the deadline ends it

    async def beside_it(page: PageLike) -> int:
        nonlocal attempts
        attempts += 1
        assert isinstance(page, FakePage) and isinstance(page.browser, ClosingBrowser)
        if attempts == 1:  # stuck behind the heavy page until its browser goes
            await page.browser.gone.wait()
            raise Crash("browser closed")
        if attempts == 2:  # then a crash of its own
            raise Crash("Target crashed")
        return page.browser.number

    heavy = asyncio.create_task(pool.run(paint_heavy, tenant="attacker"))
    await started.wait()
    await asyncio.sleep(0.5)  # its deadline comes well after the heavy one's
    other = asyncio.create_task(pool.run(beside_it, tenant="bystander"))
    with pytest.raises(InvalidArgument) as exc:
        await heavy
    message, fields, _ = refusal(exc)
    assert fields == ["template"] and "LITHO_RENDERER_TIMEOUT" in message
    assert await asyncio.wait_for(other, 10) == 3 and attempts == 3
    assert not engine.browsers[0].connected and pool.restarts == 2
    await pool.close()


@pytest.mark.parametrize("url", [
    "http://Document.invalid/", "http://document.invalid:80/", "http://document.invalid/a/../",
    "http://user@document.invalid/", "https://document.invalid:443/", "http://x.invalid:99999/",
])
def test_a_base_url_chromium_would_rewrite_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, url: str,
) -> None:
    # The pool knows its own reset navigation by the exact URL: one Chromium
    # canonicalises differently would be blocked, and no page could start.
    monkeypatch.setenv("LITHO_RENDERER_RENDER_ID_SECRET", "s" * 32)
    monkeypatch.setenv("LITHO_RENDERER_BASE_URL", url)
    with pytest.raises(ConfigError, match="LITHO_RENDERER_BASE_URL"):
        load(RendererSettings)


@pytest.mark.parametrize("url", [
    "http://document.invalid/", "http://127.0.0.1:8123/", "https://cdn.example/base/",
    "http://[::1]:9000/",
])
def test_canonical_base_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("LITHO_RENDERER_RENDER_ID_SECRET", "s" * 32)
    monkeypatch.setenv("LITHO_RENDERER_BASE_URL", url)
    assert load(RendererSettings).renderer_base_url == url


async def test_a_tenant_whose_render_overran_cools_down() -> None:
    engine = FakeEngine()
    pool = PagePool(engine, size=2, max_queue=4, restart_after=100, timeout=0.05,
                    overrun_cooldown=60.0)
    await pool.start()

    async def hangs(page: PageLike) -> None:
        await asyncio.sleep(10)

    async def quick(page: PageLike) -> str:
        return "ok"

    with pytest.raises(InvalidArgument):
        await pool.run(hangs, tenant="attacker")
    # One restart, and no more from this tenant for a while: its renders are
    # refused (retryable, with the time left) while others' go on.
    with pytest.raises(ResourceExhausted, match="LITHO_RENDERER_OVERRUN_COOLDOWN") as cooling:
        await pool.run(quick, tenant="attacker")
    assert 50 <= cooling.value.retry_after <= 60
    assert await pool.run(quick, tenant="bystander") == "ok"
    assert pool.restarts == 1
    await pool.close()
