"""Traces: configuration from OTEL_*, export over real OTLP/HTTP, propagation
across real gRPC servers and an HTTP server, request ids, and trace ids in logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from litho import errors, rpc, telemetry
from litho.logs import add_trace_ids
from services.gateway._middleware import errors_middleware, tracing_middlewares
from tests.support.otlp import OtlpReceiver, otlp_receiver
from tests.unit.test_rpc import _SERVICE, _register, _requests

_OTEL_VARIABLES = (
    "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SDK_DISABLED",
    "OTEL_BSP_SCHEDULE_DELAY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest_asyncio.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OtlpReceiver]:
    async with otlp_receiver() as r:
        for name, value in r.env().items():
            monkeypatch.setenv(name, value)
        yield r


async def _collect(stack: AsyncExitStack) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    telemetry.add_span_processor(stack, SimpleSpanProcessor(exporter))
    return exporter


# ------------------------------------------------------------ configuration


def test_nothing_set_exports_nothing() -> None:
    assert telemetry.exporters_from_env({}) == []
    assert telemetry.exporters_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == []
    assert telemetry.exporters_from_env({"OTEL_TRACES_EXPORTER": "none",
                                         "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) == []


def test_the_protocol_chooses_the_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    [default] = telemetry.exporters_from_env(endpoint)
    assert isinstance(default, HttpExporter)  # the specification's default
    [grpc_one] = telemetry.exporters_from_env({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert isinstance(grpc_one, GrpcExporter)
    [traces_only] = telemetry.exporters_from_env({
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
    assert isinstance(traces_only, HttpExporter)
    [explicit] = telemetry.exporters_from_env({"OTEL_TRACES_EXPORTER": "otlp",
                                               "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert isinstance(explicit, GrpcExporter)
    for exporter in (default, grpc_one, traces_only, explicit):
        exporter.shutdown()


def test_unknown_settings_fail_fast_naming_the_variable() -> None:
    with pytest.raises(errors.ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        telemetry.exporters_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(errors.ConfigError, match="OTEL_TRACES_EXPORTER"):
        telemetry.exporters_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_the_service_name_is_ours_unless_the_environment_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert telemetry._resource("renderer").attributes["service.name"] == "litho-renderer"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge")
    assert telemetry._resource("renderer").attributes["service.name"] == "edge"


# ------------------------------------------------------------ export and gRPC


async def test_configure_exports_rpc_spans_with_their_parents_and_flushes_on_exit(
    receiver: OtlpReceiver,
) -> None:
    tracer = trace.get_tracer("litho.test")
    async with AsyncExitStack() as outer:
        async with AsyncExitStack() as stack:
            telemetry.configure("unit", stack)
            serving = await rpc.start_server(outer, address="127.0.0.1:0",
                                             services=[(_register, None, _SERVICE)], grace=0.1)
            port = serving.port
            channel = await rpc.open_channel(outer, f"127.0.0.1:{port}", default_deadline=10)
            with tracer.start_as_current_span("caller") as caller:
                stream: Any = channel.unary_stream(f"/{_SERVICE}/ServerStream")
                assert [m async for m in stream(b"ok")] == [b"one", b"two"]
                upload: Any = channel.stream_unary(f"/{_SERVICE}/ClientStream")
                with pytest.raises(errors.InvalidArgument):
                    await upload(_requests(b"invalid"))
                # Text that is not UTF-8 (as a hostile header brings) must not
                # lose the batch it is exported in.
                caller.set_attribute("user_agent.original", "curl\udcff")
            trace_id = format(caller.get_span_context().trace_id, "032x")
        # The stack closed: its exporter was flushed, without waiting for a batch.
        spans = receiver.trace(trace_id)
    assert receiver.rejected == 0
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"caller", f"/{_SERVICE}/ServerStream", f"/{_SERVICE}/ClientStream"}, \
        [str(s) for s in spans]
    assert all(s.service.startswith("litho-") for s in spans)
    assert by_name["caller"].attributes["user_agent.original"] == "curl\\udcff"
    # Each call: a client span under the caller, and the server's span under the client's.
    for method in ("ServerStream", "ClientStream"):
        client_span = next(s for s in receiver.spans
                           if s.name == f"/{_SERVICE}/{method}" and s.kind == "CLIENT"
                           and s.trace_id == trace_id)
        server_span = next(s for s in receiver.spans
                           if s.name == f"/{_SERVICE}/{method}" and s.kind == "SERVER"
                           and s.trace_id == trace_id)
        assert client_span.parent_span_id == by_name["caller"].span_id
        assert server_span.parent_span_id == client_span.span_id
    # The status the error interceptor chose is on both sides; a 4xx-like
    # status is the client's error, not the server's (OpenTelemetry's rule).
    failed = {s.kind: s for s in spans if s.name.endswith("ClientStream")}
    assert failed["SERVER"].attributes["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT
    assert failed["SERVER"].status == "UNSET"
    assert failed["CLIENT"].attributes["rpc.grpc.status_code"] == 3
    assert failed["CLIENT"].status == "ERROR"


async def test_disabled_sdk_exports_nothing(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    async with AsyncExitStack() as stack:
        telemetry.configure("unit", stack)
        with trace.get_tracer("litho.test").start_as_current_span("unseen"):
            pass
    async with AsyncExitStack() as stack:  # a control: the same span, exported
        monkeypatch.delenv("OTEL_SDK_DISABLED")
        telemetry.configure("unit", stack)
        with trace.get_tracer("litho.test").start_as_current_span("seen"):
            pass
    assert [s.name for s in receiver.spans] == ["seen"]


async def test_health_checks_are_not_traced() -> None:
    async with AsyncExitStack() as stack:
        spans = await _collect(stack)
        port = (await rpc.start_server(stack, address="127.0.0.1:0",
                                         services=[(_register, None, _SERVICE)], grace=0.1)).port
        channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=10)
        await rpc.wait_healthy(channel, service=_SERVICE, timeout=5)
        stream: Any = channel.stream_stream(f"/{_SERVICE}/Bidi")
        assert [m async for m in stream(_requests(b"a"))] == [b"A"]
        names = {s.name for s in spans.get_finished_spans()}
    assert names == {f"/{_SERVICE}/Bidi"}  # client and server, no Health/Check


# ------------------------------------------------------------ NATS headers


async def test_message_headers_carry_the_trace_from_publish_to_consume() -> None:
    async with AsyncExitStack() as stack:
        spans = await _collect(stack)
        headers: dict[str, str] = {"Nats-Msg-Id": "m-1"}
        with telemetry.publish_span("render.completed", headers, message_id="m-1",
                                    body_size=12) as published:
            pass
        assert headers["traceparent"].split("-")[1] == format(
            published.get_span_context().trace_id, "032x")
        # The consumer runs elsewhere, with no span of its own current.
        with telemetry.consume_span("render.completed", headers, consumer="webhook",
                                    message_id="m-1", delivery=2) as consumed:
            pass
        finished: dict[str, ReadableSpan] = {s.name: s for s in spans.get_finished_spans()}
    producer, consumer = finished["publish render.completed"], finished["process render.completed"]
    assert producer.kind == trace.SpanKind.PRODUCER
    assert consumer.kind == trace.SpanKind.CONSUMER
    assert consumer.context is not None and producer.context is not None
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumed.get_span_context().trace_id == published.get_span_context().trace_id
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "nats", "messaging.operation.type": "process",
        "messaging.operation.name": "consume", "messaging.destination.name": "render.completed",
        "messaging.consumer.group.name": "webhook", "messaging.message.id": "m-1",
        "messaging.nats.delivery_count": 2}
    assert producer.attributes is not None
    assert producer.attributes["messaging.message.body.size"] == 12
    # No headers: a new trace, not an error.
    assert telemetry.extract(None) == telemetry.extract({})


# ------------------------------------------------------------ HTTP


def _app(seen: dict[str, Any], *, trust_client_trace: bool = False) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        seen["log"] = add_trace_ids(None, "info", {})
        seen["request_id"] = structlog.contextvars.get_contextvars().get("request_id")
        seen["headers"] = {k.lower() for k in request.headers}
        return web.json_response({})

    async def missing(request: web.Request) -> web.Response:
        raise errors.NotFound("no such thing")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("secret")

    app = web.Application(middlewares=[
        *tracing_middlewares(trust_client_trace=trust_client_trace), errors_middleware])
    app.router.add_get("/ok", ok)
    app.router.add_get("/missing", missing)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/crash", crash)
    return app


async def test_every_response_carries_traceparent_and_a_request_id() -> None:
    seen: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        spans = await _collect(stack)
        server = TestServer(_app(seen), host="127.0.0.1")
        await server.start_server()
        stack.push_async_callback(server.close)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        base = f"http://127.0.0.1:{server.port}"
        client_trace = "0af7651916cd43dd8448eb211c80319c"
        sent = {"traceparent": f"00-{client_trace}-b7ad6b7169203331-01",
                "X-Request-Id": "req-123"}
        async with http.get(f"{base}/ok", headers=sent) as r:
            assert r.status == 200
            _, trace_id, span_id, _ = r.headers["traceparent"].split("-")
            assert r.headers["X-Request-Id"] == "req-123"
        # A public edge starts its own trace; the client's is only linked.
        assert trace_id != client_trace
        assert seen["request_id"] == "req-123"
        assert seen["log"] == {"trace_id": trace_id, "span_id": span_id}

        for path, status in (("/missing", 404), ("/nowhere", 404), ("/crash", 500)):
            async with http.get(f"{base}{path}", headers={"X-Request-Id": "bad id"}) as r:
                assert r.status == status
                assert r.content_type == "application/problem+json"
                assert len(r.headers["traceparent"].split("-")[1]) == 32
                generated = r.headers["X-Request-Id"]
                assert generated != "bad id" and len(generated) == 32
        async with http.get(f"{base}/redirect", allow_redirects=False) as r:
            assert r.status == 302
            assert "traceparent" in r.headers and "X-Request-Id" in r.headers
        async with http.get(f"{base}/ok", headers={"X-Request-Id": "x" * 129}) as r:
            assert r.headers["X-Request-Id"] != "x" * 129

        finished = spans.get_finished_spans()
    server_spans = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    assert len(server_spans) == 6
    first = server_spans[0]
    assert first.context is not None and first.parent is None
    assert format(first.context.trace_id, "032x") == trace_id
    assert format(first.context.span_id, "016x") == span_id
    assert [format(link.context.trace_id, "032x") for link in first.links] == [client_trace]
    assert first.attributes is not None
    assert first.attributes[telemetry.REQUEST_ID_ATTRIBUTE] == "req-123"


@pytest.mark.parametrize("host", [b"\xff", b"xn--zz", b"xn--", b"a.xn--ab", b"[zz", b"a:99999"])
async def test_a_host_header_that_is_no_host_name_is_not_a_500(host: bytes) -> None:
    async with AsyncExitStack() as stack:
        server = TestServer(_app({}), host="127.0.0.1")
        await server.start_server()
        stack.push_async_callback(server.close)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: \xfe\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        reply = await reader.read()
        writer.close()
    head = reply.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 200")
    assert "traceparent: 00-" in head and "x-request-id: " in head


async def test_a_client_trace_is_joined_only_when_trusted_and_never_forwarded_otherwise() -> None:
    client_trace = "0af7651916cd43dd8448eb211c80319c"
    sent = {"traceparent": f"00-{client_trace}-b7ad6b7169203331-00",  # unsampled
            "tracestate": "k=v", "baggage": "tenant=someone-else"}
    for trusted in (False, True):
        seen: dict[str, Any] = {}
        async with AsyncExitStack() as stack:
            spans = await _collect(stack)
            server = TestServer(_app(seen, trust_client_trace=trusted), host="127.0.0.1")
            await server.start_server()
            stack.push_async_callback(server.close)
            http = await stack.enter_async_context(aiohttp.ClientSession())
            async with http.get(f"http://127.0.0.1:{server.port}/ok", headers=sent) as r:
                trace_id = r.headers["traceparent"].split("-")[1]
            finished = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
        if trusted:
            assert trace_id == client_trace
            assert finished == []  # the client's unsampled flag is obeyed
            assert "baggage" in seen["headers"]
        else:
            # An unsampled client cannot switch tracing off, nor send baggage on.
            assert trace_id != client_trace and len(finished) == 1
            assert not {"traceparent", "tracestate", "baggage"} & seen["headers"]


async def test_server_spans_hold_no_query_and_no_unrouted_path() -> None:
    async with AsyncExitStack() as stack:
        spans = await _collect(stack)
        server = TestServer(_app({}), host="127.0.0.1")
        await server.start_server()
        stack.push_async_callback(server.close)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        base = f"http://127.0.0.1:{server.port}"
        for path in ("/ok?email=ada%40example.com&sig=abc", "/secret-path/x?token=xyz"):
            async with http.get(base + path, headers={"Host": "h" * 5000}) as r:
                await r.read()
        finished = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert len(finished) == 2
    for span in finished:
        text = repr(dict(span.attributes or {}))
        assert "email" not in text and "secret-path" not in text and "token" not in text
        assert all(len(str(v)) <= telemetry.MAX_ATTRIBUTE_CHARS
                   for v in (span.attributes or {}).values())


async def test_exported_spans_carry_error_types_never_error_text() -> None:
    secret = "sk_live_SECRET_TOKEN_123"
    async with AsyncExitStack() as stack:
        spans = await _collect(stack)
        tracer = trace.get_tracer("test")
        with pytest.raises(ValueError):
            with tracer.start_as_current_span("fails"):
                raise ValueError(f'cannot negate the string "{secret}"')
        with tracer.start_as_current_span("status") as current:
            current.set_status(trace.StatusCode.ERROR, f"bad value {secret}")
        finished = {s.name: s for s in spans.get_finished_spans()}
    fails, status = finished["fails"], finished["status"]
    assert fails.status.status_code == trace.StatusCode.ERROR
    [event] = fails.events
    assert dict(event.attributes or {}) == {"exception.type": "ValueError",
                                            "exception.escaped": "False"}
    assert status.status.status_code == trace.StatusCode.ERROR
    for span in (fails, status):
        assert secret not in repr((span.status.description, span.events, span.attributes))


async def test_disabled_sdk_installs_no_instrumentation_but_keeps_request_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert telemetry.grpc_server_interceptors() == []
    assert telemetry.grpc_client_interceptors() == []
    assert tracing_middlewares() == [telemetry.request_id_middleware]
    async with AsyncExitStack() as stack:
        server = TestServer(_app({}), host="127.0.0.1")
        await server.start_server()
        stack.push_async_callback(server.close)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.get(f"http://127.0.0.1:{server.port}/ok") as r:
            assert r.status == 200
            assert len(r.headers["X-Request-Id"]) == 32
            assert "traceparent" not in r.headers
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    assert len(telemetry.grpc_server_interceptors()) == 1
