"""gRPC translation for the experiment service: proto in, domain call, proto
out. Domain errors become gRPC status in ``litho.rpc``'s interceptor."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from litho import formats
from litho.experiment.v1 import experiment_pb2 as pb
from litho.experiment.v1 import experiment_pb2_grpc as pb_grpc
from litho.renderer.v1 import renderer_pb2
from services.experiment._experiments import Experiments
from services.experiment._model import (
    BanditInput,
    Experiment,
    ExperimentSpec,
    ExperimentStats,
    GoalInput,
    Output,
    VariantInput,
    invalid,
)
from services.experiment._serving import MAX_EVENTS, EventInput, Serving

Context = grpc.aio.ServicerContext[Any, Any]


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def output_in(o: pb.ExperimentOutput) -> Output:
    """The output as the domain takes it. A format enum Litho does not know
    becomes a name no format has, which the domain reports (``output.format``)
    together with the request's other problems."""
    if o.format == renderer_pb2.IMAGE_FORMAT_UNSPECIFIED:
        name = "png"
    else:
        known = formats.by_enum(o.format)
        name = known.name if known is not None else f"ImageFormat {int(o.format)}"
    return Output(format=name, options_json=json_format.MessageToJson(o.options, indent=None))


def output_out(o: Output) -> pb.ExperimentOutput:
    known = formats.by_name(o.format)
    options = renderer_pb2.RenderOptions()
    json_format.Parse(o.options_json or "{}", options, ignore_unknown_fields=True)
    return pb.ExperimentOutput(
        format=known.enum if known else renderer_pb2.IMAGE_FORMAT_PNG, options=options)


def spec_in(s: pb.ExperimentSpec) -> ExperimentSpec:
    return ExperimentSpec(
        name=s.name if s.HasField("name") else None,
        slug=s.slug if s.HasField("slug") else None,
        template_id=s.template_id if s.HasField("template_id") else None,
        variants=[VariantInput(id=v.id, name=v.name, template_id=v.template_id,
                               variables_json=v.variables_json, weight=v.weight,
                               control=v.control) for v in s.variants]
        if s.has_variants or s.variants else None,
        goal=GoalInput(type=s.goal.type, destination_url=s.goal.destination_url)
        if s.HasField("goal") else None,
        bandit=BanditInput(enabled=s.bandit.enabled, algorithm=s.bandit.algorithm,
                           warmup_impressions=s.bandit.warmup_impressions)
        if s.HasField("bandit") else None,
        minimum_sample_size=s.minimum_sample_size
        if s.HasField("minimum_sample_size") else None,
        confidence_threshold=s.confidence_threshold
        if s.HasField("confidence_threshold") else None,
        output=output_in(s.output) if s.HasField("output") else None,
    )


def experiment_out(e: Experiment) -> pb.Experiment:
    return pb.Experiment(
        id=e.id, tenant_id=e.tenant_id, name=e.name, slug=e.slug, template_id=e.template_id,
        variants=[pb.Variant(id=v.id, name=v.name, template_id=v.template_id,
                             variables_json=v.variables_json, weight=v.weight,
                             control=v.control) for v in e.variants],
        goal=pb.Goal(type=e.goal.type, destination_url=e.goal.destination_url),
        bandit=pb.Bandit(enabled=e.bandit.enabled, algorithm=e.bandit.algorithm,
                         warmup_impressions=e.bandit.warmup_impressions),
        minimum_sample_size=e.minimum_sample_size,
        confidence_threshold=e.confidence_threshold, output=output_out(e.output),
        status=e.status, winner_variant_id=e.winner_variant_id,
        tenant_handle=e.tenant_handle, create_time=_timestamp(e.created_at),
        update_time=_timestamp(e.updated_at), start_time=_timestamp(e.started_at),
        end_time=_timestamp(e.ended_at), serving_weights=dict(e.serving_weights))


def stats_out(s: ExperimentStats) -> pb.GetExperimentStatsResponse:
    return pb.GetExperimentStatsResponse(
        experiment_id=s.experiment_id, status=s.status,
        variants=[pb.VariantStats(
            variant_id=v.variant_id, name=v.name, control=v.control,
            impressions=v.impressions, clicks=v.clicks, conversions=v.conversions,
            bot_impressions=v.bot_impressions, conversion_rate=v.conversion_rate,
            interval_low=v.interval_low, interval_high=v.interval_high,
            probability_to_beat_control=v.probability_to_beat_control,
            probability_to_be_best=v.probability_to_be_best, expected_loss=v.expected_loss,
            serving_weight=v.serving_weight) for v in s.variants],
        minimum_sample_size=s.minimum_sample_size,
        confidence_threshold=s.confidence_threshold,
        minimum_sample_reached=s.minimum_sample_reached,
        confidence_reached=s.confidence_reached,
        recommended_winner_variant_id=s.recommended_winner_variant_id, draws=s.draws)


