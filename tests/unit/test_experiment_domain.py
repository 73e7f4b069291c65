"""The experiment service's domain on the real SQLite store. Only the
template service is a fake, behind ``services.experiment._ports``; the
statistics are the real ``services.experiment._stats``."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from litho.docstore import DocumentStore, open_document_store
from litho.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    LithoError,
    NotFound,
    ResourceExhausted,
)
from services.experiment import _model
from services.experiment._experiments import TRANSITIONS, Experiments
from services.experiment._model import (
    ARCHIVED,
    COMPLETED,
    DRAFT,
    PAUSED,
    RUNNING,
    STATUSES,
    BanditInput,
    Experiment,
    ExperimentSpec,
    GoalInput,
    Limits,
    Output,
    VariantInput,
    decode_token,
    encode_token,
    tenant_handle,
)
from services.experiment._settings import ExperimentSettings
from services.experiment._stats import Arm
from services.experiment._store import ExperimentStore
from services.experiment._summaries import Summaries

T1, T2 = "tenant-1", "tenant-2"
TEMPLATE, OTHER_TEMPLATE, FOREIGN = "tpl_main", "tpl_other", "tpl_of_t2"
START = 1_700_000_000.0


# --------------------------------------------------------------- fakes ----

class Clock:
    """Moves one second per reading: creation times differ, so order is known."""

    def __init__(self, now: float = START, step: float = 1.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@dataclass
class FakeTemplates:
    """The template service's templates: another tenant's read as missing."""

    owned: dict[str, set[str]] = field(default_factory=lambda: {
        T1: {TEMPLATE, OTHER_TEMPLATE}, T2: {TEMPLATE, OTHER_TEMPLATE, FOREIGN}})
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def exists(self, tenant_id: str, template_id: str) -> bool:
        self.asked.append((tenant_id, template_id))
        return template_id in self.owned.get(tenant_id, set())


@dataclass
class World:
    store: DocumentStore
    experiments: Experiments
    templates: FakeTemplates
    clock: Clock

    async def stored(self) -> int:
        return await self.store.collection("experiments").count({})

    async def doc(self, experiment_id: str) -> dict[str, Any]:
        doc = await self.store.collection("experiments").get(experiment_id)
        assert doc is not None
        return doc

    async def count(self, experiment_id: str, variant_id: str, *, impressions: int,
                    clicks: int = 0, conversions: int = 0, bot: int = 0,
                    tenant_id: str = T1) -> None:
        """Counters as the later step's consumer writes them."""
        await self.store.collection("experiment_counters").insert({
            "_id": f"{experiment_id}:{variant_id}", "tenantId": tenant_id,
            "experimentId": experiment_id, "variantId": variant_id,
            "impressions": impressions, "clicks": clicks, "conversions": conversions,
            "botImpressions": bot})


def build(store: DocumentStore, templates: FakeTemplates, clock: Clock,
          **limits: Any) -> Experiments:
    return Experiments(ExperimentStore(store), templates, limits=Limits(**limits), clock=clock)


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await open_document_store(f"sqlite:///{tmp_path / 'experiment.db'}", "litho")
    templates, clock = FakeTemplates(), Clock()
    experiments = build(store, templates, clock, max_per_tenant=5)
    await experiments.store.prepare()
    yield World(store, experiments, templates, clock)
    await store.close()


def variants(*weights: int, **overrides: Any) -> list[VariantInput]:
    ids = "abcdefghijklmnopqrstuvwxyz"
    return [VariantInput(id=ids[i], weight=w, **overrides) for i, w in enumerate(weights)]


def spec(**overrides: Any) -> ExperimentSpec:
    base: dict[str, Any] = {
        "name": "Spring sale", "slug": "spring-sale", "template_id": TEMPLATE,
        "variants": [VariantInput(id="a", name="Red", variables_json='{"colour": "red"}',
                                  weight=5000),
                     VariantInput(id="b", variables_json='{ "colour" : "blue", "n": 1 }',
                                  weight=5000, template_id=OTHER_TEMPLATE)],
    }
    base.update(overrides)
    return ExperimentSpec(**base)


def click_spec(**overrides: Any) -> ExperimentSpec:
    return spec(goal=GoalInput(type="click_through",
                               destination_url="https://shop.example/sale?from=img"),
                **overrides)


def fields_of(exc: LithoError) -> list[str]:
    return [e.field for e in exc.errors]


async def in_status(world: World, status: str, *, tenant_id: str = T1,
                    slug: str = "spring-sale") -> Experiment:
    """An experiment moved to ``status`` the way a user would."""
    made = await world.experiments.create(tenant_id, spec(slug=slug))
    e = world.experiments
    if status == DRAFT:
        return made
    await e.start(tenant_id, made.id)
    if status == RUNNING:
        return await e.get(tenant_id, made.id)
    if status == PAUSED:
        return await e.pause(tenant_id, made.id)
    await e.complete(tenant_id, made.id, "b")
    if status == COMPLETED:
        return await e.get(tenant_id, made.id)
    return await e.archive(tenant_id, made.id)


