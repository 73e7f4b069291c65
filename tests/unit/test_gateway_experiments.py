"""The gateway's experiment edge: JSON <-> proto both ways, the OpenAPI
document refusing junk before any call (naming the field), the service's
errors as problems, and the caller's tenant on every call.

The real app runs over a real key store; the experiment service is a
recording fake, so each test sees exactly which calls the gateway made (and a
refusal that must come first sees none)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from litho import errors
from litho.experiment.v1 import experiment_pb2 as pb
from litho.renderer.v1 import renderer_pb2 as rpb
from services.gateway import _experiments
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._state import Deps

EXP = "exp_" + "Ab3_-" * 4 + "xy"
TPL = "tpl_" + "1" * 24
TPL_B = "tpl_" + "2" * 24
HANDLE = "abcdefghijk2345a"


class Recorder:
    """A gRPC stub stand-in: each method records its request and answers what
    the test set in ``answers`` (an exception is raised)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, Message | Exception] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(request: Any, **_: Any) -> Any:
            self.calls.append((name, request))
            answer = self.answers.get(name)
            if answer is None:
                raise AssertionError(f"unexpected call {name}")
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call

    def only(self, name: str) -> Any:
        assert [n for n, _ in self.calls] == [name], self.calls
        return self.calls[0][1]


