"""Animated GIFs: stepping CSS animations in a real Chromium, and encoding them."""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from PIL import GifImagePlugin, Image, ImageChops, ImageStat
from playwright.async_api import Browser, CDPSession, Page

from litho.errors import InvalidArgument
from services.renderer._gif import (
    capture_gif_frames,
    encode_gif,
    frame_delay_ms,
    frame_times,
    freeze_timeline,
    natural_duration_ms,
    release_timeline,
)

WIDTH, HEIGHT = 120, 60

# Background goes red -> blue over one second, linearly, and stays blue.
FADE = """<!doctype html><html><head><style>
  html, body { margin: 0; }
  body { width: 120px; height: 60px; animation: fade 1000ms linear forwards; }
  @keyframes fade { from { background: rgb(255, 0, 0); } to { background: rgb(0, 0, 255); } }
</style></head><body></body></html>"""

# A 20px square slides 80px right every 400ms, for ever, after a 100ms delay.
SLIDE = """<!doctype html><html><head><style>
  html, body { margin: 0; background: white; }
  div { position: absolute; top: 20px; left: 0; width: 20px; height: 20px; background: black;
        animation: slide 400ms linear 100ms infinite; }
  @keyframes slide { from { transform: translateX(0); } to { transform: translateX(80px); } }
</style></head><body><div></div></body></html>"""

STILL = """<!doctype html><html><body style="margin:0;background:rgb(0,128,0)"></body></html>"""


@pytest_asyncio.fixture(loop_scope="session")
async def tab(browser: Browser) -> AsyncIterator[tuple[Page, CDPSession]]:
    context = await browser.new_context(
        java_script_enabled=False, viewport={"width": WIDTH, "height": HEIGHT}
    )
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    yield page, cdp
    await context.close()


async def frames_of(
    tab: tuple[Page, CDPSession], html: str, *, fps: int = 10, duration_ms: int | None = None,
    max_duration_ms: int = 5000, max_frames: int = 50,
    clip: dict[str, float] | None = None,
) -> tuple[list[bytes], int]:
    page, cdp = tab
    await freeze_timeline(cdp)
    await page.set_content(html, wait_until="load")
    return await capture_gif_frames(page, cdp, fps=fps, duration_ms=duration_ms,
                                    max_duration_ms=max_duration_ms, max_frames=max_frames,
                                    clip=clip)


