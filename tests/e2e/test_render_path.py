"""Create, render, fetch, decode: the render path over HTTP against the real stack."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from typing import Any

import nats
import pytest
from PIL import Image

from litho.events.v1 import events_pb2
from tests.e2e.conftest import Live

pytestmark = pytest.mark.production

CARD = """<!doctype html><html><head><style>
  html, body { margin: 0; background: #ff0000; }
  .box { position: absolute; left: 0; top: 0; width: 100px; height: 100px; background: #0000ff; }
  h1 { position: absolute; left: 150px; top: 10px; margin: 0; font: bold 24px sans-serif;
       color: #ffffff; }
</style></head><body><div class="box"></div><h1>{{ title }} {{ user.name }}</h1></body></html>"""


async def create(live: Live, **overrides: Any) -> dict[str, Any]:
    body = {"name": "card", "html": CARD, "width": 400, "height": 200, **overrides}
    async with live.http.post(f"{live.url}/v1/templates", json=body, headers=live.auth()) as r:
        assert r.status == 201, await r.text()
        created: dict[str, Any] = await r.json()
        return created


async def render(live: Live, template_id: str, body: dict[str, Any], *,
                 path: str = "/v1/templates/{}/render") -> dict[str, Any]:
    async with live.http.post(live.url + path.format(template_id), json=body,
                              headers=live.auth()) as r:
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def fetch_image(live: Live, url: str) -> tuple[Image.Image, dict[str, str]]:
    async with live.http.get(url) as r:
        assert r.status == 200
        data = await r.read()
        return Image.open(io.BytesIO(data)), dict(r.headers)


async def test_render_png_and_read_its_pixels(live: Live) -> None:
    template = await create(live)
    result = await render(live, template["id"], {"variables": {"title": "Hello",
                                                               "user": {"name": "Ada"}}})
    assert result["format"] == "png" and result["cached"] is False
    assert (result["width"], result["height"]) == (400, 200)
    assert result["url"] == f"{live.url}/images/{result['id']}.png"
    image, headers = await fetch_image(live, result["url"])
    assert headers["Content-Type"] == "image/png"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert image.size == (400, 200)
    rgb = image.convert("RGB")
    assert rgb.getpixel((50, 50)) == (0, 0, 255)
    assert rgb.getpixel((300, 150)) == (255, 0, 0)
    # The title was drawn: some pixels of the heading's area are white.
    heading = rgb.crop((150, 10, 400, 40))
    assert any(heading.getpixel((x, y)) == (255, 255, 255)
               for x in range(heading.width) for y in range(heading.height))


async def test_identical_render_is_a_cache_hit_with_the_same_url(live: Live) -> None:
    template = await create(live)
    body = {"variables": {"title": "Same"}, "format": "png"}
    nc = await nats.connect(live.stack.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe("litho.events.v1.render.completed")
        first = await render(live, template["id"], body)
        second = await render(live, template["id"], body)
        assert first["cached"] is False and second["cached"] is True
        assert second["url"] == first["url"] and second["id"] == first["id"]
        seen: list[bool] = []
        while len(seen) < 2:
            msg = await asyncio.wait_for(sub.next_msg(timeout=10), 15)
            event = events_pb2.RenderCompleted.FromString(msg.data)
            if event.render_id == first["id"]:
                seen.append(event.cached)
            await msg.ack()
        assert seen == [False, True]
    finally:
        await nc.close()


async def test_short_route_and_file_extension_alias_render_jpeg(live: Live) -> None:
    template = await create(live)
    result = await render(live, template["id"], {"fileExtension": "jpg"},
                          path="/template/{}/render")
    assert result["format"] == "jpeg" and result["url"].endswith(".jpeg")
    image, headers = await fetch_image(live, result["url"])
    assert headers["Content-Type"] == "image/jpeg" and image.format == "JPEG"
    pixel = image.convert("RGB").getpixel((50, 50))
    assert isinstance(pixel, tuple)
    r, g, b = pixel
    assert b > 200 and r < 40 and g < 40


async def test_image_etag_304_and_head(live: Live) -> None:
    template = await create(live)
    result = await render(live, template["id"], {"variables": {"title": "etag"}})
    async with live.http.get(result["url"]) as r:
        etag = r.headers["ETag"]
        size = len(await r.read())
    async with live.http.get(result["url"], headers={"If-None-Match": etag}) as r:
        assert r.status == 304 and await r.read() == b""
    async with live.http.head(result["url"]) as r:
        assert r.status == 200 and r.headers["ETag"] == etag
        assert int(r.headers["Content-Length"]) == size
    async with live.http.get(f"{live.url}/images/{'0' * 64}.png") as r:
        assert r.status == 404
        assert r.content_type == "application/problem+json"


async def test_templates_crud_versions_and_pagination(live: Live) -> None:
    created = [await create(live, name=f"page-{i}") for i in range(3)]
    assert created[0]["version"] == 1
    tid = created[0]["id"]
    async with live.http.put(f"{live.url}/v1/templates/{tid}", json={"width": 300},
                             headers=live.auth()) as r:
        assert r.status == 200
        updated = await r.json()
    assert updated["version"] == 2 and updated["width"] == 300
    assert updated["html"] == CARD and updated["name"] == "page-0"
    async with live.http.get(f"{live.url}/v1/templates/{tid}", headers=live.auth()) as r:
        assert (await r.json())["version"] == 2

    ids: list[str] = []
    token = None
    for _ in range(100):
        query = "?pageSize=2" + (f"&pageToken={token}" if token else "")
        async with live.http.get(f"{live.url}/v1/templates{query}", headers=live.auth()) as r:
            assert r.status == 200
            page = await r.json()
        assert len(page["templates"]) <= 2
        ids += [t["id"] for t in page["templates"]]
        token = page["nextPageToken"]
        if token is None:
            break
    assert [c["id"] for c in created] == [i for i in ids if i in {c["id"] for c in created}]
    assert len(ids) == len(set(ids))

    async with live.http.delete(f"{live.url}/v1/templates/{tid}", headers=live.auth()) as r:
        assert r.status == 204
    async with live.http.get(f"{live.url}/v1/templates/{tid}", headers=live.auth()) as r:
        assert r.status == 404


async def test_openapi_document_is_served(live: Live) -> None:
    async with live.http.get(f"{live.url}/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"] == "3.1.0"
    assert "/v1/templates/{templateId}/render" in doc["paths"]
    # /docs loads it on every visit: gzipped when taken, and a 304 when unchanged.
    async with live.http.get(f"{live.url}/openapi.json", auto_decompress=False,
                             headers={"Accept-Encoding": "gzip"}) as r:
        packed = await r.read()
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Content-Type"] == "application/json"
        etag = r.headers["ETag"]
    assert json.loads(gzip.decompress(packed)) == doc
    async with live.http.get(f"{live.url}/openapi.json",
                             headers={"Accept-Encoding": "gzip", "If-None-Match": etag}) as r:
        assert r.status == 304


async def test_render_of_bad_json_variables_shape_is_422(live: Live) -> None:
    template = await create(live)
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/render",
                              data=json.dumps({"variables": [1, 2]}),
                              headers={**live.auth(), "Content-Type": "application/json"}) as r:
        assert r.status == 422
        problem = await r.json()
    assert problem["errors"][0]["field"] == "/variables"
