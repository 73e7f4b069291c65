"""``python -m bench`` (``make bench``): start the real stack, measure, write a report.

Writes ``bench/report.md`` and ``bench/report.json``. Every number comes from
one run on this machine; read medians and ratios, not single samples.
Environment knobs: ``BENCH_SAMPLES`` (cold renders per format, default 20),
``BENCH_SOAK`` (renders in the memory soak, default 2000),
``BENCH_THROUGHPUT_SECONDS`` (per concurrency level, default 10).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from bench._card import CARD_HTML
from bench._procs import tree_pss_bytes
from bench._stats import summary_ms
from litho import formats
from services._stack import Stack

OUT = Path(__file__).parent
FORMATS = formats.names()


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _avatar_server() -> tuple[web.AppRunner, str]:
    buf = io.BytesIO()
    Image.new("RGB", (240, 240), (250, 204, 21)).save(buf, format="PNG")
    body = buf.getvalue()

    async def avatar(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/avatar.png", avatar)
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


def expansion() -> dict[str, Any]:
    """Template expansion alone: a typical OG template with 10 expressions."""
    from services.template._lang._bench import bench_expand

    result = bench_expand()
    return {"runs": result.runs, "medianUs": round(result.median_us, 1),
            "p95Us": round(result.p95_us, 1), "minUs": round(result.min_us, 1)}


async def main() -> None:
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
        async with stack, aiohttp.ClientSession() as http:
            b = Bench(stack, http, avatar)
            await b.create_template()
            print("warm hits…", flush=True)
            report["warmHit"] = await warm_hits(b, 300)
            print("cold renders…", flush=True)
            report["cold"] = await cold_renders(b, samples)
            print("floor…", flush=True)
            report["floor"] = await playwright_floor(b, samples)
            report["coldPngOverFloor"] = round(
                report["cold"]["png"]["p50"] / report["floor"]["p50"], 3)
            print("throughput…", flush=True)
            report["throughput"] = {str(c): await throughput(b, c, tp_seconds) for c in (1, 2, 4)}
            print("tracing overhead…", flush=True)
            with tempfile.TemporaryDirectory(prefix="litho-bench-untraced-") as data2:
                plain = Stack(data_dir=Path(data2), gateway_port=0, log_to_files=True,
                              env={"LITHO_OUTBOUND_ALLOW": host_port,
                                   "LITHO_LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true"})
                async with plain:
                    untraced = Bench(plain, http, avatar)
                    await untraced.create_template()
                    report["tracing"] = await tracing_overhead(b, untraced, samples)
            print(f"soak of {soak_renders} renders…", flush=True)
            report["soak"] = await soak(b, soak_renders, stack.pid("renderer"))
    await runner.cleanup()
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "report.md").write_text(_markdown(report))
    print((OUT / "report.md").read_text())


def _markdown(r: dict[str, Any]) -> str:
    cold = r["cold"]
    lines = [
        "# Litho benchmark report",
        "",
        f"Machine: {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, "
        f"{r['machine']['platform']}. One run; medians and ratios are what to read.",
        "",
        "| measure | result | target |",
        "| --- | --- | --- |",
        f"| template expansion | median {r['expansion']['medianUs']} µs | well under 1 ms |",
        f"| warm cache hit over HTTP | p50 {r['warmHit']['p50']} ms, p99 {r['warmHit']['p99']} ms"
        " | p50 ≤ 5 ms |",
        f"| naive Playwright floor (set_content + screenshot) | p50 {r['floor']['p50']} ms | |",
        f"| cold PNG / floor | {r['coldPngOverFloor']} | ≤ 0.5 |",
        f"| tracing, warm hit / cold PNG, traced ÷ untraced | {r['tracing']['warm']['ratio']} / "
        f"{r['tracing']['cold']['ratio']} | ≤ 1.1 |",
        f"| cold JPEG | p50 {cold['jpeg']['p50']} ms | ≤ 60 ms |",
        f"| throughput, 4 clients | {r['throughput']['4']} PNG/s | ≥ 10 /s |",
        f"| renderer + Chromium memory | peak {r['soak']['peakMiB']} MiB, growth "
        f"{r['soak']['growthMiB']} MiB over {r['soak']['renders']} renders | flat |",
        "",
        "## Cold renders of the 1200x630 OG card, end to end over HTTP",
        "",
        "| format | p50 ms | p95 ms | n |",
        "| --- | --- | --- | --- |",
        *[f"| {f} | {cold[f]['p50']} | {cold[f]['p95']} | {cold[f]['n']} |" for f in cold],
        "",
        "## Throughput (unique PNG renders)",
        "",
        "| clients | images/s |",
        "| --- | --- |",
        *[f"| {c} | {v} |" for c, v in r["throughput"].items()],
        "",
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
        "## Memory soak",
        "",
        f"PSS of the renderer and its Chromium processes, MiB (Chromium restarts every "
        f"1000 renders by default), every {r['soak']['renders'] // 10} renders: "
        f"{', '.join(str(m) for m in r['soak']['pssMiB'])}",
        "",
        "## Template expansion (parsed once, cached compiled)",
        "",
        f"Typical OG template, 10 expressions: median {r['expansion']['medianUs']} µs, "
        f"p95 {r['expansion']['p95Us']} µs over {r['expansion']['runs']} renders.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    asyncio.run(main())
