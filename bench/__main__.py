"""``python -m bench`` (``make bench``): start the real stack, measure, write a report.

Writes ``bench/report.md`` and ``bench/report.json``. Every number comes from
one run on this machine; read medians and ratios, not single samples.
Environment knobs: ``BENCH_SAMPLES`` (cold renders per format, default 20),
``BENCH_SOAK`` (renders in the memory soak, default 2000),
``BENCH_THROUGHPUT_SECONDS`` (per concurrency level, default 10),
``BENCH_BATCH`` (items of the batch section, default 1000; 0 measures only
memory), ``BENCH_BATCH_SMALL`` and ``BENCH_BATCH_LARGE`` (the memory batches,
default 1000 and 10000).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image, ImageChops, ImageStat

from bench import _batch, _bindings, _experiments, _satori, _spans
from bench._card import CARD_HTML
from bench._procs import tree_pss_bytes
from bench._stats import summary_ms
from litho import formats
from services._stack import Stack

OUT = Path(__file__).parent
FORMATS = formats.names()
#: Seconds of idle before each render of the peer comparison (see ``peer``).
PEER_PAUSE = 0.25


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _avatar_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (240, 240), (250, 204, 21)).save(buf, format="PNG")
    return buf.getvalue()


async def _avatar_server() -> tuple[web.AppRunner, str]:
    body = _avatar_png()

    async def avatar(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/png")

    async def data(request: web.Request) -> web.Response:
        return web.json_response(_bindings.DATA if request.path == "/data.json"
                                 else {"price": 49})

    app = web.Application()
    app.router.add_get("/avatar.png", avatar)
    app.router.add_get("/data.json", data)
    app.router.add_get("/shop.json", data)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/avatar.png"


class Bench:
    def __init__(self, stack: Stack, http: aiohttp.ClientSession, avatar: str) -> None:
        self.stack = stack
        self.http = http
        self.avatar = avatar
        self.headers = {"Authorization": f"Bearer {stack.api_key}"}
        self.template_id = ""
        self.counter = 0

    @property
    def stack_url(self) -> str:
        return self.stack.url

    def variables(self, *, unique: bool = True) -> dict[str, Any]:
        if unique:
            self.counter += 1
        return {"title": f"Launch week, day {self.counter}", "subtitle": "Ship faster with Litho",
                "price": 49, "avatar": self.avatar}

    async def create_template(self) -> None:
        body = {"name": "bench-og", "html": CARD_HTML, "width": 1200, "height": 630}
        async with self.http.post(f"{self.stack.url}/v1/templates", json=body,
                                  headers=self.headers) as r:
            r.raise_for_status()
            self.template_id = (await r.json())["id"]

    async def create_small_template(self) -> str:
        body = {"name": "bench-small", "html": _batch.SMALL_CARD, "width": 300, "height": 80}
        async with self.http.post(f"{self.stack.url}/v1/templates", json=body,
                                  headers=self.headers) as r:
            r.raise_for_status()
            return str((await r.json())["id"])

    async def render(self, variables: dict[str, Any], fmt: str = "png") -> dict[str, Any]:
        async with self.http.post(
            f"{self.stack.url}/v1/templates/{self.template_id}/render",
            json={"variables": variables, "format": fmt}, headers=self.headers,
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"render failed: {r.status} {await r.text()}")
            result: dict[str, Any] = await r.json()
            return result

    async def timed(self, variables: dict[str, Any], fmt: str = "png") -> float:
        started = time.perf_counter()
        await self.render(variables, fmt)
        return time.perf_counter() - started

    async def timed_keyed(self, variables: dict[str, Any]) -> float:
        """A PNG render sent with a new ``Idempotency-Key`` (its record claimed,
        then kept): what a client that retries safely pays."""
        self.counter += 1
        headers = {**self.headers, "Idempotency-Key": f"bench-{os.getpid()}-{self.counter}"}
        started = time.perf_counter()
        async with self.http.post(
            f"{self.stack.url}/v1/templates/{self.template_id}/render",
            json={"variables": variables, "format": "png"}, headers=headers,
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"render failed: {r.status} {await r.text()}")
            await r.read()
        return time.perf_counter() - started

    async def traced(self, variables: dict[str, Any]) -> tuple[str, float]:
        """A PNG render's trace id (from its ``traceparent``) and its time."""
        started = time.perf_counter()
        async with self.http.post(
            f"{self.stack.url}/v1/templates/{self.template_id}/render",
            json={"variables": variables, "format": "png"}, headers=self.headers,
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"render failed: {r.status} {await r.text()}")
            await r.read()
            return r.headers["traceparent"].split("-")[1], time.perf_counter() - started

    async def image(self, result: dict[str, Any]) -> bytes:
        async with self.http.get(result["url"], headers=self.headers) as r:
            r.raise_for_status()
            return await r.read()