@dataclass
class Edge:
    url: str
    experiments: Recorder
    deps: Deps
    http: aiohttp.ClientSession
    auth: dict[str, str] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    from aiohttp import web

    from litho.docstore import open_document_store
    from services.gateway._app import create_app
    from services.gateway._keys import KeyStore

    store = await open_document_store(f"sqlite://{tmp_path / 'keys.db'}", "unused")
    keys = KeyStore(store, cache_ttl=0)
    await keys.prepare()
    key, other = await keys.create("tenant-a"), await keys.create("tenant-b")
    doc = load_document()
    experiments = Recorder()
    deps = Deps(keys=keys, templates=None, renderer=None,  # type: ignore[arg-type]
                webhooks=None, blobs=None,  # type: ignore[arg-type]
                openapi=doc, validator=RequestValidator(doc),
                experiments=experiments)  # type: ignore[arg-type]
    runner = web.AppRunner(create_app(deps, max_body_bytes=1 << 20), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession() as http:
            yield Edge(f"http://127.0.0.1:{runner.addresses[0][1]}", experiments, deps, http,
                       {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other}"})
    finally:
        await runner.cleanup()
        await store.close()


async def _call(edge: Edge, method: str, path: str, *, auth: dict[str, str] | None = None,
                **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {**(edge.auth if auth is None else auth), **kwargs.pop("headers", {})}
    async with edge.http.request(method, edge.url + path, headers=headers, **kwargs) as r:
        raw = await r.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        return r.status, body, r.headers


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _experiment(**changes: Any) -> pb.Experiment:
    e = pb.Experiment(
        id=EXP, tenant_id="tenant-a", name="hero banner", slug="hero-banner",
        template_id=TPL,
        variants=[pb.Variant(id="a", name="Control", variables_json='{"title": "Hi"}',
                             weight=5000, control=True),
                  pb.Variant(id="b", name="Bold", template_id=TPL_B,
                             variables_json='{"title": "HELLO", "n": 2}', weight=5000)],
        goal=pb.Goal(type="click_through", destination_url="https://shop.example.com/x"),
        bandit=pb.Bandit(enabled=True, algorithm="thompson_sampling", warmup_impressions=500),
        minimum_sample_size=1000, confidence_threshold=0.95,
        output=pb.ExperimentOutput(format=rpb.IMAGE_FORMAT_WEBP,
                                   options=rpb.RenderOptions(quality=80, width=600)),
        status="running", tenant_handle=HANDLE,
        create_time=_ts(1_700_000_000), update_time=_ts(1_700_000_001),
        start_time=_ts(1_700_000_002), serving_weights={"a": 5000, "b": 5000})
    for name, value in changes.items():
        if isinstance(value, Message):
            getattr(e, name).CopyFrom(value)
        else:
            setattr(e, name, value)
    return e


EXPECTED = {
    "id": EXP, "name": "hero banner", "slug": "hero-banner", "templateId": TPL,
    "variants": [
        {"id": "a", "name": "Control", "templateId": None, "variables": {"title": "Hi"},
         "weight": 5000, "control": True},
        {"id": "b", "name": "Bold", "templateId": TPL_B,
         "variables": {"title": "HELLO", "n": 2}, "weight": 5000, "control": False}],
    "goal": {"type": "click_through", "destinationUrl": "https://shop.example.com/x"},
    "bandit": {"enabled": True, "algorithm": "thompson_sampling", "warmupImpressions": 500},
    "minimumSampleSize": 1000, "confidenceThreshold": 0.95,
    "output": {"format": "webp", "quality": 80, "width": 600},
    "status": "running", "winnerVariantId": None,
    "servingWeights": {"a": 5000, "b": 5000}, "tenantHandle": HANDLE,
    "imageUrl": f"/s/{HANDLE}/hero-banner.webp", "clickUrl": f"/s/{HANDLE}/hero-banner/click",
    "createdAt": "2023-11-14T22:13:20.000Z", "updatedAt": "2023-11-14T22:13:21.000Z",
    "startedAt": "2023-11-14T22:13:22.000Z", "completedAt": None,
}


# ------------------------------------------------------------ proto -> JSON ----

def test_an_experiment_as_json() -> None:
    assert _experiments.experiment_json(_experiment(), "") == EXPECTED


def test_unset_fields_read_as_their_defaults_and_nulls() -> None:
    bare = pb.Experiment(id=EXP, name="n", slug="s", template_id=TPL, status="draft",
                         variants=[pb.Variant(id="a", weight=10000)])
    out = _experiments.experiment_json(bare, "")
    assert out["variants"] == [{"id": "a", "name": "a", "templateId": None, "variables": {},
                                "weight": 10000, "control": False}]
    assert out["goal"] == {"type": "impressions_only"}
    assert out["bandit"] == {"enabled": False, "algorithm": "thompson_sampling",
                             "warmupImpressions": 0}
    assert out["output"] == {"format": "png"}
    assert (out["winnerVariantId"], out["servingWeights"], out["createdAt"],
            out["startedAt"], out["completedAt"]) == (None, {}, None, None, None)
    done = _experiments.experiment_json(_experiment(
        status="completed", winner_variant_id="b", end_time=_ts(1_700_000_003)), "")
    assert done["winnerVariantId"] == "b" and done["completedAt"] == "2023-11-14T22:13:23.000Z"


def test_the_answer_matches_the_documents_experiment_schema() -> None:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    doc = load_document()
    registry: Registry[Any] = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012))
    for name, value in (("Experiment", EXPECTED),
                        ("ExperimentStats", _experiments.stats_json(STATS))):
        validator = Draft202012Validator({"$ref": f"urn:doc#/components/schemas/{name}"},
                                         registry=registry)
        assert not list(validator.iter_errors(value)), name


STATS = pb.GetExperimentStatsResponse(
    experiment_id=EXP, status="running", minimum_sample_size=100, confidence_threshold=0.9,
    minimum_sample_reached=True, confidence_reached=True, recommended_winner_variant_id="b",
    draws=100_000,
    variants=[pb.VariantStats(variant_id="a", name="Control", control=True, impressions=200,
                              clicks=10, conversions=1, bot_impressions=3,
                              conversion_rate=0.05, interval_low=0.02, interval_high=0.09,
                              probability_to_be_best=0.04, expected_loss=0.03,
                              serving_weight=5000),
              pb.VariantStats(variant_id="b", name="Bold", impressions=210, clicks=25,
                              conversion_rate=0.119, interval_low=0.08, interval_high=0.17,
                              probability_to_beat_control=0.96, probability_to_be_best=0.96,
                              expected_loss=0.0005, serving_weight=5000)])


def test_stats_as_json() -> None:
    assert _experiments.stats_json(STATS) == {
        "experimentId": EXP, "status": "running", "minimumSampleSize": 100,
        "confidenceThreshold": 0.9, "minimumSampleReached": True, "confidenceReached": True,
        "recommendedWinnerVariantId": "b", "draws": 100_000,
        "variants": [
            {"variantId": "a", "name": "Control", "control": True, "impressions": 200,
             "clicks": 10, "conversions": 1, "botImpressions": 3, "conversionRate": 0.05,
             "interval": {"low": 0.02, "high": 0.09, "level": 0.95},
             "probabilityToBeatControl": 0.0, "probabilityToBeBest": 0.04,
             "expectedLoss": 0.03, "servingWeight": 5000},
            {"variantId": "b", "name": "Bold", "control": False, "impressions": 210,
             "clicks": 25, "conversions": 0, "botImpressions": 0, "conversionRate": 0.119,
             "interval": {"low": 0.08, "high": 0.17, "level": 0.95},
             "probabilityToBeatControl": 0.96, "probabilityToBeBest": 0.96,
             "expectedLoss": 0.0005, "servingWeight": 5000}]}
    empty = _experiments.stats_json(pb.GetExperimentStatsResponse(experiment_id=EXP))
    assert empty["recommendedWinnerVariantId"] is None and empty["variants"] == []


# ------------------------------------------------------------ JSON -> proto ----

FULL: dict[str, Any] = {
    "name": "hero banner", "slug": "hero-banner", "templateId": TPL,
    "variants": [
        {"id": "a", "name": "Control", "variables": {"title": "Hi"}, "weight": 3000,
         "control": True},
        {"id": "b", "templateId": TPL_B, "variables": {"title": "HELLO", "list": [1, 2]},
         "weight": 7000},
        {"id": "c_3", "templateId": None, "weight": 0},
    ],
    "goal": {"type": "click_through", "destinationUrl": "https://shop.example.com/x"},
    "bandit": {"enabled": True, "algorithm": "thompson_sampling", "warmupImpressions": 250},
    "minimumSampleSize": 400, "confidenceThreshold": 0.99,
    "output": {"format": "webp", "quality": 80, "width": 600, "deviceScaleFactor": 2,
               "assets": "strict"},
}


def test_a_create_body_as_a_spec() -> None:
    RequestValidator(load_document()).check_body("createExperiment", FULL)
    spec = _experiments.experiment_spec(FULL)
    assert (spec.name, spec.slug, spec.template_id) == ("hero banner", "hero-banner", TPL)
    assert spec.has_variants
    a, b, c = spec.variants
    assert (a.id, a.name, a.template_id, a.weight, a.control) == ("a", "Control", "", 3000, True)
    assert json.loads(a.variables_json) == {"title": "Hi"}
    assert (b.id, b.name, b.template_id, b.weight, b.control) == ("b", "", TPL_B, 7000, False)
    assert json.loads(b.variables_json) == {"title": "HELLO", "list": [1, 2]}
    # Absent variables are the service's default ({}); null templateId is the experiment's.
    assert (c.id, c.template_id, c.variables_json, c.weight) == ("c_3", "", "", 0)
    assert (spec.goal.type, spec.goal.destination_url) == (
        "click_through", "https://shop.example.com/x")
    assert (spec.bandit.enabled, spec.bandit.algorithm, spec.bandit.warmup_impressions) == (
        True, "thompson_sampling", 250)
    assert spec.minimum_sample_size == 400 and spec.confidence_threshold == 0.99
    assert spec.output.format == rpb.IMAGE_FORMAT_WEBP
    o = spec.output.options
    assert (o.quality, o.width, o.device_scale_factor, o.assets) == (
        80, 600, 2, rpb.ASSET_POLICY_STRICT)


def test_the_output_reads_back_as_it_was_given() -> None:
    made = _experiment(output=_experiments.experiment_spec(FULL).output)
    assert _experiments.experiment_json(made, "")["output"] == FULL["output"]
    pdf = {"format": "pdf", "pdf": {"preset": "A4", "landscape": True,
                                    "margins": {"top": "10mm"}}}
    made = _experiment(output=_experiments.experiment_output(pdf))
    assert _experiments.experiment_json(made, "")["output"] == pdf


def test_the_answers_variants_are_a_valid_update() -> None:
    # What GET answers can be sent back (a null templateId included).
    shown = _experiments.experiment_json(_experiment(), "")
    RequestValidator(load_document()).check_body("updateExperiment", {
        "variants": shown["variants"], "output": shown["output"], "goal": shown["goal"],
        "bandit": shown["bandit"], "name": shown["name"], "slug": shown["slug"]})


def test_an_update_sets_only_what_it_gives() -> None:
    spec = _experiments.experiment_spec({"name": "renamed"})
    assert spec.HasField("name") and spec.name == "renamed"
    for absent in ("slug", "template_id", "goal", "bandit", "minimum_sample_size",
                   "confidence_threshold", "output"):
        assert not spec.HasField(absent), absent
    assert not spec.has_variants and not spec.variants
    only_url = _experiments.experiment_spec({"goal": {"destinationUrl": "https://a.example/"}})
    assert only_url.HasField("goal") and only_url.goal.type == ""
    # Explicit zeroes are sent as set, not as absent.
    zero = _experiments.experiment_spec({"minimumSampleSize": 0, "confidenceThreshold": 0.5})
    assert zero.HasField("minimum_sample_size") and zero.minimum_sample_size == 0
    assert zero.HasField("confidence_threshold")


# -------------------------------------------------------------- over HTTP ----

async def test_create_answers_201_and_sends_the_callers_tenant(edge: Edge) -> None:
    edge.experiments.answers["CreateExperiment"] = pb.CreateExperimentResponse(
        experiment=_experiment(status="draft"))
    body = {**FULL, "output": {"format": "PNG"}}
    status, out, headers = await _call(edge, "POST", "/v1/experiments", json=body)
    assert status == 201, out
    assert out == {**EXPECTED, "status": "draft"}
    assert headers["Location"] == f"/v1/experiments/{EXP}"
    request = edge.experiments.only("CreateExperiment")
    assert request.tenant_id == "tenant-a" and request.spec.slug == "hero-banner"
    assert request.spec.output.format == rpb.IMAGE_FORMAT_PNG  # PNG folded to png
    assert len(request.spec.variants) == 3


async def test_another_keys_tenant_is_what_is_sent(edge: Edge) -> None:
    edge.experiments.answers.update(
        GetExperiment=errors.NotFound(f"no experiment {EXP}"),
        ListExperiments=pb.ListExperimentsResponse())
    status, problem, _ = await _call(edge, "GET", f"/v1/experiments/{EXP}", auth=edge.other)
    assert status == 404 and problem["detail"] == f"no experiment {EXP}"
    status, out, _ = await _call(edge, "GET", "/v1/experiments", auth=edge.other)
    assert status == 200 and out == {"experiments": [], "nextPageToken": None}
    assert [(n, r.tenant_id) for n, r in edge.experiments.calls] == [
        ("GetExperiment", "tenant-b"), ("ListExperiments", "tenant-b")]


async def test_list_passes_its_filters(edge: Edge) -> None:
    edge.experiments.answers["ListExperiments"] = pb.ListExperimentsResponse(
        experiments=[_experiment(status="paused")], next_page_token="next")
    status, out, _ = await _call(edge, "GET",
                                 "/v1/experiments?status=paused&pageSize=7&pageToken=t")
    assert status == 200 and out["nextPageToken"] == "next"
    assert [e["id"] for e in out["experiments"]] == [EXP]
    assert out["experiments"][0]["status"] == "paused"
    request = edge.experiments.only("ListExperiments")
    assert (request.tenant_id, request.status, request.page_size, request.page_token) == (
        "tenant-a", "paused", 7, "t")
    edge.experiments.calls.clear()
    status, _, _ = await _call(edge, "GET", "/v1/experiments")
    request = edge.experiments.only("ListExperiments")
    assert (request.status, request.page_size, request.page_token) == ("", 20, "")


async def test_every_verb_calls_its_rpc_with_the_tenant_and_id(edge: Edge) -> None:
    edge.experiments.answers.update(
        GetExperiment=pb.GetExperimentResponse(experiment=_experiment()),
        UpdateExperiment=pb.UpdateExperimentResponse(experiment=_experiment(name="renamed")),
        StartExperiment=pb.StartExperimentResponse(experiment=_experiment()),
        PauseExperiment=pb.PauseExperimentResponse(experiment=_experiment(status="paused")),
        CompleteExperiment=pb.CompleteExperimentResponse(experiment=_experiment(
            status="completed", winner_variant_id="b")),
        ArchiveExperiment=pb.ArchiveExperimentResponse(experiment=_experiment(
            status="archived", winner_variant_id="b")),
        GetExperimentStats=STATS,
        DeleteExperiment=pb.DeleteExperimentResponse())
    base = f"/v1/experiments/{EXP}"
    status, out, _ = await _call(edge, "GET", base)
    assert status == 200 and out == EXPECTED
    status, out, _ = await _call(edge, "PATCH", base, json={"name": "renamed"})
    assert status == 200 and out["name"] == "renamed"
    status, out, _ = await _call(edge, "POST", f"{base}/start")
    assert status == 200 and out["status"] == "running"
    status, out, _ = await _call(edge, "POST", f"{base}/pause")
    assert status == 200 and out["status"] == "paused"
    status, out, _ = await _call(edge, "POST", f"{base}/complete",
                                 json={"winnerVariantId": "b"})
    assert status == 200 and out["winnerVariantId"] == "b" and out["status"] == "completed"
    status, out, _ = await _call(edge, "POST", f"{base}/archive")
    assert status == 200 and out["status"] == "archived"
    status, out, _ = await _call(edge, "GET", f"{base}/stats")
    assert status == 200 and out == _experiments.stats_json(STATS)
    status, out, _ = await _call(edge, "DELETE", base)
    assert status == 204 and out is None
    assert [n for n, _ in edge.experiments.calls] == [
        "GetExperiment", "UpdateExperiment", "StartExperiment", "PauseExperiment",
        "CompleteExperiment", "ArchiveExperiment", "GetExperimentStats", "DeleteExperiment"]
    assert {(r.tenant_id, r.experiment_id) for _, r in edge.experiments.calls} == {
        ("tenant-a", EXP)}
    update = edge.experiments.calls[1][1]
    assert update.spec.name == "renamed" and not update.spec.HasField("slug")
    assert edge.experiments.calls[4][1].winner_variant_id == "b"


@pytest.mark.parametrize("body", [None, b"", b"{}"])
async def test_complete_without_a_winner_asks_for_the_recommended_one(
    edge: Edge, body: bytes | None
) -> None:
    edge.experiments.answers["CompleteExperiment"] = errors.FailedPrecondition(
        "no winner is recommended yet: the minimum sample is not reached; "
        "name winnerVariantId")
    kwargs: dict[str, Any] = {} if body is None else {
        "data": body, "headers": {"Content-Type": "application/json"}}
    status, problem, _ = await _call(edge, "POST", f"/v1/experiments/{EXP}/complete", **kwargs)
    assert status == 409 and "winnerVariantId" in problem["detail"]
    assert edge.experiments.only("CompleteExperiment").winner_variant_id == ""


# ------------------------------------------------ refused before any call ----

def _variants(*weights: int) -> list[dict[str, Any]]:
    return [{"id": f"v{i}", "weight": w} for i, w in enumerate(weights)]


BASE_BODY: dict[str, Any] = {"name": "n", "slug": "s", "templateId": TPL,
                             "variants": _variants(5000, 5000)}


@pytest.mark.parametrize(("changes", "field"), [
    ({"slug": "a" * 65}, "/slug"),
    ({"slug": "Has-Caps"}, "/slug"),
    ({"slug": "-lead"}, "/slug"),
    ({"slug": "trail-"}, "/slug"),
    ({"slug": "a/b"}, "/slug"),
    ({"slug": 7}, "/slug"),
    ({"name": ""}, "/name"),
    ({"name": "x" * 201}, "/name"),
    ({"templateId": "tpl_nope"}, "/templateId"),
    ({"variants": _variants(10000)}, "/variants"),
    ({"variants": _variants(*([100] * 101))}, "/variants"),
    ({"variants": "a,b"}, "/variants"),
    ({"variants": [{"id": "a", "weight": 5000}, {"id": "b c", "weight": 5000}]},
     "/variants/1/id"),
    ({"variants": [{"id": "a" * 65, "weight": 5000}, {"id": "b", "weight": 5000}]},
     "/variants/0/id"),
    ({"variants": [{"id": "a", "weight": 10001}, {"id": "b", "weight": 0}]},
     "/variants/0/weight"),
    ({"variants": [{"id": "a", "weight": -1}, {"id": "b", "weight": 10001}]},
     "/variants/1/weight"),
    ({"variants": [{"id": "a", "weight": 2500.5}, {"id": "b", "weight": 7499.5}]},
     "/variants/0/weight"),
    ({"variants": [{"id": "a", "weight": "5000"}, {"id": "b", "weight": 5000}]},
     "/variants/0/weight"),
    ({"variants": [{"id": "a"}, {"id": "b", "weight": 10000}]}, "/variants/0"),
    ({"variants": [{"id": "a", "weight": 5000, "variables": [1]},
                   {"id": "b", "weight": 5000}]}, "/variants/0/variables"),
    ({"variants": [{"id": "a", "weight": 5000, "control": "yes"},
                   {"id": "b", "weight": 5000}]}, "/variants/0/control"),
    ({"variants": [{"id": "a", "weight": 5000, "colour": "red"},
                   {"id": "b", "weight": 5000}]}, "colour"),
    ({"goal": {"type": "revenue"}}, "/goal/type"),
    ({"goal": {"type": "click_through", "destinationUrl": "https://a.example/" + "x" * 2000}},
     "/goal/destinationUrl"),
    ({"goal": {"type": "click_through", "url": "https://a.example/"}}, "url"),
    ({"bandit": {"algorithm": "epsilon_greedy"}}, "/bandit/algorithm"),
    ({"bandit": {"warmupImpressions": -1}}, "/bandit/warmupImpressions"),
    ({"bandit": {"enabled": 1}}, "/bandit/enabled"),
    ({"minimumSampleSize": 1_000_000_001}, "/minimumSampleSize"),
    ({"confidenceThreshold": 0.3}, "/confidenceThreshold"),
    ({"confidenceThreshold": 1}, "/confidenceThreshold"),
    ({"confidenceThreshold": "0.9"}, "/confidenceThreshold"),
    ({"output": {"format": "bmp"}}, "/output/format"),
    ({"output": {"quality": 101}}, "/output/quality"),
    ({"winner": "a"}, "winner"),
    ({"status": "running"}, "status"),
])
async def test_a_bad_create_is_a_422_naming_the_field_without_any_call(
    edge: Edge, changes: dict[str, Any], field: str
) -> None:
    status, problem, _ = await _call(edge, "POST", "/v1/experiments",
                                     json={**BASE_BODY, **changes})
    assert status == 422, problem
    assert problem["status"] == 422 and field in json.dumps(problem["errors"]), problem
    assert edge.experiments.calls == []


@pytest.mark.parametrize("missing", ["name", "slug", "templateId", "variants"])
async def test_a_create_without_a_required_field_names_it(edge: Edge, missing: str) -> None:
    body = {k: v for k, v in BASE_BODY.items() if k != missing}
    status, problem, _ = await _call(edge, "POST", "/v1/experiments", json=body)
    assert status == 422 and missing in json.dumps(problem["errors"]), problem
    assert edge.experiments.calls == []


@pytest.mark.parametrize(("raw", "status"), [
    (b"{not json", 400), (b'{"name": NaN}', 400), (b"[1, 2]", 422), (b'"text"', 422),
    (b"", 422), (b'{"name": "a\\ud800"}', 422),
])
async def test_a_body_that_is_not_an_object_is_refused_without_any_call(
    edge: Edge, raw: bytes, status: int
) -> None:
    for method, path in (("POST", "/v1/experiments"), ("PATCH", f"/v1/experiments/{EXP}")):
        got, _, _ = await _call(edge, method, path, data=raw,
                                headers={"Content-Type": "application/json"})
        assert got == status, (method, raw)
    assert edge.experiments.calls == []


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("PATCH", f"/v1/experiments/{EXP}", {}, "/"),
    ("PATCH", f"/v1/experiments/{EXP}", {"status": "running"}, "status"),
    ("PATCH", f"/v1/experiments/{EXP}", {"slug": "UPPER"}, "/slug"),
    ("PATCH", f"/v1/experiments/{EXP}", {"variants": _variants(10000)}, "/variants"),
    ("POST", f"/v1/experiments/{EXP}/complete", {"winnerVariantId": "a b"},
     "/winnerVariantId"),
    ("POST", f"/v1/experiments/{EXP}/complete", {"winnerVariantId": ""}, "/winnerVariantId"),
    ("POST", f"/v1/experiments/{EXP}/complete", {"winner": "a"}, "winner"),
])
async def test_bad_update_and_complete_bodies_are_refused(
    edge: Edge, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    status, problem, _ = await _call(edge, method, path, json=body)
    assert status == 422 and field in json.dumps(problem["errors"]), problem
    assert edge.experiments.calls == []


@pytest.mark.parametrize(("query", "field"), [
    ("status=done", "status"), ("status=RUNNING", "status"), ("status=", "status"),
    ("pageSize=0", "pageSize"), ("pageSize=101", "pageSize"), ("pageSize=ten", "pageSize"),
    ("pageToken=" + "t" * 513, "pageToken"),
])
async def test_list_filters_are_checked_before_any_call(
    edge: Edge, query: str, field: str
) -> None:
    status, problem, _ = await _call(edge, "GET", f"/v1/experiments?{query}")
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == [field]
    assert edge.experiments.calls == []


@pytest.mark.parametrize("experiment_id", [
    "exp_short", "bnd_" + "a" * 22, "exp_" + "a" * 23, "exp_" + "a" * 21 + "!", TPL])
async def test_a_malformed_id_is_refused_without_any_call(
    edge: Edge, experiment_id: str
) -> None:
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/start"),
                           ("POST", "/pause"), ("POST", "/complete"), ("POST", "/archive"),
                           ("GET", "/stats")):
        status, problem, _ = await _call(edge, method,
                                         f"/v1/experiments/{experiment_id}{suffix}")
        assert status == 422, (method, suffix, problem)
        assert problem["errors"][0]["field"] == "experimentId"
    assert edge.experiments.calls == []


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/experiments"), ("POST", "/v1/experiments"),
    ("GET", f"/v1/experiments/{EXP}"), ("POST", f"/v1/experiments/{EXP}/start"),
    ("GET", f"/v1/experiments/{EXP}/stats"), ("DELETE", f"/v1/experiments/{EXP}"),
])
async def test_every_experiment_path_needs_a_key(edge: Edge, method: str, path: str) -> None:
    status, _, _ = await _call(edge, method, path, auth={})
    assert status == 401 and edge.experiments.calls == []


