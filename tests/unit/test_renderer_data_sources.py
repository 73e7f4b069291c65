"""Templates' declared data sources in the render path: expand, fetch what
the first answer names (one call), expand again with the data; with fakes
behind the pipeline's ports."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from litho.errors import FieldError, InvalidArgument, LithoError
from litho.renderer.v1 import renderer_pb2 as pb
from services.renderer._pipeline import (
    Expanded,
    FetchedSource,
    KnownSource,
    PendingSource,
    RenderPipeline,
    RenderRequest,
)
from services.renderer._servicer import RendererServicer
from services.renderer._source_memo import ENTRY_OVERHEAD, MAX_KNOWN_BYTES, SourceMemo, key_of
from tests.unit.test_pipeline import LIMITS, SECRET, Capture, Events, MemoryBlobs

NOW = 1_800_000_000.0


class Templates:
    """Template "weather" declares the sources "forecast" (its URL uses the
    variable city) and "alerts"; any other template declares none. Like the
    template service, a source the variables give under "data" is not
    pending, and data_json fills the rest (the variables win)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.alerts_ttl = 0
        #: Off: a new version of "weather" that declares no sources.
        self.declares = True

    async def expand(self, tenant_id: str, template_id: str, version: int,
                     variables_json: str, *, coerce_strings: bool = False,
                     inline: object = None, data_json: str = "",
                     known: Sequence[KnownSource] = ()) -> Expanded:
        call: dict[str, Any] = {"template": template_id, "version": version,
                                "variables": variables_json}
        if data_json:
            call["data_json"] = data_json
        if known:
            call["known"] = [k.name for k in known]
        self.calls.append(call)
        variables = json.loads(variables_json)
        if template_id != "weather":
            return Expanded(template_id, version or 2, f"<p>{variables_json}</p>", 100, 50)
        if not self.declares:
            return Expanded(template_id, version or 8, f"<p>{variables['city']}</p>", 100, 50)
        given = dict(variables.get("data") or {})
        fetched = json.loads(data_json or "{}")
        declared = {
            "forecast": PendingSource("forecast", f"https://api.example/f?city={variables['city']}",
                                      headers=(("Accept", "application/json"),), ttl_seconds=60),
            "alerts": PendingSource("alerts", "https://api.example/alerts", method="POST",
                                    body="{}", ttl_seconds=self.alerts_ttl),
        }
        pending = tuple(s for name, s in declared.items()
                        if name not in given and name not in fetched)
        # As the template service: known data stands in for every pending
        # source whose request it answered, or for none.
        offered = {k.name: k for k in known}
        used: tuple[str, ...] = ()
        if pending and all(p.name in offered and offered[p.name].key == key_of(p)
                           for p in pending):
            fetched = {p.name: json.loads(offered[p.name].data_json) for p in pending}
            used, pending = tuple(fetched), ()
        if pending:
            return Expanded(template_id, version or 7, "", 100, 50, pending=pending)
        data = {**fetched, **given}
        return Expanded(template_id, version or 7,
                        f"<p>{variables['city']}: {json.dumps(data, sort_keys=True)}</p>", 100, 50,
                        known_used=used)


class Sources:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PendingSource]]] = []
        self.data: dict[str, Any] = {"forecast": {"t": 21}, "alerts": []}
        self.from_cache = {"forecast": False, "alerts": True}
        self.fetched_at = {"forecast": NOW - 0.5, "alerts": NOW - 30}
        self.error: Exception | None = None
        self.leave_out = ""

    async def fetch(self, tenant_id: str,
                    sources: Sequence[PendingSource]) -> list[FetchedSource]:
        self.calls.append((tenant_id, list(sources)))
        if self.error:
            raise self.error
        return [FetchedSource(s.name, json.dumps(self.data[s.name]), self.fetched_at[s.name],
                              self.from_cache[s.name])
                for s in sources if s.name != self.leave_out]


class NoSources:
    async def fetch(self, tenant_id: str,
                    sources: Sequence[PendingSource]) -> list[FetchedSource]:
        raise AssertionError("a template without data sources called the binding service")


