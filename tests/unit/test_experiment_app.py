"""The experiment service as it runs: its composition root in this process,
with the real template service behind it and a real ``nats-server``, driven
over gRPC."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError

from litho import messaging, rpc
from litho.docstore import open_document_store
from litho.errors import AlreadyExists, Conflict, FailedPrecondition, InvalidArgument, NotFound
from litho.experiment.v1 import experiment_pb2 as pb
from litho.experiment.v1 import experiment_pb2_grpc as pb_grpc
from litho.renderer.v1 import renderer_pb2
from litho.service import Endpoints, running
from litho.streams import COUNTS_STREAM, EVENTS_STREAM, JOBS_STREAM
from litho.template.v1 import template_pb2 as tpb
from litho.template.v1 import template_pb2_grpc as tpb_grpc
from services import _registry
from services.experiment._model import tenant_handle
from services.experiment._settings import ExperimentSettings
from services.template._settings import TemplateSettings
from tests.support.nats_server import NatsServer, start_nats

TENANT, OTHER = "t-experiments", "t-other"


@dataclass
class Service:
    stub: pb_grpc.ExperimentServiceAsyncStub
    #: The same server without ``litho.rpc``'s client interceptors: raw status codes.
    raw: pb_grpc.ExperimentServiceAsyncStub
    template_id: str
    other_template_id: str
    docstore_url: str
    nats_url: str = ""


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    started = start_nats(tmp_path_factory.mktemp("nats-experiment"))
    try:
        yield started
    finally:
        started.stop()


@pytest_asyncio.fixture
async def service(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Service]:
    async with run_service(tmp_path, nats_server) as running_service:
        yield running_service


async def fresh_streams(nats_url: str) -> None:
    """No stream (nor the counter's consumer) left by an earlier test."""
    async with contextlib.AsyncExitStack() as stack:
        js = (await messaging.connect(stack, nats_url, name="experiment-test")).jetstream()
        for name in (EVENTS_STREAM, JOBS_STREAM, COUNTS_STREAM):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)


@contextlib.asynccontextmanager
async def run_service(tmp_path: Path, nats_server: NatsServer,
                      **overrides: Any) -> AsyncIterator[Service]:
    """The template and experiment services, the latter with ``overrides`` of its settings."""
    await fresh_streams(nats_server.url)
    async with contextlib.AsyncExitStack() as stack:
        registry = _registry.registry()
        template_spec = registry["template"]
        template_root = _registry.app(template_spec)
        template_host = await stack.enter_async_context(running(
            template_spec, TemplateSettings(data_dir=tmp_path / "template",
                                            nats_url=nats_server.url),
            template_root.build, endpoints=Endpoints(listen="127.0.0.1:0")))
        template_target = f"127.0.0.1:{template_host.grpc_port}"
        experiment_spec = registry["experiment"]
        experiment_root = _registry.app(experiment_spec)
        settings = ExperimentSettings(data_dir=tmp_path / "experiment", shutdown_grace=2.0,
                                      nats_url=nats_server.url, **overrides)
        host = await stack.enter_async_context(running(
            experiment_spec, settings, experiment_root.build,
            endpoints=Endpoints(listen="127.0.0.1:0", targets={"template": template_target})))
        target = f"127.0.0.1:{host.grpc_port}"
        channel = await rpc.open_channel(stack, target, default_deadline=10.0)
        raw_channel = grpc.aio.insecure_channel(target)
        stack.push_async_callback(raw_channel.close)
        templates = tpb_grpc.TemplateServiceStub(
            await rpc.open_channel(stack, template_target, default_deadline=10.0))
        made = []
        for tenant in (TENANT, OTHER):
            made.append(await templates.CreateTemplate(tpb.CreateTemplateRequest(
                tenant_id=tenant, spec=tpb.TemplateSpec(
                    name="banner", html="<p>{{ colour }}</p>", width=200, height=100))))
        yield Service(pb_grpc.ExperimentServiceStub(channel),
                      pb_grpc.ExperimentServiceStub(raw_channel), made[0].template.id,
                      made[1].template.id, settings.docstore_location("experiment"),
                      nats_server.url)


def create_request(service: Service, *, slug: str = "spring-sale",
                   tenant_id: str = TENANT, **spec: Any) -> pb.CreateExperimentRequest:
    base: dict[str, Any] = {
        "name": "Spring sale", "slug": slug, "template_id": service.template_id,
        "variants": [pb.Variant(id="a", name="Red", variables_json='{"colour": "red"}',
                                weight=5000, control=True),
                     pb.Variant(id="b", variables_json='{"colour": "blue"}', weight=5000)],
        "has_variants": True,
        "goal": pb.Goal(type="click_through", destination_url="https://shop.example/sale"),
        "output": pb.ExperimentOutput(format=renderer_pb2.IMAGE_FORMAT_WEBP,
                                      options=renderer_pb2.RenderOptions(width=300)),
    }
    base.update(spec)
    return pb.CreateExperimentRequest(tenant_id=tenant_id, spec=pb.ExperimentSpec(**base))


