"""Animated GIFs from CSS animations, stepped frame by frame, never recorded.

Capture (async, in the page): every animation in the document is paused and
then seeked, through the Web Animations API, to each frame's time before a fast
PNG is taken. Page scripts stay disabled; ``page.evaluate`` still works because
Playwright evaluates through CDP. The same template therefore always gives the
same frames, however loaded the machine is.

Encoding (sync, CPU-bound, for an executor): one palette for all frames,
computed by median cut over a subsample of every frame, so colours never shift
between frames and the file has a single global colour table. Frames are mapped
to it without dithering: dither noise differs from frame to frame, which shows
as crawling pixels and defeats the next trick. Pixels whose palette index did
not change since the previous frame are written as transparent over the kept
previous frame (disposal 1), and the GIF encoder crops each frame to what
changed. Identical consecutive frames are merged and their delays summed.

Pillow rather than libvips: libvips' GIF saver quantises every frame with
libimagequant (~60 ms a 600x315 frame here, 1.3-3 s for 30 frames), and it only
keeps one global palette when handed one, taken from the first frame or from
metadata. Pillow does the whole job for 30 such frames in ~0.2 s, most of it
decoding the PNGs.

Timing rules:

- GIF delays are in hundredths of a second and browsers slow delays under
  20 ms down to 100 ms, so the frame delay is 1000/fps rounded to 10 ms, at
  least 20 ms; frames are sampled at multiples of that delay, so playback runs
  at the animation's real speed.
- The natural duration is the longest animation: ``delay + iterations *
  duration`` when finite, ``delay + duration`` (one loop) when infinite; capped
  at ``max_duration_ms``.
- If every animation is finite, a last frame shows the end state at exactly
  the duration; if any is infinite, frames cover [0, duration) so the GIF loops
  seamlessly.
- If that needs more than ``max_frames`` frames, the delay grows (in 10 ms
  steps) so the whole duration is still covered, at a lower frame rate.
  ``max_pixels`` (frames × pixels of a frame, scale included) lowers
  ``max_frames`` for large frames: capture and encoding cost grow with it
  (~22 ms a frame plus ~90 ms a megapixel on 2 busy cores).
- No animations: one frame.

Animations that end before the capture starts and do not fill forwards are no
longer in ``document.getAnimations()``. Call ``freeze_timeline`` on the CDP
session before loading the content so that no time passes until the frames are
taken; detaching the session, or ``release_timeline``, undoes it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Final

from PIL import Image, ImageChops
from playwright.async_api import CDPSession, Page

from litho.errors import FieldError, InvalidArgument
from services.renderer._encode import capture_fast_png

MAX_FPS: Final = 50
#: Browsers treat GIF delays below 20 ms as 100 ms.
MIN_DELAY_MS: Final = 20
#: Pixels fed to median cut; more buys nothing visible and costs time.
_PALETTE_SAMPLE_PIXELS: Final = 400_000
#: One index stays free for "unchanged since the previous frame".
_PALETTE_COLOURS: Final = 255
_KEEP_PREVIOUS: Final = 1  # GIF disposal method: leave the frame in place

_PAUSE_ALL = """() => {
  const animations = document.getAnimations();
  for (const a of animations) a.pause();
  return animations;
}"""
_TIMINGS = """animations => animations.filter(a => a.effect).map(a => {
  const t = a.effect.getComputedTiming();
  return [Number(t.delay) || 0, Number(t.duration) || 0, Number(t.iterations), Number(t.endTime)];
})"""
_SEEK = "([animations, t]) => { for (const a of animations) a.currentTime = t; }"


async def freeze_timeline(cdp: CDPSession) -> None:
    """Stop the page's animation clock, so that animations wait at time 0 for us."""
    await cdp.send("Animation.setPlaybackRate", {"playbackRate": 0})


async def release_timeline(cdp: CDPSession) -> None:
    """Let the clock run again, for a session that outlives the GIF render."""
    await cdp.send("Animation.setPlaybackRate", {"playbackRate": 1})


