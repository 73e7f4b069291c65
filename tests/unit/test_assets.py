"""Asset outcomes: the log of one render's requests, and what the pipeline does
with a render in which an asset did not load (fakes behind the pipeline's ports)."""

from __future__ import annotations

import asyncio

import pytest

from litho.errors import FailedPrecondition, InvalidArgument
from services.renderer import _assets
from services.renderer._assets import Asset, AssetLog, Outcome
from services.renderer._pipeline import CaptureSpec, Output, RenderPipeline, make_render_id
from services.renderer._spec import GifSpec, PdfSpec
from tests.unit.test_pipeline import (
    LIMITS,
    SECRET,
    Events,
    MemoryBlobs,
    Templates,
    make_pipeline,
    request,
    settle,
)

DENIED = _assets.denied("http://10.0.0.5/logo.png")


class AssetCapture:
    """Captures with whatever assets the test says the page met."""

    def __init__(self, *assets: Asset) -> None:
        self.assets = assets
        self.calls = 0
        self.gate: asyncio.Event | None = None
        #: Fixed bytes for every capture (Chromium gives the same input the
        #: same bytes); None: bytes that name the call.
        self.output: bytes | None = None

    async def __call__(self, spec: CaptureSpec, tenant_id: str, *,
                       background: bool = False) -> Output:
        self.calls += 1
        if self.gate:
            await self.gate.wait()
        data = self.output if self.output is not None else f"render {self.calls}".encode()
        return Output(data=data, width=spec.width,
                      height=spec.height, assets=self.assets)


def setup(*assets: Asset) -> tuple[MemoryBlobs, AssetCapture, Events, RenderPipeline]:
    blobs, capture, events = MemoryBlobs(), AssetCapture(*assets), Events()
    return blobs, capture, events, make_pipeline(Templates(), blobs, capture, events)


def content_address() -> str:
    spec = CaptureSpec(documents=('<p>{"a":1}</p>',), base_url="http://document.invalid/",
                       format="png", width=100, height=50, scale=1.0, quality=0,
                       transparent=False, selector="",
                       pdf=PdfSpec(), gif=GifSpec())
    return make_render_id(SECRET, "t", spec)


async def test_a_render_whose_assets_all_loaded_is_stored_under_its_content_address() -> None:
    loaded = Asset("https://cdn.example/a.png", Outcome.LOADED, size=10)
    _blobs, capture, _, pipeline = setup(loaded)
    first = await pipeline.render(request())
    assert first.warnings == () and first.render_id == content_address()
    second = await pipeline.render(request())
    assert second.cached and capture.calls == 1


async def test_an_asset_that_did_not_load_gives_warnings_and_is_never_a_cache_hit() -> None:
    blobs, capture, _events, pipeline = setup(DENIED)
    capture.output = b"the same bytes"
    first = await pipeline.render(request())
    assert not first.cached
    assert [(w.url, w.outcome) for w in first.warnings] == [
        ("http://10.0.0.5/logo.png", Outcome.DENIED)]
    assert "LITHO_OUTBOUND_ALLOW" in first.warnings[0].hint
    # Stored under a one-off id, so its URL works, but not under the content address.
    address = content_address()
    assert first.render_id != address
    assert f"outputs/{first.render_id[:2]}/{first.render_id}.png" in blobs.data
    assert not any(address in key for key in blobs.data)
    second = await pipeline.render(request())
    # Rendered again: the same bytes, so the same id (input and bytes name it)
    # and no second copy.
    assert capture.calls == 2 and not second.cached and second.render_id == first.render_id
    assert sum(1 for key in blobs.data if key.endswith(".png")) == 1
    # Other bytes under a warning are another id: an image URL never changes bytes.
    capture.output = b"other bytes"
    third_try = await pipeline.render(request())
    assert third_try.render_id not in (first.render_id, address)
    capture.output = None
    # Once the asset loads (the cause was fixed), the render is stored and then hit.
    capture.assets = (Asset("http://10.0.0.5/logo.png", Outcome.LOADED, size=5),)
    third = await pipeline.render(request())
    assert third.render_id == address and not third.warnings
    assert (await pipeline.render(request())).cached and capture.calls == 4


async def test_strict_refuses_a_render_with_a_missing_asset_and_stores_nothing() -> None:
    blobs, _, events, pipeline = setup(DENIED, _assets.unresolvable("http://document.invalid/x"))
    with pytest.raises(InvalidArgument) as caught:
        await pipeline.render(request(strict_assets=True))
    assert blobs.data == {}
    assert [e.field for e in caught.value.errors] == ["assets", "assets"]
    assert "LITHO_OUTBOUND_ALLOW" in caught.value.errors[0].message
    assert "strict" in str(caught.value)
    assert events.failed_events == ["INVALID_ARGUMENT"]


async def test_strict_is_answered_from_a_stored_render_whose_assets_loaded() -> None:
    _blobs, _capture, _, pipeline = setup()
    await pipeline.render(request())
    assert (await pipeline.render(request(strict_assets=True))).cached


async def test_refresh_renders_again_and_replaces_the_stored_output() -> None:
    blobs, capture, _, pipeline = setup()
    first = await pipeline.render(request())
    key = f"outputs/{first.render_id[:2]}/{first.render_id}.png"
    assert blobs.data[key][0] == b"render 1"
    again = await pipeline.render(request(refresh=True))
    assert (again.render_id, again.cached, capture.calls) == (first.render_id, False, 2)
    assert blobs.data[key][0] == b"render 2"
    assert (await pipeline.render(request())).cached and capture.calls == 2