# ------------------------------------------------------------- create ----

async def test_create_stores_a_draft_with_the_defaults(world: World) -> None:
    made = await world.experiments.create(T1, spec())
    assert made.id.startswith("exp_") and len(made.id) == 26
    assert made.status == DRAFT and made.revision == 0
    assert made.name == "Spring sale" and made.slug == "spring-sale"
    assert [(v.id, v.name, v.control, v.weight) for v in made.variants] == [
        ("a", "Red", True, 5000), ("b", "b", False, 5000)]
    assert made.variants[0].template_id == "" and made.variants[1].template_id == OTHER_TEMPLATE
    # Variables are stored as canonical JSON.
    assert made.variants[1].variables_json == '{"colour":"blue","n":1}'
    assert made.goal.type == "impressions_only" and made.goal.destination_url == ""
    assert (made.bandit.enabled, made.bandit.algorithm, made.bandit.warmup_impressions) == (
        False, "thompson_sampling", 1000)
    assert made.minimum_sample_size == 1000 and made.confidence_threshold == 0.95
    assert made.output == Output(format="png", options_json="{}")
    assert dict(made.serving_weights) == {"a": 5000, "b": 5000}
    assert made.winner_variant_id == "" and made.started_at is None and made.ended_at is None
    assert made.tenant_handle == base64.b32encode(hashlib.sha256(
        b"litho-tenant-handle:" + T1.encode()).digest()[:10]).decode().lower()
    assert re.fullmatch(r"[a-z2-7]{16}", made.tenant_handle)
    assert sorted(set(world.templates.asked)) == [(T1, TEMPLATE), (T1, OTHER_TEMPLATE)]
    doc = await world.doc(made.id)
    assert doc["tenantHandle"] == made.tenant_handle and doc["slot"] == 0
    assert doc["variants"][0]["templateId"] is None
    assert doc["goal"] == {"type": "impressions_only", "destinationUrl": None}
    assert await world.experiments.get(T1, made.id) == made


async def test_create_keeps_what_is_given(world: World) -> None:
    made = await world.experiments.create(T1, click_spec(
        variants=[VariantInput(id="ctl", weight=2500), VariantInput(id="new", weight=7500,
                                                                    control=True)],
        bandit=BanditInput(enabled=True, warmup_impressions=0), minimum_sample_size=0,
        confidence_threshold=0.999, output=Output(format="webp", options_json='{"width":300}')))
    assert [v.control for v in made.variants] == [False, True]
    assert made.goal.type == "click_through"
    assert made.goal.destination_url == "https://shop.example/sale?from=img"
    assert made.bandit.enabled and made.bandit.warmup_impressions == 0
    assert made.minimum_sample_size == 0 and made.confidence_threshold == 0.999
    assert made.output == Output(format="webp", options_json='{"width":300}')


