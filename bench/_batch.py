"""The batch section of ``make bench``: a batch against interactive renders
on the same stack, in the same run.

- a batch of ``n`` distinct OG cards: wall time and images/s, against the
  saturated interactive throughput (``n`` renders by 4 clients) measured
  just before it, and against 10 s of it (which sees no page recycling);
- interactive cold PNG p50 while a second batch (a quarter the size) runs,
  against idle;
- ``n`` sequential single renders against one batch of the same ``n`` sets
  (rendered again: ``cache: refresh``);
- the renderer's peak memory (PSS, Chromium included) during a batch of
  ``n_small`` and of ``n_large`` small distinct cards: no growth with size.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import aiohttp

from bench._procs import tree_pss_bytes
from bench._stats import summary_ms

SMALL_CARD = """<body style="margin:0;background:{{ bg }};color:#fff;font:20px sans-serif">
<div style="padding:8px">{{ title }}</div></body>"""


class Client(Protocol):
    http: aiohttp.ClientSession
    headers: dict[str, str]
    template_id: str

    @property
    def stack_url(self) -> str: ...

    def variables(self, *, unique: bool = True) -> dict[str, Any]: ...

    async def timed(self, variables: dict[str, Any], fmt: str = "png") -> float: ...


async def _submit(c: Client, template_id: str, sets: list[dict[str, Any]],
                  **options: Any) -> str:
    async with c.http.post(f"{c.stack_url}/v1/templates/{template_id}/batch-render",
                           json={"variableSets": sets, "format": "png", **options},
                           headers=c.headers) as r:
        if r.status != 202:
            raise RuntimeError(f"batch refused: {r.status} {await r.text()}")
        return str((await r.json())["batchId"])


async def _wait(c: Client, batch_id: str) -> dict[str, Any]:
    while True:
        async with c.http.get(f"{c.stack_url}/v1/batches/{batch_id}", headers=c.headers) as r:
            batch: dict[str, Any] = await r.json()
        if batch["status"] in ("completed", "partial", "failed", "cancelled"):
            if batch["status"] != "completed":
                raise RuntimeError(f"batch ended {batch['status']}: {batch}")
            return batch
        await asyncio.sleep(0.25)


async def _timed_batch(c: Client, template_id: str, sets: list[dict[str, Any]],
                       during: Callable[[asyncio.Event], Coroutine[Any, Any, Any]] | None = None,
                       **options: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    batch_id = await _submit(c, template_id, sets, **options)
    finished = asyncio.Event()
    side: asyncio.Task[Any] | None = asyncio.create_task(during(finished)) if during else None
    await _wait(c, batch_id)
    wall = time.perf_counter() - started
    finished.set()
    return wall, (await side if side else None)


async def _interactive_until(c: Client, finished: asyncio.Event) -> list[float]:
    times: list[float] = []
    await asyncio.sleep(1.0)  # the batch is under way on every page
    while not finished.is_set():
        times.append(await c.timed(c.variables()))
        await asyncio.sleep(0.1)
    return times


async def _pss_until(pid: int, finished: asyncio.Event) -> list[float]:
    """PSS in MiB every 0.5 s until the batch is done."""
    samples: list[float] = []
    while not finished.is_set():
        samples.append(round(tree_pss_bytes(pid) / 2**20, 1))
        await asyncio.sleep(0.5)
    return samples


def _quarters(samples: list[float]) -> tuple[float, float]:
    """Median PSS of the first and of the last quarter of a run."""
    q = max(1, len(samples) // 4)
    return statistics.median(samples[:q]), statistics.median(samples[-q:])


async def batch_section(c: Client, *, n: int, n_small: int, n_large: int, pid: int,
                        throughput: Callable[[int, float], Awaitable[float]],
                        small_template: str) -> dict[str, Any]:
    out: dict[str, Any] = {"items": n}
    if n:
        await _speed(c, out, n, throughput)
    memory: dict[str, Any] = {}
    for size in (n_small, n_large):
        print(f"batch: renderer memory during a batch of {size} small cards…", flush=True)
        stamp = time.time_ns()
        small = [{"bg": f"#{i % 200:02x}40{(i * 7) % 256:02x}", "title": f"{stamp} {i}"}
                 for i in range(size)]
        wall, samples = await _timed_batch(
            c, small_template, small, lambda done: _pss_until(pid, done))
        first, last = _quarters(samples)
        memory[str(size)] = {"peakMiB": max(samples), "firstQuarterMiB": first,
                             "lastQuarterMiB": last, "wallS": round(wall, 2),
                             "imagesPerS": round(size / wall, 2),
                             "series": samples[::max(1, len(samples) // 20)]}
    out["memory"] = memory
    out["memory"]["growthMiB"] = round(
        memory[str(n_large)]["peakMiB"] - memory[str(n_small)]["peakMiB"], 1)
    big = memory[str(n_large)]
    out["memory"]["driftMiB"] = round(big["lastQuarterMiB"] - big["firstQuarterMiB"], 1)
    return out


async def _saturated(c: Client, n: int, clients: int = 4) -> float:
    """Images/s of ``n`` distinct interactive renders by ``clients`` at once:
    the same amount of work as the batch, so both pay the same page recycling
    and browser restarts (a 10 s window sees none of them)."""
    left = n

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await c.timed(c.variables())

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return round(n / (time.perf_counter() - started), 2)


async def _speed(c: Client, out: dict[str, Any], n: int,
                 throughput: Callable[[int, float], Awaitable[float]]) -> None:
    print("batch: idle interactive p50…", flush=True)
    idle = [await c.timed(c.variables()) for _ in range(20)]
    print(f"batch: {n} interactive renders by 4 clients (saturated)…", flush=True)
    saturated = await _saturated(c, n)
    # The renderer keeps a page back for interactive renders for
    # LITHO_RENDERER_BATCH_YIELD_SECONDS after the last one; the batch is
    # measured from a quiet start, as a batch usually runs.
    await asyncio.sleep(3.0)

    print(f"batch: {n} distinct cards…", flush=True)
    wall, _ = await _timed_batch(c, c.template_id, [c.variables() for _ in range(n)])
    ips = n / wall
    out["batch"] = {"wallS": round(wall, 2), "imagesPerS": round(ips, 2),
                    "interactiveImagesPerS": saturated,
                    "interactiveTenSecondsImagesPerS": await throughput(4, 10.0),
                    "ratio": round(ips / saturated, 3)}
    beside = max(100, n // 4)
    print(f"batch: {beside} distinct cards, interactive renders beside them…", flush=True)
    _, during = await _timed_batch(c, c.template_id, [c.variables() for _ in range(beside)],
                                   lambda done: _interactive_until(c, done))
    idle_p50, during_p50 = summary_ms(idle), summary_ms(during)
    out["interactive"] = {"idle": idle_p50, "duringBatch": during_p50,
                          "ratio": round(during_p50["p50"] / idle_p50["p50"], 3)}

    print(f"batch: {n} sequential single renders, then one batch of the same sets…",
          flush=True)
    seq_sets = [c.variables() for _ in range(n)]
    started = time.perf_counter()
    for variables in seq_sets:
        await c.timed(variables)
    sequential = time.perf_counter() - started
    again, _ = await _timed_batch(c, c.template_id, seq_sets, cache="refresh")
    out["sequential"] = {"wallS": round(sequential, 2), "batchWallS": round(again, 2),
                         "ratio": round(sequential / again, 3)}


def _ten_second_ratio(batch: dict[str, Any]) -> str:
    ten = batch.get("interactiveTenSecondsImagesPerS")
    if not ten:
        return "—"
    return f"{round(batch['imagesPerS'] / ten, 3)} ({batch['imagesPerS']} vs {ten})"


def markdown(b: dict[str, Any]) -> list[str]:
    n = b["items"]
    mem = b["memory"]
    sizes = [k for k in mem if k not in ("growthMiB", "driftMiB")]
    big = mem[sizes[-1]]
    memory_rows = [
        f"| renderer peak memory, batch of {sizes[-1]} minus batch of {sizes[0]} | "
        f"{mem['growthMiB']} MiB ({big['peakMiB']} vs {mem[sizes[0]]['peakMiB']} MiB)"
        " | no growth |",
        f"| renderer memory across the batch of {sizes[-1]}: last quarter minus first "
        f"(medians) | {mem.get('driftMiB', '—')} MiB ({big.get('lastQuarterMiB', '—')} vs "
        f"{big.get('firstQuarterMiB', '—')} MiB) | flat |",
    ]
    if "batch" not in b:
        return ["## Batches", "", "Renderer memory (PSS with Chromium, sampled every 0.5 s) "
                "during batches of small 300×80 cards.", "",
                "| measure | result | target |", "| --- | --- | --- |", *memory_rows,
                "", f"Series during the batch of {sizes[-1]} (MiB, evenly spaced): "
                f"{', '.join(str(v) for v in big.get('series', []))}", ""]
    return [
        "## Batches", "",
        f"One stack, one run: a batch of {n} distinct 1200×630 cards (PNG) on the work queue, "
        "against interactive renders of the same card; then renderer memory (PSS with "
        "Chromium, sampled every 0.5 s) during batches of small 300×80 cards.", "",
        "| measure | result | target |", "| --- | --- | --- |",
        f"| batch of {n}: images/s ÷ saturated interactive images/s ({n} renders by 4 "
        f"clients) | {b['batch']['ratio']} ({b['batch']['imagesPerS']} vs "
        f"{b['batch']['interactiveImagesPerS']}; batch wall {b['batch']['wallS']} s) | ≥ 0.9 |",
        f"| the same batch ÷ interactive images/s over 10 s only (no page recycling in "
        f"the window) | {_ten_second_ratio(b['batch'])} | |",
        f"| interactive cold PNG p50 during a batch ÷ idle | {b['interactive']['ratio']} "
        f"({b['interactive']['duringBatch']['p50']} vs {b['interactive']['idle']['p50']} ms, "
        f"n = {b['interactive']['duringBatch']['n']}) | ≤ 2 |",
        f"| {n} sequential single renders ÷ one batch of the same {n} | "
        f"{b['sequential']['ratio']} ({b['sequential']['wallS']} s vs "
        f"{b['sequential']['batchWallS']} s) | |",
        *memory_rows,
        "",
    ]
