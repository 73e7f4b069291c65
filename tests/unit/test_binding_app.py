"""The binding service as it runs: its composition root in this process, with
the real template service (mapping), a real ``nats-server`` (events) and a
loopback data server, driven over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from litho import messaging, rpc
from litho.binding.v1 import binding_pb2 as pb
from litho.binding.v1 import binding_pb2_grpc as pb_grpc
from litho.config import OutboundSettings
from litho.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from litho.events.v1 import events_pb2
from litho.renderer.v1 import renderer_pb2
from litho.service import Endpoints, running
from litho.streams import EVENTS_STREAM, JOBS_STREAM
from litho.template.v1 import template_pb2 as tpb
from litho.template.v1 import template_pb2_grpc as tpb_grpc
from services import _registry
from services.binding._adapters import SUBJECT_FAILED, SUBJECT_UPDATED, updated_msg_id
from services.binding._secrets import sign_push
from services.binding._settings import BindingSettings
from services.template._settings import TemplateSettings
from tests.support.nats_server import NatsServer, start_nats
from tests.unit.test_binding_domain import DataServer
from tests.unit.test_binding_domain import server as server

TENANT = "t-bindings"
KEY = "binding-test-key-" + "x" * 32


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    started = start_nats(tmp_path_factory.mktemp("nats-binding"))
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Service:
    stub: pb_grpc.BindingServiceAsyncStub
    templates: tpb_grpc.TemplateServiceAsyncStub
    events: asyncio.Queue[Msg]
    template_id: str


@pytest_asyncio.fixture
async def service(server: DataServer, nats_server: NatsServer,
                  tmp_path: Path) -> AsyncIterator[Service]:
    async with run_service(server, nats_server, tmp_path) as running_service:
        yield running_service


@contextlib.asynccontextmanager
async def run_service(server: DataServer, nats_server: NatsServer, tmp_path: Path,
                      **overrides: Any) -> AsyncIterator[Service]:
    """The template and binding services, the latter with ``overrides`` of its settings."""
    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, nats_server.url, name="binding-test")
        js = nc.jetstream()
        for name in (EVENTS_STREAM, JOBS_STREAM):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
        events: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_event(msg: Msg) -> None:
            await events.put(msg)

        await nc.subscribe("litho.events.v1.binding.*", cb=on_event)
        registry = _registry.registry()
        template_spec = registry["template"]
        template_root = _registry.app(template_spec)
        template_host = await stack.enter_async_context(running(
            template_spec, TemplateSettings(data_dir=tmp_path / "template",
                                            nats_url=nats_server.url),
            template_root.build, endpoints=Endpoints(listen="127.0.0.1:0")))
        template_target = f"127.0.0.1:{template_host.grpc_port}"
        binding_spec = registry["binding"]
        binding_root = _registry.app(binding_spec)
        settings = BindingSettings(
            data_dir=tmp_path / "binding", nats_url=nats_server.url,
            outbound=OutboundSettings(allow=f"127.0.0.1:{server.port}"),
            binding_secret_key=KEY, binding_scheduler_interval=0.05, shutdown_grace=2.0,
            **overrides)
        host = await stack.enter_async_context(running(
            binding_spec, settings, binding_root.build,
            endpoints=Endpoints(listen="127.0.0.1:0", targets={"template": template_target})))
        channel = await rpc.open_channel(stack, f"127.0.0.1:{host.grpc_port}",
                                         default_deadline=10.0)
        template_channel = await rpc.open_channel(stack, template_target, default_deadline=10.0)
        templates = tpb_grpc.TemplateServiceStub(template_channel)
        made = await templates.CreateTemplate(tpb.CreateTemplateRequest(
            tenant_id=TENANT, spec=tpb.TemplateSpec(
                name="tag", html="<p>{{ price }} {{ label }}</p>", width=200, height=100)))
        yield Service(pb_grpc.BindingServiceStub(channel), templates, events,
                      made.template.id)


async def next_event(events: asyncio.Queue[Msg]) -> Msg:
    return await asyncio.wait_for(events.get(), 10.0)


def create_request(service: Service, server: DataServer, *,
                   mapping: dict[str, str] | None = None,
                   data_source: pb.DataSource | None = None,
                   refresh_policy: pb.RefreshPolicy | None = None) -> pb.CreateBindingRequest:
    return pb.CreateBindingRequest(tenant_id=TENANT, spec=pb.BindingSpec(
        name="price", template_id=service.template_id,
        data_source=data_source or pb.DataSource(
            type="http", url=server.url("/items"),
            credentials=pb.Credentials(type="bearer", token="tok-9")),
        mapping=mapping or {"price": "price * 2", "label": "name"}, has_mapping=True,
        defaults_json='{"label": "none"}',
        refresh_policy=refresh_policy or pb.RefreshPolicy(type="ttl", ttl_seconds=60),
        output=pb.BindingOutput(format=renderer_pb2.IMAGE_FORMAT_WEBP,
                                options=renderer_pb2.RenderOptions(width=300, quality=80))))


async def test_create_maps_through_the_template_service_and_publishes(
        service: Service, server: DataServer) -> None:
    created = (await service.stub.CreateBinding(create_request(service, server))).binding
    assert created.status == "active" and created.credentials_type == "bearer"
    assert server.headers[-1]["Authorization"] == "Bearer tok-9"
    assert created.output.format == renderer_pb2.IMAGE_FORMAT_WEBP
    assert created.output.options.width == 300 and created.output.options.quality == 80
    assert "tok-9" not in str(created)
    msg = await next_event(service.events)
    assert msg.subject == SUBJECT_UPDATED
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == (
        f"binding-updated:{created.id}:{created.data_hash}:"
        f"{round(created.fetch_time.ToNanoseconds() / 1e6)}")
    event = events_pb2.BindingUpdated.FromString(msg.data)
    assert (event.binding_id, event.format, event.source) == (created.id, "webp", "fetch")
    resolved = await service.stub.ResolveBinding(pb.ResolveBindingRequest(
        binding_id=created.id))
    assert json.loads(resolved.variables_json) == {"price": 20, "label": "Lamp"}
    assert resolved.tenant_id == TENANT and resolved.HasField("fresh_until")
    data = await service.stub.GetBindingData(pb.GetBindingDataRequest(
        tenant_id=TENANT, binding_id=created.id))
    assert json.loads(data.data_json) == {"name": "Lamp", "price": 10}
    listed = await service.stub.ListBindings(pb.ListBindingsRequest(tenant_id=TENANT))
    assert [b.id for b in listed.bindings] == [created.id]


async def test_errors_cross_the_wire_as_domain_errors(service: Service,
                                                      server: DataServer) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.stub.CreateBinding(create_request(
            service, server, mapping={"price": "price *"}))
    assert caught.value.errors[0].field == "mapping.price"
    assert "line 1" in caught.value.errors[0].message
    with pytest.raises(NotFound):
        await service.stub.ResolveBinding(pb.ResolveBindingRequest(binding_id="bnd_nope"))
    with pytest.raises(NotFound):
        await service.stub.GetBinding(pb.GetBindingRequest(tenant_id="other",
                                                           binding_id="bnd_" + "a" * 36))
    assert (await service.stub.ListBindings(pb.ListBindingsRequest(
        tenant_id=TENANT))).bindings == []


async def test_push_over_the_wire(service: Service, server: DataServer) -> None:
    created = (await service.stub.CreateBinding(create_request(
        service, server, data_source=pb.DataSource(type="push"),
        refresh_policy=pb.RefreshPolicy(type="push")))).binding
    assert created.push_secret.startswith("lps_")
    body = b'{"price": 4, "name": "Mug"}'
    with pytest.raises(Unauthenticated):
        await service.stub.PushBindingData(pb.PushBindingDataRequest(
            binding_id=created.id, body=body, signature="sha256=00"))
    pushed = await service.stub.PushBindingData(pb.PushBindingDataRequest(
        binding_id=created.id, body=body, signature=sign_push(created.push_secret, body)))
    assert pushed.changed
    msg = await next_event(service.events)
    assert events_pb2.BindingUpdated.FromString(msg.data).source == "push"
    got = (await service.stub.GetBinding(pb.GetBindingRequest(
        tenant_id=TENANT, binding_id=created.id))).binding
    assert got.push_secret == "" and got.data_hash == pushed.data_hash
    await service.stub.PauseBinding(pb.PauseBindingRequest(tenant_id=TENANT,
                                                           binding_id=created.id))
    with pytest.raises(FailedPrecondition):
        await service.stub.PushBindingData(pb.PushBindingDataRequest(
            binding_id=created.id, body=body, secret=created.push_secret))


async def test_the_server_takes_a_push_as_large_as_the_setting_allows(
        server: DataServer, nats_server: NatsServer, tmp_path: Path) -> None:
    """Over gRPC's 4 MiB default: the push reaches the domain (and its
    refusal comes back), not a RESOURCE_EXHAUSTED of the transport."""
    limit = 6 * 1024 * 1024
    async with run_service(server, nats_server, tmp_path, binding_max_push_bytes=limit,
                           binding_max_data_bytes=limit) as running_service:
        body = b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}'
        with pytest.raises(Unauthenticated, match="wrong binding id or secret"):
            await running_service.stub.PushBindingData(pb.PushBindingDataRequest(
                binding_id="bnd_" + "0" * 36, body=body, secret="lps_wrong"))
        sample = json.dumps({"x": "b" * (5 * 1024 * 1024)})
        with pytest.raises(InvalidArgument) as caught:  # read whole, then checked
            await running_service.stub.PreviewBinding(pb.PreviewBindingRequest(
                tenant_id=TENANT, template_id="tpl_missing", sample_data_json=sample,
                mapping={"x": "x"}))
        assert caught.value.errors[0].field == "templateId"


async def test_a_failing_source_publishes_binding_failed(service: Service,
                                                         server: DataServer) -> None:
    server.status = 500
    created = (await service.stub.CreateBinding(create_request(service, server))).binding
    assert created.status == "error" and created.last_error == "the source answered 500"
    msg = await next_event(service.events)
    assert msg.subject == SUBJECT_FAILED
    assert events_pb2.BindingFailed.FromString(msg.data).error == created.last_error


async def test_template_data_sources_over_the_wire(service: Service,
                                                   server: DataServer) -> None:
    answer = await service.stub.FetchDataSources(pb.FetchDataSourcesRequest(
        tenant_id=TENANT, sources=[pb.DataSourceCall(name="inv", url=server.url("/items"),
                                                     ttl_seconds=60)]))
    [result] = answer.results
    assert result.name == "inv" and not result.from_cache
    again = await service.stub.FetchDataSources(pb.FetchDataSourcesRequest(
        tenant_id=TENANT, sources=[pb.DataSourceCall(name="inv", url=server.url("/items"),
                                                     ttl_seconds=60)]))
    assert again.results[0].from_cache and server.hits["/items"] == 1


async def test_the_service_refuses_to_start_without_its_key(tmp_path: Path,
                                                            nats_server: NatsServer) -> None:
    spec = _registry.registry()["binding"]
    root = _registry.app(spec)
    with pytest.raises(ConfigError, match="LITHO_BINDING_SECRET_KEY"):
        async with running(spec, BindingSettings(data_dir=tmp_path, nats_url=nats_server.url),
                           root.build, endpoints=Endpoints(listen="127.0.0.1:0",
                                                           targets={"template": "127.0.0.1:1"})):
            pass


def test_binding_updated_ids_tell_a_return_to_earlier_data_apart() -> None:
    """A, B, A within JetStream's duplicate window: three events, while the
    same change published twice is one."""
    a1 = updated_msg_id("bnd_1", "hash-a", 1_700_000_000.0)
    b = updated_msg_id("bnd_1", "hash-b", 1_700_000_010.0)
    a2 = updated_msg_id("bnd_1", "hash-a", 1_700_000_020.0)
    assert len({a1, b, a2}) == 3
    assert updated_msg_id("bnd_1", "hash-a", 1_700_000_000.0) == a1