async def warm_hits(b: Bench, n: int) -> dict[str, float]:
    variables = b.variables()
    await b.render(variables)
    for _ in range(20):
        await b.timed(variables)
    return summary_ms([await b.timed(variables) for _ in range(n)])


async def cold_renders(b: Bench, samples: int) -> dict[str, dict[str, float]]:
    out = {}
    for fmt in FORMATS:
        await b.render(b.variables(), fmt)  # warm the page pool for this format
        out[fmt] = summary_ms([await b.timed(b.variables(), fmt) for _ in range(samples)])
    return out


async def playwright_floor(b: Bench, samples: int) -> dict[str, float]:
    """The naive path, in this process: set_content + page.screenshot() (PNG)."""
    from playwright.async_api import async_playwright

    from services.renderer import _chromium

    html = (CARD_HTML.replace("{{ subtitle }}", "Ship faster with Litho")
            .replace("{{ price }}", "49").replace("{{ avatar }}", b.avatar))
    async with async_playwright() as p:
        # The same Chromium and flags, minus the network backstop: the floor page
        # fetches the avatar itself, with no interception.
        args = [a for a in _chromium.launch_args()
                if not a.startswith(("--proxy", "--host-resolver"))]
        browser = await p.chromium.launch(executable_path=_chromium.executable_path(""),
                                          args=args)
        page = await browser.new_page(viewport={"width": 1200, "height": 630})
        times = []
        for i in range(samples + 3):
            started = time.perf_counter()
            await page.set_content(html.replace("{{ title }}", f"Floor {i}"))
            await page.screenshot(type="png")
            if i >= 3:
                times.append(time.perf_counter() - started)
        await browser.close()
    return summary_ms(times)


async def peer(b: Bench, samples: int, work: Path) -> dict[str, Any]:
    """Satori + resvg-js (one long-lived node process) against Litho's cold PNG,
    measured in alternation so that the machine's drift touches both alike."""
    fixed = b.variables(unique=False)
    try:
        setup = await asyncio.to_thread(
            _satori.prepare, work, avatar_png=_avatar_png(), subtitle=fixed["subtitle"],
            price=str(fixed["price"]))
        async with _satori.Peer(setup) as node:
            # Satori's first render parses the fonts and starts its layout engine.
            for i in range(5):
                await node.render(f"Warm-up {i}")
            await b.render(b.variables())
            litho: list[float] = []
            satori: dict[str, list[float]] = {"totalMs": [], "satoriMs": [], "resvgMs": []}
            for _ in range(samples):
                variables = b.variables()
                await asyncio.sleep(PEER_PAUSE)
                litho.append(await b.timed(variables))
                # Litho resets its page after answering: let that finish first, so
                # that each side runs on a machine the other has left idle.
                await asyncio.sleep(PEER_PAUSE)
                reply = await node.render(variables["title"])  # a new text every time
                for key, times in satori.items():
                    times.append(reply[key] / 1000)
            fidelity = await _side_by_side(b, node)
            versions = node.versions
    except _satori.Skip as exc:
        return {"skipped": str(exc)}
    out = {"litho": summary_ms(litho), **{k: summary_ms(v) for k, v in satori.items()}}
    return {
        **out, "versions": versions, "fidelity": fidelity,
        "fonts": {"regular": setup.regular, "bold": setup.bold, "emoji": setup.emoji},
        "ratio": round(out["litho"]["p50"] / out["totalMs"]["p50"], 3),
    }


