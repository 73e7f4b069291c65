"""A tenant's uploaded fonts, handed to Chromium by family name.

The template service answers, with each expanded document, the tenant's
fonts whose family the document names. The renderer declares them with
``@font-face`` rules at the top of the document, each at a URL under
``fonts.litho.invalid`` (a name that never resolves), and serves those URLs
itself from the blob store through the page's request interception. Only
the fonts of the render's own tenant are in the page's map, so a URL naming
another tenant's font id is answered like any other unresolvable URL. The
fonts' hashes are in the ``CaptureSpec``, so uploading a new version of a
font is a new render id.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from litho.blobstore import BlobStore
from services.renderer import _assets
from services.renderer._assets import Asset
from services.renderer._pipeline import FontFace

HOST = "fonts.litho.invalid"
_CONTENT_TYPES = {"ttf": "font/ttf", "otf": "font/otf", "woff": "font/woff",
                  "woff2": "font/woff2"}
_CSS_FORMATS = {"ttf": "truetype", "otf": "opentype", "woff": "woff", "woff2": "woff2"}
#: What a family may contain on its way into CSS (the template service's
#: rule, checked again here before writing it): letters, combining marks and
#: digits of any script (Hindi and Tamil names need the marks), and " -_.&+".
_FAMILY_PUNCTUATION = frozenset(" -_.&+")
_FAMILY_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd"})
_DOCTYPE = re.compile(r"\A\s*<!doctype[^>]*>", re.IGNORECASE)


class RouteLike(Protocol):
    async def abort(self, error_code: str | None = None) -> None: ...

    async def fulfill(
        self, *, status: int | None = None, headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> None: ...


def within_budget(faces: tuple[FontFace, ...], *, max_count: int, max_bytes: int
                  ) -> tuple[tuple[FontFace, ...], tuple[FontFace, ...]]:
    """The faces one render declares, in order, within ``max_count`` faces
    and ``max_bytes`` of font files (each is read whole, then copied to
    Chromium), and the ones left out."""
    kept: list[FontFace] = []
    dropped: list[FontFace] = []
    total = 0
    for face in faces:
        if len(kept) < max_count and total + face.size <= max_bytes and safe_family(face.family):
            kept.append(face)
            total += face.size
        else:
            dropped.append(face)
    return tuple(kept), tuple(dropped)


def left_out(face: FontFace, *, max_count: int, max_bytes: int) -> Asset:
    if not safe_family(face.family):
        return _assets.failed(url_of(face), f"the family name {face.family[:100]!r} cannot be "
                              "written into CSS", 0.0)
    return Asset(url_of(face), _assets.Outcome.TOO_LARGE,
                 reason=f"past this render's font budget ({max_count} uploaded fonts, "
                        f"{max_bytes} bytes)",
                 hint="name fewer uploaded families in one document, or raise "
                      "LITHO_RENDERER_MAX_FONTS_PER_RENDER / "
                      "LITHO_RENDERER_MAX_FONT_BYTES_PER_RENDER")


def refused(family: str, faces: tuple[FontFace, ...]) -> Asset:
    """A face the browser refused after loading it (its tables are malformed)."""
    ours = next((f for f in faces if f.family.lower() == family.lower()), None)
    url = url_of(ours) if ours is not None else f"@font-face {family[:100]}"
    return Asset(url, _assets.Outcome.FAILED,
                 reason=f"the browser refused the font of family {family[:100]!r}: its "
                        "tables are malformed, so text is drawn in a fallback font",
                 hint="export the font again (for example with fontTools or a font "
                      "editor) and upload it again")


def url_of(face: FontFace) -> str:
    return f"http://{HOST}/{face.id}.{face.format}"


def safe_family(family: str) -> bool:
    return 1 <= len(family) <= 100 and all(
        c in _FAMILY_PUNCTUATION or unicodedata.category(c) in _FAMILY_CATEGORIES
        for c in family)


def font_faces_css(faces: tuple[FontFace, ...]) -> str:
    rules = []
    for f in faces:
        if not safe_family(f.family) or f.format not in _CSS_FORMATS:
            continue
        rules.append(
            f'@font-face{{font-family:"{f.family}";src:url("{url_of(f)}") '
            f'format("{_CSS_FORMATS[f.format]}");font-weight:{int(f.weight)};'
            f'font-style:{"italic" if f.style == "italic" else "normal"};font-display:block}}')
    return "".join(rules)


def declare(html: str, faces: tuple[FontFace, ...]) -> str:
    """``html`` with the faces' ``@font-face`` rules first: after the doctype
    when there is one (a doctype must stay first, or the page leaves
    standards mode), else at the very start, which the parser puts in
    ``<head>``. The template's own rules come later and win on conflict."""
    css = font_faces_css(faces)
    if not css:
        return html
    style = f"<style>{css}</style>"
    doctype = _DOCTYPE.match(html)
    if doctype is None:
        return style + html
    return html[:doctype.end()] + style + html[doctype.end():]


@dataclass(frozen=True)
class _Cached:
    data: bytes
    expires: float


class FontServer:
    """Serves uploaded fonts from the blob store, with a small per-tenant
    cache (bytes bounded) so a card that uses one font does not read it from
    the store on every render."""

    def __init__(self, blobs: BlobStore, *, max_cached_bytes: int = 32 * 1024 * 1024,
                 ttl: float = 300.0) -> None:
        self._blobs = blobs
        self._max = max_cached_bytes
        self._ttl = ttl
        self._cache: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        self._size = 0

    async def serve(self, route: RouteLike, face: FontFace, tenant: str) -> Asset:
        started = time.perf_counter()
        key = (tenant, face.blob_key)
        cached = self._cache.get(key)
        data = cached.data if cached is not None and cached.expires > time.monotonic() else None
        if data is None:
            blob = await self._blobs.get(face.blob_key)
            if blob is None:
                await route.abort("failed")
                return _assets.failed(url_of(face), f"the uploaded font {face.id} "
                                      f"({face.family}) is gone from the store",
                                      _ms(started))
            data = blob.data
            self._remember(key, data)
        await route.fulfill(status=200, body=data, headers={
            "Content-Type": _CONTENT_TYPES.get(face.format, "application/octet-stream"),
            "Access-Control-Allow-Origin": "*"})
        return Asset(url_of(face), _assets.Outcome.LOADED, size=len(data),
                     duration_ms=_ms(started), status=200, cached=cached is not None)

    def _remember(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self._max // 4:
            return
        old = self._cache.pop(key, None)
        if old is not None:
            self._size -= len(old.data)
        self._cache[key] = _Cached(data, time.monotonic() + self._ttl)
        self._size += len(data)
        while self._size > self._max:
            _, evicted = self._cache.popitem(last=False)
            self._size -= len(evicted.data)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