def pipeline(templates: Templates, sources: object, capture: Capture | None = None,
             memo: SourceMemo | None = None) -> RenderPipeline:
    return RenderPipeline(templates, MemoryBlobs(), capture or Capture(), Events(),
                          limits=LIMITS, base_url="http://document.invalid/",
                          render_id_secret=SECRET, data_sources=sources,  # type: ignore[arg-type]
                          source_cache=memo, clock=lambda: NOW)


def request(template: str = "weather", *variable_sets: str, **fields: Any) -> RenderRequest:
    return RenderRequest(tenant_id="t1", template_id=template, version=0,
                         variable_sets=variable_sets or ('{"city":"Oslo"}',),
                         format=fields.pop("format", "png"), **fields)


async def test_pending_sources_are_fetched_once_and_expanded_again() -> None:
    templates, sources, capture = Templates(), Sources(), Capture()
    result = await pipeline(templates, sources, capture).render(request())

    assert len(sources.calls) == 1
    tenant, asked = sources.calls[0]
    assert tenant == "t1"
    assert [(s.name, s.url, s.method) for s in asked] == [
        ("forecast", "https://api.example/f?city=Oslo", "GET"),
        ("alerts", "https://api.example/alerts", "POST")]
    # The second expansion got the data, pinned to the version that declared them.
    assert len(templates.calls) == 2 and "data_json" not in templates.calls[0]
    assert json.loads(templates.calls[1]["data_json"]) == {"forecast": {"t": 21}, "alerts": []}
    assert templates.calls[1]["version"] == 7
    assert capture.calls[0].documents == ('<p>Oslo: {"alerts": [], "forecast": {"t": 21}}</p>',)
    assert result.template_version == 7
    uses = {u.name: u for u in result.data_sources}
    assert uses["forecast"].origin == "fetched" and uses["alerts"].origin == "cache"
    assert uses["forecast"].age_seconds == pytest.approx(0.5)
    assert uses["alerts"].age_seconds == pytest.approx(30)
    assert uses["alerts"].fetch_time == NOW - 30


async def test_same_data_is_a_warm_hit_and_new_data_a_new_render() -> None:
    sources, capture = Sources(), Capture()
    renderer = pipeline(Templates(), sources, capture)
    first = await renderer.render(request())
    sources.from_cache["forecast"] = True
    again = await renderer.render(request())
    assert again.render_id == first.render_id and again.cached is True
    assert {u.origin for u in again.data_sources} == {"cache"}
    sources.data["forecast"] = {"t": 22}
    changed = await renderer.render(request())
    assert changed.render_id != first.render_id and changed.cached is False
    assert len(capture.calls) == 2 and len(sources.calls) == 3


async def test_templates_without_sources_never_call_the_binding_service() -> None:
    templates = Templates()
    result = await pipeline(templates, NoSources()).render(request("plain", '{"a":1}'))
    assert len(templates.calls) == 1 and result.data_sources == ()
    # And a renderer without a binding service renders them as before.
    bare = await pipeline(Templates(), None).render(request("plain", '{"a":1}'))
    assert bare.render_id == result.render_id


async def test_sources_the_variables_give_are_not_fetched() -> None:
    templates, sources = Templates(), Sources()
    variables = '{"city":"Oslo","data":{"forecast":{"t":5},"alerts":[1]}}'
    result = await pipeline(templates, sources).render(request("weather", variables))
    assert sources.calls == [] and len(templates.calls) == 1
    assert result.data_sources == ()
    only_one = '{"city":"Oslo","data":{"forecast":{"t":5}}}'
    partly = await pipeline(templates, sources).render(request("weather", only_one))
    assert [s.name for s in sources.calls[0][1]] == ["alerts"]
    assert [u.name for u in partly.data_sources] == ["alerts"]