async def _side_by_side(b: Bench, node: _satori.Peer) -> dict[str, Any]:
    """One title rendered by both, kept in bench/out/ to look at, and how far
    apart the pixels are."""
    (OUT / "out").mkdir(exist_ok=True)
    variables = {**b.variables(unique=False), "title": "Side by side"}
    litho_path, satori_path = OUT / "out" / "card-litho.png", OUT / "out" / "card-satori.png"
    litho_path.write_bytes(await b.image(await b.render(variables)))
    await node.render(variables["title"], out=satori_path.resolve())
    with Image.open(litho_path) as a, Image.open(satori_path) as s:
        diff = ImageChops.difference(a.convert("RGB"), s.convert("RGB"))
    mean = sum(ImageStat.Stat(diff).mean) / 3
    # Pixels whose largest channel difference is over 32 of 255: visibly different.
    histogram = diff.convert("L").point(lambda v: 255 if v > 32 else 0).histogram()
    return {"meanAbsDiff": round(mean, 2),
            "pixelsOver32": round(histogram[255] / (diff.width * diff.height), 4),
            "bytes": {"litho": litho_path.stat().st_size, "satori": satori_path.stat().st_size},
            "files": [str(litho_path.relative_to(OUT.parent)),
                      str(satori_path.relative_to(OUT.parent))]}


async def stages(http: aiohttp.ClientSession, avatar: str, samples: int) -> dict[str, Any]:
    """Cold PNGs on a stack whose services export their spans to the bench:
    median time per span name (``bench/_spans.py``)."""
    receiver = _spans.SpanReceiver()
    await receiver.start()
    try:
        with tempfile.TemporaryDirectory(prefix="litho-bench-spans-") as data:
            stack = Stack(data_dir=Path(data), gateway_port=0, log_to_files=True,
                          env={"LITHO_OUTBOUND_ALLOW": avatar.split("/")[2],
                               "LITHO_LOG_LEVEL": "WARNING", **receiver.env()})
            async with stack:
                b = Bench(stack, http, avatar)
                await b.create_template()
                for _ in range(2):  # a warm page, and the avatar in the subresource cache
                    await b.render(b.variables())
                ids, times = [], []
                for _ in range(samples):
                    trace_id, seconds = await b.traced(b.variables())
                    ids.append(trace_id)
                    times.append(seconds)
                note = ""
                try:
                    await receiver.wait_complete(ids, timeout=60)
                except TimeoutError:
                    note = "some traces were incomplete after 60 s and were left out"
        traces = receiver.traces(ids)
        return {"renders": sum(_spans.is_complete(t) for t in traces),
                "client": summary_ms(times), "note": note, "rows": _spans.stage_table(traces)}
    finally:
        await receiver.close()


async def throughput(b: Bench, clients: int, seconds: float) -> float:
    deadline = time.perf_counter() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await b.render(b.variables())
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return round(done / (time.perf_counter() - started), 2)