class ExperimentServicer(pb_grpc.ExperimentServiceServicer):
    def __init__(self, experiments: Experiments, serving: Serving | None = None) -> None:
        self._experiments = experiments
        self._serving = serving or Serving(experiments.store, experiments.events,
                                           clock=experiments.clock)

    async def CreateExperiment(self, request: pb.CreateExperimentRequest,
                               context: Context) -> pb.CreateExperimentResponse:
        e = await self._experiments.create(request.tenant_id, spec_in(request.spec))
        return pb.CreateExperimentResponse(experiment=experiment_out(e))

    async def GetExperiment(self, request: pb.GetExperimentRequest,
                            context: Context) -> pb.GetExperimentResponse:
        e = await self._experiments.get(request.tenant_id, request.experiment_id)
        return pb.GetExperimentResponse(experiment=experiment_out(e))

    async def ListExperiments(self, request: pb.ListExperimentsRequest,
                              context: Context) -> pb.ListExperimentsResponse:
        items, token = await self._experiments.list_experiments(
            request.tenant_id, page_size=request.page_size, page_token=request.page_token,
            status=request.status)
        return pb.ListExperimentsResponse(experiments=[experiment_out(e) for e in items],
                                          next_page_token=token)

    async def UpdateExperiment(self, request: pb.UpdateExperimentRequest,
                               context: Context) -> pb.UpdateExperimentResponse:
        e = await self._experiments.update(request.tenant_id, request.experiment_id,
                                           spec_in(request.spec))
        return pb.UpdateExperimentResponse(experiment=experiment_out(e))

    async def DeleteExperiment(self, request: pb.DeleteExperimentRequest,
                               context: Context) -> pb.DeleteExperimentResponse:
        await self._experiments.delete(request.tenant_id, request.experiment_id)
        return pb.DeleteExperimentResponse()

    async def StartExperiment(self, request: pb.StartExperimentRequest,
                              context: Context) -> pb.StartExperimentResponse:
        e = await self._experiments.start(request.tenant_id, request.experiment_id)
        return pb.StartExperimentResponse(experiment=experiment_out(e))

    async def PauseExperiment(self, request: pb.PauseExperimentRequest,
                              context: Context) -> pb.PauseExperimentResponse:
        e = await self._experiments.pause(request.tenant_id, request.experiment_id)
        return pb.PauseExperimentResponse(experiment=experiment_out(e))

    async def CompleteExperiment(self, request: pb.CompleteExperimentRequest,
                                 context: Context) -> pb.CompleteExperimentResponse:
        e = await self._experiments.complete(request.tenant_id, request.experiment_id,
                                             request.winner_variant_id)
        return pb.CompleteExperimentResponse(experiment=experiment_out(e))

    async def ArchiveExperiment(self, request: pb.ArchiveExperimentRequest,
                                context: Context) -> pb.ArchiveExperimentResponse:
        e = await self._experiments.archive(request.tenant_id, request.experiment_id)
        return pb.ArchiveExperimentResponse(experiment=experiment_out(e))

    async def GetExperimentStats(self, request: pb.GetExperimentStatsRequest,
                                 context: Context) -> pb.GetExperimentStatsResponse:
        return stats_out(await self._experiments.stats(request.tenant_id,
                                                       request.experiment_id))

    async def ResolveExperiment(self, request: pb.ResolveExperimentRequest,
                                context: Context) -> pb.ResolveExperimentResponse:
        resolved = await self._serving.resolve(request.tenant_handle, request.slug)
        return pb.ResolveExperimentResponse(
            experiment=experiment_out(resolved.experiment),
            epochs=[pb.WeightEpoch(since=_timestamp(e.since), weights=dict(e.weights))
                    for e in resolved.epochs])

    async def RecordEvents(self, request: pb.RecordEventsRequest,
                           context: Context) -> pb.RecordEventsResponse:
        if len(request.events) > MAX_EVENTS:  # before anything is converted
            raise invalid("events", f"must hold 1 to {MAX_EVENTS} events, "
                                    f"got {len(request.events)}")
        accepted = await self._serving.record(request.tenant_id, [
            EventInput(type=e.type, experiment=e.experiment, variant_id=e.variant_id,
                       vid=e.vid, event_id=e.event_id) for e in request.events])
        return pb.RecordEventsResponse(accepted=accepted)
