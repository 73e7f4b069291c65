"""Domain errors cross gRPC and come back as the same domain errors (real server, port 0)."""

from __future__ import annotations

import asyncio
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
        port = (await rpc.start_server(
            stack, address="127.0.0.1:0",
            # Only GetTemplate is implemented; the rest answer UNIMPLEMENTED.
            services=[(pb_grpc.add_TemplateServiceServicer_to_server, Servicer(),  # type: ignore[abstract]
                       "litho.template.v1.TemplateService")],
            grace=1,
        )).port
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
        port = (await rpc.start_server(
            stack, address="127.0.0.1:0",
            services=[(pb_grpc.add_TemplateServiceServicer_to_server,
                       SlowServicer(),  # type: ignore[abstract]
                       "litho.template.v1.TemplateService")],
            grace=0.1,
        )).port
        channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=0.2)
        stub = pb_grpc.TemplateServiceStub(channel)
        # The server answers after 5 s: only the default deadline can raise
        # this (no wall-clock assertion, which a loaded machine could break).
        with pytest.raises(errors.DeadlineExceeded):
            await stub.GetTemplate(pb.GetTemplateRequest(template_id="x"))


class HugeErrorServicer(pb_grpc.TemplateServiceServicer):
    """Errors whose text repeats a hostile input, as a language error quoting
    a 4,000-digit number or a thousand field errors would."""

    async def GetTemplate(self, request: pb.GetTemplateRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetTemplateResponse:
        n = int(request.template_id.rpartition("-")[2] or 0)
        if request.template_id.startswith("huge"):
            raise errors.InvalidArgument(
                "cannot multiply " + "9" * n,
                errors=[errors.FieldError(f"/variables/x{i}" + "k" * n, "é😀\ud800" * n)
                        for i in range(min(n, 500))])
        if request.template_id.startswith("oversized"):
            # What an unbounded error used to do: metadata over gRPC's limit.
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "x",
                                trailing_metadata=((rpc.ERROR_METADATA_KEY, b"x" * 20_000),))
        raise errors.ResourceExhausted("busy " + "9" * n, retry_after=2)


@pytest.mark.parametrize("size", [10, 4000, 20000])
async def test_huge_errors_keep_their_status_and_are_clipped(size: int) -> None:
    async with AsyncExitStack() as stack:
        port = (await rpc.start_server(
            stack, address="127.0.0.1:0",
            services=[(pb_grpc.add_TemplateServiceServicer_to_server,
                       HugeErrorServicer(),  # type: ignore[abstract]
                       "litho.template.v1.TemplateService")],
            grace=0.1,
        )).port
        channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=10)
        stub = pb_grpc.TemplateServiceStub(channel)

        with pytest.raises(errors.InvalidArgument) as invalid:
            await stub.GetTemplate(pb.GetTemplateRequest(template_id=f"huge-{size}"))
        err = invalid.value
        assert type(err) is errors.InvalidArgument  # not RESOURCE_EXHAUSTED (429)
        assert err.message.startswith("cannot multiply 999")
        assert len(err.message) <= errors.MAX_DETAIL_CHARS
        assert len(err.errors) <= errors.MAX_FIELD_ERRORS
        for e in err.errors:
            assert len(e.field) <= errors.MAX_FIELD_NAME_CHARS
            assert len(e.message) <= errors.MAX_FIELD_MESSAGE_CHARS
            e.message.encode()  # valid Unicode: the lone surrogate was escaped
        # The first field errors survive, in order; the detail counts the rest.
        assert err.errors
        assert [e.field.partition("k")[0] for e in err.errors] == [
            f"/variables/x{i}" for i in range(len(err.errors))]
        if len(err.errors) < min(size, 500):
            assert f"{min(size, 500) - len(err.errors)} more problems" in err.message
        assert len(rpc.error_payload(err)) <= rpc.MAX_ERROR_PAYLOAD_BYTES

        with pytest.raises(errors.ResourceExhausted) as busy:
            await stub.GetTemplate(pb.GetTemplateRequest(template_id=f"busy-{size}"))
        assert busy.value.retry_after == 2

        # gRPC's own RESOURCE_EXHAUSTED (no Litho payload came through) is not
        # the retryable kind: a retry would hit the same limit.
        with pytest.raises(errors.LithoError) as oversized:
            await stub.GetTemplate(pb.GetTemplateRequest(template_id="oversized-1"))
        cause = oversized.value.__cause__
        assert isinstance(cause, grpc.aio.AioRpcError)
        assert cause.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not isinstance(oversized.value, errors.ResourceExhausted)


