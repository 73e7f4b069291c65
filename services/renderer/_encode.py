"""Still images: Chromium captures a fast, barely compressed PNG; libvips encodes it.

Chromium's PNG encoder is slow and its files big (bench card: 190 ms, 350 KB;
fast capture + ``encode``: 70 ms, 73 KB). For JPEG and WebP, Chromium's encoders
are faster end to end (33 and 68 ms against 72 and 87 ms: the fast PNG alone
costs ~55 ms); what ``encode`` adds there is progressive JPEG, full chroma at
quality 90+, lossless WebP at 100 and metadata stripping. ``_formats_bench``
measures all three paths. ``encode`` and ``image_size`` are CPU-bound and
synchronous: callers run them in an executor, never on the event loop.

Choices, measured on 1200x630 captures (decode included, 2 cores):

- PNG: zlib level 7, no row filter: 10-19 ms. Level 7 halves a gradient card
  against level 6 (60 KB vs 123 KB) for ~1 ms. Unfiltered rows suit flat UI
  content but leave photographs at ~1.4 bytes/pixel, so an output worse than
  3:1 is re-encoded with the "up" filter and the smaller kept (photo card:
  1010 KB -> 440 KB for +50 ms; cards and text never pay it).
- JPEG: progressive (which implies optimised Huffman tables): 4-10% smaller
  than an optimised baseline JPEG for 3-7 ms more, ~20% smaller than a plain
  baseline one. Chroma is subsampled below quality 90 only (libvips' default),
  which keeps coloured text sharp at high qualities; Chromium's own JPEG always
  subsamples, so ours is bigger at 90+.
- WebP: effort 2 (libwebp method 2): twice as fast as the default effort 4 for
  files ~5% bigger. Quality 100 means lossless, because lossy WebP at 100 still
  subsamples chroma; lossless runs at effort 0 (25-100 ms, no bigger than our
  PNG), its own "quality" knob pinned at 75: higher costs time for little gain.
- Metadata is never kept, so the same capture always gives the same bytes.

Decoding Chromium's capture is half of a PNG's encode (bench card: ~17 of
~34 ms): its "fast" PNG is Huffman-only deflate (~700 KB for 2.3 MB of
pixels, "up" filter on every row), which zlib inflates slowly. ``_decode_fast``
inflates it with ISA-L and undoes the row filters with numpy (~10 ms); any
PNG it does not expect (another filter, bit depth, interlacing or chunk) goes
to libvips' own loader. Both give the same pixels and the same output bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

import numpy as np
import pybase64
import pyvips  # type: ignore[import-untyped]  # ships .pyi files but no py.typed
from isal import isal_zlib
from playwright.async_api import CDPSession

from litho import formats

#: What ``encode`` writes: the still formats (PNG, JPEG, WebP).
FORMATS: Final = tuple(f.name for f in formats.ALL if f.still)

PNG_COMPRESSION: Final = 7
#: An unfiltered PNG bigger than raw/3 is photographic; try the "up" filter.
_PNG_FILTER_RETRY_RATIO: Final = 3
JPEG_PROGRESSIVE: Final = True
WEBP_EFFORT: Final = 2
WEBP_LOSSLESS_EFFORT: Final = 0
_WEBP_LOSSLESS_Q: Final = 75

_WHITE: Final = [255.0, 255.0, 255.0]
_KEEP_NONE: Final[int] = pyvips.enums.ForeignKeep.NONE  # no EXIF, XMP, ICC or comments
_FILTER_NONE: Final[int] = pyvips.enums.ForeignPngFilter.NONE
_FILTER_UP: Final[int] = pyvips.enums.ForeignPngFilter.UP

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: Bands per PNG colour type that ``_decode_fast`` reads: RGB, RGBA.
_PNG_BANDS: Final = {2: 3, 6: 4}
_ROW_NONE: Final = 0
_ROW_UP: Final = 2
#: What libvips' loader sets for a PNG without a pHYs chunk (72 dpi, in pixels
#: per mm): the saved pHYs, and so the output bytes, match its decode.
_DEFAULT_RES: Final = 2.834
#: isal's stubs declare its error as an instance, not a class.
_InflateError: Final[type[Exception]] = isal_zlib.error  # type: ignore[assignment]


async def capture_fast_png(
    cdp: CDPSession,
    *,
    clip: Mapping[str, float] | None = None,
    transparent: bool = False,
    beyond_viewport: bool = False,
) -> bytes:
    """One fast PNG of the page (or ``clip``: x, y, width, height[, scale] in CSS px).

    ``transparent`` clears the default white background for this capture only;
    the page's own backgrounds still paint. ``beyond_viewport`` is needed only
    when ``clip`` reaches outside the viewport, and makes Chromium relayout.
    """
    params: dict[str, object] = {"format": "png", "optimizeForSpeed": True}
    if clip is not None:
        params["clip"] = {"scale": 1, **clip}
    if beyond_viewport:
        params["captureBeyondViewport"] = True
    if not transparent:
        result = await cdp.send("Page.captureScreenshot", params)
        return from_base64(result["data"])
    await cdp.send(
        "Emulation.setDefaultBackgroundColorOverride", {"color": {"r": 0, "g": 0, "b": 0, "a": 0}}
    )
    try:
        result = await cdp.send("Page.captureScreenshot", params)
    finally:
        await cdp.send("Emulation.setDefaultBackgroundColorOverride", {})
    return from_base64(result["data"])


def from_base64(data: str) -> bytes:
    """A capture's bytes from the base64 text CDP sends them as.

    A fast PNG of a 1200x630 card is ~940 KB of base64: the standard library
    decodes it in ~4 ms on the event loop, pybase64 (SIMD) in ~0.2 ms.
    Chromium's base64 is strict, so anything else in it is an error."""
    decoded: bytes = pybase64.b64decode(data, validate=True)
    return decoded


