"""The render path: expand → cache key → hit, or render, store and answer.

Domain code: it talks to the template service, the binding service (the data
of templates' declared data sources), the browser, the blob store and the
event stream only through the small ports below.

A template that declares data sources is expanded twice: the first answer
names the sources the variables did not give (their URLs expanded with the
variables); the pipeline fetches them all in one call (the binding service's
TTL cache) and expands again with their data. A template without data
sources is expanded once, as before. The data is part of the expanded
document, so of the render id: new data is a new render, the same data a hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

from opentelemetry import trace

from litho import renders
from litho.blobstore import BlobStore
from litho.errors import FailedPrecondition, FieldError, InvalidArgument, LithoError
from litho.logs import get_logger
from services.renderer import _assets
from services.renderer._assets import Asset, AssetWarning
from services.renderer._spec import (
    DEFAULT_QUALITY,
    GifSpec,
    Limits,
    PdfSpec,
    RenderOptions,
    check_documents,
    check_gif_work,
    check_options,
    check_pixels,
    gif_frame_cap,
)

log = get_logger(__name__)

#: What a stored-only request (CACHE_POLICY_STORED) answers when nothing is stored.
NOT_RENDERED_YET = "not rendered yet, and this request may not render it"
_tracer = trace.get_tracer("litho.renderer.pipeline")

#: Part of every cache key: bump it when the same input would render differently.
RENDERER_VERSION = "4"


@dataclass(frozen=True, order=True)
class FontFace:
    """A tenant's uploaded font that a document names (from the template
    service); its hash is part of the render id."""

    family: str
    weight: int
    style: str
    id: str
    format: str
    sha256: str
    blob_key: str
    #: Bytes of the file (the renderer's per-render font budget).
    size: int = 0


@dataclass(frozen=True)
class InlineSource:
    """A one-shot template (``POST /v1/render``): rendered, never stored."""

    html: str
    width: int
    height: int


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
    #: A render in which an asset did not load is refused (422), not answered
    #: with warnings.
    strict_assets: bool = False
    #: Skip the stored output: render again and replace it.
    refresh: bool = False
    #: Answer a stored output (or a reused recent render with warnings) and
    #: never render: FailedPrecondition when there is none.
    stored_only: bool = False
    #: Render this source instead of a stored template (``template_id`` is empty).
    inline: InlineSource | None = None
    #: Answer a render of the same input that had warnings, if it is recent
    #: (``reuse_warned_seconds``), instead of rendering again: for anonymous
    #: GETs of signed URLs.
    reuse_warned: bool = False
    #: A batch item: it gets a browser page only when no interactive render
    #: is waiting for one.
    background: bool = False


@dataclass(frozen=True)
class CaptureSpec:
    """Everything that decides the output bytes (and so the cache key)."""

    documents: tuple[str, ...]
    #: The URL every document is rendered at: relative URLs resolve against it.
    base_url: str
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
    #: The tenant's uploaded fonts the documents name, declared with
    #: @font-face; their hashes make a new upload a new render id.
    fonts: tuple[FontFace, ...] = ()


@dataclass(frozen=True)
class Output:
    data: bytes
    width: int
    height: int
    page_count: int = 0
    page_width_pt: float = 0.0
    page_height_pt: float = 0.0
    frame_count: int = 0
    #: Every subresource the page asked for, and how it went.
    assets: tuple[Asset, ...] = ()


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
    #: Assets that did not load: the output is stored under a warned id,
    #: never under the content address.
    warnings: tuple[AssetWarning, ...] = ()
    #: The template data sources this render fetched (or found in the cache).
    data_sources: tuple[DataSourceUse, ...] = ()
    #: This call captured the output itself (not stored, shared or reused):
    #: the work a render quota counts.
    rendered: bool = False


@dataclass(frozen=True)
class _Stored:
    """What a render (or the render it waited for) left in the blob store."""

    #: Where the output is stored: the content address, or a warned id when
    #: an asset did not load; empty when nothing was stored (a strict refusal).
    render_id: str
    info: dict[str, float]
    warnings: tuple[AssetWarning, ...] = ()
    #: This call rendered it.
    rendered: bool = False


@dataclass(frozen=True)
class PendingSource:
    """A declared data source the variables did not give: fetch it, then
    expand again. Its URL, headers and body are already expanded."""

    name: str
    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    ttl_seconds: int = 0


@dataclass(frozen=True)
class FetchedSource:
    """One source's data, as the binding service answered it."""

    name: str
    #: JSON text of the data.
    data_json: str
    #: When the data was fetched (seconds since the epoch).
    fetch_time: float
    #: Answered from the TTL cache (or revalidated with a 304).
    from_cache: bool