def test_error_payload_stays_within_its_budget_whatever_the_text() -> None:
    for text in ("x", "é", "😀", "\ud800", "\u2028"):
        exc = errors.InvalidArgument(text * 100_000, errors=[
            errors.FieldError(text * 1000, text * 10_000) for _ in range(1000)])
        payload = rpc.error_payload(exc)
        assert len(payload) <= rpc.MAX_ERROR_PAYLOAD_BYTES
        assert len(rpc.status_message(exc.message).encode()) <= rpc.MAX_STATUS_MESSAGE_BYTES


# ------------------------------------------------------------- streaming RPCs
# A tiny generic service of raw bytes (no proto needed): the first request
# byte says how the handler ends.

_SERVICE = "litho.test.Streams"


def _end(how: bytes) -> None:
    if how == b"invalid":
        raise errors.InvalidArgument("bad", errors=[errors.FieldError("width", "too big")])
    if how == b"busy":
        raise errors.ResourceExhausted("full", retry_after=3)
    if how == b"boom":
        raise RuntimeError("secret internal detail")
    if how == b"missing":
        raise errors.NotFound("no such thing")


async def _server_stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]
                         ) -> Any:
    if request == b"slow":
        await asyncio.sleep(5)
    yield b"one"
    yield b"two"
    _end(request)


async def _server_stream_by_write(request: bytes,
                                  context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.write(b"one")
    _end(request)


async def _client_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    got = [r async for r in requests]
    if got and got[0] == b"slow":
        await asyncio.sleep(5)
    if got:
        _end(got[0])
    return b"+".join(got)


async def _bidi(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    async for request in requests:
        if request == b"slow":
            await asyncio.sleep(5)
        yield request.upper()
        _end(request)


def _register(_servicer: Any, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ServerStreamByWrite": grpc.unary_stream_rpc_method_handler(_server_stream_by_write),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
    }),))


async def _streams(stack: AsyncExitStack, *, default_deadline: float) -> grpc.aio.Channel:
    port = (await rpc.start_server(stack, address="127.0.0.1:0",
                                     services=[(_register, None, _SERVICE)], grace=0.1)).port
    return await rpc.open_channel(stack, f"127.0.0.1:{port}",
                                  default_deadline=default_deadline)


async def _requests(*items: bytes) -> Any:
    for item in items:
        yield item


async def test_server_streams_end_with_the_domain_error_after_their_messages() -> None:
    async with AsyncExitStack() as stack:
        channel = await _streams(stack, default_deadline=10)
        for method in ("ServerStream", "ServerStreamByWrite"):
            call: Any = channel.unary_stream(f"/{_SERVICE}/{method}")
            assert [m async for m in call(b"ok")][:1] == [b"one"]

            received: list[bytes] = []
            with pytest.raises(errors.InvalidArgument) as invalid:
                async for message in call(b"invalid"):
                    received.append(message)
            assert received[:1] == [b"one"]  # what came before the error still arrives
            assert invalid.value.errors == [errors.FieldError("width", "too big")]

            with pytest.raises(errors.NotFound):
                async for _ in call(b"missing"):
                    pass

            with pytest.raises(errors.LithoError) as boom:
                async for _ in call(b"boom"):
                    pass
            assert type(boom.value) is errors.LithoError
            assert "secret" not in boom.value.message


async def test_client_streams_raise_the_domain_error() -> None:
    async with AsyncExitStack() as stack:
        channel = await _streams(stack, default_deadline=10)
        call: Any = channel.stream_unary(f"/{_SERVICE}/ClientStream")
        assert await call(_requests(b"a", b"b")) == b"a+b"
        with pytest.raises(errors.ResourceExhausted) as busy:
            await call(_requests(b"busy", b"b"))
        assert busy.value.retry_after == 3
        with pytest.raises(errors.LithoError) as boom:
            await call(_requests(b"boom"))
        assert type(boom.value) is errors.LithoError
        assert "secret" not in boom.value.message


async def test_bidi_streams_raise_the_domain_error() -> None:
    async with AsyncExitStack() as stack:
        channel = await _streams(stack, default_deadline=10)
        call: Any = channel.stream_stream(f"/{_SERVICE}/Bidi")
        assert [m async for m in call(_requests(b"a", b"b"))] == [b"A", b"B"]
        received: list[bytes] = []
        with pytest.raises(errors.InvalidArgument) as invalid:
            async for message in call(_requests(b"a", b"invalid", b"c")):
                received.append(message)
        assert received == [b"A", b"INVALID"]
        assert invalid.value.errors == [errors.FieldError("width", "too big")]


