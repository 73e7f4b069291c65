"""``/v1/experiments``: the experiment service's A/B experiments translated
to JSON (that service owns the rules, the state machine and the statistics).

Variables are JSON objects in the API and JSON text on the wire; an output is
a format and the render options, as a binding's. Every call carries the
tenant of the caller's key: another tenant's experiment is a 404.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from litho import formats
from litho.errors import Unavailable
from litho.experiment.v1 import experiment_pb2 as pb
from litho.renderer.v1 import renderer_pb2
from services.gateway._formats import format_enum, options_from_json, options_to_json
from services.gateway._requests import integer, json_or, optional_time
from services.gateway._state import caller, deps
from services.gateway._validation import body as json_body
from services.gateway._validation import query as query_of

if TYPE_CHECKING:
    from litho.experiment.v1.experiment_pb2_grpc import ExperimentServiceAsyncStub

#: What an unset goal type or bandit algorithm means (the service's defaults).
DEFAULT_GOAL = "impressions_only"
DEFAULT_ALGORITHM = "thompson_sampling"
#: Impressions before a bandit first reweights, when the body leaves it out.
DEFAULT_WARMUP_IMPRESSIONS = 1000
#: The level of every interval GetExperimentStats answers.
INTERVAL_LEVEL = 0.95


def _stub(request: web.Request) -> ExperimentServiceAsyncStub:
    stub = deps(request).experiments
    if stub is None:
        raise Unavailable("the experiment service is not configured")
    return stub


# ---------------------------------------------------------------- JSON ----


def variant_json(v: pb.Variant) -> dict[str, Any]:
    return {"id": v.id, "name": v.name or v.id, "templateId": v.template_id or None,
            "variables": json_or(v.variables_json, {}), "weight": v.weight,
            "control": v.control}


def output_json(output: pb.ExperimentOutput) -> dict[str, Any]:
    fmt = formats.by_enum(output.format) or formats.DEFAULT
    return {"format": fmt.name, **options_to_json(output.options)}


def experiment_json(e: pb.Experiment, base_url: str) -> dict[str, Any]:
    """An experiment as the API shows it, with its public URLs."""
    goal: dict[str, Any] = {"type": e.goal.type or DEFAULT_GOAL}
    fmt = formats.by_enum(e.output.format) or formats.DEFAULT
    public = f"{base_url}/s/{e.tenant_handle}/{e.slug}"
    if e.goal.destination_url:
        goal["destinationUrl"] = e.goal.destination_url
    return {
        "id": e.id, "name": e.name, "slug": e.slug, "templateId": e.template_id,
        "variants": [variant_json(v) for v in e.variants],
        "goal": goal,
        "bandit": {"enabled": e.bandit.enabled,
                   "algorithm": e.bandit.algorithm or DEFAULT_ALGORITHM,
                   "warmupImpressions": e.bandit.warmup_impressions},
        "minimumSampleSize": e.minimum_sample_size,
        "confidenceThreshold": e.confidence_threshold,
        "output": output_json(e.output),
        "status": e.status,
        "winnerVariantId": e.winner_variant_id or None,
        "servingWeights": dict(e.serving_weights),
        "tenantHandle": e.tenant_handle,
        "imageUrl": f"{public}.{fmt.extension}",
        "clickUrl": f"{public}/click" if goal["type"] == "click_through" else None,
        "createdAt": optional_time(e, "create_time"),
        "updatedAt": optional_time(e, "update_time"),
        "startedAt": optional_time(e, "start_time"),
        "completedAt": optional_time(e, "end_time"),
    }


def stats_json(s: pb.GetExperimentStatsResponse) -> dict[str, Any]:
    return {
        "experimentId": s.experiment_id, "status": s.status,
        "minimumSampleSize": s.minimum_sample_size,
        "confidenceThreshold": s.confidence_threshold,
        "minimumSampleReached": s.minimum_sample_reached,
        "confidenceReached": s.confidence_reached,
        "recommendedWinnerVariantId": s.recommended_winner_variant_id or None,
        "draws": s.draws,
        "variants": [{
            "variantId": v.variant_id, "name": v.name or v.variant_id, "control": v.control,
            "impressions": v.impressions, "clicks": v.clicks, "conversions": v.conversions,
            "botImpressions": v.bot_impressions, "conversionRate": v.conversion_rate,
            "interval": {"low": v.interval_low, "high": v.interval_high,
                         "level": INTERVAL_LEVEL},
            "probabilityToBeatControl": v.probability_to_beat_control,
            "probabilityToBeBest": v.probability_to_be_best,
            "expectedLoss": v.expected_loss,
            "servingWeight": v.serving_weight,
        } for v in s.variants],
    }


def variant(value: dict[str, Any]) -> pb.Variant:
    """A (schema-checked) variant; what it leaves out is the service's default."""
    return pb.Variant(
        id=value.get("id", ""), name=value.get("name", ""),
        template_id=value.get("templateId") or "",
        variables_json=(json.dumps(value["variables"], ensure_ascii=False, separators=(",", ":"))
                        if "variables" in value else ""),
        weight=integer(value.get("weight", 0)), control=bool(value.get("control", False)))


def experiment_output(value: dict[str, Any]) -> pb.ExperimentOutput:
    """``output``: a format (unset: the service's default, png) and the render
    options of ``POST /v1/templates/{id}/render``."""
    fmt = value.get("format")
    return pb.ExperimentOutput(
        format=format_enum(fmt) if fmt else renderer_pb2.IMAGE_FORMAT_UNSPECIFIED,
        options=options_from_json({k: v for k, v in value.items() if k != "format"}))