def disable_operation_cache() -> None:
    """libvips caches recent operations and their pixels for reuse; every
    render here is new input, so the cache would only hold memory."""
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)


def encode(frame_png: bytes, *, format: str, quality: int, transparent: bool) -> bytes:
    """Re-encode a captured PNG as ``format`` ('png' | 'jpeg' | 'webp').

    ``quality`` (1-100) applies to JPEG and WebP. ``transparent`` keeps the alpha
    channel for PNG and WebP; otherwise alpha, if any, is flattened onto white.
    JPEG has no alpha and is always flattened onto white.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, not {quality}")
    image = _load(frame_png)
    if format == "jpeg" or not transparent:
        image = _opaque(image)
    if format == "png":
        return _png(image)
    if format == "jpeg":
        jpeg: bytes = image.jpegsave_buffer(
            Q=quality, interlace=JPEG_PROGRESSIVE, keep=_KEEP_NONE
        )
        return jpeg
    if quality == 100:
        lossless: bytes = image.webpsave_buffer(
            lossless=True, Q=_WEBP_LOSSLESS_Q, effort=WEBP_LOSSLESS_EFFORT, keep=_KEEP_NONE
        )
        return lossless
    webp: bytes = image.webpsave_buffer(Q=quality, effort=WEBP_EFFORT, keep=_KEEP_NONE)
    return webp


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, JPEG, WebP or GIF (its first frame), from the header."""
    try:
        image = pyvips.Image.new_from_buffer(data, "")
    except pyvips.Error as exc:
        raise ValueError("not an image libvips can read") from exc
    width: int = image.width
    height: int = image.height
    return width, height


def _load(data: bytes) -> pyvips.Image:
    fast = _decode_fast(data)
    if fast is not None:
        return fast
    # Random access decodes once into memory, so a PNG can be saved twice.
    try:
        return pyvips.Image.new_from_buffer(data, "")
    except pyvips.Error as exc:
        raise ValueError("the capture is not an image libvips can read") from exc


def _decode_fast(data: bytes) -> pyvips.Image | None:
    """The pixels of an 8-bit, non-interlaced RGB(A) PNG whose rows are all
    unfiltered or "up"-filtered (Chromium's ``optimizeForSpeed`` capture);
    ``None`` for anything else, which libvips then reads."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    header: tuple[int, ...] | None = None
    idat: list[bytes] = []
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR" and len(body) == 13:
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        else:  # colour, gamma or resolution chunks: libvips knows what to do
            return None
        pos += 12 + length
    if header is None or not idat:
        return None
    width, height, depth, colour, compression, filter_method, interlace = header
    bands = _PNG_BANDS.get(colour)
    if bands is None or depth != 8 or compression or filter_method or interlace:
        return None
    stride = 1 + width * bands
    inflater = isal_zlib.decompressobj()
    try:
        # Never more than the header's size: a stream that says otherwise is
        # libvips' to refuse, not ours to hold in memory.
        raw = inflater.decompress(b"".join(idat), stride * height + 1)
    except _InflateError:
        return None
    if len(raw) != stride * height or not inflater.eof:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride)
    filters = rows[:, 0]
    if not np.isin(filters, (_ROW_NONE, _ROW_UP)).all():
        return None
    pixels = rows[:, 1:].copy()
    # "Up": each byte is stored minus the one above it (mod 256), so add the
    # row above back, top to bottom (one vector add per row; uint8 wraps).
    for y in np.flatnonzero(filters[1:] == _ROW_UP) + 1:
        np.add(pixels[y], pixels[y - 1], out=pixels[y])
    image = pyvips.Image.new_from_memory(pixels.data, width, height, bands, "uchar")
    return image.copy(interpretation="srgb", xres=_DEFAULT_RES, yres=_DEFAULT_RES)


def _opaque(image: pyvips.Image) -> pyvips.Image:
    if not image.hasalpha():
        return image
    return image.flatten(background=_WHITE)


def _png(image: pyvips.Image) -> bytes:
    out: bytes = image.pngsave_buffer(
        compression=PNG_COMPRESSION, filter=_FILTER_NONE, keep=_KEEP_NONE
    )
    raw_size = image.width * image.height * image.bands
    if len(out) * _PNG_FILTER_RETRY_RATIO <= raw_size:
        return out
    filtered: bytes = image.pngsave_buffer(
        compression=PNG_COMPRESSION, filter=_FILTER_UP, keep=_KEEP_NONE
    )
    return filtered if len(filtered) < len(out) else out