@dataclass(frozen=True)
class KnownSource:
    """Fresh data this replica holds for a request a template made before,
    offered with its next expansion (see ``SourceCache``)."""

    name: str
    #: ``litho.datasources.source_key`` of the request.
    key: str
    data_json: str
    fetch_time: float


#: Origins of a source's data in a render.
FETCHED, CACHE = "fetched", "cache"


@dataclass(frozen=True)
class DataSourceUse:
    """How fresh one data source's data was when a render used it."""

    name: str
    fetch_time: float
    age_seconds: float
    origin: str


@dataclass(frozen=True)
class Expanded:
    template_id: str
    version: int
    html: str
    width: int
    height: int
    fonts: tuple[FontFace, ...] = ()
    #: Declared data sources to fetch before expanding again (html is empty).
    pending: tuple[PendingSource, ...] = ()
    #: The names of the offered known sources the document was expanded with.
    known_used: tuple[str, ...] = ()


class TemplateSource(Protocol):
    async def expand(
        self, tenant_id: str, template_id: str, version: int, variables_json: str,
        *, coerce_strings: bool = False, inline: InlineSource | None = None,
        data_json: str = "", known: Sequence[KnownSource] = (),
    ) -> Expanded: ...


class SourceCache(Protocol):
    """This replica's data of templates' sources while it is fresh."""

    def known(self, tenant_id: str, template_id: str,
              variables_json: str) -> tuple[KnownSource, ...]:
        """What to offer with the expansion of the template with these variables."""
        ...

    def lookup(self, tenant_id: str, source: PendingSource) -> FetchedSource | None: ...

    def keep(self, tenant_id: str, template_id: str, variables_json: str,
             pending: Sequence[PendingSource], fetched: dict[str, FetchedSource]) -> None: ...

    def forget(self, tenant_id: str, template_id: str, variables_json: str) -> None: ...


class DataSources(Protocol):
    """The binding service's data of templates' declared sources."""

    async def fetch(self, tenant_id: str,
                    sources: Sequence[PendingSource]) -> list[FetchedSource]:
        """Every source's data; a source that cannot be fetched raises
        InvalidArgument naming ``dataSources.<name>``."""


class RenderEvents(Protocol):
    def completed(self, request: RenderRequest, result: RenderResult, duration_ms: float) -> None:
        ...

    def failed(self, request: RenderRequest, error: LithoError, template_version: int) -> None: ...


class Capture(Protocol):
    """Captures a spec for a tenant (the pool shares its pages fairly by
    tenant, and serves interactive renders before ``background`` ones)."""

    def __call__(self, spec: CaptureSpec, tenant_id: str, *,
                 background: bool = False) -> Awaitable[Output]: ...