def experiment_spec(body: dict[str, Any]) -> pb.ExperimentSpec:
    """The fields a (schema-checked) create or update body gives; what it
    leaves out stays unset, so an update keeps it."""
    spec = pb.ExperimentSpec()
    if "name" in body:
        spec.name = body["name"]
    if "slug" in body:
        spec.slug = body["slug"]
    if "templateId" in body:
        spec.template_id = body["templateId"]
    if "variants" in body:
        spec.variants.extend(variant(v) for v in body["variants"])
        spec.has_variants = True
    if "goal" in body:
        goal = body["goal"]
        spec.goal.CopyFrom(pb.Goal(type=goal.get("type", ""),
                                   destination_url=goal.get("destinationUrl", "")))
    if "bandit" in body:
        bandit = body["bandit"]
        spec.bandit.CopyFrom(pb.Bandit(
            enabled=bool(bandit.get("enabled", False)), algorithm=bandit.get("algorithm", ""),
            warmup_impressions=integer(bandit.get("warmupImpressions",
                                               DEFAULT_WARMUP_IMPRESSIONS))))
    if "minimumSampleSize" in body:
        spec.minimum_sample_size = integer(body["minimumSampleSize"])
    if "confidenceThreshold" in body:
        spec.confidence_threshold = float(body["confidenceThreshold"])
    if "output" in body:
        spec.output.CopyFrom(experiment_output(body["output"]))
    return spec


# ------------------------------------------------------------- handlers ----

def _ids(request: web.Request) -> tuple[str, str]:
    return caller(request).tenant_id, request.match_info["experimentId"]


async def create_experiment(request: web.Request) -> web.Response:
    response = await _stub(request).CreateExperiment(pb.CreateExperimentRequest(
        tenant_id=caller(request).tenant_id, spec=experiment_spec(json_body(request))))
    out = experiment_json(response.experiment, deps(request).base_url)
    return web.json_response(out, status=201,
                             headers={"Location": f"/v1/experiments/{out['id']}"})


async def list_experiments(request: web.Request) -> web.Response:
    query = query_of(request)
    response = await _stub(request).ListExperiments(pb.ListExperimentsRequest(
        tenant_id=caller(request).tenant_id, page_size=query.get("pageSize", 20),
        page_token=query.get("pageToken", ""), status=query.get("status", "")))
    return web.json_response({
        "experiments": [experiment_json(e, deps(request).base_url) for e in response.experiments],
        "nextPageToken": response.next_page_token or None})


async def get_experiment(request: web.Request) -> web.Response:
    tenant, experiment = _ids(request)
    response = await _stub(request).GetExperiment(pb.GetExperimentRequest(
        tenant_id=tenant, experiment_id=experiment))
    return web.json_response(experiment_json(response.experiment, deps(request).base_url))


async def update_experiment(request: web.Request) -> web.Response:
    tenant, experiment = _ids(request)
    response = await _stub(request).UpdateExperiment(pb.UpdateExperimentRequest(
        tenant_id=tenant, experiment_id=experiment, spec=experiment_spec(json_body(request))))
    return web.json_response(experiment_json(response.experiment, deps(request).base_url))


async def delete_experiment(request: web.Request) -> web.Response:
    tenant, experiment = _ids(request)
    await _stub(request).DeleteExperiment(pb.DeleteExperimentRequest(
        tenant_id=tenant, experiment_id=experiment))
    return web.Response(status=204)


async def start_experiment(request: web.Request) -> web.Response:
    tenant, experiment = _ids(request)
    response = await _stub(request).StartExperiment(pb.StartExperimentRequest(
        tenant_id=tenant, experiment_id=experiment))
    return web.json_response(experiment_json(response.experiment, deps(request).base_url))


async def pause_experiment(request: web.Request) -> web.Response:
    tenant, experiment = _ids(request)
    response = await _stub(request).PauseExperiment(pb.PauseExperimentRequest(
        tenant_id=tenant, experiment_id=experiment))
    return web.json_response(experiment_json(response.experiment, deps(request).base_url))


async def complete_experiment(request: web.Request) -> web.Response:
    """The body is optional: without ``winnerVariantId`` the service completes
    with the recommended winner, or refuses (409) when there is none yet."""
    tenant, experiment = _ids(request)
    response = await _stub(request).CompleteExperiment(pb.CompleteExperimentRequest(
        tenant_id=tenant, experiment_id=experiment,
        winner_variant_id=json_body(request).get("winnerVariantId", "")))
    return web.json_response(experiment_json(response.experiment, deps(request).base_url))


async def archive_experiment(request: web.Request) -> web.Response:
    tenant, experiment = _ids(request)
    response = await _stub(request).ArchiveExperiment(pb.ArchiveExperimentRequest(
        tenant_id=tenant, experiment_id=experiment))
    return web.json_response(experiment_json(response.experiment, deps(request).base_url))


async def get_experiment_stats(request: web.Request) -> web.Response:
    tenant, experiment = _ids(request)
    response = await _stub(request).GetExperimentStats(pb.GetExperimentStatsRequest(
        tenant_id=tenant, experiment_id=experiment))
    return web.json_response(stats_json(response))


async def record_events(request: web.Request) -> web.Response:
    """``POST /v1/events``: impressions, clicks and conversions a backend
    reports; the experiment service checks every event, then publishes each."""
    body = json_body(request)
    response = await _stub(request).RecordEvents(pb.RecordEventsRequest(
        tenant_id=caller(request).tenant_id,
        events=[pb.ExperimentEventInput(
            type=e["type"], experiment=e["experiment"], variant_id=e.get("variantId", ""),
            vid=e.get("vid", ""), event_id=e.get("eventId", "")) for e in body["events"]]))
    return web.json_response({"accepted": response.accepted})