async def soak(b: Bench, renders: int, pid: int) -> dict[str, Any]:
    samples = [tree_pss_bytes(pid)]
    peak = samples[0]
    step = max(1, renders // 10)
    for i in range(1, renders + 1):
        await b.render(b.variables())
        if i % 10 == 0:
            peak = max(peak, tree_pss_bytes(pid))
        if i % step == 0:
            samples.append(tree_pss_bytes(pid))
    mib = [round(s / 2**20, 1) for s in samples]
    return {"renders": renders, "pssMiB": mib, "peakMiB": round(peak / 2**20, 1),
            "growthMiB": round(mib[-1] - mib[1], 1) if len(mib) > 2 else 0.0}


async def tracing_overhead(traced: Bench, untraced: Bench, samples: int) -> dict[str, Any]:
    """Warm hits and cold PNGs on two stacks side by side, one with tracing as
    shipped (spans made, nothing exported) and one with ``OTEL_SDK_DISABLED``,
    interleaved so that the machine's drift touches both alike."""
    warm: dict[str, list[float]] = {"traced": [], "untraced": []}
    cold: dict[str, list[float]] = {"traced": [], "untraced": []}
    pairs = {"traced": traced, "untraced": untraced}
    fixed = {name: b.variables() for name, b in pairs.items()}
    for name, b in pairs.items():
        await b.render(fixed[name])
        await b.render(b.variables())  # a page warmed on each side
    for _ in range(6):
        for name, b in pairs.items():
            warm[name] += [await b.timed(fixed[name]) for _ in range(50)]
    for _ in range(samples):
        for name, b in pairs.items():
            cold[name].append(await b.timed(b.variables()))
    out: dict[str, Any] = {}
    for kind, times in (("warm", warm), ("cold", cold)):
        t, u = summary_ms(times["traced"]), summary_ms(times["untraced"])
        out[kind] = {"traced": t, "untraced": u, "ratio": round(t["p50"] / u["p50"], 3)}
    return out


#: Limits so high that nothing is refused: every request takes its tokens
#: (local leases refilled from the shared store) and counts its render.
LIMITED_ENV = {"LITHO_GATEWAY_RATE_LIMIT_PER_SECOND": "1000000",
               "LITHO_GATEWAY_RATE_LIMIT_BURST": "10000000",
               "LITHO_GATEWAY_KEY_RATE_LIMIT_PER_SECOND": "1000000",
               "LITHO_GATEWAY_KEY_RATE_LIMIT_BURST": "10000000",
               "LITHO_GATEWAY_RENDERS_PER_MONTH": "1000000000000"}


async def middleware_overhead(plain: Bench, limited: Bench) -> dict[str, Any]:
    """Warm hits on two stacks side by side, interleaved (the machine's drift
    touches both alike): one as shipped (limits off), one with a rate limit, a
    key limit and a monthly quota on every request; and, on the first, warm
    hits each with a new Idempotency-Key."""
    times: dict[str, list[float]] = {"off": [], "limited": [], "idempotent": []}
    fixed = {"off": plain.variables(), "limited": limited.variables()}
    await plain.render(fixed["off"])
    await limited.render(fixed["limited"])
    for _ in range(6):
        times["off"] += [await plain.timed(fixed["off"]) for _ in range(50)]
        times["limited"] += [await limited.timed(fixed["limited"]) for _ in range(50)]
        times["idempotent"] += [await plain.timed_keyed(fixed["off"]) for _ in range(50)]
    off = summary_ms(times["off"])
    out: dict[str, Any] = {"off": off}
    for name in ("limited", "idempotent"):
        summary = summary_ms(times[name])
        out[name] = {**summary, "ratio": round(summary["p50"] / off["p50"], 3)}
    return out


def expansion() -> dict[str, Any]:
    """Template expansion alone: a typical OG template with 10 expressions."""
    from services.template._lang._bench import bench_expand

    result = bench_expand()
    return {"runs": result.runs, "medianUs": round(result.median_us, 1),
            "p95Us": round(result.p95_us, 1), "minUs": round(result.min_us, 1)}


SECTIONS = ("warm", "bindings", "experiments", "cold", "floor", "peer", "throughput", "tracing",
            "middleware", "soak", "stages", "batch")


async def main(only: Sequence[str] = SECTIONS) -> None:
    samples = _env_int("BENCH_SAMPLES", 20)
    soak_renders = _env_int("BENCH_SOAK", 2000)
    tp_seconds = float(os.environ.get("BENCH_THROUGHPUT_SECONDS", 10))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "expansion": expansion(),
    }
    runner, avatar = await _avatar_server()
    host_port = avatar.split("/")[2]
    with tempfile.TemporaryDirectory(prefix="litho-bench-") as data:
        stack = Stack(data_dir=Path(data), gateway_port=0, log_to_files=True,
                      env={"LITHO_OUTBOUND_ALLOW": host_port, "LITHO_LOG_LEVEL": "WARNING"})
        async with aiohttp.ClientSession() as http:
            if set(only) - {"stages"}:
                async with stack:
                    await _main_stack(Bench(stack, http, avatar), report, only, samples=samples,
                                      soak_renders=soak_renders, tp_seconds=tp_seconds,
                                      work=Path(data))
            if "stages" in only:
                print("stages (a traced stack exporting to the bench)…", flush=True)
                report["stages"] = await stages(http, avatar, samples)
    await runner.cleanup()
    if tuple(only) == SECTIONS:
        json_path, md_path = OUT / "report.json", OUT / "report.md"
    else:
        # A partial run never overwrites the full report.
        (OUT / "out").mkdir(exist_ok=True)
        json_path, md_path = OUT / "out" / "report-partial.json", OUT / "out" / "report-partial.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(_markdown(report))
    print(md_path.read_text())
    print(f"written: {md_path}, {json_path}")