async def test_a_fetch_error_passes_through_as_it_is() -> None:
    sources, capture = Sources(), Capture()
    sources.error = InvalidArgument("a data source could not be fetched", errors=[
        FieldError("dataSources.forecast", "answered text/html, not JSON")])
    with pytest.raises(InvalidArgument) as info:
        await pipeline(Templates(), sources, capture).render(request())
    assert info.value is sources.error
    assert capture.calls == []


async def test_a_source_left_out_of_the_answer_is_an_internal_error() -> None:
    sources, capture = Sources(), Capture()
    sources.leave_out = "alerts"
    with pytest.raises(LithoError) as info:
        await pipeline(Templates(), sources, capture).render(request())
    assert info.value.status == "INTERNAL" and capture.calls == []


async def test_pdf_pages_and_batch_items_fetch_their_own_sources() -> None:
    templates, sources, capture = Templates(), Sources(), Capture()
    renderer = pipeline(templates, sources, capture)
    pdf = await renderer.render(request("weather", '{"city":"Oslo"}', '{"city":"Rome"}',
                                        format="pdf"))
    urls = sorted(s.url for _, asked in sources.calls for s in asked if s.name == "forecast")
    assert urls == ["https://api.example/f?city=Oslo", "https://api.example/f?city=Rome"]
    assert len(capture.calls[0].documents) == 2
    assert sorted(u.name for u in pdf.data_sources) == ["alerts", "forecast"]  # once each
    item = await renderer.render(request("weather", '{"city":"Lima"}', background=True))
    assert [u.name for u in item.data_sources] == ["forecast", "alerts"]
    assert "Lima" in capture.calls[-1].documents[0]


async def test_render_template_answers_the_data_sources() -> None:
    servicer = RendererServicer(pipeline(Templates(), Sources()), None,  # type: ignore[arg-type]
                                None)  # type: ignore[arg-type]
    response = await servicer.RenderTemplate(pb.RenderTemplateRequest(
        tenant_id="t1", template_id="weather", variables_json='{"city":"Oslo"}'),
        None)  # type: ignore[arg-type]
    uses = {u.name: u for u in response.data_sources}
    assert uses["forecast"].origin == "fetched"
    assert uses["forecast"].fetch_time.ToNanoseconds() == int((NOW - 0.5) * 1e9)
    assert uses["alerts"].age_seconds == pytest.approx(30)


# ------------------------------------------------- the replica's memo ----

class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def memoised(*, alerts_ttl: int = 30) -> tuple[Templates, Sources, RenderPipeline, Clock]:
    templates, sources, clock = Templates(), Sources(), Clock()
    templates.alerts_ttl = alerts_ttl
    sources.from_cache = {"forecast": False, "alerts": False}
    sources.fetched_at = {"forecast": NOW, "alerts": NOW}
    memo = SourceMemo(max_bytes=2**20, clock=clock)
    return templates, sources, pipeline(templates, sources, memo=memo), clock


async def test_within_the_ttl_a_render_is_one_expansion_and_no_fetch() -> None:
    templates, sources, renderer, clock = memoised()
    first = await renderer.render(request())
    assert len(sources.calls) == 1 and len(templates.calls) == 2
    clock.now += 29
    again = await renderer.render(request())
    # The memo's data went with the first expansion, which answered the document.
    assert len(sources.calls) == 1 and len(templates.calls) == 3
    assert templates.calls[2]["known"] == ["forecast", "alerts"]
    assert again.render_id == first.render_id and again.cached is True
    assert {(u.name, u.origin, u.fetch_time) for u in again.data_sources} == {
        ("forecast", "cache", NOW), ("alerts", "cache", NOW)}
    clock.now += 1.5  # past the sources' 30 s: asked again, nothing offered
    sources.fetched_at = {"forecast": clock.now, "alerts": clock.now}
    await renderer.render(request())
    assert len(sources.calls) == 2 and "known" not in templates.calls[3]


