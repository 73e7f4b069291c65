"""The experiments section of ``make bench``: an A/B experiment's public image.

One running experiment (two variants of a 1200x630 card, PNG) and its
``GET /s/{handle}/{slug}.png``, where every view is an impression counted
through JetStream and the experiment service's counter consumer:

- warm, sequential: ``GET /s/…png`` (a new visitor id each time, so both
  variants) against the plain warm hit (``POST /v1/templates/{id}/render`` of
  stored output), one of each per round, so that the shared machine's drift
  touches both alike (target: p50 ≤ 5 ms over HTTP);
- under load: 64 clients for ``BENCH_THROUGHPUT_SECONDS`` (default 10), a new
  visitor id per request, counting on: requests/s and latency (target:
  ≥ 1,000 requests/s);
- counting: the views answered ``200`` with ``Litho-Counted: true`` against
  the stats' impressions. The lag is how long after the load stops the stats
  show every one of them, and, one view at a time on an idle stack, how long
  after its answer a view shows (bounds, since a poll of the stats takes a
  few milliseconds itself); "exact" says whether the stats' impressions
  ended equal to the counted answers (never more, and all of them within
  60 s).

The CPU each process used during the load (from /proc) says where the
requests' time goes on a machine this small.

The floor: the same 64 clients for the same time against a bare aiohttp
server in a process of its own that answers every request with the same
image bytes (no lookup, no count, no tracing). It is what one Python process
on this machine can serve at all, measured in the same run, so the
throughput is also given as a ratio to it: machines here vary by 2× or more
from hour to hour, and the ratio does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench._bindings import CARD, Client
from bench._stats import summary_ms

#: Clients of the load phase.
CLIENTS = 64
#: How long the stats may take to show every counted view.
COUNT_DEADLINE = 60.0
#: Single views whose lag to counted is measured.
LAG_SAMPLES = 20


async def _json(c: Client, method: str, path: str, body: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    async with c.http.request(method, c.stack_url + path, json=body, headers=c.headers) as r:
        if r.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
        out: dict[str, Any] = await r.json()
        return out


async def _experiment(c: Client) -> dict[str, Any]:
    template = await _json(c, "POST", "/v1/templates", {
        "name": "bench-experiment", "html": CARD, "width": 1200, "height": 630})
    made = await _json(c, "POST", "/v1/experiments", {
        "name": "bench", "slug": f"bench-{int(time.time() * 1000)}",
        "templateId": template["id"],
        "variants": [{"id": "a", "variables": {"title": "Lamp", "price": 49}, "weight": 5000},
                     {"id": "b", "variables": {"title": "LAMP!", "price": 39}, "weight": 5000}],
        "output": {"format": "png"}})
    await _json(c, "POST", f"/v1/experiments/{made['id']}/start")
    return {**made, "templateId": template["id"]}


async def _impressions(c: Client, eid: str) -> int:
    stats = await _json(c, "GET", f"/v1/experiments/{eid}/stats")
    return sum(int(v["impressions"]) for v in stats["variants"])


async def _view(c: Client, url: str, vid: str) -> tuple[float, int, bool]:
    """One view: seconds, status, whether it was counted."""
    started = time.perf_counter()
    async with c.http.get(url, params={"vid": vid}) as r:
        await r.read()
        return (time.perf_counter() - started, r.status,
                r.headers.get("Litho-Counted") == "true")


async def _timed_render(c: Client, path: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    await _json(c, "POST", path, body)
    return time.perf_counter() - started


async def _until_counted(c: Client, eid: str, want: int, since: float
                         ) -> tuple[tuple[float, float] | None, int]:
    """When, after ``since`` (``perf_counter``), the stats first showed
    ``want`` impressions, as bounds: the sending of the last poll that did
    not show them (the count may have landed just after it read the
    counters) and the answer of the first that did; None when not within
    COUNT_DEADLINE or past ``want``. Also the impressions last read."""
    not_yet = since
    while True:
        sent = time.perf_counter()
        got = await _impressions(c, eid)
        if got == want:
            return (not_yet - since, time.perf_counter() - since), got
        if got > want or sent - since > COUNT_DEADLINE:
            return None, got
        not_yet = sent
        await asyncio.sleep(0.005)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: Mapping[str, int]) -> dict[str, float]:
    out = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    times = os.times()
    return {**out, "bench client": times.user + times.system}


#: The floor's server: one aiohttp process answering every GET with the
#: bytes of the file named by argv[1], on a free loopback port it prints.
_FLOOR_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[1], "rb").read()
async def image(request):
    return web.Response(body=body, content_type="image/png",
                        headers={"Cache-Control": "private, no-store"})
async def main():
    app = web.Application()
    app.router.add_get("/{tail:.*}", image)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()
import asyncio
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def _floor_server(body: bytes) -> AsyncIterator[str]:
    """A bare aiohttp server answering ``body``; yields its URL."""
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        f.write(body)
        f.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _FLOOR_SERVER, f.name, stdout=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            port = int((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
            yield f"http://127.0.0.1:{port}/floor.png"
        finally:
            proc.terminate()
            await proc.wait()


async def _load(c: Client, url: str, vids: Iterator[str], seconds: float
                ) -> tuple[list[float], int, int, float]:
    """CLIENTS clients on ``url`` for ``seconds``, a new visitor each request:
    the latencies, the answers counted, those not 200, and the seconds taken."""
    load: list[float] = []
    counted = errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal counted, errors
        while time.perf_counter() < deadline:
            took, status, was_counted = await _view(c, url, next(vids))
            load.append(took)
            counted += was_counted
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return load, counted, errors, time.perf_counter() - started


async def experiments_section(c: Client, n: int, *, seconds: float,
                              pids: Mapping[str, int]) -> dict[str, Any]:
    """``pids``: processes whose CPU use during the load is reported."""
    exp = await _experiment(c)
    eid, url = exp["id"], exp["imageUrl"]
    render_path = f"/v1/templates/{exp['templateId']}/render"
    render_body = {"variables": {"title": "Lamp", "price": 49}}
    vids = (f"visitor-{i}" for i in itertools.count())
    counted = errors = 0

    # (a) warm, sequential, in turn with the plain warm hit.
    warm: list[float] = []
    image: list[float] = []
    for i in range(20 + n):
        hit = await _timed_render(c, render_path, render_body)
        took, status, was_counted = await _view(c, url, next(vids))
        counted += was_counted
        errors += status != 200
        if i >= 20:  # the first rounds warm pages, channels, memos and caches
            warm.append(hit)
            image.append(took)

    # (b) 64 clients, a new visitor each request, for ``seconds`` …
    cpu_before = _cpu(pids)
    load, load_counted, load_errors, elapsed = await _load(c, url, vids, seconds)
    stopped = time.perf_counter()
    cpu = {name: round((used - cpu_before[name]) / elapsed, 2)
           for name, used in _cpu(pids).items()}
    counted += load_counted

    # (c) the lag: the stats showing every counted view after the load stopped …
    drain, seen = await _until_counted(c, eid, counted, stopped)
    # … and single views on a stack left idle.
    low: list[float] = []
    high: list[float] = []
    for _ in range(LAG_SAMPLES if drain is not None else 0):
        _, status, was_counted = await _view(c, url, next(vids))
        counted += was_counted
        errors += status != 200
        lag, seen = await _until_counted(c, eid, counted, time.perf_counter())
        if lag is None:
            break
        low.append(lag[0])
        high.append(lag[1])
    stats_call = [await _timed_stats(c, eid) for _ in range(20)]
    # … and the floor: the same load on a bare server answering the same bytes.
    async with c.http.get(url, params={"vid": "floor"}) as r:
        body = await r.read()
    async with _floor_server(body) as floor_url:
        await _load(c, floor_url, vids, min(1.0, seconds))  # warm its connections
        floor, _, floor_errors, floor_elapsed = await _load(c, floor_url, vids, seconds)
    per_second = len(load) / elapsed
    floor_per_second = len(floor) / floor_elapsed
    warm_ms, image_ms, load_ms = summary_ms(warm), summary_ms(image), summary_ms(load)
    return {
        "warmHit": warm_ms, "image": image_ms,
        "imageRatio": round(image_ms["p50"] / warm_ms["p50"], 3),
        "load": {"clients": CLIENTS, "seconds": round(elapsed, 2), "requests": len(load),
                 "perSecond": round(per_second, 1), "errors": load_errors,
                 "counted": load_counted, "latency": load_ms, "cpuCores": cpu},
        "floor": {"perSecond": round(floor_per_second, 1), "errors": floor_errors,
                  "latency": summary_ms(floor)},
        "throughputRatio": round(per_second / floor_per_second, 3),
        "errors": errors + load_errors,
        "counted": counted, "impressions": seen, "exact": seen == counted,
        "drainMs": [round(d * 1000, 1) for d in drain] if drain is not None else None,
        "singleLag": ({"low": summary_ms(low), "high": summary_ms(high)} if high else None),
        "statsCall": summary_ms(stats_call),
    }


async def _timed_stats(c: Client, eid: str) -> float:
    started = time.perf_counter()
    await _impressions(c, eid)
    return time.perf_counter() - started


def markdown(e: dict[str, Any]) -> list[str]:
    load = e["load"]
    if e["drainMs"] is not None:
        low, high = e["drainMs"]
        drain = f"between {low} and {high} ms after the load stopped"
    else:
        drain = f"not within {COUNT_DEADLINE:.0f} s"
    lag = e["singleLag"]
    single = (f"; a single view on an idle stack: p50 between {lag['low']['p50']} and "
              f"{lag['high']['p50']} ms after its answer (p99 ≤ {lag['high']['p99']} ms)"
              if lag else "")
    exact = ("exact (stats impressions = counted answers)" if e["exact"]
             else f"NOT exact: {e['impressions']} impressions for {e['counted']} counted answers")
    cpu = ", ".join(f"{name} {share}" for name, share in load["cpuCores"].items())
    return [
        "## A/B experiments: the public image, counted", "",
        "One running experiment (two variants of the 1200x630 card, PNG). Sequential warm "
        "hits of `GET /s/{handle}/{slug}.png` (a new `vid` each, so both variants) measured "
        "in turn with the plain warm hit (`POST /v1/templates/{id}/render` of stored output); "
        f"then {load['clients']} concurrent clients for {load['seconds']} s, a new `vid` per "
        "request, every view an impression published to JetStream and counted by the "
        "experiment service. The lag is from the answers to the stats showing the counts, "
        "given as bounds: the last poll of the stats that did not show them was sent at the "
        "first number, the first that did answered at the second (a stats call, a Monte "
        f"Carlo of the posteriors, takes p50 {e['statsCall']['p50']} ms).", "",
        "| measure | result | target |", "| --- | --- | --- |",
        f"| `GET /s/…png`, warm, sequential | p50 {e['image']['p50']} ms, p99 "
        f"{e['image']['p99']} ms ({e['imageRatio']}× the plain warm hit, "
        f"{e['warmHit']['p50']} ms) | p50 ≤ 5 ms |",
        f"| throughput, {load['clients']} clients, counting on | {load['perSecond']} "
        f"requests/s (p50 {load['latency']['p50']} ms, p99 {load['latency']['p99']} ms; "
        f"{load['errors']} errors of {load['requests']}); {e['throughputRatio']}× the floor, "
        f"a bare aiohttp process answering the same bytes under the same load "
        f"({e['floor']['perSecond']} requests/s) | ≥ 1,000 requests/s |",
        f"| request → counted impression | every one of {e['counted']} counted views shown "
        f"{drain}{single} | within a fraction of a second |",
        f"| counting | {exact}; {e['errors']} answers not 200 | exact |",
        "",
        f"CPU during the load, in cores (this machine has {os.cpu_count()}): {cpu}.",
        "",
    ]