async def capture_gif_frames(
    page: Page,
    cdp: CDPSession,
    *,
    fps: int,
    duration_ms: int | None,
    max_duration_ms: int,
    max_frames: int,
    clip: Mapping[str, float] | None,
    max_pixels: int | None = None,
) -> tuple[list[bytes], int]:
    """PNG frames of the page's CSS animations, and the delay between them in ms.

    ``duration_ms`` None means the animations' natural duration (module docs).
    ``clip`` is x, y, width, height[, scale] in CSS pixels. ``max_pixels``
    bounds frames × pixels of a frame: fewer frames are taken (a longer delay)
    when the clip is so large that ``max_frames`` of them would pass it.
    """
    delay = frame_delay_ms(fps)
    if duration_ms is not None and not 0 < duration_ms <= max_duration_ms:
        raise InvalidArgument(
            "the GIF duration is out of range",
            errors=[FieldError("gif.duration", f"must be 1-{max_duration_ms} ms")],
        )
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    if max_pixels is not None and clip is not None:
        max_frames = frames_within(max_pixels, clip, max_frames)
    beyond = _clip_leaves_viewport(page, clip)
    animations = await page.evaluate_handle(_PAUSE_ALL)
    try:
        timings: list[list[float]] = await animations.evaluate(_TIMINGS)
        if not timings:
            return [await capture_fast_png(cdp, clip=clip, beyond_viewport=beyond)], delay
        finite = all(math.isfinite(t[2]) for t in timings)
        period = duration_ms if duration_ms is not None else natural_duration_ms(timings)
        times, delay = frame_times(
            min(period, max_duration_ms), delay, include_end=finite, max_frames=max_frames
        )
        frames = []
        for t in times:
            await page.evaluate(_SEEK, [animations, t])
            frames.append(await capture_fast_png(cdp, clip=clip, beyond_viewport=beyond))
        return frames, delay
    finally:
        await animations.dispose()