async def test_new_variables_that_move_a_request_fetch_it() -> None:
    templates, sources, renderer, _ = memoised()
    await renderer.render(request())
    sources.data["forecast"] = {"t": 5}
    bergen = await renderer.render(request("weather", '{"city":"Bergen"}'))
    # Variables never seen offer nothing; only Bergen's forecast is fetched,
    # the alerts (the same request) come from the memo.
    assert "known" not in templates.calls[2]
    assert [[s.name for s in asked] for _, asked in sources.calls] == [
        ["forecast", "alerts"], ["forecast"]]
    assert {u.name: u.origin for u in bergen.data_sources} == {
        "forecast": "fetched", "alerts": "cache"}
    calls = len(templates.calls)
    oslo = await renderer.render(request())
    # Each set of variables is offered its own requests' data: one expansion.
    assert len(sources.calls) == 2 and oslo.cached is True
    assert len(templates.calls) == calls + 1 and templates.calls[-1]["known"]
    assert {u.origin for u in oslo.data_sources} == {"cache"}


async def test_data_no_longer_needed_is_offered_no_more() -> None:
    templates, _, renderer, _ = memoised()
    await renderer.render(request())
    templates.declares = False  # a new version without sources
    await renderer.render(request())
    await renderer.render(request())
    assert [bool(c.get("known")) for c in templates.calls[2:]] == [True, False]


async def test_a_source_without_a_ttl_is_never_kept() -> None:
    templates, sources, renderer, _ = memoised(alerts_ttl=0)
    await renderer.render(request())
    await renderer.render(request())
    assert [[s.name for s in asked] for _, asked in sources.calls] == [
        ["forecast", "alerts"], ["alerts"]]
    assert all("known" not in c for c in templates.calls)


async def test_the_memo_is_kept_per_tenant() -> None:
    templates, sources, renderer, _ = memoised()
    await renderer.render(request())
    other = await renderer.render(replace(request(), tenant_id="t2"))
    assert [tenant for tenant, _ in sources.calls] == ["t1", "t2"]
    assert "known" not in templates.calls[2]
    assert {u.origin for u in other.data_sources} == {"fetched"}


def test_the_memo_is_bounded_in_bytes() -> None:
    clock = Clock()
    text = "x" * 1000
    memo = SourceMemo(max_bytes=2 * (sys.getsizeof(text) + ENTRY_OVERHEAD) + 10, clock=clock)
    sources = [PendingSource(f"s{i}", f"https://api.example/{i}", ttl_seconds=60)
               for i in range(3)]
    for s in sources:
        memo.keep("t1", "tpl", "{}", [s], {s.name: FetchedSource(s.name, text, NOW, False)})
    assert len(memo) == 2
    assert memo.lookup("t1", sources[0]) is None
    assert memo.lookup("t1", sources[2]) is not None
    assert memo.known("t1", "tpl", "{}")[0].name == "s2"  # the last requests of these variables
    assert memo.known("t1", "tpl", '{"a": 1}') == ()
    # Charged as Python holds the text: 1,000 emoji (four bytes each) do not
    # fit where two entries of 1,000 ASCII characters do.
    wide = SourceMemo(max_bytes=2 * (sys.getsizeof(text) + ENTRY_OVERHEAD) + 10, clock=clock)
    wide.keep("t1", "tpl", "{}", sources[:1],
              {"s0": FetchedSource("s0", "\U0001F600" * 1000, NOW, False)})
    assert len(wide) == 0
    big = [PendingSource(f"b{i}", f"https://api.example/b{i}", ttl_seconds=60)
           for i in range(2)]
    roomy = SourceMemo(max_bytes=4 * MAX_KNOWN_BYTES, clock=clock)
    roomy.keep("t1", "big", "{}", big, {s.name: FetchedSource(
        s.name, "x" * (MAX_KNOWN_BYTES // 2 + 1), NOW, False) for s in big})
    assert len(roomy) == 2 and roomy.known("t1", "big", "{}") == ()  # too much at once
    off = SourceMemo(max_bytes=0, clock=clock)
    off.keep("t1", "tpl", "{}", sources[:1], {"s0": FetchedSource("s0", "1", NOW, False)})
    assert len(off) == 0 and off.known("t1", "tpl", "{}") == ()
