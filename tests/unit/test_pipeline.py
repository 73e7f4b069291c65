"""The render pipeline with fakes behind its ports (the e2e suite uses real parts)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from litho.blobstore import Blob, BlobInfo
from litho.errors import InvalidArgument, LithoError, NotFound
from services.renderer._pipeline import (
    CaptureSpec,
    Expanded,
    Output,
    RenderPipeline,
    RenderRequest,
    RenderResult,
    make_render_id,
)
from services.renderer._spec import GifSpec, Limits, PdfSpec, RenderOptions

LIMITS = Limits(max_dimension=1000, max_pixels=10_000_000, max_scale=4, max_gif_fps=30,
                max_gif_duration_ms=10_000, max_gif_frames=300, max_pdf_pages=5)
SECRET = b"s" * 32
BASE_URL = "http://document.invalid/"


def make_pipeline(templates: Templates, blobs: MemoryBlobs, capture: object, events: Events,
                  *, limits: Limits = LIMITS, secret: bytes = SECRET,
                  base_url: str = BASE_URL) -> RenderPipeline:
    return RenderPipeline(templates, blobs, capture, events,  # type: ignore[arg-type]
                          limits=limits, base_url=base_url, render_id_secret=secret)


class MemoryBlobs:
    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, str]] = {}

    async def put(self, key: str, data: bytes, content_type: str, *,
                  cache_control: str = "") -> BlobInfo:
        self.data[key] = (data, content_type)
        return BlobInfo(key=key, size=len(data), content_type=content_type, etag='"x"')

    async def get(self, key: str) -> Blob | None:
        info = await self.head(key)
        return Blob(info=info, data=self.data[key][0]) if info else None

    async def head(self, key: str) -> BlobInfo | None:
        if key not in self.data:
            return None
        data, ctype = self.data[key]
        return BlobInfo(key=key, size=len(data), content_type=ctype, etag='"x"')

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


class Templates:
    def __init__(self) -> None:
        self.html = "<p>{v}</p>"

    async def expand(self, tenant_id: str, template_id: str, version: int,
                     variables_json: str, *, coerce_strings: bool = False,
                     inline: object = None, data_json: str = "",
                     known: object = ()) -> Expanded:
        if template_id == "missing":
            raise NotFound("template 'missing' not found")
        return Expanded(template_id, version or 3, self.html.format(v=variables_json), 100, 50)


class Events:
    def __init__(self) -> None:
        self.completed_events: list[RenderResult] = []
        self.failed_events: list[str] = []

    def completed(self, request: RenderRequest, result: RenderResult, duration_ms: float) -> None:
        self.completed_events.append(result)

    def failed(self, request: RenderRequest, error: LithoError, template_version: int) -> None:
        self.failed_events.append(error.status)


class Capture:
    def __init__(self) -> None:
        self.calls: list[CaptureSpec] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, spec: CaptureSpec, tenant_id: str, *,
                       background: bool = False) -> Output:
        self.calls.append(spec)
        if self.gate:
            await self.gate.wait()
        data = f"{spec.format}:{spec.width}x{spec.height}:{len(spec.documents)}".encode()
        return Output(data=data, width=int(spec.width * spec.scale),
                      height=int(spec.height * spec.scale),
                      page_count=len(spec.documents) if spec.format == "pdf" else 0)


async def settle() -> None:
    """Let every task run until it waits: the fakes do no I/O, so a number of
    passes does it however loaded the machine is (a fixed sleep did not)."""
    for _ in range(200):
        await asyncio.sleep(0)


@pytest.fixture
def parts() -> tuple[MemoryBlobs, Templates, Events, Capture, RenderPipeline]:
    blobs, templates, events, capture = MemoryBlobs(), Templates(), Events(), Capture()
    pipeline = make_pipeline(templates, blobs, capture, events)
    return blobs, templates, events, capture, pipeline


def request(variables: str = '{"a":1}', *, options: RenderOptions | None = None,
            **overrides: object) -> RenderRequest:
    fields: dict[str, object] = {"tenant_id": "t", "template_id": "tpl", "version": 0,
                                 "variable_sets": (variables,), "format": "png",
                                 "options": options or RenderOptions()}
    fields.update(overrides)
    return RenderRequest(**fields)  # type: ignore[arg-type]


async def test_miss_renders_and_stores_then_hit_does_no_capture(parts) -> None:  # type: ignore[no-untyped-def]
    blobs, _, events, capture, pipeline = parts
    first = await pipeline.render(request())
    assert first.cached is False and len(capture.calls) == 1
    assert blobs.data[first.blob_key] == (b"png:100x50:1", "image/png")
    assert first.size_bytes == len(b"png:100x50:1")
    second = await pipeline.render(request())
    assert second.cached is True and second.render_id == first.render_id
    assert len(capture.calls) == 1
    assert [e.cached for e in events.completed_events] == [False, True]


async def test_key_depends_on_document_and_options(parts) -> None:  # type: ignore[no-untyped-def]
    _, templates, _, _, pipeline = parts
    base = await pipeline.render(request())
    other_vars = await pipeline.render(request('{"a":2}'))
    jpeg = await pipeline.render(request(format="jpeg"))
    jpeg_q = await pipeline.render(request(format="jpeg", options=RenderOptions(quality=50)))
    bigger = await pipeline.render(request(options=RenderOptions(width=200)))
    templates.html = "<div>{v}</div>"
    new_source = await pipeline.render(request())
    ids = {r.render_id for r in (base, other_vars, jpeg, jpeg_q, bigger, new_source)}
    assert len(ids) == 6
    assert jpeg.blob_key.endswith(".jpeg") and bigger.width == 200


def test_cache_key_is_stable() -> None:
    def spec(**o: object) -> CaptureSpec:
        fields: dict[str, object] = {
            "documents": ("<p>x</p>",), "base_url": BASE_URL, "format": "png", "width": 1,
            "height": 2, "scale": 1.0, "quality": 0, "transparent": False, "selector": "",
            "pdf": PdfSpec(), "gif": GifSpec()}
        fields.update(o)
        return CaptureSpec(**fields)  # type: ignore[arg-type]

    def key(s: CaptureSpec) -> str:
        return make_render_id(SECRET, "t", s)

    assert key(spec()) == key(spec())
    assert len(key(spec())) == 64
    variants = [spec(scale=2.0), spec(transparent=True), spec(selector=".a"),
                spec(gif=GifSpec(fps=10)), spec(pdf=PdfSpec(preset="A4")),
                spec(documents=("<p>x</p>", "<p>y</p>")),
                spec(base_url="http://cdn.example/")]
    assert len({key(v) for v in variants} | {key(spec())}) == 8


async def test_identical_concurrent_renders_share_one_capture(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, _, capture, pipeline = parts
    capture.gate = asyncio.Event()
    tasks = [asyncio.create_task(pipeline.render(request())) for _ in range(5)]
    await settle()
    capture.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(capture.calls) == 1
    assert sorted(r.cached for r in results) == [False, True, True, True, True]


async def test_a_get_shares_a_render_that_began_while_it_looked(parts) -> None:  # type: ignore[no-untyped-def]
    # A GET (reuse_warned) looks for a recent warned output; meanwhile a
    # background render of the same input begins. The GET shares that
    # render instead of starting its own (which used to end in a KeyError).
    _, _, _, capture, pipeline = parts
    capture.gate = asyncio.Event()
    looking = asyncio.Event()
    go_on = asyncio.Event()
    original = pipeline._recent_warned

    async def slow_lookup(*args: object, **kwargs: object) -> object:
        looking.set()
        await go_on.wait()
        return await original(*args, **kwargs)

    pipeline._recent_warned = slow_lookup
    get = asyncio.create_task(pipeline.render(request(reuse_warned=True)))
    await looking.wait()
    background = asyncio.create_task(pipeline.render(request(background=True)))
    await settle()
    go_on.set()
    await settle()
    capture.gate.set()
    results = await asyncio.gather(get, background)
    assert len(capture.calls) == 1
    assert results[0].render_id == results[1].render_id
    assert pipeline._inflight == {}


async def test_invalid_options_are_rejected_before_any_work(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, _, capture, pipeline = parts
    with pytest.raises(InvalidArgument) as info:
        await pipeline.render(request(format="jpeg", options=RenderOptions(
            width=5000, quality=101, transparent=True, scale=5, gif=GifSpec(fps=3))))
    assert {e.field for e in info.value.errors} == {
        "width", "quality", "transparent", "deviceScaleFactor", "gif"}
    with pytest.raises(InvalidArgument) as bad_format:
        await pipeline.render(request(format="bmp"))
    assert bad_format.value.errors[0].field == "format"
    with pytest.raises(InvalidArgument) as bad_pdf:
        await pipeline.render(request(format="pdf", options=RenderOptions(pdf=PdfSpec(
            preset="B9", margins=("1mm", "2 furlongs", "", "0")))))
    assert {e.field for e in bad_pdf.value.errors} == {"pdf.preset", "pdf.margins.right"}
    with pytest.raises(InvalidArgument, match="pixels"):
        await pipeline.render(request(options=RenderOptions(width=1000, height=1000, scale=4)))
    assert capture.calls == []


async def test_multi_page_pdf_renders_every_set_once(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, _, capture, pipeline = parts
    sets = ('{"a":1}', '{"a":2}', '{"a":3}')
    result = await pipeline.render(request(format="pdf", variable_sets=sets))
    assert result.page_count == 3 and len(capture.calls) == 1
    assert len(capture.calls[0].documents) == 3
    again = await pipeline.render(request(format="pdf", variable_sets=sets))
    assert again.cached and again.page_count == 3 and len(capture.calls) == 1
    with pytest.raises(InvalidArgument, match="at most 5"):
        await pipeline.render(request(format="pdf", variable_sets=("{}",) * 6))
    with pytest.raises(InvalidArgument, match="several only for a PDF"):
        await pipeline.render(request(variable_sets=("{}", "{}")))


async def test_template_errors_propagate(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, _, _, pipeline = parts
    with pytest.raises(NotFound):
        await pipeline.render(request(template_id="missing"))


async def test_capture_failure_publishes_render_failed(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, events, _, _ = parts

    async def broken(spec: CaptureSpec, tenant_id: str, *, background: bool = False) -> Output:
        raise LithoError("boom")

    pipeline = make_pipeline(Templates(), MemoryBlobs(), broken, events)
    with pytest.raises(LithoError):
        await pipeline.render(request())
    assert events.failed_events == ["INTERNAL"]


async def test_identical_concurrent_renders_share_a_failure(parts) -> None:  # type: ignore[no-untyped-def]
    blobs, templates, events, _, _ = parts
    calls = 0
    gate = asyncio.Event()

    async def failing(spec: CaptureSpec, tenant_id: str, *, background: bool = False) -> Output:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise InvalidArgument("selector matched nothing")

    pipeline = make_pipeline(templates, blobs, failing, events)
    tasks = [asyncio.create_task(pipeline.render(request())) for _ in range(4)]
    await settle()
    gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1 and all(isinstance(o, InvalidArgument) for o in outcomes)


async def test_a_cancelled_owner_hands_the_render_to_a_waiter(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, _, capture, pipeline = parts
    capture.gate = asyncio.Event()
    owner = asyncio.create_task(pipeline.render(request()))
    await settle()
    waiter = asyncio.create_task(pipeline.render(request()))
    await settle()
    owner.cancel()
    capture.gate.set()
    result = await asyncio.wait_for(waiter, 1)
    assert result.cached is False and len(capture.calls) == 2


async def test_an_output_removed_behind_our_back_is_rendered_again(parts) -> None:  # type: ignore[no-untyped-def]
    blobs, _, _, capture, pipeline = parts
    first = await pipeline.render(request())
    del blobs.data[first.blob_key]
    again = await pipeline.render(request())
    assert again.cached is False and len(capture.calls) == 2 and first.blob_key in blobs.data


async def test_gif_settings_are_part_of_the_key(parts) -> None:  # type: ignore[no-untyped-def]
    blobs, templates, events, capture, pipeline = parts
    first = await pipeline.render(request(format="gif"))
    other_limits = replace(LIMITS, max_gif_frames=10)
    capped = make_pipeline(templates, blobs, capture, events, limits=other_limits)
    assert (await capped.render(request(format="gif"))).render_id != first.render_id
    png_ids = {(await p.render(request())).render_id for p in (capped, pipeline)}
    assert len(png_ids) == 1


async def test_render_ids_are_per_tenant(parts) -> None:  # type: ignore[no-untyped-def]
    blobs, _, _, capture, pipeline = parts
    first = await pipeline.render(request(tenant_id="alice"))
    again = await pipeline.render(request(tenant_id="alice"))
    other = await pipeline.render(request(tenant_id="bob"))
    assert again.cached is True and again.render_id == first.render_id
    # Bob's identical document is his own miss: a hit would tell him that
    # someone else rendered it.
    assert other.cached is False and other.render_id != first.render_id
    assert len(capture.calls) == 2 and other.blob_key in blobs.data


async def test_render_ids_depend_on_the_secret_and_are_not_plain_hashes() -> None:
    import hashlib
    import json
    from dataclasses import asdict

    from services.renderer._pipeline import RENDERER_VERSION

    ids = []
    for secret in (SECRET, b"t" * 32):
        capture = Capture()
        pipeline = make_pipeline(Templates(), MemoryBlobs(), capture, Events(), secret=secret)
        ids.append((await pipeline.render(request())).render_id)
    assert ids[0] != ids[1]
    spec = capture.calls[0]
    material = json.dumps([RENDERER_VERSION, asdict(spec)], ensure_ascii=False,
                          separators=(",", ":"), sort_keys=True).encode()
    assert hashlib.sha256(material).hexdigest() not in ids
    assert ids[1] == make_render_id(b"t" * 32, "t", spec)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        make_pipeline(Templates(), MemoryBlobs(), Capture(), Events(), secret=b"short")


async def test_concurrent_identical_renders_of_two_tenants_do_not_share(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, _, capture, pipeline = parts
    capture.gate = asyncio.Event()
    tasks = [asyncio.create_task(pipeline.render(request(tenant_id=t)))
             for t in ("alice", "bob", "alice", "bob")]
    await settle()
    capture.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(capture.calls) == 2
    assert [r.cached for r in results[:2]] == [False, False]
    assert results[0].render_id == results[2].render_id != results[1].render_id


async def test_the_base_url_is_part_of_every_capture_and_key(parts) -> None:  # type: ignore[no-untyped-def]
    blobs, templates, events, capture, pipeline = parts
    first = await pipeline.render(request())
    assert capture.calls[0].base_url == BASE_URL
    elsewhere = make_pipeline(templates, blobs, capture, events, base_url="http://cdn.example/")
    moved = await elsewhere.render(request())
    assert moved.cached is False and moved.render_id != first.render_id
    assert capture.calls[1].base_url == "http://cdn.example/"
