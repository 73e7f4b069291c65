"""The render path: expand → cache key → hit, or render, store and answer.

Domain code: it talks to the template service, the browser, the blob store and
the event stream only through the small ports below.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

from litho import renders
from litho.blobstore import BlobStore
from litho.errors import FieldError, InvalidArgument, LithoError
from litho.logs import get_logger
from services.renderer._spec import (
    DEFAULT_QUALITY,
    GifSpec,
    Limits,
    PdfSpec,
    RenderOptions,
    check_options,
    check_pixels,
)

log = get_logger(__name__)

#: Part of every cache key: bump it when the same input would render differently.
RENDERER_VERSION = "2"


@dataclass(frozen=True)
class RenderRequest:
    tenant_id: str
    template_id: str
    version: int
    #: One JSON object text per document; several only for a multi-page PDF.
    variable_sets: tuple[str, ...]
    format: str
    options: RenderOptions = field(default_factory=RenderOptions)
    #: The variables came from a URL query: their values are all text.
    coerce_strings: bool = False


@dataclass(frozen=True)
class CaptureSpec:
    """Everything that decides the output bytes (and so the cache key)."""

    documents: tuple[str, ...]
    format: str
    width: int
    height: int
    scale: float
    quality: int
    transparent: bool
    selector: str
    pdf: PdfSpec
    gif: GifSpec
    #: GIF only: the duration and frame caps that shape an unbounded animation,
    #: so a change of those settings is a change of output.
    gif_caps: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Output:
    data: bytes
    width: int
    height: int
    page_count: int = 0
    page_width_pt: float = 0.0
    page_height_pt: float = 0.0
    frame_count: int = 0


@dataclass(frozen=True)
class RenderResult:
    render_id: str
    blob_key: str
    format: str
    content_type: str
    width: int
    height: int
    cached: bool
    template_version: int
    size_bytes: int
    page_count: int = 0
    page_width_pt: float = 0.0
    page_height_pt: float = 0.0
    frame_count: int = 0


@dataclass(frozen=True)
class Expanded:
    template_id: str
    version: int
    html: str
    width: int
    height: int


class TemplateSource(Protocol):
    async def expand(
        self, tenant_id: str, template_id: str, version: int, variables_json: str,
        *, coerce_strings: bool = False,
    ) -> Expanded: ...


class RenderEvents(Protocol):
    def completed(self, request: RenderRequest, result: RenderResult, duration_ms: float) -> None:
        ...

    def failed(self, request: RenderRequest, error: LithoError, template_version: int) -> None: ...


Capture = Callable[[CaptureSpec], Awaitable[Output]]


class RenderPipeline:
    def __init__(
        self,
        templates: TemplateSource,
        blobs: BlobStore,
        capture: Capture,
        events: RenderEvents,
        *,
        limits: Limits,
    ) -> None:
        self._templates = templates
        self._blobs = blobs
        self._capture = capture
        self._events = events
        self._limits = limits
        # One render per cache key at a time: identical concurrent requests share it.
        self._inflight: dict[str, asyncio.Future[bool]] = {}

    async def render(self, request: RenderRequest) -> RenderResult:
        started = time.perf_counter()
        self._check(request)
        expanded = await self._expand_all(request)
        first = expanded[0]
        o = request.options
        spec = CaptureSpec(
            documents=tuple(e.html for e in expanded),
            format=request.format,
            width=o.width or first.width,
            height=o.height or first.height,
            scale=o.scale or 1.0,
            quality=(o.quality or DEFAULT_QUALITY[request.format])
            if request.format in DEFAULT_QUALITY else 0,
            transparent=o.transparent,
            selector=o.selector,
            pdf=o.pdf,
            gif=o.gif,
            gif_caps=(self._limits.max_gif_duration_ms, self._limits.max_gif_frames)
            if request.format == "gif" else (0, 0),
        )
        check_pixels(spec.width, spec.height, spec.scale, self._limits)
        render_id = cache_key(spec)
        try:
            output, rendered = await self._stored_or_rendered(render_id, spec)
        except LithoError as exc:
            self._events.failed(request, exc, first.version)
            raise
        result = RenderResult(
            render_id=render_id, blob_key=renders.blob_key(render_id, spec.format),
            format=spec.format, content_type=renders.CONTENT_TYPES[spec.format],
            width=int(output["width"]), height=int(output["height"]), cached=not rendered,
            template_version=first.version, size_bytes=int(output["size"]),
            page_count=int(output.get("pageCount", 0)),
            page_width_pt=output.get("pageWidthPt", 0.0),
            page_height_pt=output.get("pageHeightPt", 0.0),
            frame_count=int(output.get("frameCount", 0)),
        )
        self._events.completed(request, result, (time.perf_counter() - started) * 1000)
        return result

    def _check(self, request: RenderRequest) -> None:
        check_options(request.format, request.options, self._limits)
        count = len(request.variable_sets)
        if count == 0 or (count > 1 and request.format != "pdf"):
            raise InvalidArgument("one variable set per render; several only for a PDF")
        if count > self._limits.max_pdf_pages:
            raise InvalidArgument(
                f"at most {self._limits.max_pdf_pages} variable sets per PDF",
                errors=[FieldError("variableSets", f"at most {self._limits.max_pdf_pages}")])

    async def _expand_all(self, request: RenderRequest) -> list[Expanded]:
        expanded = await asyncio.gather(*(
            self._templates.expand(request.tenant_id, request.template_id, request.version, v,
                                   coerce_strings=request.coerce_strings)
            for v in request.variable_sets
        ))
        # A multi-page PDF pins every page to the version of its first page.
        if len({e.version for e in expanded}) > 1:
            pinned = replace(request, version=expanded[0].version)
            return await self._expand_all(pinned)
        return list(expanded)

    async def _stored_or_rendered(
        self, render_id: str, spec: CaptureSpec
    ) -> tuple[dict[str, float], bool]:
        """The output's metadata, and whether this call rendered it."""
        key = renders.blob_key(render_id, spec.format)
        meta_key = renders.meta_key(render_id, spec.format)
        while True:
            stored = await self._stored(key, meta_key)
            if stored is not None:
                return stored, False
            pending = self._inflight.get(render_id)
            if pending is None:
                break
            # Share the owner's outcome: its error is ours too; if it was
            # cancelled, loop and render ourselves.
            if await asyncio.shield(pending) is False:
                continue
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_consume_exception)
        self._inflight[render_id] = done
        try:
            output = await self._capture(spec)
            await self._blobs.put(key, output.data, renders.CONTENT_TYPES[spec.format])
            info: dict[str, float] = {
                _camel(k): v for k, v in asdict(output).items() if k != "data" and v
            }
            info["size"] = len(output.data)
            # The metadata is written last: its presence means the output is complete.
            await self._blobs.put(meta_key, json.dumps(info).encode(), "application/json")
        except LithoError as exc:
            done.set_exception(exc)
            raise
        except BaseException:
            done.set_result(False)
            raise
        else:
            done.set_result(True)
            return info, True
        finally:
            del self._inflight[render_id]

    async def _stored(self, key: str, meta_key: str) -> dict[str, float] | None:
        # Both must be there: an output removed behind our back is rendered again.
        meta, output = await asyncio.gather(self._blobs.get(meta_key), self._blobs.head(key))
        if meta is None or output is None:
            return None
        stored: dict[str, float] = json.loads(meta.data)
        return stored


def _consume_exception(future: asyncio.Future[bool]) -> None:
    # A failure nobody else waited for is not "never retrieved".
    if not future.cancelled():
        future.exception()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def cache_key(spec: CaptureSpec) -> str:
    material = json.dumps([RENDERER_VERSION, asdict(spec)], ensure_ascii=False,
                          separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()
