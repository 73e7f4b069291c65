"""One render request is one trace across the real processes.

Every process of the stack exports its spans over OTLP/HTTP to the test's own
receiver (``tests/support/otlp.py``, started by the ``live`` fixture).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import Live
from tests.support.otlp import OtlpReceiver, ReceivedSpan

GATEWAY, RENDERER, TEMPLATE = "litho-gateway", "litho-renderer", "litho-template"
RENDER_RPC = "/litho.renderer.v1.RendererService/RenderTemplate"
EXPAND_RPC = "/litho.template.v1.TemplateService/ExpandTemplate"
#: Spans of a render that reaches Chromium; none of them may be in a cache hit's trace.
MISS_ONLY = ("pool wait", "capture", "page load", "encode", "blob write")
#: Generous: spans leave every process a tenth of a second after they end.
BACKSTOP = 60


def _card(live: Live, *, denied: bool = True) -> str:
    """A card with an allowed image and, unless ``denied`` is False, one the
    guard refuses (a render with a refused image is never a cache hit)."""
    refused = (f'<img src="{live.secret.url("traced.png")}" '
               'style="position:absolute;left:60px;top:0">' if denied else "")
    return f"""<!doctype html><html><body style="margin:0;background:#fff">
      <img src="{live.allowed.url('traced.png')}" style="position:absolute;left:0;top:0">
      {refused}
      <p style="position:absolute;top:60px">{{{{ title }}}}</p></body></html>"""


async def _render(live: Live, template_id: str, title: str) -> tuple[dict[str, Any], str, str]:
    """The render's answer, and the trace and span ids of its ``traceparent``."""
    async with live.http.post(f"{live.url}/v1/templates/{template_id}/render",
                              json={"variables": {"title": title}},
                              headers=live.auth()) as r:
        assert r.status == 200, await r.text()
        assert r.headers["X-Request-Id"]
        _, trace_id, span_id, _ = r.headers["traceparent"].split("-")
        return await r.json(), trace_id, span_id


def _finished(trace_id: str, *names: tuple[str, str]) -> Callable[[list[ReceivedSpan]], bool]:
    def done(spans: list[ReceivedSpan]) -> bool:
        have = {(s.service, s.name) for s in spans if s.trace_id == trace_id}
        return all(n in have for n in names)

    return done


async def _trace(otlp: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    # The gateway's server span ends last of the gateway's spans, the
    # renderer's "render" span last of the renderer's: once both are here,
    # every span of the trace is (each process exports its spans in the
    # order they end).
    await otlp.wait_for(_finished(trace_id, (GATEWAY, "POST /v1/templates/{templateId}/render"),
                                  (RENDERER, "render"), (TEMPLATE, EXPAND_RPC)),
                        timeout=BACKSTOP)
    return otlp.trace(trace_id)


def _one(spans: list[ReceivedSpan], service: str, name: str, kind: str = "") -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name
             and (not kind or s.kind == kind)]
    assert len(found) == 1, (service, name, kind, [str(s) for s in spans])
    return found[0]


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = []
    while span.parent_span_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


