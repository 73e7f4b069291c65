"""RenderBinding and the pre-render after binding.updated, with a fake
binding resolver and a fake render behind the ports."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from litho.binding.v1 import binding_pb2
from litho.consumers import ConsumerOptions, Delivery, Poison, Retry
from litho.errors import (
    FailedPrecondition,
    InvalidArgument,
    LithoError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from litho.events.v1 import events_pb2
from litho.renderer.v1 import renderer_pb2 as pb
from services.renderer._binding_client import GrpcBindingClient
from services.renderer._binding_prerender import DURABLE, SUBJECT, Prerenderer, consumer
from services.renderer._bindings import BindingRenders, ResolvedBinding
from services.renderer._pipeline import DataSourceUse, RenderRequest, RenderResult
from services.renderer._servicer import RendererServicer, options_from_proto
from services.renderer._spec import RenderOptions

BINDING = "bnd_" + "0" * 12 + "a" * 24


class Resolver:
    def __init__(self) -> None:
        self.calls: list[str] = []
        #: ``refresh`` of each call.
        self.refreshes: list[bool] = []
        self.error: Exception | None = None
        self.binding = ResolvedBinding(
            binding_id=BINDING, tenant_id="tenant-b", template_id="tpl_1",
            variables_json='{"price":3}', format="webp",
            options=RenderOptions(width=300, quality=80), strict_assets=True,
            data_hash="ab" * 32, fresh_until=1_800_000_060.0)

    async def resolve(self, binding_id: str, *, refresh: bool = True) -> ResolvedBinding:
        self.calls.append(binding_id)
        self.refreshes.append(refresh)
        if self.error:
            raise self.error
        return self.binding


class Render:
    def __init__(self) -> None:
        self.requests: list[RenderRequest] = []
        self.error: Exception | None = None

    async def __call__(self, request: RenderRequest) -> RenderResult:
        self.requests.append(request)
        if self.error:
            raise self.error
        return RenderResult(
            render_id="f" * 64, blob_key=f"outputs/ff/{'f' * 64}.{request.format}",
            format=request.format, content_type="image/" + request.format, width=300,
            height=150, cached=False, template_version=4, size_bytes=10,
            data_sources=(DataSourceUse("stock", 1_800_000_000.0, 2.0, "cache"),))


def make() -> tuple[Resolver, Render, BindingRenders]:
    resolver, render = Resolver(), Render()
    return resolver, render, BindingRenders(resolver, render)


async def test_a_binding_renders_its_variables_for_its_tenant_in_its_format() -> None:
    resolver, render, renders = make()
    done = await renders.render(BINDING)
    assert resolver.calls == [BINDING]
    (request,) = render.requests
    assert (request.tenant_id, request.template_id, request.version) == ("tenant-b", "tpl_1", 0)
    assert request.variable_sets == ('{"price":3}',)
    assert request.format == "webp" and request.options.width == 300
    assert request.strict_assets is True and request.background is False
    assert request.reuse_warned is True and request.refresh is False
    assert done.tenant_id == "tenant-b" and done.data_hash == "ab" * 32
    assert done.fresh_until == 1_800_000_060.0 and done.result.render_id == "f" * 64


async def test_the_requested_format_wins_and_png_is_the_default() -> None:
    resolver, render, renders = make()
    await renders.render(BINDING, "jpeg")
    resolver.binding = ResolvedBinding(BINDING, "tenant-b", "tpl_1", "{}")
    await renders.render(BINDING)
    assert [r.format for r in render.requests] == ["jpeg", "png"]


@pytest.mark.parametrize("error", [NotFound("binding not found"),
                                   FailedPrecondition("the binding's data source failed: x")])
async def test_errors_of_the_binding_service_pass_through(error: LithoError) -> None:
    resolver, render, renders = make()
    resolver.error = error
    with pytest.raises(type(error)) as info:
        await renders.render(BINDING)
    assert info.value is error and render.requests == []


async def test_render_binding_rpc_answers_the_render_and_the_binding() -> None:
    _, render, renders = make()
    servicer = RendererServicer(None, None, renders)  # type: ignore[arg-type]
    response = await servicer.RenderBinding(pb.RenderBindingRequest(
        binding_id=BINDING, format=pb.IMAGE_FORMAT_GIF), None)  # type: ignore[arg-type]
    assert render.requests[0].format == "gif"
    assert response.tenant_id == "tenant-b" and response.data_hash == "ab" * 32
    assert response.fresh_until.seconds == 1_800_000_060
    assert response.render.render_id == "f" * 64 and response.render.format == pb.IMAGE_FORMAT_GIF
    assert [(u.name, u.origin, u.age_seconds) for u in response.render.data_sources] == [
        ("stock", "cache", 2.0)]
    unspecified = await servicer.RenderBinding(pb.RenderBindingRequest(binding_id=BINDING),
                                               None)  # type: ignore[arg-type]
    assert render.requests[1].format == "webp"
    assert unspecified.render.format == pb.IMAGE_FORMAT_WEBP


async def test_without_a_ttl_there_is_no_fresh_until() -> None:
    resolver, _, renders = make()
    resolver.binding = ResolvedBinding(BINDING, "tenant-b", "tpl_1", "{}")
    servicer = RendererServicer(None, None, renders)  # type: ignore[arg-type]
    response = await servicer.RenderBinding(pb.RenderBindingRequest(binding_id=BINDING),
                                            None)  # type: ignore[arg-type]
    assert not response.HasField("fresh_until")


# ------------------------------------------------------------ the pre-render


def event(binding_id: str = BINDING, fmt: str = "png") -> events_pb2.BindingUpdated:
    return events_pb2.BindingUpdated(binding_id=binding_id, tenant_id="tenant-b",
                                     template_id="tpl_1", data_hash="ab" * 32, format=fmt)


async def test_prerender_renders_at_background_priority_in_the_events_format() -> None:
    resolver, render, renders = make()
    await Prerenderer(renders).handle(event(fmt="jpeg"))
    (request,) = render.requests
    assert request.background is True and request.reuse_warned is False
    assert request.format == "jpeg" and request.tenant_id == "tenant-b"
    await Prerenderer(renders).handle(event(fmt=""))
    assert render.requests[1].format == "webp"  # the binding's own
    # A queued event never makes the binding service fetch again.
    assert resolver.refreshes == [False, False]


async def test_prerender_skips_an_event_whose_data_was_replaced() -> None:
    resolver, render, renders = make()
    resolver.binding = replace(resolver.binding, data_hash="cd" * 32)
    await Prerenderer(renders).handle(event())  # acked: a later event renders it
    assert render.requests == []


async def test_a_get_refreshes_stale_data_first() -> None:
    resolver, _, renders = make()
    await renders.render(BINDING, "png")
    assert resolver.refreshes == [True]


@pytest.mark.parametrize("error", [
    NotFound("binding not found"),
    FailedPrecondition("the binding's data source failed: 500"),
    InvalidArgument("the template does not render"),
])
async def test_prerender_drops_what_no_retry_can_change(error: LithoError) -> None:
    resolver, render, renders = make()
    if isinstance(error, InvalidArgument):
        render.error = error
    else:
        resolver.error = error
    await Prerenderer(renders).handle(event())  # returns: the message is acked
    assert resolver.calls == [BINDING]
    assert len(render.requests) == (1 if isinstance(error, InvalidArgument) else 0)


async def test_prerender_retries_transient_failures() -> None:
    _, render, renders = make()
    render.error = ResourceExhausted("the render queue is full", retry_after=7)
    with pytest.raises(Retry) as info:
        await Prerenderer(renders).handle(event())
    assert info.value.delay == 7
    render.error = Unavailable("the template service is away")
    with pytest.raises(Retry) as away:
        await Prerenderer(renders).handle(event())
    assert away.value.delay is None
    render.error = LithoError("internal error")
    with pytest.raises(Retry):
        await Prerenderer(renders).handle(event())
    assert len(render.requests) == 3


async def test_an_event_without_a_binding_is_poison() -> None:
    _, render, renders = make()
    with pytest.raises(Poison):
        await Prerenderer(renders).handle(event(binding_id=""))
    assert render.requests == []


async def test_the_consumer_is_the_durable_prerender_on_binding_updated() -> None:
    class Nc:
        def jetstream(self, **_: Any) -> object:
            return object()

    resolver, render, renders = make()
    worker = consumer(Nc(), Prerenderer(renders),  # type: ignore[arg-type]
                      ConsumerOptions(max_in_flight=2), publisher=None)  # type: ignore[arg-type]
    assert (worker.stream, worker.durable, worker.subjects) == (
        "LITHO_EVENTS", DURABLE, (SUBJECT,))
    assert DURABLE == "renderer-binding-prerender"
    assert SUBJECT == "litho.events.v1.binding.updated"
    assert worker.options.max_in_flight == 2
    resolver.error = NotFound("gone")
    await worker._handler(Delivery(
        subject=SUBJECT, payload=event(), headers={}, msg_id=None, stream="LITHO_EVENTS",
        consumer=DURABLE, stream_sequence=1, deliveries=1))
    assert resolver.calls == [BINDING] and render.requests == []


# ------------------------------------------------------------ the gRPC adapter


class Stub:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def ResolveBinding(self, request: Any) -> binding_pb2.ResolveBindingResponse:
        self.requests.append(request)
        until = Timestamp(seconds=1_800_000_060, nanos=500_000_000)
        return binding_pb2.ResolveBindingResponse(
            binding_id=request.binding_id, tenant_id="tenant-b", template_id="tpl_1",
            variables_json='{"a":1}', data_hash="cd" * 32, fresh_until=until,
            output=binding_pb2.BindingOutput(format=pb.IMAGE_FORMAT_JPEG, options=pb.RenderOptions(
                width=640, quality=70, assets=pb.ASSET_POLICY_STRICT)))

    async def FetchDataSources(self, request: Any) -> binding_pb2.FetchDataSourcesResponse:
        self.requests.append(request)
        return binding_pb2.FetchDataSourcesResponse(results=[binding_pb2.DataSourceResult(
            name=s.name, data_json='{"n":1}', fetch_time=Timestamp(seconds=100, nanos=250_000_000),
            from_cache=s.name == "b") for s in request.sources])


async def test_the_adapter_translates_both_calls() -> None:
    from services.renderer._pipeline import PendingSource

    client = GrpcBindingClient.__new__(GrpcBindingClient)
    client._stub = stub = Stub()  # type: ignore[assignment]
    client._options_of = options_from_proto
    resolved = await client.resolve(BINDING)
    assert resolved.tenant_id == "tenant-b" and resolved.format == "jpeg"
    assert resolved.options.width == 640 and resolved.options.quality == 70
    assert resolved.strict_assets is True and resolved.fresh_until == 1_800_000_060.5
    fetched = await client.fetch("t1", [
        PendingSource("a", "https://x.example/a", headers=(("Accept", "json"),), ttl_seconds=5),
        PendingSource("b", "https://x.example/b", method="POST", body="{}")])
    call = stub.requests[1]
    assert call.tenant_id == "t1" and dict(call.sources[0].headers) == {"Accept": "json"}
    assert call.sources[0].ttl_seconds == 5 and call.sources[1].method == "POST"
    assert [(f.name, f.fetch_time, f.from_cache) for f in fetched] == [
        ("a", 100.25, False), ("b", 100.25, True)]
