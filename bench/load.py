"""``python -m bench.load`` (``make load``): drive a stack with a mix of
requests from several concurrent clients for a bounded time, and report
throughput, p50/p99 per kind and the 5xx answers (target: none).

The stack is the running one when ``LITHO_URL`` and ``LITHO_API_KEY`` are
set (``make run`` in another terminal, or a cluster), else one started here
with the embedded defaults. The mix, per client request: warm hits (a render
of stored output, 60 %), cold renders (new variables each, 15 %), signed
URLs (``GET /r/…`` of a URL signed once per variable set, 25 %, half of them
never rendered before); and one batch of ``LOAD_BATCH`` items submitted at
the start, whose time to complete is reported. ``LOAD_SECONDS`` (default
20) and ``LOAD_CLIENTS`` (default 8) bound it.

Writes ``bench/out/load.json`` and ``bench/out/load.md``, and puts the
markdown into ``bench/report.md`` in place of its "Load" section.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from bench._card import CARD_HTML
from bench._stats import summary_ms
from services._stack import Stack

OUT = Path(__file__).parent
WEIGHTS = {"warm": 60, "cold": 15, "signed": 25}
#: Variable sets rendered before the load, for warm hits and warm signed URLs.
WARM_SETS = 20


def _avatar() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (120, 120), (250, 204, 21)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, kind: str, seconds: float, status: int) -> None:
        self.latencies[kind].append(seconds)
        self.statuses[kind][status] += 1


@asynccontextmanager
async def _target() -> AsyncIterator[tuple[str, str]]:
    url, key = os.environ.get("LITHO_URL", ""), os.environ.get("LITHO_API_KEY", "")
    if url and key:
        yield url.rstrip("/"), key
        return
    with tempfile.TemporaryDirectory(prefix="litho-load-") as data:
        async with Stack(data_dir=Path(data), gateway_port=0, log_to_files=True,
                         env={"LITHO_LOG_LEVEL": "WARNING"}) as stack:
            yield stack.url, stack.api_key


async def _json(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                body: dict[str, Any]) -> dict[str, Any]:
    async with http.request(method, url, json=body, headers=headers) as r:
        if r.status >= 300:
            raise RuntimeError(f"{method} {url}: {r.status} {await r.text()}")
        out: dict[str, Any] = await r.json()
        return out


async def run(seconds: float, clients: int, batch_items: int) -> dict[str, Any]:
    async with _target() as (url, key), aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {key}"}
        avatar = _avatar()
        template = await _json(http, "POST", f"{url}/v1/templates", auth, {
            "name": "load", "html": CARD_HTML, "width": 1200, "height": 630})
        tid = template["id"]
        render_url = f"{url}/v1/templates/{tid}/render"

        def variables(n: int | str) -> dict[str, Any]:
            return {"title": f"Load {n}", "subtitle": "make load", "price": 49,
                    "avatar": avatar}

        warm = [variables(n) for n in range(WARM_SETS)]
        for v in warm:
            await _json(http, "POST", render_url, auth, {"variables": v})
        signed_warm = [(await _json(http, "POST", f"{url}/v1/signed-urls", auth, {
            "templateId": tid, "variables": v, "expiresIn": 3600}))["url"] for v in warm]
        cold_ids = itertools.count()
        tally = Tally()
        rng = random.Random(7)
        kinds = list(WEIGHTS)
        weights = list(WEIGHTS.values())
        deadline = time.perf_counter() + seconds

        async def timed(kind: str, method: str, target: str, body: Any = None,
                        headers: dict[str, str] | None = None) -> None:
            started = time.perf_counter()
            try:
                async with http.request(method, target, json=body, headers=headers) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 599  # no answer at all: counted with the 5xx
            tally.add(kind, time.perf_counter() - started, status)

        async def client() -> None:
            while time.perf_counter() < deadline:
                kind = rng.choices(kinds, weights)[0]
                if kind == "warm":
                    await timed(kind, "POST", render_url,
                                {"variables": rng.choice(warm)}, auth)
                elif kind == "cold":
                    await timed(kind, "POST", render_url,
                                {"variables": variables(f"cold-{next(cold_ids)}")}, auth)
                elif rng.random() < 0.5:
                    await timed("signed (rendered before)", "GET", rng.choice(signed_warm))
                else:
                    fresh = await _json(http, "POST", f"{url}/v1/signed-urls", auth, {
                        "templateId": tid, "variables": variables(f"s-{next(cold_ids)}"),
                        "expiresIn": 3600})
                    await timed("signed (first view)", "GET", fresh["url"])

        async def batch() -> float:
            started = time.perf_counter()
            made = await _json(http, "POST", f"{url}/v1/templates/{tid}/batch-render", auth, {
                "variableSets": [variables(f"batch-{n}") for n in range(batch_items)],
                "format": "png"})
            while True:
                async with http.get(f"{url}/v1/batches/{made['batchId']}", headers=auth) as r:
                    state: dict[str, Any] = await r.json()
                if state["status"] in ("completed", "partial", "failed", "cancelled"):
                    tally.add("batch", time.perf_counter() - started,
                              200 if state["status"] == "completed" else 500)
                    return time.perf_counter() - started
                await asyncio.sleep(0.25)

        started = time.perf_counter()
        batch_task = asyncio.create_task(batch())
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started  # the clients' window
        batch_seconds = await batch_task
    kinds_out = {}
    total_5xx = sum(n for st, n in tally.statuses["batch"].items() if st >= 500)
    for kind, latencies in sorted(tally.latencies.items()):
        if kind == "batch":
            continue  # reported on its own: one request, its time to complete
        statuses = tally.statuses[kind]
        server_errors = sum(n for st, n in statuses.items() if st >= 500)
        total_5xx += server_errors
        kinds_out[kind] = {
            "requests": len(latencies), "perSecond": round(len(latencies) / elapsed, 1),
            "latency": summary_ms(latencies),
            "statuses": {str(s): n for s, n in sorted(statuses.items())},
            "5xx": server_errors}
    return {"seconds": round(elapsed, 1), "clients": clients, "batchItems": batch_items,
            "batchSeconds": round(batch_seconds, 2), "kinds": kinds_out,
            "batchStatus": dict(tally.statuses["batch"]),
            "total5xx": total_5xx,
            "cpus": os.cpu_count(),
            "target": "a running stack (LITHO_URL)" if os.environ.get("LITHO_URL")
            else "a stack started by make load (embedded defaults)"}


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "## Load (`make load`)", "",
        f"{r['clients']} concurrent clients for {r['seconds']} s against {r['target']}, on "
        f"{r['cpus']} CPUs: warm hits, cold renders and signed URLs mixed "
        f"({', '.join(f'{k} {w} %' for k, w in WEIGHTS.items())}), and one batch of "
        f"{r['batchItems']} items submitted at the start, rendering beside them (done in "
        f"{r['batchSeconds']} s, answers {r['batchStatus']}). The rates are over the "
        "clients' window.", "",
        "| kind | requests | per second | p50 ms | p99 ms | answers | 5xx |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind, k in r["kinds"].items():
        answers = ", ".join(f"{s}: {n}" for s, n in k["statuses"].items())
        lines.append(f"| {kind} | {k['requests']} | {k['perSecond']} | {k['latency']['p50']} "
                     f"| {k['latency']['p99']} | {answers} | {k['5xx']} |")
    lines += ["", f"5xx answers in all: {r['total5xx']} (target: none).", ""]
    return "\n".join(lines)


def _merge(section: str) -> None:
    """Put ``section`` into bench/report.md in place of its Load section."""
    report = OUT / "report.md"
    text = report.read_text() if report.exists() else ""
    head = "## Load (`make load`)"
    if head in text:
        start = text.index(head)
        rest = text[start + len(head):]
        end = rest.find("\n## ")
        text = text[:start] + section + (rest[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    report.write_text(text)


def main() -> None:
    result = asyncio.run(run(float(os.environ.get("LOAD_SECONDS", 20)),
                             int(os.environ.get("LOAD_CLIENTS", 8)),
                             int(os.environ.get("LOAD_BATCH", 100))))
    (OUT / "out").mkdir(exist_ok=True)
    (OUT / "out" / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    (OUT / "out" / "load.md").write_text(section)
    _merge(section)
    print(section)
    if result["total5xx"]:
        raise SystemExit(f"{result['total5xx']} answers were 5xx")


if __name__ == "__main__":
    main()
