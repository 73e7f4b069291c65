"""The bench's per-stage table: span times received over OTLP and added up per name."""

from __future__ import annotations

import asyncio

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from bench._spans import Span, SpanReceiver, is_complete, label, stage_table

MS = 1_000_000


def _span(name: str, span_id: str, parent: str, start_ms: float, end_ms: float, *,
          trace: str = "t1", service: str = "litho-renderer", kind: str = "INTERNAL") -> Span:
    return Span(service=service, name=name, kind=kind, trace_id=trace, span_id=span_id,
                parent_id=parent, start_ns=int(start_ms * MS), end_ns=int(end_ms * MS))


def _trace(trace: str, scale: float = 1.0) -> list[Span]:
    """request 0–100: capture 10–70 (load 10–30, screenshot 40–60), blob write ×2."""
    s = scale
    return [
        _span("POST /render", "a", "", 0, 100 * s, trace=trace, service="litho-gateway",
              kind="SERVER"),
        _span("capture", "b", "a", 10 * s, 70 * s, trace=trace),
        _span("page load", "c", "b", 10 * s, 30 * s, trace=trace),
        _span("screenshot", "d", "b", 40 * s, 60 * s, trace=trace),
        _span("blob write", "e", "a", 75 * s, 80 * s, trace=trace),
        _span("blob write", "f", "a", 80 * s, 90 * s, trace=trace),
    ]


def test_rows_add_up_occurrences_and_subtract_children() -> None:
    rows = {r["span"]: r for r in stage_table([_trace("t1"), _trace("t2", 2.0),
                                               _trace("t3", 3.0)])}
    # Medians over the three traces (scales 1, 2, 3): the middle one.
    assert rows["capture"]["p50Ms"] == 120.0
    assert rows["capture"]["selfP50Ms"] == 40.0  # 60 minus its two 20 ms children, × 2
    assert rows["blob write"]["perRender"] == 2.0
    assert rows["blob write"]["p50Ms"] == 30.0  # 5 + 10, × 2
    assert rows["POST /render"]["selfP50Ms"] == 50.0  # 200 - (120 + 30)
    assert rows["capture"]["share"] == 0.6
    assert rows["page load"]["depth"] == 2
    assert [r["span"] for r in stage_table([_trace("t1")])] == [
        "POST /render", "capture", "page load", "screenshot", "blob write"]


def test_overlapping_children_count_once() -> None:
    trace = [_span("render", "a", "", 0, 100),
             _span("expand", "b", "a", 0, 60), _span("expand", "c", "a", 20, 80)]
    rows = {r["span"]: r for r in stage_table([trace])}
    assert rows["render"]["selfP50Ms"] == 20.0
    assert rows["expand"]["p50Ms"] == 120.0


def test_incomplete_traces_are_left_out() -> None:
    orphan = [_span("POST /render", "a", "", 0, 10, trace="t2"),
              _span("capture", "b", "missing", 0, 5, trace="t2")]
    assert not is_complete(orphan)
    assert not is_complete([_span("capture", "b", "a", 0, 5)])
    rows = stage_table([_trace("t1"), orphan])
    assert {r["span"]: r["p50Ms"] for r in rows}["POST /render"] == 100.0


def test_grpc_spans_are_named_by_method_and_kind() -> None:
    client = _span("/litho.renderer.v1.RendererService/RenderTemplate", "a", "", 0, 1,
                   service="litho-gateway", kind="CLIENT")
    assert label(client) == ("gateway", "RenderTemplate (client)")


async def test_receiver_keeps_the_times_the_sdk_exports() -> None:
    receiver = SpanReceiver()
    await receiver.start()
    provider = TracerProvider(resource=Resource.create({"service.name": "litho-bench-test"}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.port}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        tracer = provider.get_tracer("test")

        def make() -> str:
            with tracer.start_as_current_span("outer") as outer, \
                    tracer.start_as_current_span("inner"):
                pass
            return format(outer.get_span_context().trace_id, "032x")

        # The exporter blocks on HTTP to our receiver: it runs off the event loop.
        trace_id = await asyncio.to_thread(make)
        await receiver.wait_complete([trace_id], timeout=30)
        (trace,) = receiver.traces([trace_id])
        by_name = {s.name: s for s in trace}
        assert by_name["inner"].parent_id == by_name["outer"].span_id
        assert by_name["outer"].service == "litho-bench-test"
        assert by_name["outer"].start_ns <= by_name["inner"].start_ns
        assert by_name["inner"].end_ns <= by_name["outer"].end_ns
        assert by_name["outer"].duration_ns > 0
    finally:
        await asyncio.to_thread(provider.shutdown)
        await receiver.close()
