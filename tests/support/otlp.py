"""A small OTLP/HTTP trace receiver, so tests can see the spans real processes export.

Processes export to it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<endpoint>`` and
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``: it answers ``POST /v1/traces``
(protobuf ``ExportTraceServiceRequest``, plain or gzip) and keeps every span.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    scope: str
    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER"
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    status: str  # "UNSET", "OK", "ERROR"
    #: The whole span as received (events, status text, links), to search.
    text: str = ""

    def __str__(self) -> str:
        return (f"{self.service}/{self.name} [{self.kind}] {self.span_id} "
                f"<- {self.parent_span_id or 'root'}")


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    #: Requests that could not be decoded (a test that expects none checks it).
    rejected: int = 0
    port: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to export here, in batches a fraction of a second apart."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], *, timeout: float,  # noqa: ASYNC109
    ) -> list[ReceivedSpan]:
        """The spans, once ``done(spans)`` holds (``timeout`` is a backstop only)."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: done(self.spans))
        return list(self.spans)

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception:
            self.rejected += 1
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        async with self._arrived:
            self.spans.extend(_flatten(message))
            self._arrived.notify_all()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type=PROTOBUF)


def _flatten(message: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out = []
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(ReceivedSpan(
                    service=str(resource.get("service.name", "")),
                    scope=scope_spans.scope.name,
                    name=span.name,
                    kind=SpanProto.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=_attributes(span.attributes),
                    status=span.status.StatusCode.Name(span.status.code).removeprefix(
                        "STATUS_CODE_"),
                    text=str(span),
                ))
    return out


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


async def start_receiver() -> OtlpReceiver:
    """A receiver on a free loopback port; ``await receiver.close()`` stops it."""
    receiver = OtlpReceiver()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", receiver._export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    receiver._runner = runner
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    except BaseException:
        await receiver.close()
        raise
    receiver.port = runner.addresses[0][1]
    return receiver


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """A receiver on a free loopback port for the length of the block."""
    receiver = await start_receiver()
    try:
        yield receiver
    finally:
        await receiver.close()