async def test_streaming_calls_without_a_timeout_get_the_default_deadline() -> None:
    async with AsyncExitStack() as stack:
        # Each handler answers after 5 s: only the default deadline can end these.
        channel = await _streams(stack, default_deadline=0.2)
        server_stream: Any = channel.unary_stream(f"/{_SERVICE}/ServerStream")
        client_stream: Any = channel.stream_unary(f"/{_SERVICE}/ClientStream")
        bidi: Any = channel.stream_stream(f"/{_SERVICE}/Bidi")
        with pytest.raises(errors.DeadlineExceeded):
            async for _ in server_stream(b"slow"):
                pass
        with pytest.raises(errors.DeadlineExceeded):
            await client_stream(_requests(b"slow"))
        with pytest.raises(errors.DeadlineExceeded):
            async for _ in bidi(_requests(b"slow")):
                pass
        # An explicit timeout still wins over the default.
        assert await client_stream(_requests(b"a"), timeout=5) == b"a"


async def test_a_read_whose_peer_went_away_is_called_again_and_a_write_is_not() -> None:
    # A bare UNAVAILABLE (as from a replica that died mid-call) is repeated for
    # calls that are safe to run twice; a service's own Unavailable, which
    # carries our trailer, and any call that writes, are not.
    calls: dict[str, int] = {}

    def flaky(name: str, failures: int, *, ours: bool = False) -> Any:
        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            calls[name] = calls.get(name, 0) + 1
            if calls[name] <= failures:
                if ours:
                    raise errors.Unavailable("the browser crashed twice")
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
            return request
        return grpc.unary_unary_rpc_method_handler(handle)

    def register(_servicer: Any, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("x.v1.Svc", {
            "GetThing": flaky("GetThing", 2),
            "ListThings": flaky("ListThings", 3),
            "CreateThing": flaky("CreateThing", 1),
            "RenderThing": flaky("RenderThing", 1, ours=True),
        }),))

    async with AsyncExitStack() as stack:
        port = (await rpc.start_server(stack, address="127.0.0.1:0",
                                         services=[(register, None, "x.v1.Svc")], grace=0.1)).port
        channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=5)

        def method(name: str) -> Any:
            return channel.unary_unary(f"/x.v1.Svc/{name}")

        assert await method("GetThing")(b"hi") == b"hi"
        assert calls["GetThing"] == 3
        with pytest.raises(errors.Unavailable):
            await method("ListThings")(b"hi")  # three tries, all refused
        assert calls["ListThings"] == 3
        with pytest.raises(errors.Unavailable):
            await method("CreateThing")(b"hi")
        assert calls["CreateThing"] == 1
        with pytest.raises(errors.Unavailable, match="crashed twice"):
            await method("RenderThing")(b"hi")
        assert calls["RenderThing"] == 1


class PeerServicer(pb_grpc.TemplateServiceServicer):
    """Answers each call with the peer (the client's address and port) it came from."""

    async def GetTemplate(self, request: pb.GetTemplateRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetTemplateResponse:
        return pb.GetTemplateResponse(template=pb.Template(id=context.peer()))


async def test_connections_end_after_their_age_so_clients_resolve_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client keeps its connection until it ends: the server ends it at its
    age, so a client reconnects (and resolves its target again, finding
    replicas added since) rather than staying on the first ones for good."""
    monkeypatch.setattr(rpc, "MAX_CONNECTION_AGE_MS", 300)
    monkeypatch.setattr(rpc, "MAX_CONNECTION_AGE_GRACE_MS", 300)
    async with AsyncExitStack() as stack:
        port = (await rpc.start_server(
            stack, address="127.0.0.1:0",
            services=[(pb_grpc.add_TemplateServiceServicer_to_server, PeerServicer(),  # type: ignore[abstract]
                       "litho.template.v1.TemplateService")],
            grace=1)).port
        channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=5)
        stub = pb_grpc.TemplateServiceStub(channel)
        first = (await stub.GetTemplate(pb.GetTemplateRequest())).template.id
        peers = {first}
        for _ in range(40):  # a new connection, so a new client port, well within 10 s
            await asyncio.sleep(0.25)
            peers.add((await stub.GetTemplate(pb.GetTemplateRequest())).template.id)
            if len(peers) > 1:
                break
        assert len(peers) > 1, peers