def frames_within(max_pixels: int, clip: Mapping[str, float], max_frames: int) -> int:
    """Most frames of ``clip`` (scale included) whose pixels fit ``max_pixels``; one at least."""
    scale = clip.get("scale", 1.0)
    per_frame = max(1.0, clip["width"] * clip["height"] * scale * scale)
    return max(1, min(max_frames, int(max_pixels // per_frame)))


def gif_info(data: bytes) -> tuple[int, int, int]:
    """(width, height, frames) of an encoded GIF: identical consecutive frames
    were merged, so this can be fewer frames than were captured."""
    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height, int(getattr(image, "n_frames", 1))


def frame_delay_ms(fps: int) -> int:
    """1000/fps on GIF's 10 ms grid, at least ``MIN_DELAY_MS``."""
    if not 1 <= fps <= MAX_FPS:
        raise InvalidArgument(
            "the GIF frame rate is out of range",
            errors=[FieldError("gif.fps", f"must be 1-{MAX_FPS}")],
        )
    return max(MIN_DELAY_MS, round(100 / fps) * 10)


def natural_duration_ms(timings: Sequence[Sequence[float]]) -> int:
    """Longest animation: its end time if finite, one iteration past its delay if not.

    Each timing is (delay, duration, iterations, end_time) as computed by the browser.
    """
    longest = 0.0
    for delay, duration, iterations, end_time in timings:
        end = end_time if math.isfinite(iterations) else delay + duration
        if math.isfinite(end):
            longest = max(longest, end)
    return math.ceil(longest)


def frame_times(
    period_ms: int, delay_ms: int, *, include_end: bool, max_frames: int
) -> tuple[list[int], int]:
    """Frame times covering ``period_ms``, and the delay, raised to fit ``max_frames``."""
    if period_ms <= 0 or max_frames == 1:
        return [0], delay_ms
    slots = max(1, max_frames - 1 if include_end else max_frames)
    delay_ms = max(delay_ms, math.ceil(period_ms / slots / 10) * 10)
    times = list(range(0, period_ms, delay_ms))
    if include_end:
        times.append(period_ms)
    return times[:max_frames], delay_ms


def encode_gif(frames: Sequence[bytes], *, delay_ms: int, loop: bool = True) -> bytes:
    """A GIF of PNG ``frames`` sharing one palette, each shown ``delay_ms``.

    ``loop`` repeats forever; otherwise it plays once. Same frames, same bytes.
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    images = [_rgb(frame) for frame in frames]
    size = images[0].size
    if any(image.size != size for image in images):
        raise ValueError("every GIF frame must have the same size")
    palette = _shared_palette(images)
    indexed, delays = _merge_repeats(
        [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images], delay_ms
    )
    colours = palette.getpalette() or []
    unchanged = len(colours) // 3
    palette_bytes = bytes(colours) + _unused_colour(colours)
    for image in indexed:
        image.putpalette(palette_bytes)
    out = io.BytesIO()
    extra: dict[str, int] = {"loop": 0} if loop else {}
    first, *rest = _mark_unchanged(indexed, unchanged)
    first.save(
        out,
        "GIF",
        save_all=True,
        append_images=rest,
        duration=delays if len(delays) > 1 else delays[0],
        disposal=_KEEP_PREVIOUS,
        transparency=unchanged,
        palette=palette_bytes,
        optimize=False,
        interlace=False,
        **extra,
    )
    return out.getvalue()


def _clip_leaves_viewport(page: Page, clip: Mapping[str, float] | None) -> bool:
    viewport = page.viewport_size
    if clip is None or viewport is None:
        return False
    return bool(
        clip["x"] < 0
        or clip["y"] < 0
        or clip["x"] + clip["width"] > viewport["width"]
        or clip["y"] + clip["height"] > viewport["height"]
    )


def _rgb(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _shared_palette(images: Sequence[Image.Image]) -> Image.Image:
    """Median cut over every frame, each sampled on a grid (exact colours, no blending)."""
    width, height = images[0].size
    total = width * height * len(images)
    step = max(1, math.ceil(math.sqrt(total / _PALETTE_SAMPLE_PIXELS)))
    tile = (max(1, width // step), max(1, height // step))
    sample = Image.new("RGB", (tile[0], tile[1] * len(images)))
    for i, image in enumerate(images):
        small = image if step == 1 else image.resize(tile, Image.Resampling.NEAREST)
        sample.paste(small, (0, i * tile[1]))
    return sample.quantize(
        colors=_PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )


def _merge_repeats(
    images: list[Image.Image], delay_ms: int
) -> tuple[list[Image.Image], list[int]]:
    kept = [images[0]]
    delays = [delay_ms]
    previous = images[0].tobytes()
    for image in images[1:]:
        data = image.tobytes()
        if data == previous:
            delays[-1] += delay_ms
            continue
        kept.append(image)
        delays.append(delay_ms)
        previous = data
    return kept, delays


def _mark_unchanged(images: list[Image.Image], unchanged: int) -> list[Image.Image]:
    """Frames after the first: pixels equal to the previous frame become ``unchanged``."""
    out = [images[0]]
    # Compare raw palette indices, as L images: chops on "P" would go through the palette.
    previous = Image.frombytes("L", images[0].size, images[0].tobytes())
    same = [255] + [0] * 255
    for image in images[1:]:
        current = Image.frombytes("L", image.size, image.tobytes())
        mask = ImageChops.difference(previous, current).point(same, "1")
        marked = image.copy()
        marked.paste(unchanged, mask=mask)
        out.append(marked)
        previous = current
    return out


def _unused_colour(colours: Sequence[int]) -> bytes:
    """A palette entry for the transparent index that repeats no real colour.

    Pillow's GIF writer matches frames to the palette by colour, so a duplicate
    would be remapped onto another index.
    """
    used = {bytes(colours[i : i + 3]) for i in range(0, len(colours), 3)}
    for value in range(256):
        candidate = bytes((255, value, 255))
        if candidate not in used:
            return candidate
    raise AssertionError("255 colours cannot use all 256 candidates")