async def _main_stack(b: Bench, report: dict[str, Any], only: Sequence[str], *, samples: int,
                      soak_renders: int, tp_seconds: float, work: Path) -> None:
    stack, http, avatar = b.stack, b.http, b.avatar
    host_port = avatar.split("/")[2]
    await b.create_template()
    if "warm" in only:
        print("warm hits…", flush=True)
        report["warmHit"] = await warm_hits(b, 300)
    if "bindings" in only:
        print("bindings: warm hits through live data…", flush=True)
        report["bindings"] = await _bindings.bindings_section(
            b, avatar.replace("/avatar.png", "/data.json"), 300)
    if "experiments" in only:
        print("experiments: GET /s/ warm, under load, counted…", flush=True)
        report["experiments"] = await _experiments.experiments_section(
            b, 300, seconds=tp_seconds,
            pids={name: stack.pid(name) for name in ("gateway", "nats", "experiment")})
    if "cold" in only:
        print("cold renders…", flush=True)
        report["cold"] = await cold_renders(b, samples)
    if "floor" in only:
        print("floor…", flush=True)
        report["floor"] = await playwright_floor(b, samples)
        if "cold" in report:
            report["coldPngOverFloor"] = round(
                report["cold"]["png"]["p50"] / report["floor"]["p50"], 3)
    if "peer" in only:
        print("peer: Satori + resvg-js…", flush=True)
        report["peer"] = await peer(b, samples, work)
        if "cold" in report and "totalMs" in report["peer"]:
            report["peer"]["ratioColdSection"] = round(
                report["cold"]["png"]["p50"] / report["peer"]["totalMs"]["p50"], 3)
    if "throughput" in only:
        print("throughput…", flush=True)
        report["throughput"] = {str(c): await throughput(b, c, tp_seconds) for c in (1, 2, 4)}
    if "tracing" in only:
        print("tracing overhead…", flush=True)
        with tempfile.TemporaryDirectory(prefix="litho-bench-untraced-") as data2:
            plain = Stack(data_dir=Path(data2), gateway_port=0, log_to_files=True,
                          env={"LITHO_OUTBOUND_ALLOW": host_port,
                               "LITHO_LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true"})
            async with plain:
                untraced = Bench(plain, http, avatar)
                await untraced.create_template()
                report["tracing"] = await tracing_overhead(b, untraced, samples)
    if "middleware" in only:
        print("rate limits and Idempotency-Key on a warm hit…", flush=True)
        with tempfile.TemporaryDirectory(prefix="litho-bench-limited-") as data3:
            limits = Stack(data_dir=Path(data3), gateway_port=0, log_to_files=True,
                           env={"LITHO_OUTBOUND_ALLOW": host_port,
                                "LITHO_LOG_LEVEL": "WARNING", **LIMITED_ENV})
            async with limits:
                limited = Bench(limits, http, avatar)
                await limited.create_template()
                report["middleware"] = await middleware_overhead(b, limited)
    if "soak" in only:
        print(f"soak of {soak_renders} renders…", flush=True)
        report["soak"] = await soak(b, soak_renders, stack.pid("renderer"))
    if "batch" in only:
        small = await b.create_small_template()
        report["batch"] = await _batch.batch_section(
            b, n=_env_int("BENCH_BATCH", 1000), n_small=_env_int("BENCH_BATCH_SMALL", 1000),
            n_large=_env_int("BENCH_BATCH_LARGE", 10_000), pid=stack.pid("renderer"),
            throughput=lambda clients, seconds: throughput(b, clients, seconds),
            small_template=small)


