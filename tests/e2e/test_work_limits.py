"""Work limits through the public API, on a stack of its own with small limits
and a short render deadline.

What can be predicted from the request (variable sets, pages, GIF and WebP
pixels) is refused before any browser work, with a 422 naming the limit and
its setting; what cannot (the paint cost of CSS filters) is bounded by the
render deadline, which is a 422 naming LITHO_RENDERER_TIMEOUT, never a 504.
No assertion here reads a clock: a refusal that names the up-front limit, not
the deadline, is what shows it came before the work.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from services._stack import Stack

TIMEOUT_S = 5
MAX_PDF_PAGES = 10
MAX_PDF_DOCUMENTS = 4
MAX_GIF_PIXELS = 2_000_000
MAX_WEBP_PIXELS = 1_000_000

BREAKS = """<!doctype html><html><body style="margin:0">
{{ for i in pages }}<div style="page-break-after: always">page {{ i }}</div>{{ end }}
</body></html>"""

# Many page-sized layers, each blurring what is behind it: the paint cost
# grows with layers × area and nothing in the request shows it (tens of
# seconds on 2 cores; a 3000×3000 page with 30 such layers took 22 s).
PAINT_HEAVY = "<!doctype html><html><head><style>html, body { margin: 0; } .l { position: " \
    "absolute; width: 3400px; height: 3400px; backdrop-filter: blur(40px); filter: blur(20px); " \
    "box-shadow: 0 0 200px 100px rgba(0, 0, 0, .3); }</style></head><body>" + "".join(
        f'<div class="l" style="left: {i * 7}px; top: {i * 11}px; '
        f'background: hsla({i * 17 % 360}, 80%, 50%, .3)"></div>' for i in range(80)
    ) + "</body></html>"


class Api:
    def __init__(self, stack: Stack, http: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.http = http

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.stack.api_key}"}

    async def create(self, html: str, width: int = 400, height: int = 300) -> str:
        body = {"name": "limits", "html": html, "width": width, "height": height}
        async with self.http.post(f"{self.stack.url}/v1/templates", json=body,
                                  headers=self.headers) as r:
            assert r.status == 201, await r.text()
            template_id: str = (await r.json())["id"]
            return template_id

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.stack.url + path, json=body, headers=self.headers) as r:
            return r.status, json.loads(await r.text())

    def stored(self) -> set[Path]:
        return {p for p in (self.stack.data_dir / "blobs").rglob("*") if p.is_file()}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("litho-limits"),
        gateway_port=0,
        log_to_files=True,
        env={
            "LITHO_LOG_LEVEL": "INFO",
            "LITHO_RENDERER_CONCURRENCY": "1",
            "LITHO_RENDERER_TIMEOUT": str(TIMEOUT_S),
            "LITHO_RENDERER_MAX_PDF_PAGES": str(MAX_PDF_PAGES),
            "LITHO_RENDERER_MAX_PDF_DOCUMENTS": str(MAX_PDF_DOCUMENTS),
            "LITHO_RENDERER_MAX_GIF_PIXELS": str(MAX_GIF_PIXELS),
            "LITHO_RENDERER_MAX_WEBP_PIXELS": str(MAX_WEBP_PIXELS),
        },
    )
    async with stack, aiohttp.ClientSession() as http:
        yield Api(stack, http)
    assert stack.unclean_exits() == {}


def refused(status: int, problem: dict[str, Any], field: str, *needles: str) -> None:
    assert status == 422, problem
    assert field in {e["field"] for e in problem.get("errors", [])}, problem
    for needle in needles:
        assert needle in problem["detail"], problem


async def test_too_many_variable_sets_is_refused_before_any_work(api: Api) -> None:
    template = await api.create("<h1>{{ n }}</h1>")
    before = api.stored()
    sets = [{"n": i} for i in range(MAX_PDF_DOCUMENTS + 1)]
    status, problem = await api.post(f"/v1/templates/{template}/pdf", {"variableSets": sets})
    refused(status, problem, "variableSets", f"at most {MAX_PDF_DOCUMENTS}",
            "LITHO_RENDERER_MAX_PDF_DOCUMENTS")
    assert api.stored() == before
    status, result = await api.post(f"/v1/templates/{template}/pdf",
                                    {"variableSets": sets[:MAX_PDF_DOCUMENTS]})
    assert status == 200 and result["pageCount"] == MAX_PDF_DOCUMENTS, result
    assert api.stored() > before  # so an unchanged store above means something


async def test_css_page_breaks_past_the_page_limit_are_never_printed(api: Api) -> None:
    template = await api.create(BREAKS)
    status, result = await api.post(f"/v1/templates/{template}/render", {
        "format": "pdf", "pdf": {"preset": "A3"},
        "variables": {"pages": list(range(MAX_PDF_PAGES))}})
    assert status == 200 and result["pageCount"] == MAX_PDF_PAGES, result
    before = api.stored()
    # Thousands of pages would overrun the deadline; only one past the limit is printed.
    status, problem = await api.post(f"/v1/templates/{template}/render", {
        "format": "pdf", "pdf": {"preset": "A3"}, "variables": {"pages": list(range(5000))}})
    refused(status, problem, "pdf", f"more than {MAX_PDF_PAGES} pages",
            "LITHO_RENDERER_MAX_PDF_PAGES")
    assert api.stored() == before
    # Pages of several variable sets add up.
    sets = [{"pages": list(range(4))} for _ in range(3)]
    status, problem = await api.post(f"/v1/templates/{template}/pdf", {"variableSets": sets})
    refused(status, problem, "pdf", "LITHO_RENDERER_MAX_PDF_PAGES")


async def test_gif_and_webp_pixels_are_bounded(api: Api) -> None:
    animated = """<!doctype html><html><head><style>
      @keyframes s { from { margin-left: 0 } to { margin-left: 300px } }
      div { width: 50px; height: 50px; background: blue; animation: s 2s linear forwards; }
    </style></head><body><div></div></body></html>"""
    template = await api.create(animated, width=500, height=400)  # 200,000 pixels a frame
    before = api.stored()
    # 30 fps for 1 s is 31 frames: 6.2 MP against 2 MP.
    status, problem = await api.post(f"/v1/templates/{template}/render", {
        "format": "gif", "gif": {"fps": 30, "duration": 1000}})
    refused(status, problem, "gif.duration", "LITHO_RENDERER_MAX_GIF_PIXELS", "at most 10 frames")
    status, problem = await api.post(f"/v1/templates/{template}/render", {
        "format": "webp", "width": 1000, "height": 1001})
    refused(status, problem, "width", "LITHO_RENDERER_MAX_WEBP_PIXELS")
    assert api.stored() == before
    # Without a duration the 2 s animation is covered by fewer frames instead.
    status, result = await api.post(f"/v1/templates/{template}/render", {
        "format": "gif", "gif": {"fps": 30}})
    assert status == 200 and 1 < result["frameCount"] <= 10, result
    status, result = await api.post(f"/v1/templates/{template}/render", {
        "format": "webp", "width": 1000, "height": 1000})
    assert status == 200, result


async def test_a_template_that_overruns_the_deadline_is_a_422_not_a_504(api: Api) -> None:
    # Last in this module: the overrun puts this tenant in its cool-down.
    heavy = await api.create(PAINT_HEAVY, width=3400, height=3400)
    light = await api.create("<p>{{ n }}</p>")
    before = api.stored()
    status, problem = await api.post(f"/v1/templates/{heavy}/render", {"format": "png"})
    refused(status, problem, "template", f"longer than {TIMEOUT_S} s",
            "LITHO_RENDERER_TIMEOUT", "simplify")
    assert api.stored() == before
    # The overrun restarted Chromium under everyone's renders; so that no
    # tenant can do that at will, this tenant's renders now wait out a
    # cool-down (429, Retry-After) while other tenants render as usual.
    status, problem = await api.post(f"/v1/templates/{light}/render", {"variables": {"n": 0}})
    assert status == 429 and "LITHO_RENDERER_OVERRUN_COOLDOWN" in problem["detail"], problem
    other = {"Authorization": f"Bearer {await api.stack.create_key('bystander')}"}
    async with api.http.post(f"{api.stack.url}/v1/templates", headers=other, json={
            "name": "light", "html": "<p>{{ n }}</p>", "width": 200, "height": 100}) as r:
        assert r.status == 201
        theirs = (await r.json())["id"]
    # Chromium was restarted: without that its compositor would go on drawing
    # the heavy page for minutes, and these would overrun the deadline too.
    for n in range(3):
        async with api.http.post(f"{api.stack.url}/v1/templates/{theirs}/render",
                                 headers=other, json={"variables": {"n": n}}) as r:
            assert r.status == 200, await r.text()
    async with api.http.get(f"{api.stack.url}/healthz") as r:
        assert r.status == 200