def _bad_cases() -> list[tuple[str, dict[str, Any], str]]:
    long_url = "https://example.com/" + "a" * 1990
    return [
        ("empty name", {"name": "  "}, "name"),
        ("long name", {"name": "n" * 201}, "name"),
        ("name with a newline", {"name": "a\nb"}, "name"),
        ("name with NUL", {"name": "a\x00b"}, "name"),
        ("name with a lone surrogate", {"name": "a\ud800"}, "name"),
        ("no name", {"name": None}, "name"),
        ("no slug", {"slug": None}, "slug"),
        ("uppercase slug", {"slug": "Spring"}, "slug"),
        ("slug starting with -", {"slug": "-spring"}, "slug"),
        ("slug ending with -", {"slug": "spring-"}, "slug"),
        ("slug with _", {"slug": "spring_sale"}, "slug"),
        ("slug with a newline", {"slug": "spring\n"}, "slug"),
        ("long slug", {"slug": "s" * 65}, "slug"),
        ("no template", {"template_id": None}, "templateId"),
        ("unknown template", {"template_id": "tpl_nope"}, "templateId"),
        ("another tenant's template", {"template_id": FOREIGN}, "templateId"),
        ("template id with control", {"template_id": "tpl\x01"}, "templateId"),
        ("no variants", {"variants": None}, "variants"),
        ("one variant", {"variants": variants(10_000)}, "variants"),
        ("eleven variants", {"variants": variants(*[909] * 10, 910)}, "variants"),
        ("bad variant id", {"variants": [VariantInput(id="a", weight=5000),
                                         VariantInput(id="b c", weight=5000)]},
         "variants[1].id"),
        ("empty variant id", {"variants": [VariantInput(id="a", weight=5000),
                                           VariantInput(id="", weight=5000)]},
         "variants[1].id"),
        ("long variant id", {"variants": [VariantInput(id="a", weight=5000),
                                          VariantInput(id="b" * 65, weight=5000)]},
         "variants[1].id"),
        ("duplicate variant id", {"variants": [VariantInput(id="a", weight=5000),
                                              VariantInput(id="a", weight=5000)]},
         "variants[1].id"),
        ("long variant name", {"variants": [VariantInput(id="a", name="n" * 201, weight=5000),
                                            VariantInput(id="b", weight=5000)]},
         "variants[0].name"),
        ("variables not an object", {"variants": [
            VariantInput(id="a", variables_json="[1]", weight=5000),
            VariantInput(id="b", weight=5000)]}, "variants[0].variables"),
        ("variables not JSON", {"variants": [
            VariantInput(id="a", weight=5000),
            VariantInput(id="b", variables_json="{nope", weight=5000)]},
         "variants[1].variables"),
        ("variables too large", {"variants": [
            VariantInput(id="a", variables_json=json.dumps({"x": "y" * 70_000}), weight=5000),
            VariantInput(id="b", weight=5000)]}, "variants[0].variables"),
        ("variables too deep", {"variants": [
            VariantInput(id="a", variables_json='{"x":' + "[" * 40 + "]" * 40 + "}",
                         weight=5000),
            VariantInput(id="b", weight=5000)]}, "variants[0].variables"),
        ("negative weight", {"variants": [VariantInput(id="a", weight=-1),
                                          VariantInput(id="b", weight=10_001)]},
         "variants[0].weight"),
        ("weights not summing", {"variants": variants(5000, 4999)}, "variants"),
        ("two controls", {"variants": variants(5000, 5000, control=True)},
         "variants[1].control"),
        ("unknown variant template", {"variants": [
            VariantInput(id="a", weight=5000),
            VariantInput(id="b", weight=5000, template_id=FOREIGN)]},
         "variants[1].templateId"),
        ("unknown goal", {"goal": GoalInput(type="purchases")}, "goal.type"),
        ("click_through without URL", {"goal": GoalInput(type="click_through")},
         "goal.destinationUrl"),
        ("ftp destination", {"goal": GoalInput(type="click_through",
                                               destination_url="ftp://example.com/")},
         "goal.destinationUrl"),
        ("relative destination", {"goal": GoalInput(type="click_through",
                                                    destination_url="/sale")},
         "goal.destinationUrl"),
        ("destination with userinfo", {"goal": GoalInput(
            type="click_through", destination_url="https://u:p@example.com/")},
         "goal.destinationUrl"),
        ("destination with a newline", {"goal": GoalInput(
            type="click_through", destination_url="https://example.com/\nx")},
         "goal.destinationUrl"),
        ("destination with a space", {"goal": GoalInput(
            type="click_through", destination_url="https://example.com/a b")},
         "goal.destinationUrl"),
        ("destination with a bad port", {"goal": GoalInput(
            type="click_through", destination_url="https://example.com:99999/")},
         "goal.destinationUrl"),
        ("long destination", {"goal": GoalInput(type="click_through",
                                                destination_url=long_url)},
         "goal.destinationUrl"),
        ("impressions_only with a URL", {"goal": GoalInput(
            type="impressions_only", destination_url="https://example.com/")},
         "goal.destinationUrl"),
        ("unknown algorithm", {"bandit": BanditInput(algorithm="epsilon_greedy")},
         "bandit.algorithm"),
        ("negative warm-up", {"bandit": BanditInput(warmup_impressions=-1)},
         "bandit.warmupImpressions"),
        ("huge warm-up", {"bandit": BanditInput(warmup_impressions=10**9 + 1)},
         "bandit.warmupImpressions"),
        ("negative sample", {"minimum_sample_size": -1}, "minimumSampleSize"),
        ("huge sample", {"minimum_sample_size": 10**9 + 1}, "minimumSampleSize"),
        ("threshold too low", {"confidence_threshold": 0.49}, "confidenceThreshold"),
        ("threshold too high", {"confidence_threshold": 0.9991}, "confidenceThreshold"),
        ("threshold of one", {"confidence_threshold": 1.0}, "confidenceThreshold"),
        ("threshold NaN", {"confidence_threshold": float("nan")}, "confidenceThreshold"),
    ]


@pytest.mark.parametrize(("overrides", "where"), [(o, w) for _, o, w in _bad_cases()],
                         ids=[name for name, _, _ in _bad_cases()])
