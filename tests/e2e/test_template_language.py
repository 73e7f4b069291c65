"""The template language through the gateway: expressions in real renders,
the expression endpoints, variable definitions and versions."""

from __future__ import annotations

import io
from typing import Any

from pypdf import PdfReader

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create, render

PRICE = """<!doctype html><html><body style="margin:0;background:#fff">
<h1 style="font:bold 40px sans-serif;margin:20px">{{ price * 0.9 | currency }}</h1>
</body></html>"""


async def fetch(live: Live, url: str) -> bytes:
    async with live.http.get(url) as r:
        assert r.status == 200
        return await r.read()


async def pdf_text(live: Live, template_id: str, body: dict[str, Any]) -> str:
    result = await render(live, template_id, {**body, "format": "pdf"})
    reader = PdfReader(io.BytesIO(await fetch(live, result["url"])))
    return " ".join(page.extract_text() for page in reader.pages).strip()


async def post(live: Live, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with live.http.post(f"{live.url}{path}", json=body, headers=live.auth()) as r:
        return r.status, await r.json()


async def test_price_expression_renders_formatted_in_the_image(live: Live) -> None:
    template = await create(live, html=PRICE, width=300, height=100)
    assert await pdf_text(live, template["id"], {"variables": {"price": 49}}) == "$44.10"
    # The PNG is pixel-identical to one of a template that says $44.10 literally.
    literal = await create(live, html=PRICE.replace("{{ price * 0.9 | currency }}", "$44.10"),
                           width=300, height=100)
    computed = await render(live, template["id"], {"variables": {"price": 49}})
    expected = await render(live, literal["id"], {})
    assert await fetch(live, computed["url"]) == await fetch(live, expected["url"])


async def test_blocks_loops_and_escaping_in_a_render(live: Live) -> None:
    html = """<body>{{ if featured }}<b>Featured</b>{{ else }}plain{{ end }}
    {{ for item in items }}[{{ loop.number }}:{{ item.name | uppercase }}]{{ end }}
    {{ note }} {{ raw trusted }}</body>"""
    template = await create(live, html=html, width=600, height=200)
    text = await pdf_text(live, template["id"], {"variables": {
        "featured": True, "items": [{"name": "ab"}, {"name": "cd"}],
        "note": "<i>x</i>", "trusted": "<i>y</i>"}})
    assert "Featured" in text and "[1:AB][2:CD]" in text
    assert "<i>x</i>" in text and "<i>y</i>" not in text and "y" in text


async def test_expression_test_validate_and_functions(live: Live) -> None:
    status, result = await post(live, "/v1/expressions/test", {
        "expression": "currency(price * quantity, 'USD')",
        "variables": {"price": 29.99, "quantity": 3}})
    assert status == 200 and result == {"result": "$89.97", "resultType": "string"}
    status, result = await post(live, "/v1/expressions/test",
                                {"expression": "items | pluck: 'n' | sum",
                                 "variables": {"items": [{"n": 1}, {"n": 2.5}]}})
    assert result == {"result": 3.5, "resultType": "number"}

    status, result = await post(live, "/v1/expressions/validate",
                                {"expression": "price | curency"})
    assert status == 200 and result["valid"] is False
    assert result["errors"] == [{
        "message": "line 1, column 9: unknown filter 'curency' (did you mean 'currency'?)",
        "line": 1, "column": 9}]
    status, result = await post(live, "/v1/expressions/validate", {
        "template": "<p>{{ user.name }}</p>\n{{ for t in tags }}{{ t }}{{ end }}{{ if ok }}"})
    assert result["valid"] is False and result["errors"][0]["line"] == 2
    status, result = await post(live, "/v1/expressions/validate",
                                {"template": "{{ a.b }}{{ for t in tags }}{{ t }}{{ end }}"})
    assert result == {"valid": True, "errors": [], "variables": ["a", "tags"]}

    async with live.http.get(f"{live.url}/v1/expressions/functions", headers=live.auth()) as r:
        functions = {f["name"]: f for f in (await r.json())["functions"]}
    assert {"currency", "date", "truncate", "pluck", "relativeTime"} <= set(functions)
    currency = functions["currency"]
    assert currency["signature"].startswith("currency(") and currency["description"]
    # Every documented example evaluates to its documented result.
    for info in functions.values():
        if info["name"] == "relativeTime":
            continue  # depends on the clock
        status, result = await post(live, "/v1/expressions/test", {
            "expression": info["example"], "variables": info["exampleVariables"]})
        assert status == 200 and result["result"] == info["exampleResult"], info["name"]


async def test_expression_evaluation_errors_are_422(live: Live) -> None:
    status, problem = await post(live, "/v1/expressions/test", {"expression": "1 / 0"})
    assert status == 422 and "zero" in problem["detail"]
    status, problem = await post(live, "/v1/expressions/test", {"expression": "1 +"})
    assert status == 422


async def test_variable_definitions_validate_and_fill_defaults(live: Live) -> None:
    definitions = [
        {"name": "title", "type": "text", "validation": {"required": True, "maxLength": 10}},
        {"name": "price", "type": "number", "defaultValue": 10, "validation": {"min": 0}},
        {"name": "tone", "type": "text", "defaultValue": "calm",
         "validation": {"enum": ["calm", "loud"]}},
    ]
    html = "<p>{{ title }} {{ price | currency }} {{ tone }} {{ extra }}</p>"
    template = await create(live, html=html, width=400, height=100, variables=definitions)
    async with live.http.get(f"{live.url}/v1/templates/{template['id']}",
                             headers=live.auth()) as r:
        shown = await r.json()
    assert [d["name"] for d in shown["variables"]] == ["title", "price", "tone"]
    assert shown["variables"][1]["defaultValue"] == 10
    assert shown["discoveredVariables"] == ["title", "price", "tone", "extra"]

    assert await pdf_text(live, template["id"], {"variables": {"title": "Hi"}}) == (
        "Hi $10.00 calm")
    status, problem = await post(live, f"/v1/templates/{template['id']}/render", {
        "variables": {"title": "far too long a title", "price": -1, "tone": "shouty"}})
    assert status == 422
    assert {e["field"] for e in problem["errors"]} == {"title", "price", "tone"}
    status, problem = await post(live, f"/v1/templates/{template['id']}/render",
                                 {"variables": {}})
    assert status == 422 and problem["errors"] == [{"field": "title", "message": "is required"}]

    status, problem = await post(live, "/v1/templates", {
        "name": "bad", "html": "<p/>", "width": 10, "height": 10,
        "variables": [{"name": "a", "type": "text"}, {"name": "b", "type": "money"}]})
    assert status == 422 and problem["errors"][0]["field"] == "/variables/1/type"
    status, problem = await post(live, "/v1/templates", {
        "name": "bad", "html": "<p/>", "width": 10, "height": 10,
        "variables": [{"name": "a", "type": "text"},
                      {"name": "b", "type": "number", "defaultValue": "ten"}]})
    assert status == 422 and problem["errors"][0]["field"] == "variables[1].defaultValue"


async def test_versions_are_listed_pinned_and_part_of_the_cache_key(live: Live) -> None:
    template = await create(live, html="<p>one {{ x }}</p>", width=300, height=100)
    tid = template["id"]
    for text in ("two", "three"):
        async with live.http.put(f"{live.url}/v1/templates/{tid}",
                                 json={"html": f"<p>{text} {{{{ x }}}}</p>"},
                                 headers=live.auth()) as r:
            assert r.status == 200
    async with live.http.get(f"{live.url}/v1/templates/{tid}/versions?pageSize=2",
                             headers=live.auth()) as r:
        page = await r.json()
    assert [v["version"] for v in page["versions"]] == [3, 2]
    async with live.http.get(f"{live.url}/v1/templates/{tid}/versions?pageSize=2&pageToken="
                             f"{page['nextPageToken']}", headers=live.auth()) as r:
        rest = await r.json()
    assert [v["version"] for v in rest["versions"]] == [1] and rest["nextPageToken"] is None

    body = {"variables": {"x": "!"}}
    assert await pdf_text(live, tid, body) == "three !"
    assert await pdf_text(live, tid, {**body, "version": 1}) == "one !"
    v1 = await render(live, tid, {**body, "version": 1})
    latest = await render(live, tid, body)
    assert v1["url"] != latest["url"] and v1["templateVersion"] == 1
    assert latest["templateVersion"] == 3
    status, _ = await post(live, f"/v1/templates/{tid}/render", {**body, "version": 9})
    assert status == 404


async def test_signed_url_variables_are_coerced_to_their_defined_types(live: Live) -> None:
    template = await create(live, html=PRICE, width=300, height=100,
                            variables=[{"name": "price", "type": "number"}])
    status, signed = await post(live, "/v1/signed-urls", {
        "templateId": template["id"], "format": "pdf", "variables": {"price": 49}})
    assert status == 201
    reader = PdfReader(io.BytesIO(await fetch(live, signed["url"])))
    assert reader.pages[0].extract_text().strip() == "$44.10"


async def test_hostile_templates_are_refused_or_bounded(live: Live) -> None:
    status, problem = await post(live, "/v1/templates", {
        "name": "deep", "html": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "width": 10, "height": 10})
    assert status == 422 and "LITHO_TEMPLATE_MAX_DEPTH" in problem["errors"][0]["message"]
    loops = await create(live, html="{{ for a in xs }}{{ for b in xs }}.{{ end }}{{ end }}",
                         width=10, height=10)
    status, problem = await post(live, f"/v1/templates/{loops['id']}/render",
                                 {"variables": {"xs": list(range(1000))}})
    assert status == 422 and "LITHO_TEMPLATE_MAX_LOOP_ITERATIONS" in problem["detail"]
    sneaky = await create(live, html="<p>[{{ s.__class__ }}{{ s.constructor }}]</p>",
                          width=200, height=50)
    assert await pdf_text(live, sneaky["id"], {"variables": {"s": "x"}}) == "[]"