async def test_one_render_is_one_trace_from_the_edge_to_the_blob_store(live: Live) -> None:
    async with live.http.post(f"{live.url}/v1/templates", headers=live.auth(), json={
            "name": "traced", "html": _card(live), "width": 200, "height": 100}) as r:
        assert r.status == 201, await r.text()
        template_id = (await r.json())["id"]
    result, trace_id, edge_span_id = await _render(live, template_id, "first")
    assert result["cached"] is False
    spans = await _trace(live.otlp, trace_id)
    assert live.otlp.rejected == 0
    by_id = {s.span_id: s for s in spans}

    # One root, the gateway's server span, which the response's traceparent names;
    # every other span's parent is a span of the same trace.
    roots = [s for s in spans if not s.parent_span_id]
    assert [(r.service, r.kind) for r in roots] == [(GATEWAY, "SERVER")]
    edge = roots[0]
    assert edge.span_id == edge_span_id
    assert edge.attributes["http.route"] == "/v1/templates/{templateId}/render"
    orphans = [str(s) for s in spans if s.parent_span_id and s.parent_span_id not in by_id]
    assert orphans == []

    # gateway → renderer → template: each gRPC client span is the parent of the
    # callee's server span.
    render_client = _one(spans, GATEWAY, RENDER_RPC, "CLIENT")
    render_server = _one(spans, RENDERER, RENDER_RPC, "SERVER")
    expand_client = _one(spans, RENDERER, EXPAND_RPC, "CLIENT")
    expand_server = _one(spans, TEMPLATE, EXPAND_RPC, "SERVER")
    assert render_server.parent_span_id == render_client.span_id
    assert expand_server.parent_span_id == expand_client.span_id
    expand = _one(spans, TEMPLATE, "template expand")
    assert expand.attributes["litho.template.id"] == template_id
    assert [(a.service, a.name) for a in _ancestors(expand, by_id)][:4] == [
        (TEMPLATE, EXPAND_RPC), (RENDERER, EXPAND_RPC), (RENDERER, "render"),
        (RENDERER, RENDER_RPC)]
    assert _ancestors(render_client, by_id)[-1] is edge

    # Inside the renderer: capture (waiting for a page, loading, fetching the
    # images, encoding) and the two blob writes, all under the render span.
    render = _one(spans, RENDERER, "render")
    assert render.attributes["litho.render.id"] == result["id"]
    assert render.attributes["litho.render.cached"] is False
    assert "variables" not in json.dumps(render.attributes)
    for name in ("pool wait", "capture", "render cache lookup"):
        assert render in _ancestors(_one(spans, RENDERER, name), by_id), name
    capture = _one(spans, RENDERER, "capture")
    for name in ("page load", "encode"):
        assert capture in _ancestors(_one(spans, RENDERER, name), by_id), name
    # The output, its metadata, and (an image was denied, so the render has
    # warnings) the pointer to the input's latest warned output.
    writes = [s for s in spans if s.name == "blob write"]
    assert len(writes) == 3 and all(render in _ancestors(w, by_id) for w in writes)
    assert {w.attributes["litho.blob.key"].rpartition(".")[2] for w in writes} >= {"png"}
    # Every outbound fetch of the page is in the trace too, under its load:
    # the allowed image fetched, the other one denied.
    fetches = {s.attributes["litho.outbound.outcome"]: s for s in spans
               if s.name == "outbound fetch"}
    assert set(fetches) == {"ok", "denied"}, [str(s) for s in spans]
    assert fetches["ok"].attributes["http.response.status_code"] == 200
    load = _one(spans, RENDERER, "page load")
    assert all(load in _ancestors(f, by_id) for f in fetches.values())

    # A log line written inside the trace carries its id (the denial is logged).
    renderer_log = live.stack.log_path("renderer").read_text()
    assert any(f'"trace_id": "{trace_id}"' in line for line in renderer_log.splitlines())


async def test_a_cache_hit_is_a_trace_without_capture(live: Live) -> None:
    async with live.http.post(f"{live.url}/v1/templates", headers=live.auth(), json={
            "name": "traced-hit", "html": _card(live, denied=False), "width": 200,
            "height": 100}) as r:
        assert r.status == 201, await r.text()
        template_id = (await r.json())["id"]
    first, miss_trace, _ = await _render(live, template_id, "again")
    second, hit_trace, _ = await _render(live, template_id, "again")
    assert first["cached"] is False and second["cached"] is True
    assert hit_trace != miss_trace  # one request, one trace

    miss = {s.name for s in await _trace(live.otlp, miss_trace)}
    assert set(MISS_ONLY) <= miss  # the control: a miss has them all
    hit = await _trace(live.otlp, hit_trace)
    names = {s.name for s in hit}
    assert not names & set(MISS_ONLY), sorted(names)
    lookup = _one(hit, RENDERER, "render cache lookup")
    assert lookup.attributes["litho.render.cached"] is True
    assert _one(hit, RENDERER, "render").attributes["litho.render.cached"] is True


async def test_a_failed_render_exports_no_variable_value(live: Live) -> None:
    secret = "sk_live_SECRET_TOKEN_123"
    async with live.http.post(f"{live.url}/v1/templates", headers=live.auth(), json={
            "name": "traced-error", "html": "<p>{{ -title }}</p>",
            "width": 100, "height": 100}) as r:
        assert r.status == 201, await r.text()
        template_id = (await r.json())["id"]
    async with live.http.post(f"{live.url}/v1/templates/{template_id}/render",
                              json={"variables": {"title": secret}},
                              headers=live.auth()) as r:
        assert r.status == 422
        assert secret in await r.text()  # the tenant's own answer names it
        trace_id = r.headers["traceparent"].split("-")[1]
    spans = await _trace(live.otlp, trace_id)
    expand = _one(spans, TEMPLATE, "template expand")
    assert expand.status == "ERROR"  # the failure is in the trace, as a type
    assert "exception.type" in expand.text
    assert [str(s) for s in spans if secret in s.text or secret in repr(s.attributes)] == []
