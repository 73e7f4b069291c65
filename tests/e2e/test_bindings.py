"""Live data bindings end to end: a real JSON data source on loopback
(allow-listed), the binding service fetching it through the guard, and
``/b/{id}.png`` changing its pixels when the source's data changes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import time
from typing import Any

import nats
import pytest
from PIL import Image

from litho.events.v1 import events_pb2
from tests.e2e.conftest import Live

pytestmark = pytest.mark.production

SWATCH = """<body style="margin:0;background:{{ color }}">
<div style="font:16px sans-serif;color:#fff">{{ label }}</div></body>"""
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 128, 0)
MAPPING = {"color": "price > 50 ? '#ff0000' : '#0000ff'",
           "label": "name + ': ' + price"}


async def call(live: Live, method: str, path: str, *, key: str | None = None,
               **kwargs: Any) -> tuple[int, Any]:
    async with live.http.request(method, live.url + path, headers=live.auth(key),
                                 **kwargs) as r:
        body = await r.read()
        return r.status, json.loads(body) if body else None


async def template(live: Live, html: str = SWATCH, **extra: Any) -> str:
    status, body = await call(live, "POST", "/v1/templates", json={
        "name": "binding swatch", "html": html, "width": 120, "height": 60, **extra})
    assert status == 201, body
    return str(body["id"])


async def binding(live: Live, template_id: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "price card", "templateId": template_id,
            "dataSource": {"type": "http", "url": live.data.url("/items/sku-1")},
            "mapping": MAPPING, "refreshPolicy": {"type": "manual"},
            "output": {"format": "png"}, **fields}
    status, created = await call(live, "POST", "/v1/bindings", json=body)
    assert status == 201, created
    return dict(created)


async def pixel(live: Live, url: str, **headers: str) -> tuple[Any, Any]:
    async with live.http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.content_type == "image/png"
        image = Image.open(io.BytesIO(await r.read())).convert("RGB")
        return image.getpixel((100, 50)), r.headers


async def refresh(live: Live, binding_id: str) -> dict[str, Any]:
    """POST …/refresh, waiting out the floor between fetches (a 429 with
    Retry-After: LITHO_BINDING_MIN_TTL_SECONDS, 1 s in this stack)."""
    for _ in range(5):
        async with live.http.post(f"{live.url}/v1/bindings/{binding_id}/refresh",
                                  headers=live.auth()) as r:
            if r.status != 429:
                assert r.status == 200, await r.text()
                return dict(await r.json())
            assert "LITHO_BINDING_MIN_TTL_SECONDS" in await r.text()
            await asyncio.sleep(float(r.headers["Retry-After"]))
    raise AssertionError("the refresh was refused five times")


def near(got: tuple[int, ...], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(got, want, strict=True))


async def test_image_url_follows_the_source_after_a_refresh(live: Live) -> None:
    live.data.items["sku-1"] = {"name": "Lamp", "price": 30}
    created = await binding(live, await template(live))
    assert created["status"] == "active" and created["id"].startswith("bnd_")
    assert created["imageUrl"].endswith(f"/b/{created['id']}.png")
    colour, headers = await pixel(live, created["imageUrl"])
    assert near(colour, BLUE), colour
    etag = headers["ETag"]
    # Unchanged data: the same image, and a conditional GET is a 304.
    async with live.http.get(created["imageUrl"], headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    live.data.items["sku-1"] = {"name": "Lamp", "price": 80}
    refreshed = await refresh(live, created["id"])
    assert refreshed["changed"] is True, refreshed
    # Right after that fetch: too soon (the floor between fetches).
    async with live.http.post(f"{live.url}/v1/bindings/{created['id']}/refresh",
                              headers=live.auth()) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    colour, headers = await pixel(live, created["imageUrl"])
    assert near(colour, RED), colour
    assert headers["ETag"] != etag
    status, data = await call(live, "GET", f"/v1/bindings/{created['id']}/data")
    assert status == 200 and data["data"] == {"name": "Lamp", "price": 80}
    assert data["variables"]["color"] == "#ff0000" and data["status"] == "active"


async def test_a_ttl_binding_revalidates_with_its_etag(live: Live) -> None:
    live.data.items["sku-ttl"] = {"name": "Mug", "price": 10}
    created = await binding(live, await template(live),
                            dataSource={"type": "http", "url": live.data.url("/items/sku-ttl")},
                            refreshPolicy={"type": "ttl", "ttlSeconds": 1})
    url = created["imageUrl"]
    colour, first = await pixel(live, url)
    assert near(colour, BLUE)
    assert "max-age=" in first["Cache-Control"]
    assert int(first["Cache-Control"].split("max-age=")[1].split(",")[0]) <= 1
    await asyncio.sleep(1.2)
    # Stale: fetched again with If-None-Match; the 304 keeps the same image.
    _, again = await pixel(live, url)
    assert again["ETag"] == first["ETag"]
    conditional = [h for h in live.data.hits if h[0] == "/items/sku-ttl" and h[1]]
    assert conditional, live.data.hits
    live.data.items["sku-ttl"] = {"name": "Mug", "price": 99}
    await asyncio.sleep(1.2)
    colour, third = await pixel(live, url)
    assert near(colour, RED) and third["ETag"] != first["ETag"]


async def test_push_needs_the_binding_secret(live: Live) -> None:
    created = await binding(live, await template(live), dataSource={"type": "push"},
                            refreshPolicy={"type": "push"},
                            defaults={"color": "#008000", "label": "none yet"})
    secret, push_url = created["pushSecret"], created["pushUrl"]
    assert secret and push_url.endswith(f"/b/{created['id']}/push")
    status, shown = await call(live, "GET", f"/v1/bindings/{created['id']}")
    assert status == 200 and "pushSecret" not in shown and secret not in json.dumps(shown)
    colour, _ = await pixel(live, created["imageUrl"])
    assert near(colour, GREEN), colour  # no data yet: the defaults

    body = json.dumps({"name": "Chair", "price": 70}).encode()
    bad = "sha256=" + hmac.new(b"wrong", body, hashlib.sha256).hexdigest()
    async with live.http.post(push_url, data=body, headers={
            "X-Litho-Signature": bad, "Content-Type": "application/json"}) as r:
        assert r.status == 401, await r.text()
    async with live.http.post(push_url, data=body,
                              headers={"Content-Type": "application/json"}) as r:
        assert r.status == 401
    status, data = await call(live, "GET", f"/v1/bindings/{created['id']}/data")
    assert status == 200 and not data.get("data"), data  # nothing stored

    good = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    async with live.http.post(push_url, data=body, headers={
            "X-Litho-Signature": good, "Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["changed"] is True
    colour, _ = await pixel(live, created["imageUrl"])
    assert near(colour, RED), colour
    async with live.http.post(push_url, data=b'{"price": 1}' + b" " * (2 * 2**20),
                              headers={"X-Litho-Push-Secret": secret}) as r:
        assert r.status == 413


async def test_on_error_modes(live: Live) -> None:
    live.data.items["sku-err"] = {"name": "Desk", "price": 90}
    source = {"type": "http", "url": live.data.url("/items/sku-err")}
    tid = await template(live)
    made = {mode: await binding(live, tid, dataSource=source,
                                refreshPolicy={"type": "manual", "onError": mode},
                                defaults={"color": "#008000", "label": "default"})
            for mode in ("serve_stale", "serve_error", "serve_default")}
    live.data.failing = True
    try:
        for b in made.values():
            refreshed = await refresh(live, b["id"])
            assert refreshed["binding"]["status"] == "error", refreshed
            assert "500" in refreshed["binding"]["lastError"]
        colour, _ = await pixel(live, made["serve_stale"]["imageUrl"])
        assert near(colour, RED)
        colour, _ = await pixel(live, made["serve_default"]["imageUrl"])
        assert near(colour, GREEN)
        async with live.http.get(made["serve_error"]["imageUrl"]) as r:
            # The public image says it failed, never why: that is the owner's.
            text = await r.text()
            assert 400 <= r.status < 500 and "GET /v1/bindings/" in text and "500" not in text
    finally:
        live.data.failing = False
    refreshed = await refresh(live, made["serve_error"]["id"])
    assert refreshed["binding"]["status"] == "active"


async def test_bad_sources_are_clear_errors_and_store_nothing(live: Live) -> None:
    tid = await template(live)
    status, before = await call(live, "GET", "/v1/bindings?pageSize=100")
    assert status == 200
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mapping": {"color": "price >"}}, "mapping.color"),
        ({"refreshPolicy": {"type": "cron", "cron": "* * * * *"}}, "refreshPolicy.cron"),
        ({"dataSource": {"type": "http", "url": "ftp://example.com/x.json"}},
         "dataSource.url"),
        ({"dataSource": {"type": "http", "url": live.secret.url("data.json")}},
         "dataSource.url"),
        ({"dataSource": {"type": "http", "url": live.data.url("/items/sku-1"),
                         "credentials": {"type": "kerberos"}}},
         "dataSource.credentials.type"),
    ]
    for fields, where in cases:
        body = {"name": "bad", "templateId": tid,
                "dataSource": {"type": "http", "url": live.data.url("/items/sku-1")},
                "mapping": MAPPING, "refreshPolicy": {"type": "manual"}, **fields}
        status, problem = await call(live, "POST", "/v1/bindings", json=body)
        assert status == 422, (fields, problem)
        assert where in json.dumps(problem), (where, problem)
    status, problem = await call(live, "POST", "/v1/bindings", json={
        "name": "bad", "templateId": tid, "dataSource": {"type": "http",
        "url": live.data.url("/items/sku-1")}, "mapping": {"color": "price >\n  + 1 )"},
        "refreshPolicy": {"type": "manual"}})
    assert status == 422 and "line" in json.dumps(problem) and "column" in json.dumps(problem)
    status, after = await call(live, "GET", "/v1/bindings?pageSize=100")
    assert len(after["bindings"]) == len(before["bindings"])


async def test_data_sources_test_endpoint_reports_what_came(live: Live) -> None:
    cases = {"/html": "text/html", "/invalid": "JSON", "/huge": "LITHO_BINDING_MAX_DATA_BYTES",
             "/redirect": "not allowed"}
    for path, says in cases.items():
        status, got = await call(live, "POST", "/v1/data-sources/test",
                                 json={"type": "http", "url": live.data.url(path)})
        assert status == 200, got
        assert got["success"] is False and says in got["error"], (path, got)
    assert not [h for h in live.secret.hits if "inventory" in h]  # the redirect never landed
    live.data.items["sku-test"] = {"price": 5}
    status, got = await call(live, "POST", "/v1/data-sources/test",
                             json={"type": "http", "url": live.data.url("/items/sku-test")})
    assert got["success"] is True and got["status"] == 200 and got["data"] == {"price": 5}
    assert got["durationMs"] >= 0


async def test_credentials_are_sent_and_never_answered(live: Live) -> None:
    live.data.items["sku-auth"] = {"name": "Safe", "price": 1}
    created = await binding(live, await template(live), dataSource={
        "type": "http", "url": live.data.url("/items/sku-auth"),
        "credentials": {"type": "bearer", "token": "tok-very-secret"}})
    assert ("/items/sku-auth", "", "Bearer tok-very-secret") in live.data.hits
    for path in (f"/v1/bindings/{created['id']}", "/v1/bindings?pageSize=100",
                 f"/v1/bindings/{created['id']}/data"):
        status, shown = await call(live, "GET", path)
        assert status == 200 and "tok-very-secret" not in json.dumps(shown), path
    _, shown = await call(live, "GET", f"/v1/bindings/{created['id']}")
    assert shown["dataSource"]["credentials"] == {"type": "bearer"}
    # Another tenant sees nothing of it.
    status, _ = await call(live, "GET", f"/v1/bindings/{created['id']}", key=live.other_key)
    assert status == 404
    status, _ = await call(live, "POST", f"/v1/bindings/{created['id']}/refresh",
                           key=live.other_key)
    assert status == 404


async def test_paused_binding_serves_its_last_image(live: Live) -> None:
    live.data.items["sku-pause"] = {"name": "Sofa", "price": 20}
    created = await binding(live, await template(live), dataSource={
        "type": "http", "url": live.data.url("/items/sku-pause")},
        refreshPolicy={"type": "ttl", "ttlSeconds": 1})
    colour, _ = await pixel(live, created["imageUrl"])
    assert near(colour, BLUE)
    status, paused = await call(live, "POST", f"/v1/bindings/{created['id']}/pause")
    assert status == 200 and paused["status"] == "paused"
    live.data.items["sku-pause"] = {"name": "Sofa", "price": 200}
    await asyncio.sleep(1.2)
    fetched = live.data.count("/items/sku-pause")
    colour, _ = await pixel(live, created["imageUrl"])
    assert near(colour, BLUE) and live.data.count("/items/sku-pause") == fetched
    status, _ = await call(live, "POST", f"/v1/bindings/{created['id']}/resume")
    assert status == 200
    colour, _ = await pixel(live, created["imageUrl"])
    assert near(colour, RED)


async def test_template_data_sources_are_fetched_cached_and_overridable(live: Live) -> None:
    live.data.items["sku-7"] = {"price": 12}
    tid = await template(
        live, html='<body style="margin:0;background:{{ data.stock.price > 50 ? '
                   "'#ff0000' : '#0000ff' }}\">{{ data.stock.price }}</body>",
        dataSources=[{"name": "stock", "url": live.data.url("/items/{{ sku }}"),
                      "ttlSeconds": 60}])
    path = f"/v1/templates/{tid}/render"
    started = time.time()
    status, first = await call(live, "POST", path, json={"variables": {"sku": "sku-7"}})
    assert status == 200, first
    assert [(d["name"], d["origin"]) for d in first["dataSources"]] == [("stock", "fetched")]
    status, second = await call(live, "POST", path, json={"variables": {"sku": "sku-7"}})
    assert second["dataSources"][0]["origin"] == "cache"
    assert second["id"] == first["id"] and second["cached"] is True
    assert live.data.count("/items/sku-7") == 1
    assert second["dataSources"][0]["ageSeconds"] <= time.time() - started + 1
    # The render's own variables win over the source.
    status, third = await call(live, "POST", path, json={
        "variables": {"sku": "sku-7", "data": {"stock": {"price": 99}}}})
    assert status == 200 and third["id"] != first["id"]
    assert live.data.count("/items/sku-7") == 1
    colour, _ = await pixel(live, third["url"])
    assert near(colour, RED)
    # A signed URL of it follows the data: caches must ask again each time.
    status, signed = await call(live, "POST", "/v1/signed-urls", json={
        "templateId": tid, "variables": {"sku": "sku-7"}})
    assert status == 201, signed
    async with live.http.get(signed["url"]) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, no-cache"
        assert "stock" in r.headers["Litho-Data-Sources"]
    # A literal private host is refused when the template is saved.
    status, problem = await call(live, "POST", "/v1/templates", json={
        "name": "private source", "html": "x", "width": 10, "height": 10,
        "dataSources": [{"name": "inner", "url": live.secret.url("data.json")}]})
    assert status == 422 and "LITHO_OUTBOUND_ALLOW" in json.dumps(problem), problem
    # A variable cannot move a source's request to another path or host.
    status, moved = await call(live, "POST", path, json={"variables": {"sku": "../html"}})
    assert status == 422 or live.data.count("/html") == 0, moved
    # A source that answers HTML is a clear 422 naming it.
    html_source = await template(live, html="x", dataSources=[
        {"name": "page", "url": live.data.url("/html")}])
    status, problem = await call(live, "POST", f"/v1/templates/{html_source}/render", json={})
    assert status == 422 and "dataSources.page" in json.dumps(problem), problem


async def test_new_data_is_rendered_at_once_and_announced(live: Live) -> None:
    tid = await template(live)
    created = await binding(live, tid, dataSource={"type": "push"},
                            refreshPolicy={"type": "push"},
                            defaults={"color": "#008000", "label": "none"})
    status, sub = await call(live, "POST", "/v1/webhook-subscriptions", json={
        "event": "binding.updated", "targetUrl": live.data.url("/hook"),
        "filters": {"bindingId": created["id"]}})
    assert status == 201, sub
    nc = await nats.connect(live.stack.nats_url)
    try:
        renders = await nc.subscribe("litho.events.v1.render.completed")
        body = json.dumps({"name": "Stool", "price": 75}).encode()
        async with live.http.post(created["pushUrl"], data=body,
                                  headers={"X-Litho-Push-Secret": created["pushSecret"]}) as r:
            assert r.status == 200, await r.text()
        # The renderer renders the new data on its own, before any GET.
        while True:
            msg = await renders.next_msg(timeout=30)
            event = events_pb2.RenderCompleted.FromString(msg.data)
            if event.template_id == tid and not event.cached:
                break
    finally:
        await nc.close()
    colour, headers = await pixel(live, created["imageUrl"])
    assert near(colour, RED) and headers["Litho-Cache"] == "hit", headers
    delivered = json.loads(await asyncio.wait_for(live.data.hooks.get(), 60))
    assert delivered["type"] == "binding.updated"
    assert delivered["data"]["bindingId"] == created["id"]
    assert delivered["data"]["imageUrl"].endswith(f"/b/{created['id']}.png")


async def test_preview_maps_and_renders_without_saving(live: Live) -> None:
    tid = await template(live)
    _, before = await call(live, "GET", "/v1/bindings?pageSize=100")
    status, preview = await call(live, "POST", "/v1/bindings/preview", json={
        "templateId": tid, "sampleData": {"name": "Vase", "price": 65}, "mapping": MAPPING})
    assert status == 200, preview
    assert preview["variables"] == {"color": "#ff0000", "label": "Vase: 65"}
    colour, _ = await pixel(live, preview["imageUrl"])
    assert near(colour, RED)
    live.data.items["sku-preview"] = {"name": "Jug", "price": 5}
    status, fetched = await call(live, "POST", "/v1/bindings/preview", json={
        "templateId": tid, "mapping": MAPPING,
        "dataSource": {"type": "http", "url": live.data.url("/items/sku-preview")}})
    assert status == 200 and fetched["data"] == {"name": "Jug", "price": 5}, fetched
    colour, _ = await pixel(live, fetched["imageUrl"])
    assert near(colour, BLUE)
    # Another tenant's template reads exactly as one that does not exist.
    answers = []
    for template_id in (tid, "tpl_" + "0" * 24):
        status, problem = await call(live, "POST", "/v1/bindings/preview", key=live.other_key,
                                     json={"templateId": template_id,
                                           "sampleData": {"price": 1}, "mapping": MAPPING})
        answers.append((status, json.dumps(problem).replace(template_id, "<id>")))
    assert answers[0] == answers[1] and answers[0][0] in (404, 422), answers
    # Nothing was saved either way.
    _, after = await call(live, "GET", "/v1/bindings?pageSize=100")
    assert len(after["bindings"]) == len(before["bindings"])
