"""Templates and patterns written to stall the template service, over HTTP.

Each attack must end in a prompt 4xx naming the limit (or a correct 200),
and while it runs, another tenant's render and ``/healthz`` must keep
answering. Nothing here measures speed: the checks are the answers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create
from tests.e2e.test_template_language import pdf_text

PLAIN = '<body style="margin:0;background:#fff"><p>{{ title }}</p></body>'


async def post(live: Live, path: str, body: dict[str, Any],
               key: str | None = None) -> tuple[int, Any]:
    async with live.http.post(f"{live.url}{path}", json=body, headers=live.auth(key)) as r:
        return r.status, await r.json(content_type=None)


async def healthy(live: Live) -> bool:
    async with live.http.get(f"{live.url}/healthz") as r:
        return r.status == 200


async def other_tenant_renders(live: Live) -> dict[str, Any]:
    """A render of another tenant's fresh template, with its own variables."""
    status, template = await post(live, "/v1/templates", {
        "name": "bystander", "html": PLAIN, "width": 200, "height": 100,
    }, key=live.other_key)
    assert status == 201, template
    status, result = await post(live, f"/v1/templates/{template['id']}/render",
                                {"variables": {"title": "still here"}}, key=live.other_key)
    assert status == 200, result
    return dict(result)


async def test_backtracking_patterns_are_matched_in_linear_time(live: Live) -> None:
    # The patterns of issue 7: accepted (RE2 matches them in linear time)...
    for pattern in (r"\w*\w*\w*\w*\w*\w*!", r"\w*\w*\w*\w*!", r"(a+)+$", r"(\w+\s?)+$"):
        template = await create(live, html=PLAIN, variables=[
            {"name": "title", "type": "text", "validation": {"pattern": pattern}},
        ])
        # ...and a long value that would make a backtracking matcher run for
        # ages is refused at once, while another tenant's work goes on.
        attack = post(live, f"/v1/templates/{template['id']}/render",
                      {"variables": {"title": "a" * 9_999 + "\u2603"}})
        (status, problem), bystander, ok = await asyncio.gather(
            attack, other_tenant_renders(live), healthy(live))
        assert status == 422, problem
        assert problem["errors"] == [
            {"field": "title", "message": f"must match the pattern {pattern}"}]
        assert bystander["width"] == 200 and ok


async def test_patterns_re2_cannot_match_are_refused_on_save(live: Live) -> None:
    for pattern, reason in ((r"(a)\1", "invalid escape sequence"),
                            (r"(?=a)a", "invalid perl operator"),
                            (r"(?<!x)y", "invalid perl operator")):
        status, problem = await post(live, "/v1/templates", {
            "name": "p", "html": PLAIN, "width": 200, "height": 100,
            "variables": [{"name": "title", "type": "text", "validation": {"pattern": pattern}}],
        })
        assert status == 422, problem
        [error] = problem["errors"]
        assert error["field"] == "variables[0].validation.pattern"
        assert reason in error["message"] and "RE2" in error["message"]


async def test_comparing_big_arrays_in_a_loop_runs_out_of_steps(live: Live) -> None:
    # Issue 7: three 10,000-item arrays (about 150 KB) and an innocent-looking
    # comparison in a loop took 54 s of one core. Now the comparisons are
    # charged item by item, and the budget ends it with a 422.
    xs = list(range(10_000))
    template = await create(
        live, html="<p>{{ for x in xs }}{{ if big == big2 }}.{{ end }}{{ end }}</p>")
    attack = post(live, f"/v1/templates/{template['id']}/render",
                  {"variables": {"xs": xs, "big": xs, "big2": xs}})
    (status, problem), bystander, ok = await asyncio.gather(
        attack, other_tenant_renders(live), healthy(live))
    assert status == 422, problem
    assert "LITHO_TEMPLATE_MAX_STEPS" in problem["detail"]
    assert bystander["width"] == 200 and ok


async def test_a_small_template_with_heavy_loops_expands_correctly(live: Live) -> None:
    # Small source, small variables, but more steps than an expansion may
    # take on the service's event loop: it is finished in a worker instead,
    # and the document is the same as any other expansion would give.
    html = ('<body style="margin:0;font:8px sans-serif">{{ for a in xs }}{{ for b in xs }}'
            '{{ if a == b && a % 30 == 0 }}[{{ a }}]{{ end }}{{ end }}{{ end }}</body>')
    template = await create(live, html=html, width=400, height=100)
    text = await pdf_text(live, template["id"], {"variables": {"xs": list(range(95))}})
    assert text == "[0][30][60][90]"


async def test_expression_tests_are_bounded_too(live: Live) -> None:
    # About 240 KB of variables; each json() walks some 160,000 items.
    items = [[0] * 100 for _ in range(800)]
    status, problem = await post(live, "/v1/expressions/test", {
        "expression": "length(json(items) + json(items) + json(items) + json(items))",
        "variables": {"items": items},
    })
    assert status == 422, problem
    assert "LITHO_TEMPLATE_MAX_STEPS" in problem["detail"]
    status, result = await post(live, "/v1/expressions/test", {
        "expression": "length(json(items))", "variables": {"items": items},
    })
    expected = len(json.dumps(items, separators=(",", ":")))
    assert status == 200 and result["result"] == expected, result