def _markdown(r: dict[str, Any]) -> str:
    """The report; a partial run (``--only``) leaves out what it did not measure."""
    cold = r.get("cold", {})
    peer_row = r.get("peer", {})
    summary = [
        f"| template expansion | median {r['expansion']['medianUs']} µs | well under 1 ms |",
    ]
    if "warmHit" in r:
        summary.append(f"| warm cache hit over HTTP | p50 {r['warmHit']['p50']} ms, "
                       f"p99 {r['warmHit']['p99']} ms | p50 ≤ 5 ms |")
    if "floor" in r:
        summary.append(f"| naive Playwright floor (set_content + screenshot) | "
                       f"p50 {r['floor']['p50']} ms | |")
    if "coldPngOverFloor" in r:
        summary.append(f"| cold PNG / floor | {r['coldPngOverFloor']} | ≤ 0.5 |")
    if "ratio" in peer_row:
        summary.append(
            f"| cold PNG / Satori + resvg-js (same card, same run) | {peer_row['ratio']} "
            f"(Litho p50 {peer_row['litho']['p50']} ms, Satori + resvg-js p50 "
            f"{peer_row['totalMs']['p50']} ms) | ≤ 1.0 |")
    elif "skipped" in peer_row:
        summary.append(f"| cold PNG / Satori + resvg-js | skipped: {peer_row['skipped']} | ≤ 1.0 |")
    if "tracing" in r:
        summary.append(f"| tracing, warm hit / cold PNG, traced ÷ untraced | "
                       f"{r['tracing']['warm']['ratio']} / {r['tracing']['cold']['ratio']} "
                       "| ≤ 1.1 |")
    if "middleware" in r:
        mw = r["middleware"]
        summary.append(f"| warm hit, rate limits and quota on ÷ off | {mw['limited']['ratio']} "
                       f"(p50 {mw['limited']['p50']} / {mw['off']['p50']} ms) | ≤ 1.1 |")
        summary.append(f"| warm hit with a new `Idempotency-Key` ÷ without | "
                       f"{mw['idempotent']['ratio']} (p50 {mw['idempotent']['p50']} ms; a "
                       "record claimed and kept) | reported |")
    if "jpeg" in cold:
        summary.append(f"| cold JPEG | p50 {cold['jpeg']['p50']} ms | ≤ 60 ms |")
    if "throughput" in r:
        summary.append(f"| throughput, 4 clients | {r['throughput']['4']} PNG/s | ≥ 10 /s |")
    if "soak" in r:
        summary.append(f"| renderer + Chromium memory | peak {r['soak']['peakMiB']} MiB, growth "
                       f"{r['soak']['growthMiB']} MiB over {r['soak']['renders']} renders "
                       "| flat |")
    lines = [
        "# Litho benchmark report",
        "",
        f"Machine: {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, "
        f"{r['machine']['platform']}. One run; medians and ratios are what to read.",
        "",
        "| measure | result | target |",
        "| --- | --- | --- |",
        *summary,
        "",
    ]
    if cold:
        lines += [
            "## Cold renders of the 1200x630 OG card, end to end over HTTP",
            "",
            "| format | p50 ms | p95 ms | n |",
            "| --- | --- | --- | --- |",
            *[f"| {f} | {cold[f]['p50']} | {cold[f]['p95']} | {cold[f]['n']} |" for f in cold],
            "",
        ]
    if peer_row:
        lines += _peer_markdown(peer_row)
    if "stages" in r:
        lines += _stages_markdown(r["stages"])
    if "throughput" in r:
        lines += [
            "## Throughput (unique PNG renders)",
            "",
            "| clients | images/s |",
            "| --- | --- |",
            *[f"| {c} | {v} |" for c, v in r["throughput"].items()],
            "",
        ]
    if "tracing" in r:
        lines += [
            "## Tracing overhead",
            "",
            "Two stacks side by side, measured in alternation: spans made as shipped "
            "(nothing exported) against `OTEL_SDK_DISABLED=true`.",
            "",
            "| measure | traced p50 ms | untraced p50 ms | traced / untraced |",
            "| --- | --- | --- | --- |",
            *[f"| {kind} | {r['tracing'][kind]['traced']['p50']} | "
              f"{r['tracing'][kind]['untraced']['p50']} | {r['tracing'][kind]['ratio']} |"
              for kind in ("warm", "cold")],
            "",
        ]
    if "middleware" in r:
        mw = r["middleware"]
        rows = [("limits off (as shipped)", mw["off"], "1"),
                ("rate limit, key limit and monthly quota on", mw["limited"],
                 mw["limited"]["ratio"]),
                ("limits off, a new `Idempotency-Key` each", mw["idempotent"],
                 mw["idempotent"]["ratio"])]
        lines += [
            "## Rate limits, quotas and `Idempotency-Key` on a warm hit",
            "",
            "Two stacks side by side, measured in alternation: limits off (the "
            "default) against limits high enough that nothing is refused, so every "
            "request takes its tokens and counts its render; and, on the first, the "
            "same warm hit sent with a new `Idempotency-Key` (a record claimed, then "
            "kept in the document store).",
            "",
            "| warm hit | p50 ms | p99 ms | ÷ limits off |",
            "| --- | --- | --- | --- |",
            *[f"| {name} | {m['p50']} | {m['p99']} | {ratio} |" for name, m, ratio in rows],
            "",
        ]
    if "soak" in r:
        lines += [
            "## Memory soak",
            "",
            f"PSS of the renderer and its Chromium processes, MiB (Chromium restarts every "
            f"1000 renders by default), every {r['soak']['renders'] // 10} renders: "
            f"{', '.join(str(m) for m in r['soak']['pssMiB'])}",
            "",
        ]
    if "bindings" in r:
        lines += _bindings.markdown(r["bindings"])
    if "experiments" in r:
        lines += _experiments.markdown(r["experiments"])
    if "batch" in r:
        lines += _batch.markdown(r["batch"])
    lines += [
        "## Template expansion (parsed once, cached compiled)",
        "",
        f"Typical OG template, 10 expressions: median {r['expansion']['medianUs']} µs, "
        f"p95 {r['expansion']['p95Us']} µs over {r['expansion']['runs']} renders.",
        "",
    ]
    return "\n".join(lines)