async def test_create_refuses_each_bad_field_naming_it_and_stores_nothing(
        world: World, overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.experiments.create(T1, spec(**overrides))
    assert any(f == where or f.startswith(where + ".") for f in fields_of(caught.value)), (
        caught.value.errors)
    assert caught.value.message.startswith(where)
    assert await world.stored() == 0


async def test_create_reports_every_problem_at_once(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.experiments.create(T1, spec(
            name="", slug="Bad", template_id="tpl_nope",
            variants=[VariantInput(id="a", weight=6000), VariantInput(id="a", weight=5000)],
            confidence_threshold=2.0))
    assert fields_of(caught.value) == ["name", "slug", "variants[1].id", "variants",
                                       "confidenceThreshold", "templateId"]
    assert "(and 5 more problems)" in caught.value.message
    assert "sum to 10000" in caught.value.errors[3].message
    assert await world.stored() == 0


async def test_the_variant_limit_is_a_setting(world: World) -> None:
    e = build(world.store, world.templates, world.clock, max_variants=3)
    with pytest.raises(InvalidArgument, match="LITHO_EXPERIMENT_MAX_VARIANTS"):
        await e.create(T1, spec(variants=variants(2500, 2500, 2500, 2500)))
    made = await e.create(T1, spec(variants=variants(3334, 3333, 3333)))
    assert len(made.variants) == 3


async def test_a_missing_tenant_is_refused(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.experiments.create("", spec())
    assert fields_of(caught.value) == ["tenantId"]


# ---------------------------------------------------------------- slugs ----

async def test_a_slug_is_unique_per_tenant(world: World) -> None:
    first = await world.experiments.create(T1, spec())
    with pytest.raises(AlreadyExists) as caught:
        await world.experiments.create(T1, spec(name="again"))
    assert fields_of(caught.value) == ["slug"]
    assert await world.stored() == 1
    other = await world.experiments.create(T2, spec())  # another tenant: fine
    assert other.slug == first.slug and other.tenant_handle != first.tenant_handle
    second = await world.experiments.create(T1, spec(slug="summer"))
    with pytest.raises(AlreadyExists) as caught:
        await world.experiments.update(T1, second.id, ExperimentSpec(slug="spring-sale"))
    assert fields_of(caught.value) == ["slug"]
    # Its own slug again is no clash.
    same = await world.experiments.update(T1, second.id, ExperimentSpec(slug="summer"))
    assert same.slug == "summer"


async def test_concurrent_creates_of_one_slug_store_one(world: World) -> None:
    # Every create checks the slug before any inserts: the unique index decides.
    store = world.experiments.store
    has_slug = store.has_slug
    checked = 0
    all_checked = asyncio.Event()

    async def checking(tenant_id: str, slug: str, *, other_than: str = "") -> bool:
        nonlocal checked
        taken = await has_slug(tenant_id, slug, other_than=other_than)
        checked += 1
        if checked == 4:
            all_checked.set()
        await all_checked.wait()
        return taken

    store.has_slug = checking  # type: ignore[method-assign]
    done = await asyncio.gather(*(world.experiments.create(T1, spec(name=f"n{n}"))
                                  for n in range(4)), return_exceptions=True)
    assert sum(isinstance(d, Experiment) for d in done) == 1
    assert sum(isinstance(d, AlreadyExists) for d in done) == 3
    assert await world.stored() == 1


# ------------------------------------------------------------------ cap ----

async def test_the_tenant_cap_is_a_429_naming_the_setting(world: World) -> None:
    for n in range(5):
        await world.experiments.create(T1, spec(slug=f"e{n}"))
    with pytest.raises(ResourceExhausted, match="LITHO_EXPERIMENT_MAX_PER_TENANT"):
        await world.experiments.create(T1, spec(slug="one-too-many"))
    await world.experiments.create(T2, spec())  # another tenant's count is its own


async def test_concurrent_creates_hold_the_tenant_cap(world: World) -> None:
    # Each create counts, then waits until all 12 have counted before its insert.
    store = world.experiments.store
    count = store.count
    counted = 0
    all_counted = asyncio.Event()

    async def counting(tenant_id: str) -> int:
        nonlocal counted
        n = await count(tenant_id)
        counted += 1
        if counted == 12:
            all_counted.set()
        await all_counted.wait()
        return n

    store.count = counting  # type: ignore[method-assign]
    done = await asyncio.gather(*(world.experiments.create(T1, spec(slug=f"e{n}"))
                                  for n in range(12)), return_exceptions=True)
    store.count = count  # type: ignore[method-assign]
    refused = [d for d in done if isinstance(d, ResourceExhausted)]
    made = [d for d in done if isinstance(d, Experiment)]
    assert len(refused) == 7 and len(made) == 5
    assert all("LITHO_EXPERIMENT_MAX_PER_TENANT" in r.message for r in refused)
    slots = {d["slot"] for d in await world.store.collection("experiments").find({})}
    assert slots == {0, 1, 2, 3, 4}
    # A delete frees a slot for the next create.
    await world.experiments.delete(T1, made[2].id)
    await world.experiments.create(T1, spec(slug="again"))
    with pytest.raises(ResourceExhausted):
        await world.experiments.create(T1, spec(slug="one-too-many"))


# ---------------------------------------------------------------- states ----

@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("verb", sorted(TRANSITIONS))
async def test_every_transition_from_every_status(world: World, status: str,
                                                  verb: str) -> None:
    made = await in_status(world, status)
    sources, target = TRANSITIONS[verb]
    before = await world.doc(made.id)
    args = ("b",) if verb == "complete" else ()
    call = getattr(world.experiments, verb)
    if status in sources:
        moved: Experiment = await call(T1, made.id, *args)
        assert moved.status == target and moved.revision == before["revision"] + 1
        assert (await world.experiments.get(T1, made.id)).status == target
    else:
        with pytest.raises(Conflict) as caught:
            await call(T1, made.id, *args)
        assert f"is {status}" in caught.value.message
        assert f"{verb} needs it {' or '.join(sources)}" in caught.value.message
        assert await world.doc(made.id) == before


async def test_the_first_start_sets_the_start_time_and_completion_the_end(
        world: World) -> None:
    made = await world.experiments.create(T1, spec())
    started = await world.experiments.start(T1, made.id)
    assert started.started_at is not None and started.ended_at is None
    await world.experiments.pause(T1, made.id)
    again = await world.experiments.start(T1, made.id)
    assert again.started_at == started.started_at
    done = await world.experiments.complete(T1, made.id, "a")
    assert done.ended_at is not None and done.ended_at > started.started_at
    assert done.winner_variant_id == "a"
    assert dict(done.serving_weights) == {"a": 10_000, "b": 0}


# ---------------------------------------------------------------- update ----

async def test_a_draft_may_change_anything(world: World) -> None:
    made = await world.experiments.create(T1, spec())
    updated = await world.experiments.update(T1, made.id, click_spec(
        name=" Renamed ", slug="renamed", template_id=OTHER_TEMPLATE,
        variants=variants(2000, 3000, 5000), bandit=BanditInput(enabled=True),
        minimum_sample_size=50, confidence_threshold=0.9,
        output=Output(format="jpeg", options_json='{"quality":70}')))
    assert updated.name == "Renamed" and updated.slug == "renamed"
    assert updated.template_id == OTHER_TEMPLATE and updated.goal.type == "click_through"
    assert [v.id for v in updated.variants] == ["a", "b", "c"]
    assert dict(updated.serving_weights) == {"a": 2000, "b": 3000, "c": 5000}
    assert updated.bandit.enabled and updated.minimum_sample_size == 50
    assert updated.output.format == "jpeg" and updated.revision == 1
    # Absent fields keep their values; a bad one stores nothing.
    kept = await world.experiments.update(T1, made.id, ExperimentSpec(name="Again"))
    assert kept.slug == "renamed" and kept.confidence_threshold == 0.9
    with pytest.raises(InvalidArgument) as caught:
        await world.experiments.update(T1, made.id, ExperimentSpec(
            variants=variants(5000, 5001)))
    assert fields_of(caught.value) == ["variants"]
    assert (await world.experiments.get(T1, made.id)).revision == 2


@pytest.mark.parametrize("status", [RUNNING, PAUSED])
async def test_a_live_experiment_changes_its_name_threshold_and_destination_only(
        world: World, status: str) -> None:
    made = await world.experiments.create(T1, click_spec())
    await world.experiments.start(T1, made.id)
    if status == PAUSED:
        await world.experiments.pause(T1, made.id)
    updated = await world.experiments.update(T1, made.id, ExperimentSpec(
        name="Renamed", confidence_threshold=0.99,
        goal=GoalInput(destination_url="https://shop.example/new")))
    assert updated.name == "Renamed" and updated.confidence_threshold == 0.99
    assert updated.goal == dataclasses.replace(made.goal,
                                               destination_url="https://shop.example/new")
    assert updated.status == status
    for refused, where in [
        (ExperimentSpec(slug="other"), ["slug"]),
        (ExperimentSpec(template_id=OTHER_TEMPLATE), ["templateId"]),
        (ExperimentSpec(variants=variants(5000, 5000)), ["variants"]),
        (ExperimentSpec(bandit=BanditInput()), ["bandit"]),
        (ExperimentSpec(minimum_sample_size=10), ["minimumSampleSize"]),
        (ExperimentSpec(output=Output()), ["output"]),
        (ExperimentSpec(goal=GoalInput(type="impressions_only")), ["goal.type"]),
        (ExperimentSpec(name="x", slug="y", minimum_sample_size=1),
         ["slug", "minimumSampleSize"]),
    ]:
        before = await world.doc(made.id)
        with pytest.raises(Conflict) as caught:
            await world.experiments.update(T1, made.id, refused)
        assert fields_of(caught.value) == where
        assert f"while the experiment is {status}" in caught.value.message
        assert await world.doc(made.id) == before
    # The live fields are still checked.
    with pytest.raises(InvalidArgument) as bad:
        await world.experiments.update(T1, made.id, ExperimentSpec(
            goal=GoalInput(destination_url="javascript:alert(1)")))
    assert fields_of(bad.value) == ["goal.destinationUrl"]


@pytest.mark.parametrize("status", [COMPLETED, ARCHIVED])
async def test_a_finished_experiment_changes_its_name_only(world: World, status: str) -> None:
    made = await in_status(world, status)
    renamed = await world.experiments.update(T1, made.id, ExperimentSpec(name="Done"))
    assert renamed.name == "Done" and renamed.status == status
    for refused, where in [(ExperimentSpec(confidence_threshold=0.9), "confidenceThreshold"),
                           (ExperimentSpec(goal=GoalInput()), "goal"),
                           (ExperimentSpec(slug="x"), "slug")]:
        with pytest.raises(Conflict) as caught:
            await world.experiments.update(T1, made.id, refused)
        assert fields_of(caught.value) == [where]


# ---------------------------------------------------------------- delete ----

async def test_delete_refuses_a_running_experiment_and_takes_the_counters(
        world: World) -> None:
    made = await world.experiments.create(T1, spec())
    kept = await world.experiments.create(T1, spec(slug="kept"))
    await world.count(made.id, "a", impressions=10)
    await world.count(made.id, "b", impressions=12)
    await world.count(kept.id, "a", impressions=7)
    await world.experiments.start(T1, made.id)
    with pytest.raises(Conflict, match="pause it first"):
        await world.experiments.delete(T1, made.id)
    await world.experiments.pause(T1, made.id)
    await world.experiments.delete(T1, made.id)
    with pytest.raises(NotFound):
        await world.experiments.get(T1, made.id)
    counters = await world.store.collection("experiment_counters").find({})
    assert [c["_id"] for c in counters] == [f"{kept.id}:a"]
    with pytest.raises(NotFound):
        await world.experiments.delete(T1, made.id)


@pytest.mark.parametrize("status", [DRAFT, PAUSED, COMPLETED, ARCHIVED])
async def test_delete_takes_an_experiment_that_is_not_running(world: World,
                                                             status: str) -> None:
    made = await in_status(world, status)
    await world.experiments.delete(T1, made.id)
    assert await world.stored() == 0


# -------------------------------------------------------------- complete ----

async def test_complete_needs_a_variant_of_the_experiment(world: World) -> None:
    made = await in_status(world, RUNNING)
    with pytest.raises(InvalidArgument) as caught:
        await world.experiments.complete(T1, made.id, "zz")
    assert fields_of(caught.value) == ["winnerVariantId"]
    assert (await world.experiments.get(T1, made.id)).status == RUNNING


async def test_complete_without_a_winner_takes_the_recommendation(world: World) -> None:
    made = await world.experiments.create(T1, click_spec())
    await world.experiments.start(T1, made.id)
    with pytest.raises(FailedPrecondition) as caught:
        await world.experiments.complete(T1, made.id)
    assert fields_of(caught.value) == ["winnerVariantId"]
    assert "minimum sample of 1000" in caught.value.message
    assert (await world.experiments.get(T1, made.id)).status == RUNNING
    await world.count(made.id, "a", impressions=1000, clicks=100)
    await world.count(made.id, "b", impressions=1000, clicks=130)
    done = await world.experiments.complete(T1, made.id)
    assert done.status == COMPLETED and done.winner_variant_id == "b"


# -------------------------------------------------------------- listing ----

async def test_list_pages_newest_first_and_filters_by_status(world: World) -> None:
    e = build(world.store, world.templates, world.clock, max_per_tenant=100)
    made = [await e.create(T1, spec(slug=f"e{n}")) for n in range(7)]
    await e.create(T2, spec(slug="theirs"))
    await e.start(T1, made[1].id)
    await e.start(T1, made[4].id)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = await e.list_experiments(T1, page_size=3, page_token=token)
        seen += [x.id for x in page]
        pages += 1
        if not token:
            break
    assert pages == 3 and seen == [m.id for m in reversed(made)]
    running, token = await e.list_experiments(T1, status=RUNNING)
    assert [x.id for x in running] == [made[4].id, made[1].id] and token == ""
    everything, _ = await e.list_experiments(T1, page_size=1000)
    assert len(everything) == 7
    default, _ = await e.list_experiments(T1)
    assert len(default) == 7


async def test_list_pages_through_experiments_created_at_one_instant(world: World) -> None:
    world.clock.step = 0.0
    made = {(await world.experiments.create(T1, spec(slug=f"e{n}"))).id for n in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page, token = await world.experiments.list_experiments(T1, page_size=2,
                                                               page_token=token)
        seen += [x.id for x in page]
        if not token:
            break
    assert len(seen) == 5 and set(seen) == made


@pytest.mark.parametrize(("kwargs", "where"), [
    ({"status": "done"}, "status"),
    ({"page_size": -1}, "pageSize"),
    ({"page_token": "garbage"}, "pageToken"),
    ({"page_token": encode_token(1.0, "exp_" + "x" * 22) + "A"}, "pageToken"),
    ({"page_token": base64.urlsafe_b64encode(b'{"t":1,"id":"bnd_1"}').decode()}, "pageToken"),
    ({"page_token": "x" * 300}, "pageToken"),
])
async def test_list_refuses_bad_arguments(world: World, kwargs: dict[str, Any],
                                          where: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.experiments.list_experiments(T1, **kwargs)
    assert fields_of(caught.value) == [where]


def test_a_page_token_round_trips() -> None:
    token = encode_token(START + 0.123456, "exp_" + "A" * 22)
    assert decode_token(token) == (START + 0.123456, "exp_" + "A" * 22)


# ------------------------------------------------------------ isolation ----

async def test_another_tenants_experiment_is_not_found_everywhere(world: World) -> None:
    made = await in_status(world, RUNNING)
    e = world.experiments
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: e.get(T2, made.id), lambda: e.update(T2, made.id, ExperimentSpec(name="x")),
        lambda: e.delete(T2, made.id), lambda: e.start(T2, made.id),
        lambda: e.pause(T2, made.id), lambda: e.complete(T2, made.id, "a"),
        lambda: e.archive(T2, made.id), lambda: e.stats(T2, made.id),
        lambda: e.get(T1, "exp_nope"), lambda: e.get(T1, "../" + made.id)]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            await call()
        assert caught.value.message.startswith("experiment ")
    assert (await e.list_experiments(T2))[0] == []
    assert (await e.get(T1, made.id)).status == RUNNING


def test_the_tenant_handle_is_fixed_by_the_tenant() -> None:
    assert tenant_handle(T1) == tenant_handle(T1) != tenant_handle(T2)
    assert len(tenant_handle("")) == 16


# ---------------------------------------------------------------- stats ----

async def test_stats_over_clicks(world: World) -> None:
    made = await world.experiments.create(T1, click_spec())
    await world.count(made.id, "a", impressions=1000, clicks=100, conversions=900, bot=5)
    await world.count(made.id, "b", impressions=1000, clicks=130)
    stats = await world.experiments.stats(T1, made.id)
    a, b = stats.variants
    assert (a.variant_id, a.control, a.name) == ("a", True, "Red")
    assert (a.impressions, a.clicks, a.conversions, a.bot_impressions) == (1000, 100, 900, 5)
    assert a.conversion_rate == pytest.approx(0.10) and b.conversion_rate == pytest.approx(0.13)
    assert a.interval_low < 0.10 < a.interval_high
    assert a.probability_to_beat_control == 0.0
    assert b.probability_to_beat_control == pytest.approx(0.98, abs=0.01)
    assert b.probability_to_be_best == pytest.approx(b.probability_to_beat_control)
    assert b.expected_loss < a.expected_loss
    assert (a.serving_weight, b.serving_weight) == (5000, 5000)
    assert stats.minimum_sample_reached and stats.confidence_reached
    assert stats.recommended_winner_variant_id == "b"
    assert stats.draws == 100_000 and stats.status == DRAFT
    assert (stats.minimum_sample_size, stats.confidence_threshold) == (1000, 0.95)
    # The same counts always give the same numbers.
    assert await world.experiments.stats(T1, made.id) == stats


@pytest.mark.parametrize(("overrides", "sample", "confident"), [
    ({"minimum_sample_size": 1001}, False, True),
    ({"confidence_threshold": 0.99}, True, False),
])
async def test_stats_recommend_only_when_both_thresholds_are_met(
        world: World, overrides: dict[str, Any], sample: bool, confident: bool) -> None:
    made = await world.experiments.create(T1, click_spec(**overrides))
    await world.count(made.id, "a", impressions=1000, clicks=100)
    await world.count(made.id, "b", impressions=1000, clicks=130)
    stats = await world.experiments.stats(T1, made.id)
    assert (stats.minimum_sample_reached, stats.confidence_reached) == (sample, confident)
    assert stats.recommended_winner_variant_id == ""


async def test_stats_count_conversions_for_impressions_only(world: World) -> None:
    made = await world.experiments.create(T1, spec())
    await world.count(made.id, "a", impressions=1000, clicks=500, conversions=100)
    await world.count(made.id, "b", impressions=1000, clicks=0, conversions=130)
    stats = await world.experiments.stats(T1, made.id)
    assert [v.conversion_rate for v in stats.variants] == pytest.approx([0.10, 0.13])
    assert stats.recommended_winner_variant_id == "b"


async def test_stats_without_counters_and_with_odd_ones(world: World) -> None:
    made = await world.experiments.create(T1, click_spec(minimum_sample_size=0))
    empty = await world.experiments.stats(T1, made.id)
    assert [(v.impressions, v.conversion_rate) for v in empty.variants] == [(0, 0.0), (0, 0.0)]
    assert not empty.confidence_reached and empty.recommended_winner_variant_id == ""
    # More clicks than impressions (a cached image clicked again) is no crash.
    await world.count(made.id, "a", impressions=10, clicks=50)
    await world.count(made.id, "b", impressions=0, clicks=3)
    odd = await world.experiments.stats(T1, made.id)
    assert odd.variants[0].clicks == 50 and odd.variants[0].conversion_rate == 1.0


async def test_the_stats_draws_are_a_setting(world: World) -> None:
    e = build(world.store, world.templates, world.clock, stats_draws=2000)
    made = await e.create(T1, spec())
    assert (await e.stats(T1, made.id)).draws == 2000


# ------------------------------------------------------------- revisions ----

async def _racing(world: World, experiment_id: str) -> None:
    """Make the next conditional write lose: another writer moves the revision
    after this one read it."""
    store = world.experiments.store
    write, delete = store.write, store.delete

    async def meddle() -> None:
        await world.store.collection("experiments").update(
            {"_id": experiment_id}, {"$inc": {"revision": 1}})
        store.write, store.delete = write, delete  # type: ignore[method-assign]

    async def late_write(doc: Mapping[str, Any],
                         fields: Mapping[str, Any]) -> dict[str, Any] | None:
        await meddle()
        return await write(doc, fields)

    async def late_delete(doc: Mapping[str, Any]) -> bool:
        await meddle()
        return await delete(doc)

    store.write, store.delete = late_write, late_delete  # type: ignore[method-assign]


@pytest.mark.parametrize("verb", ["start", "update", "delete"])
async def test_a_write_that_lost_the_race_is_a_conflict(world: World, verb: str) -> None:
    made = await world.experiments.create(T1, spec())
    await _racing(world, made.id)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "start": lambda: world.experiments.start(T1, made.id),
        "update": lambda: world.experiments.update(T1, made.id, ExperimentSpec(name="x")),
        "delete": lambda: world.experiments.delete(T1, made.id)}
    with pytest.raises(Conflict, match="changed meanwhile; retry"):
        await calls[verb]()
    after = await world.experiments.get(T1, made.id)
    assert (after.status, after.name, after.revision) == (DRAFT, "Spring sale", 1)


def test_the_settings_bound_every_limit() -> None:
    settings = ExperimentSettings()
    assert (settings.experiment_max_per_tenant, settings.experiment_max_variants,
            settings.experiment_max_variables_bytes, settings.experiment_stats_draws) == (
        1000, 10, 65_536, 100_000)
    with pytest.raises(ValueError):
        ExperimentSettings(experiment_max_variants=1)
    with pytest.raises(ValueError):
        ExperimentSettings(experiment_stats_draws=999)


def test_a_handle_key_makes_handles_no_one_can_compute_from_a_tenant_name() -> None:
    plain = _model.tenant_handle("acme")
    keyed = _model.tenant_handle("acme", b"k" * 32)
    assert re.fullmatch(r"[a-z2-7]{16}", keyed) and keyed != plain
    assert keyed == _model.tenant_handle("acme", b"k" * 32)  # stable for one key
    assert keyed != _model.tenant_handle("acme", b"j" * 32)
    assert keyed != _model.tenant_handle("acme2", b"k" * 32)
    with pytest.raises(ValueError, match="32 characters"):
        ExperimentSettings(experiment_handle_key="short")


async def test_the_variants_variables_are_bounded_in_all_and_as_stored(
        tmp_path: Path) -> None:
    store = await open_document_store(f"sqlite:///{tmp_path / 'e.db'}", "litho")
    try:
        experiments = build(store, FakeTemplates(), Clock(), max_variables_bytes=4000,
                            max_total_variables_bytes=6000)
        await experiments.store.prepare()
        big = json.dumps({"t": "x" * 3500})
        with pytest.raises(InvalidArgument) as info:
            await experiments.create(T1, spec(variants=[
                VariantInput(id="a", variables_json=big, weight=5000),
                VariantInput(id="b", variables_json=big, weight=5000)]))
        assert "LITHO_EXPERIMENT_MAX_TOTAL_VARIABLES_BYTES" in str(info.value.errors)
        # Numbers can be written back longer than they came.
        grown = "{\"n\": [" + ",".join(["1e300"] * 600) + "]}"
        assert len(grown) < 4000
        with pytest.raises(InvalidArgument) as info:
            await experiments.create(T1, spec(variants=[
                VariantInput(id="a", variables_json=grown, weight=5000),
                VariantInput(id="b", weight=5000)]))
        assert "variants[0].variables" in str(info.value.errors)
        assert await store.collection("experiments").count({}) == 0
    finally:
        await store.close()


async def test_statistics_are_computed_a_few_at_a_time() -> None:
    running = peak = 0
    lock = threading.Lock()

    def compute(arms: Any, **_: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return object()

    summaries = Summaries(compute=compute, at_once=2)
    await asyncio.gather(*(summaries.summarise(
        [Arm("a", True, n, 0), Arm("b", False, n, 0)], minimum_sample_size=1,
        confidence_threshold=0.95, draws=1000) for n in range(8)))
    assert peak == 2