class RenderPipeline:
    def __init__(
        self,
        templates: TemplateSource,
        blobs: BlobStore,
        capture: Capture,
        events: RenderEvents,
        *,
        limits: Limits,
        base_url: str,
        render_id_secret: bytes,
        reuse_warned_seconds: float = 10.0,
        data_sources: DataSources | None = None,
        source_cache: SourceCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(render_id_secret) < 32:
            raise ValueError("the render id secret must be at least 32 bytes")
        self._base_url = base_url
        self._secret = render_id_secret
        self._reuse_warned_seconds = reuse_warned_seconds
        self._templates = templates
        self._blobs = blobs
        self._capture = capture
        self._events = events
        self._limits = limits
        self._data_sources = data_sources
        self._source_cache = source_cache
        self._clock = clock
        # One render per render id at a time: identical concurrent requests of
        # one tenant share it (ids differ between tenants, so never across them).
        self._inflight: dict[str, asyncio.Future[_Stored | None]] = {}

    async def render(self, request: RenderRequest) -> RenderResult:
        with _tracer.start_as_current_span("render", attributes={
            "litho.tenant.id": request.tenant_id, "litho.template.id": request.template_id,
            "litho.render.format": request.format,
            "litho.render.documents": len(request.variable_sets),
        }) as span:
            result = await self._render(request)
            span.set_attributes({
                "litho.render.id": result.render_id, "litho.render.cached": result.cached,
                "litho.template.version": result.template_version,
                "litho.render.size_bytes": result.size_bytes,
            })
            return result

    async def _render(self, request: RenderRequest) -> RenderResult:
        started = time.perf_counter()
        self._check(request)
        expanded, used = await self._expand_all(request)
        first = expanded[0]
        o = request.options
        spec = CaptureSpec(
            documents=tuple(e.html for e in expanded),
            base_url=self._base_url,
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
            # The frame cap shrinks with the frame size (LITHO_RENDERER_MAX_GIF_PIXELS).
            gif_caps=(self._limits.max_gif_duration_ms, gif_frame_cap(
                o.width or first.width, o.height or first.height, o.scale or 1.0, self._limits))
            if request.format == "gif" else (0, 0),
            fonts=tuple(sorted({f for e in expanded for f in e.fonts})),
        )
        check_pixels(spec.width, spec.height, spec.scale, self._limits, fmt=spec.format)
        if spec.format == "gif":
            check_gif_work(spec.width, spec.height, spec.scale, spec.gif, self._limits)
        render_id = make_render_id(self._secret, request.tenant_id, spec)
        try:
            stored = await self._stored_or_rendered(render_id, spec, request)
        except LithoError as exc:
            self._events.failed(request, exc, first.version)
            raise
        output = stored.info
        result = RenderResult(
            render_id=stored.render_id, blob_key=renders.blob_key(stored.render_id, spec.format),
            format=spec.format, content_type=renders.CONTENT_TYPES[spec.format],
            width=int(output["width"]), height=int(output["height"]),
            # A render with warnings is never a hit: it was not stored as one.
            cached=not stored.rendered and not stored.warnings,
            template_version=first.version, size_bytes=int(output["size"]),
            page_count=int(output.get("pageCount", 0)),
            page_width_pt=output.get("pageWidthPt", 0.0),
            page_height_pt=output.get("pageHeightPt", 0.0),
            frame_count=int(output.get("frameCount", 0)),
            warnings=stored.warnings,
            data_sources=used,
            rendered=stored.rendered,
        )
        self._events.completed(request, result, (time.perf_counter() - started) * 1000)
        return result

    def _check(self, request: RenderRequest) -> None:
        check_options(request.format, request.options, self._limits)
        check_documents(request.format, len(request.variable_sets), self._limits)

    async def _expand_all(
        self, request: RenderRequest,
    ) -> tuple[list[Expanded], tuple[DataSourceUse, ...]]:
        """Every document expanded, and the data sources they used."""
        outcomes = await asyncio.gather(*(
            self._expand_one(request, v) for v in request.variable_sets))
        expanded = [e for e, _ in outcomes]
        # A multi-page PDF pins every page to the version of its first page.
        if len({e.version for e in expanded}) > 1:
            pinned = replace(request, version=expanded[0].version)
            return await self._expand_all(pinned)
        # A source several pages used is listed once, with its oldest data.
        used: dict[str, DataSourceUse] = {}
        for _, uses in outcomes:
            for use in uses:
                if use.name not in used or use.fetch_time < used[use.name].fetch_time:
                    used[use.name] = use
        return expanded, tuple(used.values())

    async def _expand_one(
        self, request: RenderRequest, variables_json: str,
    ) -> tuple[Expanded, tuple[DataSourceUse, ...]]:
        cache = self._source_cache
        known = (cache.known(request.tenant_id, request.template_id, variables_json)
                 if cache is not None and request.inline is None else ())
        expanded = await self._templates.expand(
            request.tenant_id, request.template_id, request.version, variables_json,
            coerce_strings=request.coerce_strings, inline=request.inline, known=known)
        if not expanded.pending:
            if known and not expanded.known_used and cache is not None:
                cache.forget(request.tenant_id, request.template_id, variables_json)
            return expanded, self._uses([
                FetchedSource(name=k.name, data_json="", fetch_time=k.fetch_time,
                              from_cache=True)
                for k in known if k.name in expanded.known_used])
        if self._data_sources is None:
            raise LithoError("this renderer has no binding service to fetch the "
                             "template's data sources from")
        got: dict[str, FetchedSource] = {}
        if cache is not None:
            for p in expanded.pending:
                hit = cache.lookup(request.tenant_id, p)
                if hit is not None:
                    got[p.name] = hit
        missing = [p for p in expanded.pending if p.name not in got]
        if missing:
            with _tracer.start_as_current_span("fetch data sources", attributes={
                    "litho.data_sources": len(missing)}):
                fetched = await self._data_sources.fetch(request.tenant_id, missing)
            wanted = {p.name for p in missing}
            got.update((f.name, f) for f in fetched if f.name in wanted)
            if not wanted <= got.keys():
                log.error("the binding service left data sources out",
                          wanted=sorted(wanted), got=sorted(got))
                raise LithoError("the template's data sources were not all fetched")
        if cache is not None:
            cache.keep(request.tenant_id, "" if request.inline else request.template_id,
                       variables_json, expanded.pending, got)
        # The binding service answers JSON text; the template service parses
        # the object, so the (up to MiBs of) data is not parsed twice here.
        data_json = "{" + ",".join(f"{json.dumps(name)}:{source.data_json or 'null'}"
                                   for name, source in got.items()) + "}"
        # The version that declared the sources, even if a newer one lands meanwhile.
        pinned = replace(request, version=expanded.version) if expanded.version else request
        again = await self._expand_again(pinned, variables_json, data_json)
        return again, self._uses(list(got.values()))

    def _uses(self, sources: Sequence[FetchedSource]) -> tuple[DataSourceUse, ...]:
        now = self._clock()
        return tuple(
            DataSourceUse(name=s.name, fetch_time=s.fetch_time,
                          age_seconds=max(0.0, now - s.fetch_time),
                          origin=CACHE if s.from_cache else FETCHED)
            for s in sources)

    async def _expand_again(self, request: RenderRequest, variables_json: str,
                            data_json: str) -> Expanded:
        expanded = await self._templates.expand(
            request.tenant_id, request.template_id, request.version, variables_json,
            coerce_strings=request.coerce_strings, inline=request.inline, data_json=data_json)
        if expanded.pending:
            log.error("the template service asked for data sources it was given",
                      pending=[p.name for p in expanded.pending])
            raise LithoError("the template's data sources could not be applied")
        return expanded

    async def _stored_or_rendered(
        self, render_id: str, spec: CaptureSpec, request: RenderRequest,
    ) -> _Stored:
        """The stored output, rendering it first when there is none (or when
        the request asks for a refresh)."""
        key = renders.blob_key(render_id, spec.format)
        meta_key = renders.meta_key(render_id, spec.format)
        while True:
            if not request.refresh:
                with _tracer.start_as_current_span("render cache lookup", attributes={
                        "litho.render.id": render_id}) as span:
                    stored = await self._stored(key, meta_key)
                    span.set_attribute("litho.render.cached", stored is not None)
                if stored is not None:
                    return _Stored(render_id, stored)
            pending = self._inflight.get(render_id)
            if pending is None:
                if request.reuse_warned and not request.refresh:
                    recent = await self._recent_warned(render_id, spec, request)
                    if recent is not None:
                        return recent
                    if render_id in self._inflight:
                        continue  # another render of it began meanwhile: share it
                if request.stored_only:
                    raise FailedPrecondition(NOT_RENDERED_YET)
                break
            # Share the owner's outcome: its error is ours too. If it was
            # cancelled, or refused its output (strict) while we would take it
            # with warnings, loop and render ourselves.
            shared = await asyncio.shield(pending)
            if shared is None:
                continue
            if shared.warnings and request.strict_assets:
                raise _strict_refusal(shared.warnings)
            if not shared.render_id:
                continue
            return replace(shared, rendered=False)
        done: asyncio.Future[_Stored | None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_consume_exception)
        self._inflight[render_id] = done
        try:
            output = await self._capture(spec, request.tenant_id,
                                         background=request.background)
            outcome = await self._store(render_id, spec, output, request)
        except LithoError as exc:
            done.set_exception(exc)
            raise
        except BaseException:
            done.set_result(None)
            raise
        else:
            done.set_result(outcome)
            if not outcome.render_id:
                raise _strict_refusal(outcome.warnings)
            return outcome
        finally:
            if self._inflight.get(render_id) is done:
                del self._inflight[render_id]

    async def _store(self, render_id: str, spec: CaptureSpec, output: Output,
                     request: RenderRequest) -> _Stored:
        """Store a fresh output: under its content address when every asset
        loaded; otherwise under a warned id (of the input and the output's
        bytes, never found by a content lookup) and a pointer to it, or not
        at all when the request is strict."""
        warnings = _assets.warnings_of(output.assets)
        span = trace.get_current_span()
        span.set_attribute("litho.render.assets_not_loaded", len(warnings))
        if warnings:
            log.info("assets did not load; the output is not cached",
                     render_id=render_id, assets=_assets.summary(output.assets),
                     urls=[w.url[:120] for w in warnings[:5]])
            if request.strict_assets:
                return _Stored("", {}, warnings, rendered=True)
        content_address = render_id
        if warnings:
            # Never the content address. The id names this input and these
            # bytes: an image URL's bytes never change (it is served as
            # immutable), and a URL whose asset keeps failing the same way
            # writes the same output again instead of piling up new ones.
            render_id = self._warned_id(request.tenant_id, content_address,
                                        hashlib.sha256(output.data).hexdigest())
        key = renders.blob_key(render_id, spec.format)
        meta_key = renders.meta_key(render_id, spec.format)
        await self._put(key, output.data, renders.CONTENT_TYPES[spec.format],
                        cache_control=renders.IMMUTABLE_CACHE_CONTROL)
        info: dict[str, float] = {
            _camel(k): v for k, v in asdict(output).items()
            if k not in ("data", "assets") and v
        }
        info["size"] = len(output.data)
        meta: dict[str, object] = dict(info)
        if warnings:
            meta["warnedAt"] = time.time()
            meta["warnings"] = [asdict(w) for w in warnings]
        # The metadata is written last: its presence means the output is complete.
        await self._put(meta_key, json.dumps(meta).encode(), "application/json")
        if warnings:
            # The input's latest warned output, for signed URLs to reuse.
            pointer = self._warned_id(request.tenant_id, content_address)
            await self._put(renders.meta_key(pointer, spec.format),
                            json.dumps({**meta, "renderId": render_id}).encode(),
                            "application/json")
        return _Stored(render_id, info, warnings, rendered=True)

    def _warned_id(self, tenant_id: str, render_id: str, output_sha256: str = "") -> str:
        """An id derived from the content address under the tenant's key, so
        never equal to one: with the output's hash, where a warned output is
        stored; without, where the input's latest one is named."""
        material = f"warned:{render_id}:{output_sha256}".encode()
        return hmac.new(tenant_key(self._secret, tenant_id), material,
                        hashlib.sha256).hexdigest()

    async def _recent_warned(self, render_id: str, spec: CaptureSpec,
                             request: RenderRequest) -> _Stored | None:
        """A render with warnings of the same input stored less than
        ``reuse_warned_seconds`` ago (signed URLs: anyone holding one could
        otherwise make every GET a full render)."""
        pointer = self._warned_id(request.tenant_id, render_id)
        blob = await self._blobs.get(renders.meta_key(pointer, spec.format))
        if blob is None:
            return None
        meta = json.loads(blob.data)
        warned = str(meta.get("renderId", ""))
        if not renders.is_render_id(warned) or await self._blobs.head(
                renders.blob_key(warned, spec.format)) is None:
            return None
        if time.time() - float(meta.get("warnedAt", 0)) > self._reuse_warned_seconds:
            return None
        warnings = tuple(_assets.AssetWarning(w["url"], _assets.Outcome(w["outcome"]),
                                              w["reason"], w["hint"])
                         for w in meta.get("warnings", []))
        info = {k: v for k, v in meta.items() if isinstance(v, int | float)
                and k != "warnedAt"}
        return _Stored(warned, info, warnings)

    async def _put(self, key: str, data: bytes, content_type: str, *,
                   cache_control: str = "") -> None:
        with _tracer.start_as_current_span("blob write", attributes={
                "litho.blob.key": key, "litho.blob.size_bytes": len(data),
                "litho.blob.content_type": content_type}):
            await self._blobs.put(key, data, content_type, cache_control=cache_control)

    async def _stored(self, key: str, meta_key: str) -> dict[str, float] | None:
        # Both must be there: an output removed behind our back is rendered again.
        meta, output = await asyncio.gather(self._blobs.get(meta_key), self._blobs.head(key))
        if meta is None or output is None:
            return None
        stored: dict[str, float] = json.loads(meta.data)
        return stored


def _strict_refusal(warnings: tuple[AssetWarning, ...]) -> InvalidArgument:
    shown = "; ".join(f"{w.url or 'more'}: {w.outcome.value}" for w in warnings[:3])
    more = f" and {len(warnings) - 3} more" if len(warnings) > 3 else ""
    return InvalidArgument(
        f"{len(warnings)} asset(s) did not load and assets is \"strict\": {shown}{more}",
        # Field messages are cut at 300 characters on the wire: the outcome,
        # the start of the URL and the hint, which names the setting.
        errors=[FieldError("assets", f"{w.outcome.value} {_short(w.url or 'more')}: {w.hint}")
                for w in warnings])


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:119] + "…"


def _consume_exception(future: asyncio.Future[_Stored | None]) -> None:
    # A failure nobody else waited for is not "never retrieved".
    if not future.cancelled():
        future.exception()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def tenant_key(secret: bytes, tenant_id: str) -> bytes:
    """The tenant's own key for render ids, derived from the server secret."""
    return hmac.new(secret, b"render-id:" + tenant_id.encode(), hashlib.sha256).digest()


def make_render_id(secret: bytes, tenant_id: str, spec: CaptureSpec) -> str:
    """The render's content address: HMAC-SHA256, under the tenant's key, of
    everything that decides the output. The same tenant's same input always
    gives the same id; another tenant's gives another one (its own miss, so a
    hit reveals nothing about other tenants); and without the secret no id
    can be computed from content."""
    material = json.dumps([RENDERER_VERSION, asdict(spec)], ensure_ascii=False,
                          separators=(",", ":"), sort_keys=True)
    return hmac.new(tenant_key(secret, tenant_id), material.encode(),
                    hashlib.sha256).hexdigest()
