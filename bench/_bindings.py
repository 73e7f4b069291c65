"""The bindings section of ``make bench``: warm hits through live data.

- ``GET /b/{id}.png`` of a binding whose data is fresh, against a plain warm
  hit (``POST /v1/templates/{id}/render`` of stored output) in the same run:
  "a warm hit, as for rendered images", so the target is the ratio (≤ 1.1);
- a warm render of a template that declares a data source, within its TTL,
  against the same render of a template without one: the cached source
  should add nothing (≤ 1.1).

The three are measured in turn, one request of each per round, so that the
shared machine's drift touches all three alike.

The data comes from ``/data.json`` on the bench's own loopback server
(allow-listed), so no fetch leaves the machine.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import aiohttp

from bench._stats import summary_ms

CARD = """<body style="margin:0;background:#123;color:#fff;font:48px sans-serif">
<h1>{{ title }}</h1><p>{{ price }}</p></body>"""
SOURCED = """<body style="margin:0;background:#123;color:#fff;font:48px sans-serif">
<h1>{{ title }}</h1><p>{{ data.shop.price }}</p></body>"""
DATA = {"product": {"name": "Lamp", "price": 49}}


class Client(Protocol):
    http: aiohttp.ClientSession
    headers: dict[str, str]

    @property
    def stack_url(self) -> str: ...


async def _post(c: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with c.http.post(c.stack_url + path, json=body, headers=c.headers) as r:
        if r.status not in (200, 201):
            raise RuntimeError(f"{path}: {r.status} {await r.text()}")
        out: dict[str, Any] = await r.json()
        return out


async def _template(c: Client, html: str, **extra: Any) -> str:
    made = await _post(c, "/v1/templates", {"name": "bench-binding", "html": html,
                                            "width": 1200, "height": 630, **extra})
    return str(made["id"])


async def _timed_get(c: Client, url: str) -> float:
    started = time.perf_counter()
    async with c.http.get(url) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status}")
    return time.perf_counter() - started


async def _timed_post(c: Client, path: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    await _post(c, path, body)
    return time.perf_counter() - started


async def bindings_section(c: Client, data_url: str, n: int) -> dict[str, Any]:
    plain = await _template(c, CARD)
    render_path = f"/v1/templates/{plain}/render"
    body = {"variables": {"title": "Lamp", "price": 49}}
    binding = await _post(c, "/v1/bindings", {
        "name": "bench", "templateId": plain,
        "dataSource": {"type": "http", "url": data_url},
        "mapping": {"title": "product.name", "price": "product.price"},
        "refreshPolicy": {"type": "ttl", "ttlSeconds": 3600}, "output": {"format": "png"}})
    sourced = await _template(c, SOURCED, dataSources=[
        {"name": "shop", "url": data_url.replace("/data.json", "/shop.json"),
         "ttlSeconds": 3600}])
    sourced_path = f"/v1/templates/{sourced}/render"
    sourced_body = {"variables": {"title": "Lamp"}}
    warm: list[float] = []
    image: list[float] = []
    with_source: list[float] = []
    for i in range(20 + n):
        times = (await _timed_post(c, render_path, body),
                 await _timed_get(c, binding["imageUrl"]),
                 await _timed_post(c, sourced_path, sourced_body))
        if i >= 20:  # the first rounds warm pages, channels and caches
            warm.append(times[0])
            image.append(times[1])
            with_source.append(times[2])

    warm_ms, image_ms, source_ms = summary_ms(warm), summary_ms(image), summary_ms(with_source)
    return {"warmHit": warm_ms, "bindingImage": image_ms, "dataSourceHit": source_ms,
            "imageRatio": round(image_ms["p50"] / warm_ms["p50"], 3),
            "dataSourceRatio": round(source_ms["p50"] / warm_ms["p50"], 3)}


def markdown(b: dict[str, Any]) -> list[str]:
    return [
        "## Live data bindings", "",
        "Warm hits in one run: a stored render over HTTP, `GET /b/{id}.png` of a binding "
        "whose data is fresh (TTL 1 h), and a render of a template that declares a data "
        "source, within its TTL (both sources on a loopback server), measured in turn "
        "(one of each per round). Each replica memoises a fresh binding's variables "
        "(until a change note from the binding service) and a fresh source's data, so "
        "neither adds a hop to the binding service.", "",
        "| measure | result | target |", "| --- | --- | --- |",
        f"| `GET /b/{{id}}.png`, data fresh | p50 {b['bindingImage']['p50']} ms, "
        f"p99 {b['bindingImage']['p99']} ms ({b['imageRatio']}× the plain warm hit, "
        f"{b['warmHit']['p50']} ms) | ≤ 1.1× (a warm hit) |",
        f"| warm render with a data source within its TTL | p50 "
        f"{b['dataSourceHit']['p50']} ms ({b['dataSourceRatio']}× the same without a "
        "source) | ≤ 1.1× (nothing added within the TTL) |",
        "",
    ]