def rgb(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def open_gif(data: bytes) -> GifImagePlugin.GifImageFile:
    image = Image.open(io.BytesIO(data))
    assert isinstance(image, GifImagePlugin.GifImageFile)
    return image


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def gif_frames(data: bytes) -> list[tuple[Image.Image, int]]:
    """Every frame as shown (composited over the previous ones), with its duration."""
    image = open_gif(data)
    out = []
    for i in range(image.n_frames):
        image.seek(i)
        out.append((image.convert("RGB"), image.info["duration"]))
    return out


def colour_tables(data: bytes) -> tuple[bool, int, int]:
    """(has a global colour table, image descriptors, descriptors with a local table)."""
    assert data[:6] == b"GIF89a"
    pos = 13
    has_global = bool(data[10] & 0x80)
    if has_global:
        pos += 3 * 2 ** ((data[10] & 7) + 1)
    images = local = 0
    while data[pos] != 0x3B:
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:
            assert data[pos] == 0x2C
            images += 1
            flags = data[pos + 9]
            pos += 10
            if flags & 0x80:
                local += 1
                pos += 3 * 2 ** ((flags & 7) + 1)
            pos += 1  # LZW minimum code size
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return has_global, images, local


def rms(a: Image.Image, b: Image.Image) -> float:
    stat = ImageStat.Stat(ImageChops.difference(a, b))
    return math.sqrt(sum(stat.sum2) / (len(stat.sum2) * a.width * a.height))


def test_frame_delay_sits_on_the_gif_grid() -> None:
    assert [frame_delay_ms(fps) for fps in (1, 10, 15, 24, 30, 50)] == [
        1000, 100, 70, 40, 30, 20]
    for fps in (0, 51):
        with pytest.raises(InvalidArgument) as caught:
            frame_delay_ms(fps)
        assert caught.value.errors[0].field == "gif.fps"


def test_natural_duration() -> None:
    inf = math.inf
    # (delay, duration, iterations, end time)
    assert natural_duration_ms([]) == 0
    assert natural_duration_ms([(0, 1000, 1, 1000), (200, 300, 2, 800)]) == 1000
    assert natural_duration_ms([(250, 500, 3, 1750)]) == 1750
    assert natural_duration_ms([(100, 400, inf, inf)]) == 500  # one loop
    assert natural_duration_ms([(100, 400, inf, inf), (0, 900, 1, 900)]) == 900


def test_frame_times() -> None:
    assert frame_times(1000, 100, include_end=True, max_frames=50) == (
        [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000], 100)
    assert frame_times(1000, 250, include_end=False, max_frames=50) == ([0, 250, 500, 750], 250)
    assert frame_times(950, 100, include_end=True, max_frames=50)[0][-2:] == [900, 950]
    assert frame_times(0, 100, include_end=True, max_frames=50) == ([0], 100)
    # Too many frames: the delay grows so the whole period is still covered.
    times, delay = frame_times(1000, 20, include_end=False, max_frames=8)
    assert (delay, len(times), times[-1]) == (130, 8, 910)
    times, delay = frame_times(1000, 20, include_end=True, max_frames=5)
    assert (delay, times) == (250, [0, 250, 500, 750, 1000])
    assert frame_times(1000, 100, include_end=True, max_frames=1) == ([0], 100)


async def test_finite_animation_is_stepped_to_its_end(tab: tuple[Page, CDPSession]) -> None:
    frames, delay = await frames_of(tab, FADE, fps=10)
    assert (len(frames), delay) == (11, 100)  # 0, 100, ... 1000 ms: the end state included
    for i in (0, 5, 10):
        red = round(255 * (1 - i / 10))
        assert pixel(rgb(frames[i]), (60, 30)) == pytest.approx((red, 0, 255 - red), abs=2)

    gif = encode_gif(frames, delay_ms=delay)
    image = open_gif(gif)
    assert (image.n_frames, image.size, image.info["loop"]) == (11, (WIDTH, HEIGHT), 0)
    shown = gif_frames(gif)
    assert [duration for _, duration in shown] == [100] * 11
    for (frame, _), png in zip(shown, frames, strict=True):
        assert rms(frame, rgb(png)) < 4


async def test_infinite_animation_loops_seamlessly(tab: tuple[Page, CDPSession]) -> None:
    frames, delay = await frames_of(tab, SLIDE, fps=20)
    # One loop is delay + duration = 500 ms: frames at 0, 50, ... 450 (500 would repeat 0).
    assert (len(frames), delay) == (10, 50)
    lefts = [_square_left(rgb(f)) for f in frames]
    assert lefts == [0, 0, 0, 10, 20, 30, 40, 50, 60, 70]

    gif = encode_gif(frames, delay_ms=delay)
    shown = gif_frames(gif)
    # The first three frames are identical: merged into one, their delays summed.
    assert [d for _, d in shown] == [150] + [50] * 7
    assert [_square_left(frame) for frame, _ in shown] == [0, 10, 20, 30, 40, 50, 60, 70]
    assert Image.open(io.BytesIO(gif)).info["loop"] == 0


def _square_left(image: Image.Image) -> int:
    row = [pixel(image, (x, 30)) for x in range(image.width)]
    return next(x for x, p in enumerate(row) if sum(p) < 100)


async def test_explicit_duration_and_caps(tab: tuple[Page, CDPSession]) -> None:
    frames, delay = await frames_of(tab, FADE, fps=10, duration_ms=300)
    assert (len(frames), delay) == (4, 100)  # 0, 100, 200, 300
    assert pixel(rgb(frames[-1]), (60, 30)) == pytest.approx((178, 0, 77), abs=2)
    frames, delay = await frames_of(tab, FADE, fps=10, max_duration_ms=200)
    assert len(frames) == 3
    frames, delay = await frames_of(tab, FADE, fps=50, max_frames=6)
    assert (len(frames), delay) == (6, 200)  # whole second, fewer frames
    assert pixel(rgb(frames[-1]), (60, 30)) == pytest.approx((0, 0, 255), abs=2)
    with pytest.raises(InvalidArgument):
        await frames_of(tab, FADE, duration_ms=6000)


async def test_no_animation_gives_one_frame(tab: tuple[Page, CDPSession]) -> None:
    frames, delay = await frames_of(tab, STILL, fps=10, duration_ms=2000)
    assert (len(frames), delay) == (1, 100)
    image = open_gif(encode_gif(frames, delay_ms=delay))
    assert image.n_frames == 1
    assert pixel(image.convert("RGB"), (5, 5)) == (0, 128, 0)


async def test_a_short_animation_is_not_lost_to_load_time(tab: tuple[Page, CDPSession]) -> None:
    # 200 ms, no fill: without the frozen clock it would be over before the capture.
    html = FADE.replace("1000ms linear forwards", "200ms linear")
    page, cdp = tab
    await freeze_timeline(cdp)
    await page.set_content(html, wait_until="load")
    await asyncio.sleep(0.4)
    frames, _ = await capture_gif_frames(page, cdp, fps=10, duration_ms=None,
                                         max_duration_ms=5000, max_frames=50, clip=None)
    assert len(frames) == 3
    assert pixel(rgb(frames[1]), (60, 30)) == pytest.approx((128, 0, 127), abs=2)


async def test_the_clock_can_be_frozen_and_released(tab: tuple[Page, CDPSession]) -> None:
    page, cdp = tab
    clock = "() => document.timeline.currentTime"
    await freeze_timeline(cdp)
    await page.set_content(FADE, wait_until="load")
    before = await page.evaluate(clock)
    await asyncio.sleep(0.1)
    assert await page.evaluate(clock) == before
    await release_timeline(cdp)
    await asyncio.sleep(0.1)
    assert await page.evaluate(clock) > before


async def test_clip(tab: tuple[Page, CDPSession]) -> None:
    frames, _ = await frames_of(tab, SLIDE, fps=10, clip={"x": 0, "y": 10, "width": 60,
                                                           "height": 40})
    assert {rgb(f).size for f in frames} == {(60, 40)}
    assert Image.open(io.BytesIO(encode_gif(frames, delay_ms=100))).size == (60, 40)


async def test_pixel_budget_takes_fewer_frames_of_a_large_clip(
    tab: tuple[Page, CDPSession],
) -> None:
    page, cdp = tab
    clip = {"x": 0.0, "y": 0.0, "width": 60.0, "height": 30.0, "scale": 2.0}
    await freeze_timeline(cdp)
    await page.set_content(FADE, wait_until="load")
    # 60×30 at scale 2 is 7,200 pixels a frame: 5 of them fit 36,000.
    frames, delay = await capture_gif_frames(
        page, cdp, fps=50, duration_ms=None, max_duration_ms=5000, max_frames=50,
        clip=clip, max_pixels=36_000)
    assert (len(frames), delay) == (5, 250)  # still the whole second, at a lower rate
    assert {rgb(f).size for f in frames} == {(120, 60)}
    assert pixel(rgb(frames[-1]), (60, 30)) == pytest.approx((0, 0, 255), abs=2)
    frames, _ = await capture_gif_frames(
        page, cdp, fps=50, duration_ms=None, max_duration_ms=5000, max_frames=50,
        clip=clip, max_pixels=1)
    assert len(frames) == 1


async def test_same_template_same_gif(tab: tuple[Page, CDPSession]) -> None:
    first, delay = await frames_of(tab, SLIDE, fps=20)
    second, _ = await frames_of(tab, SLIDE, fps=20)
    assert first == second
    assert encode_gif(first, delay_ms=delay) == encode_gif(second, delay_ms=delay)


def test_one_global_palette_for_every_frame() -> None:
    # Each frame has colours the others lack; a per-frame palette would need local tables.
    frames = []
    for i in range(6):
        image = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
        image.paste((40 * i, 255 - 40 * i, 128), (0, 0, 16 + 8 * i, 16))
        out = io.BytesIO()
        image.save(out, "PNG")
        frames.append(out.getvalue())
    gif = encode_gif(frames, delay_ms=40, loop=False)
    has_global, images, local = colour_tables(gif)
    assert has_global and images == 6 and local == 0
    image = Image.open(io.BytesIO(gif))
    assert "loop" not in image.info  # plays once
    for (shown, duration), png in zip(gif_frames(gif), frames, strict=True):
        assert duration == 40
        assert rms(shown, rgb(png)) < 3


def test_encode_gif_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        encode_gif([], delay_ms=100)
    sizes = []
    for size in ((4, 4), (5, 4)):
        out = io.BytesIO()
        Image.new("RGB", size).save(out, "PNG")
        sizes.append(out.getvalue())
    with pytest.raises(ValueError, match="same size"):
        encode_gif(sizes, delay_ms=100)
