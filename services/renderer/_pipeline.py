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
from dataclasses import dataclass, replace
from typing import Protocol

from litho import renders
from litho.blobstore import BlobStore
from litho.errors import FieldError, InvalidArgument, LithoError
from litho.logs import get_logger
from services.renderer._capture import CaptureSpec

log = get_logger(__name__)

#: Part of every cache key: bump it when the same input would render differently.
RENDERER_VERSION = "1"
DEFAULT_JPEG_QUALITY = 90


@dataclass(frozen=True)
class RenderRequest:
    tenant_id: str
    template_id: str
    version: int
    variables_json: str
    format: str
    width: int = 0
    height: int = 0
    quality: int = 0


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


@dataclass(frozen=True)
class Expanded:
    template_id: str
    version: int
    html: str
    width: int
    height: int


class TemplateSource(Protocol):
    async def expand(
        self, tenant_id: str, template_id: str, version: int, variables_json: str
    ) -> Expanded: ...


class RenderEvents(Protocol):
    def completed(self, request: RenderRequest, result: RenderResult, duration_ms: float) -> None:
        ...

    def failed(self, request: RenderRequest, error: LithoError, template_version: int) -> None: ...


Capture = Callable[[CaptureSpec], Awaitable[bytes]]


class RenderPipeline:
    def __init__(
        self,
        templates: TemplateSource,
        blobs: BlobStore,
        capture: Capture,
        events: RenderEvents,
        *,
        max_dimension: int,
    ) -> None:
        self._templates = templates
        self._blobs = blobs
        self._capture = capture
        self._events = events
        self._max_dimension = max_dimension
        # One render per cache key at a time: identical concurrent requests share it.
        self._inflight: dict[str, asyncio.Future[None]] = {}

    async def render(self, request: RenderRequest) -> RenderResult:
        started = time.perf_counter()
        self._check(request)
        expanded = await self._templates.expand(
            request.tenant_id, request.template_id, request.version, request.variables_json
        )
        spec = CaptureSpec(
            html=expanded.html,
            width=request.width or expanded.width,
            height=request.height or expanded.height,
            format=request.format,
            quality=(request.quality or DEFAULT_JPEG_QUALITY) if request.format == "jpeg" else 0,
        )
        render_id = cache_key(spec)
        key = renders.blob_key(render_id, spec.format)
        result = RenderResult(
            render_id=render_id, blob_key=key, format=spec.format,
            content_type=renders.CONTENT_TYPES[spec.format], width=spec.width,
            height=spec.height, cached=True, template_version=expanded.version,
        )
        try:
            rendered = await self._ensure_stored(key, spec)
        except LithoError as exc:
            self._events.failed(request, exc, expanded.version)
            raise
        if rendered:
            result = replace(result, cached=False)
        self._events.completed(request, result, (time.perf_counter() - started) * 1000)
        return result

    def _check(self, request: RenderRequest) -> None:
        problems = []
        if request.format not in renders.CONTENT_TYPES:
            problems.append(FieldError(
                "format", f"must be one of {', '.join(sorted(renders.CONTENT_TYPES))}"))
        for name in ("width", "height"):
            value = getattr(request, name)
            if value and not (1 <= value <= self._max_dimension):
                problems.append(FieldError(name, f"must be between 1 and {self._max_dimension}"))
        if request.quality and not (1 <= request.quality <= 100):
            problems.append(FieldError("quality", "must be between 1 and 100"))
        if problems:
            raise InvalidArgument("the render options are invalid", errors=problems)

    async def _ensure_stored(self, key: str, spec: CaptureSpec) -> bool:
        """Store the image under ``key`` unless it is there; True if we rendered it."""
        while True:
            if await self._blobs.head(key) is not None:
                return False
            pending = self._inflight.get(key)
            if pending is None:
                break
            await asyncio.shield(pending)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            data = await self._capture(spec)
            await self._blobs.put(key, data, renders.CONTENT_TYPES[spec.format])
            return True
        finally:
            del self._inflight[key]
            done.set_result(None)


def cache_key(spec: CaptureSpec) -> str:
    material = json.dumps(
        [RENDERER_VERSION, spec.html, spec.width, spec.height, spec.format, spec.quality],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()
