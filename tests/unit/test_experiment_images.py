"""The gateway's public experiment images, their parts without a stack: what a
visitor is shown and counted in each state, the experiment as resolved, the
bot pattern, and the single render concurrent first views share."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from litho import assignment, formats
from litho.blobstore import Blob, BlobInfo
from litho.errors import DeadlineExceeded, NotFound, Unavailable
from litho.experiment.v1 import experiment_pb2 as pb
from litho.renderer.v1 import renderer_pb2
from services.gateway._experiment_images import (
    BOT_IMPRESSION,
    CLICK,
    IMPRESSION,
    MAX_STALE,
    MISSING_SECONDS,
    ExperimentImages,
    Served,
    _Render,
    experiment_memo,
    served_from_proto,
)
from services.gateway._settings import GatewaySettings


def resolved(status: str = "running", winner: str = "", weights: tuple[int, int] = (5000, 5000),
             epochs: list[pb.WeightEpoch] | None = None) -> pb.ResolveExperimentResponse:
    e = pb.Experiment(
        id="exp_1", tenant_id="t1", slug="hero", template_id="tpl_main", status=status,
        winner_variant_id=winner, tenant_handle="a" * 16,
        goal=pb.Goal(type="click_through", destination_url="https://shop.example/x"),
        output=pb.ExperimentOutput(format=renderer_pb2.IMAGE_FORMAT_WEBP),
        update_time=Timestamp(seconds=1_700_000_000),
        variants=[pb.Variant(id="a", variables_json='{"t": 1}', weight=weights[0]),
                  pb.Variant(id="b", template_id="tpl_b", variables_json='{"t": 2}',
                             weight=weights[1], control=True)])
    return pb.ResolveExperimentResponse(experiment=e, epochs=epochs or [])


def test_resolved_experiments_keep_what_serving_needs() -> None:
    served = served_from_proto(resolved(epochs=[
        pb.WeightEpoch(since=Timestamp(seconds=10), weights={"a": 5000, "b": 5000}),
        pb.WeightEpoch(since=Timestamp(seconds=20), weights={"b": 9000, "a": 1000})]))
    assert served.control == "b"  # the variant marked control, not the first
    assert served.variants["a"].template_id == "tpl_main"  # the experiment's own
    assert served.variants["b"].template_id == "tpl_b"
    # Weights in the variants' order, whatever the map's order.
    assert [e.weights for e in served.epochs] == [(("a", 5000), ("b", 5000)),
                                                  (("a", 1000), ("b", 9000))]
    assert served.format is formats.by_name("webp") and served.updated == 1_700_000_000
    # Without epochs: one of the variants' own weights.
    assert served_from_proto(resolved(weights=(2000, 8000))).epochs[0].weights == (
        ("a", 2000), ("b", 8000))


@pytest.mark.parametrize(("status", "winner", "shown", "counted"), [
    ("draft", "", "b", ""), ("paused", "", "b", ""),
    ("completed", "a", "a", ""), ("archived", "a", "a", ""), ("archived", "", "b", "")])
def test_only_a_running_experiment_assigns_and_counts(status: str, winner: str, shown: str,
                                                      counted: str) -> None:
    served = served_from_proto(resolved(status=status, winner=winner))
    for vid in ("v1", "v2", "v3", "v4"):
        assert served.pick(vid, bot=False) == (shown, counted)


def test_a_running_experiment_assigns_as_litho_assignment_does() -> None:
    served = served_from_proto(resolved())
    seen = {served.pick(f"visitor-{i}", bot=False) for i in range(200)}
    assert seen == {("a", IMPRESSION), ("b", IMPRESSION)}
    for i in range(50):
        vid = f"visitor-{i}"
        assert served.pick(vid, bot=False)[0] == assignment.assign("exp_1", vid, served.epochs)
    # Bots see the control and are counted apart.
    assert served.pick("", bot=True) == ("b", BOT_IMPRESSION)


@pytest.mark.parametrize(("agent", "bot"), [
    ("Twitterbot/1.0", True), ("facebookexternalhit/1.1", True),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", True),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
    ("WhatsApp/2.23.20.0", True), ("LinkedInBot/1.0", True), ("Discordbot/2.0", True),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126 Safari/537.36",
     False),
    ("Mozilla/5.0 (Linux; Android 14; CUBOT KingKong) AppleWebKit/537.36 Chrome/126", False),
    ("Python/3.11 aiohttp/3.9.5", False), ("curl/8.5.0", False)])
def test_the_default_bot_list(agent: str, bot: bool) -> None:
    assert bool(GatewaySettings().bot_pattern().search(agent)) is bot


def test_a_bot_list_that_does_not_compile_stops_the_gateway() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        GatewaySettings(gateway_bot_user_agents="(unclosed")


class _Renderer:
    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.warnings: list[renderer_pb2.AssetWarning] = []

    async def RenderTemplate(self, request: renderer_pb2.RenderTemplateRequest,
                             **_: Any) -> renderer_pb2.RenderTemplateResponse:
        self.calls += 1
        await self.gate.wait()
        return renderer_pb2.RenderTemplateResponse(
            render_id="r" * 64, blob_key=f"outputs/rr/{'r' * 64}.webp", content_type="image/webp",
            warnings=self.warnings)


class _Blobs:
    def __init__(self) -> None:
        self.reads = 0

    async def get(self, key: str) -> Blob | None:
        self.reads += 1
        return Blob(BlobInfo(key=key, size=3, content_type="image/webp", etag="e"), b"abc")


async def test_concurrent_first_views_share_one_render_and_bytes_are_kept() -> None:
    renderer, blobs = _Renderer(), _Blobs()
    images = ExperimentImages(
        experiments=None, renderer=renderer, blobs=blobs, counts=None,  # type: ignore[arg-type]
        memo=None, bots=re.compile("bot"))  # type: ignore[arg-type]
    served: Served = served_from_proto(resolved())
    webp = formats.by_name("webp")
    assert webp is not None
    views = [asyncio.create_task(images.render(served, "a", webp)) for _ in range(20)]
    await asyncio.sleep(0)
    renderer.gate.set()
    renders = await asyncio.gather(*views)
    assert renderer.calls == 1 and {r.render_id for r in renders} == {"r" * 64}
    again = await images.render(served, "a", webp)  # within render_seconds: no call
    assert renderer.calls == 1
    assert await images.image(again) == b"abc" and await images.image(again) == b"abc"
    assert blobs.reads == 1
    assert await images.count(served, "a", IMPRESSION) is False  # no NATS: not counted


async def test_a_render_that_missed_an_asset_is_not_reused() -> None:
    renderer = _Renderer()
    renderer.gate.set()
    renderer.warnings = [renderer_pb2.AssetWarning(url="https://x.example/a.png")]
    images = ExperimentImages(
        experiments=None, renderer=renderer, blobs=_Blobs(), counts=None,  # type: ignore[arg-type]
        memo=None, bots=re.compile("bot"))  # type: ignore[arg-type]
    served = served_from_proto(resolved())
    webp = formats.by_name("webp")
    assert webp is not None
    await images.render(served, "a", webp)
    await images.render(served, "a", webp)
    assert renderer.calls == 2


class _Resolver:
    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    async def ResolveExperiment(self, request: pb.ResolveExperimentRequest,
                                **_: Any) -> pb.ResolveExperimentResponse:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if request.slug != "hero":
            raise NotFound("no such experiment")
        return resolved()


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class _Up:
    def generation(self) -> int | None:
        return 0


def _images(resolver: _Resolver, clock: _Clock, **fields: Any) -> ExperimentImages:
    return ExperimentImages(
        experiments=resolver, renderer=None, blobs=_Blobs(),  # type: ignore[arg-type]
        counts=fields.pop("counts", None), bots=re.compile("bot"), clock=clock,
        memo=experiment_memo(_Up(), seconds=30, max_bytes=2**20, clock=clock), **fields)


async def test_a_name_that_named_nothing_is_a_404_without_a_call_for_a_while() -> None:
    resolver, clock = _Resolver(), _Clock()
    images = _images(resolver, clock)
    for _ in range(3):
        with pytest.raises(NotFound):
            await images.served("a" * 16, "nope")
    assert resolver.calls == 1
    clock.now += MISSING_SECONDS
    with pytest.raises(NotFound):
        await images.served("a" * 16, "nope")
    assert resolver.calls == 2
    images.changed(f"{'a' * 16}/nope")  # a create's note: asked again at once
    with pytest.raises(NotFound):
        await images.served("a" * 16, "nope")
    assert resolver.calls == 3


async def test_a_known_experiment_is_served_while_its_service_is_away() -> None:
    resolver, clock = _Resolver(), _Clock()
    images = _images(resolver, clock)
    assert (await images.served("a" * 16, "hero")).experiment_id == "exp_1"
    clock.now += 31
    resolver.error = Unavailable("the experiment service is away")
    assert (await images.served("a" * 16, "hero")).experiment_id == "exp_1"
    resolver.error = DeadlineExceeded("too slow")
    clock.now += 60
    assert (await images.served("a" * 16, "hero")).experiment_id == "exp_1"
    clock.now += MAX_STALE
    with pytest.raises(DeadlineExceeded):
        await images.served("a" * 16, "hero")


async def test_image_bytes_are_kept_within_their_budget() -> None:
    blobs = _Blobs()
    images = ExperimentImages(
        experiments=None, renderer=None, blobs=blobs, counts=None,  # type: ignore[arg-type]
        memo=None, bots=re.compile("bot"), max_image_bytes=12)  # type: ignore[arg-type]
    renders = [_Render(f"r{i}", f"k{i}", "image/webp") for i in range(5)]
    for r in renders:
        assert await images.image(r) == b"abc"  # 3 bytes each: four fit in 12
    reads = blobs.reads
    await images.image(renders[4])
    await images.image(renders[1])
    assert blobs.reads == reads  # kept
    await images.image(renders[0])
    assert blobs.reads == reads + 1  # the oldest went
    small = ExperimentImages(
        experiments=None, renderer=None, blobs=blobs, counts=None,  # type: ignore[arg-type]
        memo=None, bots=re.compile("bot"), max_image_bytes=8)  # type: ignore[arg-type]
    await small.image(renders[0])
    await small.image(renders[0])
    assert blobs.reads == reads + 3  # over a quarter of the budget: never kept


class _Publisher:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.fail = False

    async def publish(self, subject: str, message: object, *, msg_id: str) -> object:
        if self.fail:
            raise Unavailable("JetStream refused it")
        self.ids.append(msg_id)
        return object()


async def test_counts_say_whether_they_were_stored_and_clicks_name_the_visitor() -> None:
    publisher, clock = _Publisher(), _Clock()
    up = True
    images = _images(_Resolver(), clock, counts=publisher, connected=lambda: up)
    served = served_from_proto(resolved())
    assert await images.count(served, "a", IMPRESSION) is True
    assert await images.count(served, "a", IMPRESSION) is True
    assert await images.count(served, "a", CLICK, "v1") is True
    assert await images.count(served, "a", CLICK, "v1") is True
    assert publisher.ids[0] != publisher.ids[1]  # every view counts
    assert publisher.ids[2] == publisher.ids[3]  # a visitor's clicks share one id
    publisher.fail = True
    assert await images.count(served, "a", IMPRESSION) is False
    publisher.fail, up = False, False
    assert await images.count(served, "a", IMPRESSION) is False  # not even tried
    assert len(publisher.ids) == 4
