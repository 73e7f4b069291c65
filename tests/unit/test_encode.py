"""Still-image capture and encoding, against a real Chromium."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import pyvips  # type: ignore[import-untyped]
from PIL import Image, PngImagePlugin
from playwright.async_api import Browser, CDPSession, Page

from services.renderer._encode import PNG_COMPRESSION, capture_fast_png, encode, image_size

# Four coloured quadrants on white, with a 40x40 square that may be transparent.
BLOCKS = """<!doctype html><html><head><style>
  html, body { margin: 0; background: %s; }
  div { position: absolute; width: 80px; height: 50px; }
</style></head><body>
  <div style="left:0;top:0;background:#ff0000"></div>
  <div style="left:80px;top:0;background:#00ff00"></div>
  <div style="left:0;top:50px;background:#0000ff"></div>
  <div style="left:80px;top:50px;width:40px;height:40px;background:#ffff00"></div>
</body></html>"""
WIDTH, HEIGHT = 160, 100


@pytest_asyncio.fixture(loop_scope="session")
async def tab(browser: Browser) -> AsyncIterator[tuple[Page, CDPSession]]:
    # Like the engine's pages: one context per page, template scripts off.
    context = await browser.new_context(
        java_script_enabled=False, viewport={"width": WIDTH, "height": HEIGHT}
    )
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    yield page, cdp
    await context.close()


async def capture(tab: tuple[Page, CDPSession], background: str, *,
                  transparent: bool = False) -> bytes:
    page, cdp = tab
    await page.set_content(BLOCKS % background, wait_until="load")
    return await capture_fast_png(cdp, transparent=transparent)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# Centres of the red, green, blue and yellow blocks, and of the background.
POINTS = {(40, 25): (255, 0, 0), (120, 25): (0, 255, 0), (40, 75): (0, 0, 255),
          (100, 70): (255, 255, 0), (140, 90): (255, 255, 255)}


@pytest.mark.parametrize(("fmt", "tolerance"), [("png", 0), ("jpeg", 12), ("webp", 12)])
async def test_each_format_decodes_to_the_page(
    tab: tuple[Page, CDPSession], fmt: str, tolerance: int
) -> None:
    frame = await capture(tab, "white")
    data = encode(frame, format=fmt, quality=90, transparent=False)
    image = decode(data)
    assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert image.size == (WIDTH, HEIGHT) == image_size(data)
    assert image.mode == "RGB"
    for point, colour in POINTS.items():
        assert close(pixel(image, point), colour, tolerance), (point, pixel(image, point))


async def test_png_is_lossless_and_smaller_than_the_fast_capture(
    tab: tuple[Page, CDPSession],
) -> None:
    frame = await capture(tab, "white")
    data = encode(frame, format="png", quality=90, transparent=False)
    assert decode(data).convert("RGB").tobytes() == decode(frame).convert("RGB").tobytes()
    assert len(data) < len(frame)


async def test_same_page_same_bytes_in_every_format(tab: tuple[Page, CDPSession]) -> None:
    first, second = await capture(tab, "white"), await capture(tab, "white")
    for fmt in ("png", "jpeg", "webp"):
        for quality in (80, 100):
            a = encode(first, format=fmt, quality=quality, transparent=False)
            b = encode(second, format=fmt, quality=quality, transparent=False)
            assert a == b, (fmt, quality)


async def test_transparent_keeps_alpha_in_png_and_webp(tab: tuple[Page, CDPSession]) -> None:
    frame = await capture(tab, "transparent", transparent=True)
    assert pixel(decode(frame), (140, 90))[3] == 0
    for fmt in ("png", "webp"):
        image = decode(encode(frame, format=fmt, quality=90, transparent=True))
        assert image.mode == "RGBA", fmt
        assert pixel(image, (140, 90))[3] == 0, fmt
        assert close(pixel(image, (40, 25)), (255, 0, 0, 255), 12), fmt


async def test_alpha_is_flattened_onto_white_unless_transparent(
    tab: tuple[Page, CDPSession],
) -> None:
    frame = await capture(tab, "transparent", transparent=True)
    for fmt in ("png", "webp"):
        image = decode(encode(frame, format=fmt, quality=90, transparent=False))
        assert image.mode == "RGB", fmt
        assert close(pixel(image, (140, 90)), (255, 255, 255), 3), fmt
    # JPEG has no alpha: flattened even when transparency was asked for.
    image = decode(encode(frame, format="jpeg", quality=90, transparent=True))
    assert image.mode == "RGB"
    assert close(pixel(image, (140, 90)), (255, 255, 255), 3)


async def test_the_default_background_comes_back_after_a_transparent_capture(
    tab: tuple[Page, CDPSession],
) -> None:
    await capture(tab, "transparent", transparent=True)
    frame = await capture(tab, "transparent")
    assert pixel(decode(frame).convert("RGBA"), (140, 90)) == (255, 255, 255, 255)


async def test_clip_captures_a_region(tab: tuple[Page, CDPSession]) -> None:
    page, cdp = tab
    await page.set_content(BLOCKS % "white", wait_until="load")
    frame = await capture_fast_png(cdp, clip={"x": 80, "y": 0, "width": 40, "height": 30})
    image = decode(frame).convert("RGB")
    assert image.size == (40, 30)
    assert pixel(image, (20, 15)) == (0, 255, 0)


async def test_webp_quality_100_is_lossless(tab: tuple[Page, CDPSession]) -> None:
    frame = await capture(tab, "white")
    data = encode(frame, format="webp", quality=100, transparent=False)
    assert data[12:16] == b"VP8L"  # the lossless bitstream
    assert decode(data).convert("RGB").tobytes() == decode(frame).convert("RGB").tobytes()
    assert encode(frame, format="webp", quality=99, transparent=False)[12:16] == b"VP8 "


async def test_jpeg_is_progressive(tab: tuple[Page, CDPSession]) -> None:
    frame = await capture(tab, "white")
    image = decode(encode(frame, format="jpeg", quality=75, transparent=False))
    assert image.info.get("progressive") == 1


def test_metadata_is_stripped() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret")
    source = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(source, "PNG", pnginfo=info)
    out = encode(source.getvalue(), format="png", quality=90, transparent=False)
    assert b"secret" not in out
    # Text, time, EXIF and ICC chunks; pHYs stays (it is the image's resolution).
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf", b"iCCP"):
        assert chunk not in out, chunk
    for fmt in ("jpeg", "webp"):
        assert b"secret" not in encode(source.getvalue(), format=fmt, quality=90,
                                       transparent=False)


def test_photographic_png_is_filtered() -> None:
    # Smooth noise, like a photograph, compresses badly without PNG row filters.
    bands = [Image.effect_noise((32, 32), sigma) for sigma in (60, 70, 80)]
    photo = Image.merge("RGB", bands).resize((512, 512), Image.Resampling.BICUBIC)
    source = io.BytesIO()
    photo.save(source, "PNG", compress_level=0)
    out = encode(source.getvalue(), format="png", quality=90, transparent=False)
    assert decode(out).tobytes() == photo.tobytes()
    unfiltered: bytes = pyvips.Image.new_from_buffer(source.getvalue(), "").pngsave_buffer(
        compression=PNG_COMPRESSION, filter=pyvips.enums.ForeignPngFilter.NONE)
    assert len(out) < 0.7 * len(unfiltered)


def test_image_size_reads_every_format() -> None:
    source = io.BytesIO()
    Image.new("RGB", (30, 20), "red").save(source, "PNG")
    for fmt in ("png", "jpeg", "webp"):
        assert image_size(encode(source.getvalue(), format=fmt, quality=80,
                                 transparent=False)) == (30, 20)
    gif = io.BytesIO()
    Image.new("RGB", (30, 20), "red").save(gif, "GIF")
    assert image_size(gif.getvalue()) == (30, 20)


def test_bad_input_is_refused() -> None:
    source = io.BytesIO()
    Image.new("RGB", (4, 4)).save(source, "PNG")
    with pytest.raises(ValueError, match="format"):
        encode(source.getvalue(), format="bmp", quality=90, transparent=False)
    with pytest.raises(ValueError, match="quality"):
        encode(source.getvalue(), format="jpeg", quality=0, transparent=False)
    with pytest.raises(ValueError, match="not an image"):
        encode(b"not a png", format="png", quality=90, transparent=False)
    with pytest.raises(ValueError, match="not an image"):
        image_size(b"nope")