async def test_a_refresh_whose_asset_failed_keeps_the_stored_output() -> None:
    blobs, capture, _, pipeline = setup()
    first = await pipeline.render(request())
    key = f"outputs/{first.render_id[:2]}/{first.render_id}.png"
    capture.assets = (DENIED,)
    refreshed = await pipeline.render(request(refresh=True))
    assert refreshed.warnings and refreshed.render_id != first.render_id
    assert blobs.data[key][0] == b"render 1"


async def test_concurrent_identical_renders_share_the_warnings() -> None:
    _blobs, capture, _, pipeline = setup(DENIED)
    capture.gate = asyncio.Event()
    tasks = [asyncio.create_task(pipeline.render(request())) for _ in range(3)]
    await settle()
    capture.gate.set()
    results = await asyncio.gather(*tasks)
    assert capture.calls == 1
    assert {r.render_id for r in results} == {results[0].render_id}
    assert all(r.warnings and not r.cached for r in results)


async def test_a_strict_waiter_of_a_render_with_warnings_is_refused() -> None:
    _blobs, capture, _, pipeline = setup(DENIED)
    capture.gate = asyncio.Event()
    owner = asyncio.create_task(pipeline.render(request()))
    await settle()
    waiter = asyncio.create_task(pipeline.render(request(strict_assets=True)))
    await settle()
    capture.gate.set()
    assert (await owner).warnings
    with pytest.raises(InvalidArgument):
        await waiter
    assert capture.calls == 1


async def test_a_lenient_waiter_of_a_strict_refusal_renders_itself() -> None:
    _blobs, capture, _, pipeline = setup(DENIED)
    capture.gate = asyncio.Event()
    owner = asyncio.create_task(pipeline.render(request(strict_assets=True)))
    await settle()
    waiter = asyncio.create_task(pipeline.render(request()))
    await settle()
    capture.gate.set()
    with pytest.raises(InvalidArgument):
        await owner
    assert (await waiter).warnings and capture.calls == 2


def test_the_log_counts_an_unfinished_request_as_timed_out() -> None:
    record = AssetLog()
    done = record.start("https://a.example/1.png")
    record.start("https://a.example/2.png")
    record.finish(done, Asset("https://a.example/1.png", Outcome.LOADED))
    assets = record.assets()
    assert [a.outcome for a in assets] == [Outcome.LOADED, Outcome.TIMED_OUT]
    assert "still loading" in assets[1].reason


def test_the_log_is_bounded_and_counts_problems_past_its_bound() -> None:
    record = AssetLog()
    for n in range(_assets.MAX_RECORDED + 50):
        slot = record.start(f"https://a.example/{n}")
        record.finish(slot, _assets.failed(f"https://a.example/{n}", "HTTP 404", status=404)
                      if n % 2 else Asset(f"https://a.example/{n}", Outcome.LOADED))
    assets = record.assets()
    assert len(assets) == _assets.MAX_RECORDED + 1
    assert assets[-1].url == "" and "25 more of the 50" in assets[-1].reason


def test_warnings_name_each_url_once_and_urls_are_clipped() -> None:
    long = "https://a.example/" + "x" * 2000
    warnings = _assets.warnings_of((
        _assets.denied(long), _assets.denied(long),
        Asset("https://b.example/ok.png", Outcome.LOADED),
        _assets.too_large("https://c.example/big.png", 100, 5.0)))
    assert [w.outcome for w in warnings] == [Outcome.DENIED, Outcome.TOO_LARGE]
    assert len(warnings[0].url) == _assets.MAX_URL_CHARS
    assert "LITHO_OUTBOUND_MAX_BYTES" in warnings[1].hint


async def test_a_signed_url_reuses_a_recent_render_with_warnings() -> None:
    _blobs, capture, _, pipeline = setup(DENIED)
    first = await pipeline.render(request(reuse_warned=True))
    again = await pipeline.render(request(reuse_warned=True))
    assert capture.calls == 1 and again.render_id == first.render_id
    assert again.warnings == first.warnings and not again.cached
    # Not cached, yet not rendered either: a quota counts only the first.
    assert first.rendered and not again.rendered
    # API renders and refreshes always render again.
    await pipeline.render(request())
    await pipeline.render(request(reuse_warned=True, refresh=True))
    assert capture.calls == 3


async def test_a_stored_only_request_answers_what_exists_and_never_renders() -> None:
    _blobs, capture, _, pipeline = setup(DENIED)
    with pytest.raises(FailedPrecondition, match="not rendered yet"):
        await pipeline.render(request(reuse_warned=True, stored_only=True))
    assert capture.calls == 0
    first = await pipeline.render(request(reuse_warned=True))
    again = await pipeline.render(request(reuse_warned=True, stored_only=True))
    assert capture.calls == 1 and again.render_id == first.render_id
    assert not again.rendered


async def test_a_render_with_warnings_older_than_the_reuse_window_renders_again() -> None:
    blobs, capture, events = MemoryBlobs(), AssetCapture(DENIED), Events()
    pipeline = RenderPipeline(Templates(), blobs, capture, events,
                              limits=LIMITS, base_url="http://document.invalid/",
                              render_id_secret=SECRET, reuse_warned_seconds=0)
    await pipeline.render(request(reuse_warned=True))
    await pipeline.render(request(reuse_warned=True))
    assert capture.calls == 2


async def test_identical_strict_renders_share_one_refusal() -> None:
    _blobs, capture, _, pipeline = setup(DENIED)
    capture.gate = asyncio.Event()
    tasks = [asyncio.create_task(pipeline.render(request(strict_assets=True)))
             for _ in range(3)]
    await settle()
    capture.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, InvalidArgument) for r in results)
    assert capture.calls == 1
