"""Where a render's time goes: the stack's own spans, received over OTLP/HTTP.

The services export with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at
:class:`SpanReceiver` (a loopback aiohttp server in the bench process); each
cold render's ``traceparent`` response header names its trace, and
:func:`stage_table` turns those traces into one row per span name: how often
it occurs per render, its median duration (occurrences in one render added
up), its median self time (the part no child span covers) and its median share
of the whole request. ``tests/support/otlp.py`` is the tests' receiver; this
one keeps the span times, which the tests do not need.
"""

from __future__ import annotations

import asyncio
import gzip
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


@dataclass
class SpanReceiver:
    spans: list[Span] = field(default_factory=list)
    port: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    def env(self) -> dict[str, str]:
        """What a service needs to export here, in batches 100 ms apart."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY": "100"}

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def traces(self, trace_ids: Iterable[str]) -> list[list[Span]]:
        by_trace: dict[str, list[Span]] = defaultdict(list)
        for span in self.spans:
            by_trace[span.trace_id].append(span)
        return [by_trace[t] for t in trace_ids]

    async def wait_complete(self, trace_ids: Sequence[str], *, timeout: float) -> None:  # noqa: ASYNC109
        """Until every trace has its root and no span whose parent is missing
        (each service exports on its own; ``timeout`` is a backstop only)."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(
                lambda: all(is_complete(t) for t in self.traces(trace_ids)))

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        async with self._arrived:
            self.spans.extend(_flatten(message))
            self._arrived.notify_all()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


def _flatten(message: ExportTraceServiceRequest) -> list[Span]:
    out = []
    for resource_spans in message.resource_spans:
        service = next((kv.value.string_value for kv in resource_spans.resource.attributes
                        if kv.key == "service.name"), "")
        for scope_spans in resource_spans.scope_spans:
            out += [Span(service=service, name=s.name,
                         kind=SpanProto.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                         trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                         parent_id=s.parent_span_id.hex(), start_ns=s.start_time_unix_nano,
                         end_ns=s.end_time_unix_nano)
                    for s in scope_spans.spans]
    return out


def is_complete(trace: Sequence[Span]) -> bool:
    ids = {s.span_id for s in trace}
    return (any(not s.parent_id for s in trace)
            and all(not s.parent_id or s.parent_id in ids for s in trace))


def _covered_ns(parent: Span, children: Sequence[Span]) -> int:
    """How much of ``parent`` its children cover (overlaps counted once)."""
    spans = sorted((max(c.start_ns, parent.start_ns), min(c.end_ns, parent.end_ns))
                   for c in children)
    covered, reach = 0, parent.start_ns
    for start, end in spans:
        start = max(start, reach)
        if end > start:
            covered += end - start
            reach = end
    return covered


def label(span: Span) -> tuple[str, str]:
    """A row's key: the service (without ``litho-``) and the span name, with
    the kind for gRPC spans, whose client and server share one name."""
    name = span.name
    if name.startswith("/"):
        name = f"{name.rsplit('/', 1)[-1]} ({span.kind.lower()})"
    return span.service.removeprefix("litho-"), name


def stage_table(traces: Sequence[Sequence[Span]]) -> list[dict[str, Any]]:
    """One row per span name over complete traces of one request each, in the
    order the stages start (median offset from the request's start)."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    selfs: dict[tuple[str, str], list[float]] = defaultdict(list)
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)
    offsets: dict[tuple[str, str], list[float]] = defaultdict(list)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    depths: dict[tuple[str, str], int] = {}
    complete = [t for t in traces if is_complete(t)]
    for trace in complete:
        root = next(s for s in trace if not s.parent_id)
        children: dict[str, list[Span]] = defaultdict(list)
        for s in trace:
            children[s.parent_id].append(s)
        total: dict[tuple[str, str], int] = defaultdict(int)
        own: dict[tuple[str, str], int] = defaultdict(int)
        first: dict[tuple[str, str], int] = {}
        stack = [(root, 0)]
        while stack:
            span, depth = stack.pop()
            key = label(span)
            total[key] += span.duration_ns
            own[key] += span.duration_ns - _covered_ns(span, children[span.span_id])
            first[key] = min(first.get(key, span.start_ns), span.start_ns)
            depths[key] = min(depths.get(key, depth), depth)
            counts[key] += 1
            stack += [(c, depth + 1) for c in children[span.span_id]]
        for key in total:
            totals[key].append(total[key] / 1e6)
            selfs[key].append(own[key] / 1e6)
            shares[key].append(total[key] / max(1, root.duration_ns))
            offsets[key].append((first[key] - root.start_ns) / 1e6)
    rows = [{
        "service": key[0], "span": key[1], "depth": depths[key],
        "perRender": round(counts[key] / len(complete), 2),
        "p50Ms": round(statistics.median(totals[key]), 2),
        "selfP50Ms": round(statistics.median(selfs[key]), 2),
        "share": round(statistics.median(shares[key]), 3),
        "startP50Ms": round(statistics.median(offsets[key]), 2),
    } for key in totals]
    rows.sort(key=lambda r: (r["startP50Ms"], r["depth"]))
    return rows
