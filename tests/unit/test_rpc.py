"""Domain errors cross gRPC and come back as the same domain errors (real server, port 0)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from litho import errors, rpc
from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc


class Servicer(pb_grpc.TemplateServiceServicer):
    async def GetTemplate(self, request: pb.GetTemplateRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetTemplateResponse:
        if request.template_id == "invalid":
            raise errors.InvalidArgument("bad", errors=[errors.FieldError("width", "too big")])
        if request.template_id == "busy":
            raise errors.ResourceExhausted("full", retry_after=3)
        if request.template_id == "boom":
            raise RuntimeError("secret internal detail")
        return pb.GetTemplateResponse(template=pb.Template(id=request.template_id))


async def test_errors_round_trip_and_internal_text_stays_hidden() -> None:
    async with AsyncExitStack() as stack:
        _, port = await rpc.start_server(
            stack, address="127.0.0.1:0",
            # Only GetTemplate is implemented; the rest answer UNIMPLEMENTED.
            services=[(pb_grpc.add_TemplateServiceServicer_to_server, Servicer(),  # type: ignore[abstract]
                       "litho.template.v1.TemplateService")],
            grace=1,
        )
        channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=5)
        stub = pb_grpc.TemplateServiceStub(channel)

        ok = await stub.GetTemplate(pb.GetTemplateRequest(template_id="tpl"))
        assert ok.template.id == "tpl"

        with pytest.raises(errors.InvalidArgument) as invalid:
            await stub.GetTemplate(pb.GetTemplateRequest(template_id="invalid"))
        assert invalid.value.errors == [errors.FieldError("width", "too big")]

        with pytest.raises(errors.ResourceExhausted) as busy:
            await stub.GetTemplate(pb.GetTemplateRequest(template_id="busy"))
        assert busy.value.retry_after == 3

        with pytest.raises(errors.LithoError) as boom:
            await stub.GetTemplate(pb.GetTemplateRequest(template_id="boom"))
        assert type(boom.value) is errors.LithoError
        assert "secret" not in boom.value.message

        with pytest.raises(errors.LithoError) as unimplemented:
            await stub.ListTemplates(pb.ListTemplatesRequest())
        assert "UNIMPLEMENTED" in unimplemented.value.message.upper() or "not implemented" in (
            unimplemented.value.message.lower())

        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(
            service="litho.template.v1.TemplateService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class SlowServicer(pb_grpc.TemplateServiceServicer):
    async def GetTemplate(self, request: pb.GetTemplateRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetTemplateResponse:
        await asyncio.sleep(5)
        return pb.GetTemplateResponse()


async def test_calls_without_a_timeout_get_the_default_deadline() -> None:
    async with AsyncExitStack() as stack:
        _, port = await rpc.start_server(
            stack, address="127.0.0.1:0",
            services=[(pb_grpc.add_TemplateServiceServicer_to_server,
                       SlowServicer(),  # type: ignore[abstract]
                       "litho.template.v1.TemplateService")],
            grace=0.1,
        )
        channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=0.2)
        stub = pb_grpc.TemplateServiceStub(channel)
        started = time.perf_counter()
        with pytest.raises(errors.DeadlineExceeded):
            await stub.GetTemplate(pb.GetTemplateRequest(template_id="x"))
        assert time.perf_counter() - started < 2