def _peer_markdown(p: dict[str, Any]) -> list[str]:
    head = ["## Peer: Satori + resvg-js, the same card in the same run", ""]
    if "skipped" in p:
        return [*head, f"Skipped: {p['skipped']}", ""]
    v, f = p["versions"], p["fidelity"]
    return [
        *head,
        f"satori {v['satori']} renders the card (`bench/satori/render.mjs`, the same layout "
        "as `bench/_card.py` as a plain element tree) to an SVG with its text as paths, and "
        f"@resvg/resvg-js {v['resvg-js']} draws that SVG to a PNG, in one long-lived node "
        "process (start-up not counted; times measured inside node). Every render has a "
        "new title, so nothing is reused between renders but the parsed fonts. Litho's "
        "cold PNGs are measured end to end over HTTP, one Litho render then one Satori "
        "render, in alternation.",
        "",
        "| renderer | p50 ms | p95 ms | n |",
        "| --- | --- | --- | --- |",
        f"| Litho, cold PNG over HTTP | {p['litho']['p50']} | {p['litho']['p95']} | "
        f"{p['litho']['n']} |",
        f"| Satori + resvg-js, total | {p['totalMs']['p50']} | {p['totalMs']['p95']} | "
        f"{p['totalMs']['n']} |",
        f"| … Satori (element tree → SVG) | {p['satoriMs']['p50']} | {p['satoriMs']['p95']} | "
        f"{p['satoriMs']['n']} |",
        f"| … resvg-js (SVG → PNG) | {p['resvgMs']['p50']} | {p['resvgMs']['p95']} | "
        f"{p['resvgMs']['n']} |",
        "",
        f"Litho ÷ Satori + resvg-js at p50: **{p['ratio']}** (target ≤ 1.0)"
        + (f"; with the cold-render section's PNG p50 (renders back to back) instead: "
           f"{p['ratioColdSection']}." if "ratioColdSection" in p else "."),
        "",
        f"Fonts: {p['fonts']['regular']} and {p['fonts']['bold']} (from `fc-match`, the files "
        "Chromium uses for `'Noto Sans'`); the emoji is "
        + ("Noto Color Emoji's glyph as a PNG (`graphemeImages`), since Satori cannot read "
           "colour emoji fonts." if p["fonts"]["emoji"] else "missing (no Noto Color Emoji).")
        + " Differences from Litho's card: Satori lays out with flexbox only and takes inline "
        "styles (no stylesheet), so the card is a flex column with the same sizes, colours, "
        "gradient and positions; it draws the emoji as a 1em image (Chromium's glyph is a "
        "little larger); it gets the avatar as a data URI where Litho fetches it through its "
        "outbound guard (from its subresource cache after the first render); and it is a "
        "library call, where Litho's time includes HTTP, gRPC, the render cache and the "
        "blob store.",
        "",
        f"Pixels, one title rendered by both ({', '.join(f['files'])}): mean absolute "
        f"difference {f['meanAbsDiff']} of 255 per channel; {f['pixelsOver32'] * 100:.2f}% "
        "of pixels differ by more than 32. PNG sizes: Litho "
        f"{f['bytes']['litho'] // 1024} KiB (re-encoded by libvips), Satori + resvg-js "
        f"{f['bytes']['satori'] // 1024} KiB (resvg-js's own encoder).",
        "",
    ]


def _stages_markdown(st: dict[str, Any]) -> list[str]:
    return [
        "## Where a cold PNG's time goes (spans)",
        "",
        f"{st['renders']} cold PNG renders on a stack exporting its spans over OTLP to the "
        f"bench (client p50 {st['client']['p50']} ms). Per span name: how many per render, "
        "the median of its time in a render (occurrences added up), the median of its self "
        "time (the part no child span covers) and its median share of the gateway's server "
        "span. Rows are in the order the stages start; indentation is nesting. "
        "The page reset (a navigation to a new empty document) runs after the answer and "
        "is in no request's trace." + (f" Note: {st['note']}." if st["note"] else ""),
        "",
        "| span | service | per render | p50 ms | self p50 ms | share |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {'· ' * row['depth']}{row['span']} | {row['service']} | {row['perRender']} | "
          f"{row['p50Ms']} | {row['selfP50Ms']} | {row['share'] * 100:.0f}% |"
          for row in st["rows"]],
        "",
    ]


def _args(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections to run (a partial run writes "
                             f"bench/out/report-partial.*): {', '.join(SECTIONS)}")
    only = [s.strip() for s in parser.parse_args(argv).only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in only]


if __name__ == "__main__":
    asyncio.run(main(_args()))
