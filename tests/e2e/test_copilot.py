"""The template copilot over HTTP against the real stack (the embedded,
deterministic planner): plan, preview, apply as one new version, and the
refusals (unknown steps, a template that moved on, another tenant's
template, a prompt too long), with nothing half-applied."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import fetch_image, render

pytestmark = pytest.mark.production

OG = """<!doctype html><html><head><style>
  body { margin: 0; width: 1200px; height: 630px; background: #ffffff; color: #111827;
         font-family: sans-serif; }
  .brand { color: #4f46e5; }
</style></head><body>
<h1 style="position: absolute; left: 60px; top: 60px; font-size: 64px; margin: 0">{{ title }}</h1>
{{ if subtitle }}<p style="position: absolute; left: 60px; top: 180px; font-size: 32px">\
{{ subtitle }}</p>{{ end }}
<ul class="brand" style="position: absolute; left: 60px; top: 300px">\
{{ for tag in tags }}<li>{{ tag }}</li>{{ end }}</ul>
</body></html>"""


async def og(live: Live, *, key: str | None = None) -> dict[str, Any]:
    body = {"name": f"og-{uuid.uuid4().hex[:6]}", "html": OG, "width": 1200, "height": 630,
            "sampleVariables": {"title": "Hello", "subtitle": "", "tags": ["a"]}}
    async with live.http.post(f"{live.url}/v1/templates", json=body,
                              headers=live.auth(key)) as r:
        assert r.status == 201, await r.text()
        made: dict[str, Any] = await r.json()
        return made


async def call(live: Live, path: str, body: Any, *, key: str | None = None
               ) -> tuple[int, dict[str, Any]]:
    async with live.http.post(f"{live.url}{path}", json=body, headers=live.auth(key)) as r:
        return r.status, await r.json(content_type=None)


async def planned(live: Live, template_id: str, prompt: str) -> dict[str, Any]:
    status, plan = await call(live, f"/v1/templates/{template_id}/copilot", {"prompt": prompt})
    assert status == 200, plan
    return plan


async def test_a_dark_mode_variant_is_planned_previewed_and_applied_as_one_version(
        live: Live) -> None:
    template = await og(live)
    tid = template["id"]
    plan = await planned(live, tid, "make a dark mode version")
    assert plan["planner"] == "rules" and plan["templateVersion"] == 1
    ids = [s["id"] for s in plan["steps"] if s["operation"] is not None]
    assert ids and all(i.startswith(plan["planId"] + ".") for i in ids)
    status, preview = await call(live, f"/v1/templates/{tid}/copilot/preview", {"steps": ids})
    assert status == 200, preview
    assert preview["template"]["html"] != OG and preview["created"] == []
    # The preview stored nothing.
    async with live.http.get(f"{live.url}/v1/templates/{tid}", headers=live.auth()) as r:
        assert (await r.json())["version"] == 1
    status, applied = await call(live, f"/v1/templates/{tid}/copilot/apply", {"steps": ids})
    assert status == 200, applied
    new = applied["template"]
    assert new["version"] == 2 and new["html"] == preview["template"]["html"]
    # Every template tag survived the edit.
    for tag in ("{{ title }}", "{{ if subtitle }}", "{{ for tag in tags }}", "{{ end }}"):
        assert new["html"].count(tag) == OG.count(tag), tag
    result = await render(live, tid, {"variables": {"title": "Dark", "subtitle": "",
                                                    "tags": []}})
    image, _ = await fetch_image(live, result["url"])
    pixel = image.convert("RGB").getpixel((1150, 600))
    assert isinstance(pixel, tuple)
    red, green, blue = pixel[:3]
    assert 0.2126 * red + 0.7152 * green + 0.0722 * blue < 60, pixel  # a dark background
    # Steps of a plan apply once: the template has moved on.
    status, again = await call(live, f"/v1/templates/{tid}/copilot/apply", {"steps": ids})
    assert status == 409, again
    assert "planned for version 1" in again["detail"]


async def test_resizing_for_a_story_reflows_the_canvas(live: Live) -> None:
    tid = (await og(live))["id"]
    plan = await planned(live, tid, "resize for instagram story")
    ops = [s["operation"] for s in plan["steps"] if s["operation"]]
    assert ops == [{"op": "resize_canvas", "width": 1080, "height": 1920, "reflow": "scale"}]
    status, applied = await call(live, f"/v1/templates/{tid}/copilot/apply",
                                 {"steps": [plan["steps"][0]["id"]]})
    assert status == 200, applied
    assert (applied["template"]["width"], applied["template"]["height"]) == (1080, 1920)
    assert "width: 1080px" in applied["template"]["html"]


async def test_background_variants_become_new_templates_and_leave_the_original(
        live: Live) -> None:
    template = await og(live)
    tid = template["id"]
    plan = await planned(live, tid, "generate 3 background variants")
    ids = [s["id"] for s in plan["steps"] if s["operation"]]
    assert len(ids) == 3
    status, applied = await call(live, f"/v1/templates/{tid}/copilot/apply", {"steps": ids})
    assert status == 200, applied
    assert applied["template"]["version"] == 1  # the original is unchanged
    created = applied["created"]
    assert len(created) == 3 and len({t["id"] for t in created}) == 3
    for made in created:
        assert made["id"] != tid and made["version"] == 1
        assert made["sampleVariables"] == template["sampleVariables"]
        assert "linear-gradient" in made["html"]


async def test_bad_requests_are_clear_4xx_and_change_nothing(live: Live) -> None:
    tid = (await og(live))["id"]
    base = f"/v1/templates/{tid}/copilot"
    plan = await planned(live, tid, "make the title bigger")
    good = plan["steps"][0]["id"]
    cases: list[tuple[str, Any, int, str]] = [
        (base, {"prompt": "x" * (1024 * 1024)}, 0, ""),  # a 413 or a 422, checked below
        (base, {"prompt": ""}, 422, "prompt"),
        (base, {"prompt": "dark", "history": [{"role": "system", "content": "x"}]}, 422,
         "history"),
        (base + "/apply", {"steps": []}, 422, "steps"),
        (base + "/apply", {"steps": ["s1"]}, 422, "steps[0]"),
        (base + "/apply", {"steps": [plan["planId"] + ".s99"]}, 422, "steps[0]"),
        (base + "/apply", {"steps": ["cp_" + "0" * 24 + ".s1"]}, 422, "steps"),
        (base + "/apply", {"steps": [good, good]}, 422, "steps[1]"),
        (base + "/preview", {"steps": ["../../etc"]}, 422, "steps[0]"),
    ]
    for path, body, want, field in cases:
        status, problem = await call(live, path, body)
        if want == 0:
            assert status in (413, 422), (status, problem)
            continue
        assert status == want, (path, body, status, problem)
        # The service names fields as paths (steps[0]), the gateway's schema
        # check as JSON pointers (/steps/0).
        pointer = "/" + field.replace("[", "/").replace("]", "")
        fields = [e["field"] for e in problem.get("errors", [])]
        assert (field in problem["detail"]
                or any(f == field or f.startswith((pointer + "/", f"{field}.", f"{field}["))
                       or f == pointer for f in fields)), (field, problem)
    # An explanation step has nothing to apply.
    vague = await planned(live, tid, "make it pop somehow")
    assert [s["operation"] for s in vague["steps"]] == [None]
    status, problem = await call(live, base + "/apply", {"steps": [vague["steps"][0]["id"]]})
    assert status == 422 and "no operation" in problem["detail"]
    async with live.http.get(f"{live.url}/v1/templates/{tid}", headers=live.auth()) as r:
        assert (await r.json())["version"] == 1


async def test_another_tenants_template_and_plans_are_invisible(live: Live) -> None:
    tid = (await og(live))["id"]
    plan = await planned(live, tid, "make a dark mode version")
    ids = [s["id"] for s in plan["steps"] if s["operation"]]
    other = live.other_key
    status, _ = await call(live, f"/v1/templates/{tid}/copilot", {"prompt": "dark"}, key=other)
    assert status == 404
    status, _ = await call(live, f"/v1/templates/{tid}/copilot/apply", {"steps": ids},
                           key=other)
    assert status == 404
    # Their own template cannot use our plan either.
    theirs = (await og(live, key=other))["id"]
    status, problem = await call(live, f"/v1/templates/{theirs}/copilot/apply",
                                 {"steps": ids}, key=other)
    assert status == 422 and "no copilot plan" in problem["detail"]
    # A deleted template's plans go with it.
    async with live.http.delete(f"{live.url}/v1/templates/{tid}", headers=live.auth()) as r:
        assert r.status == 204
    status, _ = await call(live, f"/v1/templates/{tid}/copilot/apply", {"steps": ids})
    assert status in (404, 422)
