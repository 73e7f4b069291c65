"""What became of every subresource a render asked for, and what to tell the user.

A page's images, fonts and stylesheets are fetched by the renderer
(``_subresources.py``); each request ends in one :class:`Outcome`. A render in
which any asset did not load is answered with warnings and never stored under
its content address (``_pipeline.py``), so fixing the cause (an allow-list
entry, a dead link) and rendering again gives the right output, not the broken
one from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

#: URLs in warnings, logs and spans are cut to this many characters.
MAX_URL_CHARS = 500
#: At most this many assets are recorded per render; the rest are counted.
MAX_RECORDED = 200
#: At most this many warnings travel in an answer (the count says how many in all).
MAX_WARNINGS = 20
#: Request types whose content is part of the pixels: one still open when the
#: page is captured is missing from the output. Others (a preload nobody
#: used, a beacon) are left out of the record if they never finish.
PIXEL_TYPES = frozenset({"document", "image", "stylesheet", "font", "media", "imageset"})


class Outcome(StrEnum):
    LOADED = "loaded"
    #: The outbound guard refused the destination (private, loopback, …).
    DENIED = "denied"
    #: Connection error, an HTTP error status, a relative URL with no base.
    FAILED = "failed"
    #: Past ``LITHO_OUTBOUND_TIMEOUT``, or still loading when the page was captured.
    TIMED_OUT = "timed_out"
    #: Past ``LITHO_OUTBOUND_MAX_BYTES``.
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Asset:
    url: str
    outcome: Outcome
    #: Bytes of the body handed to the page (0 unless loaded or an error page).
    size: int = 0
    duration_ms: float = 0.0
    #: The HTTP status the page got (0: no answer).
    status: int = 0
    #: Why it did not load, for the user (empty when loaded).
    reason: str = ""
    #: What to do about it, naming the setting where one applies.
    hint: str = ""
    #: Served from the renderer's subresource cache.
    cached: bool = False


@dataclass(frozen=True)
class AssetWarning:
    url: str
    outcome: Outcome
    reason: str
    hint: str


def denied(url: str) -> Asset:
    return Asset(
        clip_url(url), Outcome.DENIED,
        reason="the outbound guard refused this destination: it is not a public address "
               "(private, loopback, link-local or reserved), its name does not resolve, "
               "or its scheme is not http(s)",
        hint="check the host name; if the host is yours and trusted, allow it with "
             "LITHO_OUTBOUND_ALLOW (for example 10.0.0.5:8080 or 10.0.0.0/8) on the renderer")


def timed_out(url: str, seconds: float, ms: float) -> Asset:
    return Asset(
        clip_url(url), Outcome.TIMED_OUT, duration_ms=ms,
        reason=f"no complete answer within {seconds:g} s",
        hint="make the asset faster or smaller, or raise LITHO_OUTBOUND_TIMEOUT")


def too_large(url: str, limit: int, ms: float) -> Asset:
    return Asset(
        clip_url(url), Outcome.TOO_LARGE, duration_ms=ms,
        reason=f"larger than {limit} bytes",
        hint="use a smaller file, or raise LITHO_OUTBOUND_MAX_BYTES")


def failed(url: str, reason: str, ms: float = 0.0, *, status: int = 0, size: int = 0) -> Asset:
    hint = ("check the URL; the server answered with an error" if status
            else "check the URL and that its host is reachable from the renderer")
    return Asset(clip_url(url), Outcome.FAILED, size=size, duration_ms=ms, status=status,
                 reason=reason, hint=hint)


def unresolvable(url: str) -> Asset:
    return Asset(
        clip_url(url), Outcome.FAILED,
        reason="a relative URL: documents have no base URL to resolve it against",
        hint="use an absolute https:// URL, a data: URL, or a <base href> in the document")


def frame_blocked(url: str) -> Asset:
    return Asset(clip_url(url), Outcome.DENIED,
                 reason="a frame's document (iframe, frame, object or embed) is never "
                        "loaded: documents cannot navigate",
                 hint="put the content in the template itself, or use an image")


def not_get(url: str, method: str) -> Asset:
    return Asset(clip_url(url), Outcome.DENIED, reason=f"a {method[:10]} request; only GET is "
                 "fetched for a page", hint="load assets with plain GET requests (img, link, "
                 "url())")


def clip_url(url: str) -> str:
    return url if len(url) <= MAX_URL_CHARS else url[:MAX_URL_CHARS - 1] + "…"


@dataclass
class AssetLog:
    """The assets of one render, in the order the page asked for them.

    A request is entered when the page makes it (``start``) and settled when
    it ends (``finish``); one still open when the page is captured did not
    make it into the output, so it counts as timed out."""

    _slots: list[Asset | None] = field(default_factory=list)
    _urls: list[str] = field(default_factory=list)
    _kinds: list[str] = field(default_factory=list)
    #: Requests past ``MAX_RECORDED``, and how many of them did not load.
    unrecorded: int = 0
    unrecorded_problems: int = 0

    def start(self, url: str, kind: str = "image") -> int:
        """A slot for a request that began (``kind``: Chromium's resource
        type); -1 when past the record's bound."""
        if len(self._slots) >= MAX_RECORDED:
            self.unrecorded += 1
            return -1
        self._slots.append(None)
        self._urls.append(clip_url(url))
        self._kinds.append(kind)
        return len(self._slots) - 1

    def finish(self, slot: int, asset: Asset) -> None:
        if slot < 0:
            if asset.outcome is not Outcome.LOADED:
                self.unrecorded_problems += 1
            return
        if slot < len(self._slots):
            self._slots[slot] = asset

    def assets(self) -> tuple[Asset, ...]:
        """Every recorded request; one not finished yet is timed out. Problems
        past the record's bound are one entry with an empty URL."""
        recorded = [
            a if a is not None else Asset(
                url, Outcome.TIMED_OUT, reason="still loading when the page was captured",
                hint="the page's load event did not wait for it (a lazy image, or a font "
                     "requested late); load it eagerly, or make it faster")
            for a, url, kind in zip(self._slots, self._urls, self._kinds, strict=True)
            if a is not None or kind in PIXEL_TYPES]
        if self.unrecorded_problems:
            recorded.append(Asset(
                "", Outcome.FAILED,
                reason=f"{self.unrecorded_problems} more of the {self.unrecorded} requests "
                       f"past the first {MAX_RECORDED} did not load",
                hint="render fewer assets per document"))
        return tuple(recorded)


def problems(assets: tuple[Asset, ...]) -> list[Asset]:
    return [a for a in assets if a.outcome is not Outcome.LOADED]


def summary(assets: tuple[Asset, ...]) -> dict[str, int]:
    """Counts by outcome, for logs and spans."""
    counts: dict[str, int] = {}
    for a in assets:
        counts[a.outcome.value] = counts.get(a.outcome.value, 0) + 1
    return counts


def warnings_of(assets: tuple[Asset, ...]) -> tuple[AssetWarning, ...]:
    """One warning per asset that did not load, each URL once."""
    seen: set[str] = set()
    out: list[AssetWarning] = []
    for a in problems(assets):
        if a.url in seen:
            continue
        seen.add(a.url)
        out.append(AssetWarning(a.url, a.outcome, a.reason, a.hint))
    return tuple(out)
