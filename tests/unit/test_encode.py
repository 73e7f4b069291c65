"""Still-image capture and encoding, against a real Chromium."""

from __future__ import annotations

import base64
import binascii
import io
import random
import struct
import zlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import pyvips  # type: ignore[import-untyped]
from PIL import Image, PngImagePlugin
from playwright.async_api import Browser, CDPSession, Page

from services.renderer import _encode
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


def libvips_only(frame: bytes, *, format: str, quality: int, transparent: bool) -> bytes:
    """``encode`` with its fast decoder switched off: libvips reads the frame."""
    saved = _encode._decode_fast
    _encode._decode_fast = lambda data: None
    try:
        return encode(frame, format=format, quality=quality, transparent=transparent)
    finally:
        _encode._decode_fast = saved


def libvips_pixels(data: bytes) -> bytes:
    pixels: bytes = pyvips.Image.new_from_buffer(data, "").write_to_memory()
    return pixels


@pytest.mark.parametrize("case", ["opaque", "transparent", "clip"])
async def test_chromium_captures_take_the_fast_decoder_and_give_the_same_bytes(
    tab: tuple[Page, CDPSession], case: str
) -> None:
    page, cdp = tab
    if case == "clip":
        await page.set_content(BLOCKS % "white", wait_until="load")
        frame = await capture_fast_png(cdp, clip={"x": 30, "y": 10, "width": 90, "height": 70})
    else:
        frame = await capture(tab, "transparent" if case == "transparent" else "#abcdef",
                              transparent=case == "transparent")
    fast = _encode._decode_fast(frame)
    assert fast is not None, "Chromium's capture is no longer the PNG the fast decoder reads"
    assert fast.write_to_memory() == libvips_pixels(frame)
    transparent = case == "transparent"
    for fmt, quality in (("png", 100), ("webp", 100), ("webp", 80), ("jpeg", 90)):
        assert encode(frame, format=fmt, quality=quality, transparent=transparent) == \
            libvips_only(frame, format=fmt, quality=quality, transparent=transparent), fmt


def png(pixels: bytes, width: int, height: int, filters: list[int], *, bands: int = 3) -> bytes:
    """A PNG of RGB(A) ``pixels`` whose row ``y`` is stored with ``filters[y]``
    (0 none, 1 sub, 2 up), built by hand so every filter can be chosen."""
    stride = width * bands
    rows, previous = [], bytes(stride)
    for y in range(height):
        row = pixels[y * stride:(y + 1) * stride]
        if filters[y] == 2:
            stored = bytes((a - b) % 256 for a, b in zip(row, previous, strict=True))
        elif filters[y] == 1:
            stored = bytes((row[i] - (row[i - bands] if i >= bands else 0)) % 256
                           for i in range(stride))
        else:
            stored = row
        rows.append(bytes([filters[y]]) + stored)
        previous = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    colour = {3: 2, 4: 6}[bands]
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 1)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("bands", [3, 4])
def test_fast_decoder_undoes_mixed_none_and_up_rows(bands: int) -> None:
    rng = random.Random(bands)
    width, height = 37, 23
    pixels = bytes(rng.randrange(256) for _ in range(width * height * bands))
    data = png(pixels, width, height, [rng.choice((0, 2)) for _ in range(height)], bands=bands)
    fast = _encode._decode_fast(data)
    assert fast is not None
    assert (fast.width, fast.height, fast.bands) == (width, height, bands)
    assert fast.write_to_memory() == pixels == libvips_pixels(data)


def test_fast_decoder_leaves_every_other_png_to_libvips() -> None:
    rng = random.Random(7)
    width, height = 16, 8
    pixels = bytes(rng.randrange(256) for _ in range(width * height * 3))
    sub = png(pixels, width, height, [2, 1] + [0] * (height - 2))
    image = Image.new("RGB", (width, height))
    image.frombytes(pixels)
    for name, data in {
        "sub filter": sub,
        "interlaced": pyvips.Image.new_from_memory(pixels, width, height, 3, "uchar")
        .pngsave_buffer(interlace=True),
        "16-bit": pyvips.Image.new_from_memory(pixels, width, height, 3, "uchar")
        .cast("ushort").pngsave_buffer(),
        "palette": pyvips.Image.new_from_memory(pixels, width, height, 3, "uchar")
        .pngsave_buffer(palette=True),
        "extra chunk (pHYs)": pyvips.Image.new_from_memory(pixels, width, height, 3, "uchar")
        .pngsave_buffer(),
    }.items():
        assert _encode._decode_fast(data) is None, name
        out = encode(data, format="png", quality=100, transparent=False)
        if name not in ("palette", "16-bit"):  # lossy, or another depth: decoded only
            assert decode(out).convert("RGB").tobytes() == pixels, name
    # More or fewer pixel bytes than the header's size: libvips' to judge.
    exact = png(pixels, width, height, [0] * height)
    for claimed in (height - 1, height + 1):
        lying = exact.replace(struct.pack(">II", width, height), struct.pack(">II", width, claimed))
        assert _encode._decode_fast(lying) is None, claimed
    assert _encode._decode_fast(exact) is not None
    # A truncated pixel stream is not an image either way.
    broken = png(pixels, width, height, [0] * height).replace(b"IEND", b"IEN_")
    assert _encode._decode_fast(broken[:60] + broken[-12:]) is None
    assert _encode._decode_fast(b"GIF89a" + bytes(20)) is None


async def test_captures_arrive_decoded_from_base64(tab: tuple[Page, CDPSession]) -> None:
    page, cdp = tab
    await page.set_content(BLOCKS % "white", wait_until="load")
    reply = await cdp.send("Page.captureScreenshot", {"format": "png", "optimizeForSpeed": True})
    assert _encode.from_base64(reply["data"]) == base64.b64decode(reply["data"])
    assert _encode.from_base64(reply["data"]).startswith(b"\x89PNG")
    with pytest.raises(binascii.Error):
        _encode.from_base64(reply["data"][:40] + "*" + reply["data"][41:])
