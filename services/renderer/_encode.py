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
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Final

import pyvips  # type: ignore[import-untyped]  # ships .pyi files but no py.typed
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
        return base64.b64decode(result["data"])
    await cdp.send(
        "Emulation.setDefaultBackgroundColorOverride", {"color": {"r": 0, "g": 0, "b": 0, "a": 0}}
    )
    try:
        result = await cdp.send("Page.captureScreenshot", params)
    finally:
        await cdp.send("Emulation.setDefaultBackgroundColorOverride", {})
    return base64.b64decode(result["data"])


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
    # Random access decodes once into memory, so a PNG can be saved twice.
    try:
        return pyvips.Image.new_from_buffer(data, "")
    except pyvips.Error as exc:
        raise ValueError("the capture is not an image libvips can read") from exc


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