# ------------------------------------------------- the service's errors ----

@pytest.mark.parametrize(("error", "status"), [
    (errors.InvalidArgument("the experiment is invalid", errors=[
        errors.FieldError("variants", "the weights sum to 9000, not 10000"),
        errors.FieldError("variants[1].id", "duplicates variants[0].id")]), 422),
    (errors.NotFound("no such experiment"), 404),
    (errors.AlreadyExists("the slug is taken", errors=[
        errors.FieldError("slug", "is taken by another experiment")]), 409),
    (errors.Conflict("the experiment changed meanwhile; retry"), 409),
    (errors.FailedPrecondition("the experiment is running: pause it first"), 409),
    (errors.ResourceExhausted("at most 1000 experiments (LITHO_EXPERIMENT_MAX_PER_TENANT)"),
     429),
])
async def test_service_errors_are_problems(
    edge: Edge, error: errors.LithoError, status: int
) -> None:
    edge.experiments.answers["CreateExperiment"] = error
    got, problem, headers = await _call(edge, "POST", "/v1/experiments", json=BASE_BODY)
    assert got == status and problem["status"] == status
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["detail"] == error.message
    assert problem.get("errors", []) == [e.to_json() for e in error.errors]
    if status == 429:
        assert "Retry-After" in headers


async def test_without_the_experiment_service_it_is_a_503(edge: Edge) -> None:
    edge.deps.experiments = None
    for method, path in (("GET", "/v1/experiments"), ("GET", f"/v1/experiments/{EXP}"),
                         ("POST", "/v1/experiments")):
        status, problem, _ = await _call(edge, method, path,
                                         json=BASE_BODY if method == "POST" else None)
        assert status == 503, (method, path, problem)
    assert edge.experiments.calls == []