async def test_create_get_list_start_stats_complete(service: Service) -> None:
    created = (await service.stub.CreateExperiment(create_request(service))).experiment
    assert created.id.startswith("exp_") and created.status == "draft"
    assert created.tenant_id == TENANT and created.tenant_handle == tenant_handle(TENANT)
    assert [(v.id, v.name, v.control) for v in created.variants] == [
        ("a", "Red", True), ("b", "b", False)]
    assert json.loads(created.variants[1].variables_json) == {"colour": "blue"}
    assert created.goal.type == "click_through"
    assert created.bandit.algorithm == "thompson_sampling"
    assert created.minimum_sample_size == 1000 and created.confidence_threshold == 0.95
    assert created.output.format == renderer_pb2.IMAGE_FORMAT_WEBP
    assert created.output.options.width == 300
    assert dict(created.serving_weights) == {"a": 5000, "b": 5000}
    assert created.HasField("create_time") and not created.HasField("start_time")

    got = (await service.stub.GetExperiment(pb.GetExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment
    assert got == created
    listed = await service.stub.ListExperiments(pb.ListExperimentsRequest(tenant_id=TENANT))
    assert [e.id for e in listed.experiments] == [created.id]
    assert listed.next_page_token == ""

    started = (await service.stub.StartExperiment(pb.StartExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment
    assert started.status == "running" and started.HasField("start_time")
    paused = (await service.stub.PauseExperiment(pb.PauseExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment
    assert paused.status == "paused"
    renamed = (await service.stub.UpdateExperiment(pb.UpdateExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id,
        spec=pb.ExperimentSpec(name="Renamed", confidence_threshold=0.9)))).experiment
    assert renamed.name == "Renamed" and renamed.confidence_threshold == 0.9

    # Counters as the later step's consumer writes them, in the service's own store.
    store = await open_document_store(service.docstore_url, "litho")
    try:
        for variant, clicks in (("a", 100), ("b", 130)):
            await store.collection("experiment_counters").insert({
                "_id": f"{created.id}:{variant}", "tenantId": TENANT,
                "experimentId": created.id, "variantId": variant, "impressions": 1000,
                "clicks": clicks, "conversions": 0, "botImpressions": 3})
    finally:
        await store.close()
    stats = await service.stub.GetExperimentStats(pb.GetExperimentStatsRequest(
        tenant_id=TENANT, experiment_id=created.id))
    assert stats.experiment_id == created.id and stats.status == "paused"
    assert stats.draws == 100_000 and stats.minimum_sample_reached
    assert stats.recommended_winner_variant_id == "b"
    a, b = stats.variants
    assert (a.variant_id, a.name, a.control, a.impressions, a.clicks, a.bot_impressions) == (
        "a", "Red", True, 1000, 100, 3)
    assert b.conversion_rate == pytest.approx(0.13)
    assert b.probability_to_beat_control == pytest.approx(0.98, abs=0.01)
    assert a.interval_low < 0.1 < a.interval_high and b.serving_weight == 5000

    completed = (await service.stub.CompleteExperiment(pb.CompleteExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment
    assert completed.status == "completed" and completed.winner_variant_id == "b"
    assert completed.HasField("end_time")
    assert dict(completed.serving_weights) == {"a": 0, "b": 10_000}
    archived = (await service.stub.ArchiveExperiment(pb.ArchiveExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment
    assert archived.status == "archived"
    await service.stub.DeleteExperiment(pb.DeleteExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))
    with pytest.raises(NotFound):
        await service.stub.GetExperiment(pb.GetExperimentRequest(
            tenant_id=TENANT, experiment_id=created.id))


async def test_errors_cross_the_wire_as_domain_errors(service: Service) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.CreateExperiment(create_request(
            service, variants=[pb.Variant(id="a", weight=5000),
                               pb.Variant(id="b", weight=4000)]))
    assert [e.field for e in caught.value.errors] == ["variants"]
    # Another tenant's template is as missing as none: checked by the real template service.
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.CreateExperiment(create_request(
            service, template_id=service.other_template_id))
    assert [e.field for e in caught.value.errors] == ["templateId"]
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.CreateExperiment(create_request(
            service, output=pb.ExperimentOutput(format=99)))  # type: ignore[arg-type]
    assert [e.field for e in caught.value.errors] == ["output.format"]
    created = (await service.stub.CreateExperiment(create_request(service))).experiment
    with pytest.raises(AlreadyExists):
        await service.stub.CreateExperiment(create_request(service))
    with pytest.raises(Conflict, match="pause needs it running"):
        await service.stub.PauseExperiment(pb.PauseExperimentRequest(
            tenant_id=TENANT, experiment_id=created.id))
    await service.stub.StartExperiment(pb.StartExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))
    with pytest.raises(FailedPrecondition, match="winnerVariantId"):
        await service.stub.CompleteExperiment(pb.CompleteExperimentRequest(
            tenant_id=TENANT, experiment_id=created.id))
    with pytest.raises(Conflict) as refused:
        await service.stub.UpdateExperiment(pb.UpdateExperimentRequest(
            tenant_id=TENANT, experiment_id=created.id,
            spec=pb.ExperimentSpec(variants=[pb.Variant(id="x")], has_variants=True)))
    assert [e.field for e in refused.value.errors] == ["variants"]
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.ListExperiments(pb.ListExperimentsRequest(
            tenant_id=TENANT, status="done"))
    assert [e.field for e in caught.value.errors] == ["status"]


async def test_a_bad_output_format_is_reported_with_the_other_problems(
        service: Service) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.CreateExperiment(create_request(
            service, name="", slug="Bad Slug",
            output=pb.ExperimentOutput(format=99)))  # type: ignore[arg-type]
    assert sorted(e.field for e in caught.value.errors) == ["name", "output.format", "slug"]
    message = next(e.message for e in caught.value.errors if e.field == "output.format")
    assert "png" in message and "webp" in message
    created = (await service.stub.CreateExperiment(create_request(service))).experiment
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.UpdateExperiment(pb.UpdateExperimentRequest(
            tenant_id=TENANT, experiment_id=created.id, spec=pb.ExperimentSpec(
                minimum_sample_size=-1, output=pb.ExperimentOutput(format=42))))  # type: ignore[arg-type]
    assert sorted(e.field for e in caught.value.errors) == ["minimumSampleSize",
                                                            "output.format"]


async def test_status_codes_on_the_wire(service: Service) -> None:
    created = (await service.stub.CreateExperiment(create_request(service))).experiment
    raw, ident = service.raw, {"tenant_id": TENANT, "experiment_id": created.id}

    async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        return caught.value.code()

    assert await code_of(raw.CreateExperiment(create_request(service, slug="Bad Slug"))) == (
        grpc.StatusCode.INVALID_ARGUMENT)
    assert await code_of(raw.CreateExperiment(create_request(service))) == (
        grpc.StatusCode.ALREADY_EXISTS)
    assert await code_of(raw.GetExperiment(pb.GetExperimentRequest(
        tenant_id=OTHER, experiment_id=created.id))) == grpc.StatusCode.NOT_FOUND
    await raw.StartExperiment(pb.StartExperimentRequest(**ident))
    assert await code_of(raw.CompleteExperiment(pb.CompleteExperimentRequest(**ident))) == (
        grpc.StatusCode.FAILED_PRECONDITION)
    assert await code_of(raw.ArchiveExperiment(pb.ArchiveExperimentRequest(**ident))) == (
        grpc.StatusCode.ABORTED)


async def test_another_tenant_sees_nothing(service: Service) -> None:
    created = (await service.stub.CreateExperiment(create_request(service))).experiment
    ident = {"tenant_id": OTHER, "experiment_id": created.id}
    stub = service.stub
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: stub.GetExperiment(pb.GetExperimentRequest(**ident)),
        lambda: stub.UpdateExperiment(pb.UpdateExperimentRequest(
            **ident, spec=pb.ExperimentSpec(name="mine"))),
        lambda: stub.StartExperiment(pb.StartExperimentRequest(**ident)),
        lambda: stub.GetExperimentStats(pb.GetExperimentStatsRequest(**ident)),
        lambda: stub.DeleteExperiment(pb.DeleteExperimentRequest(**ident)),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call()
    assert (await stub.GetExperiment(pb.GetExperimentRequest(
        tenant_id=TENANT, experiment_id=created.id))).experiment.name == "Spring sale"
    listed = await service.stub.ListExperiments(pb.ListExperimentsRequest(tenant_id=OTHER))
    assert list(listed.experiments) == []
    # The same slug in another tenant is its own experiment.
    theirs = (await service.stub.CreateExperiment(create_request(
        service, tenant_id=OTHER, template_id=service.other_template_id))).experiment
    assert theirs.slug == created.slug and theirs.tenant_handle != created.tenant_handle


async def test_the_settings_reach_the_domain(tmp_path: Path, nats_server: NatsServer) -> None:
    async with run_service(tmp_path, nats_server, experiment_max_per_tenant=1,
                           experiment_stats_draws=1000) as service:
        created = (await service.stub.CreateExperiment(create_request(service))).experiment
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.raw.CreateExperiment(create_request(service, slug="second"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "LITHO_EXPERIMENT_MAX_PER_TENANT" in (caught.value.details() or "")
        stats = await service.stub.GetExperimentStats(pb.GetExperimentStatsRequest(
            tenant_id=TENANT, experiment_id=created.id))
        assert stats.draws == 1000
