"""How long expanding a typical social-card template takes, for ``make bench``.

The template is the kind Litho exists for: a title and author looked up, a
price through ``currency``, a date through ``date``, an ``if`` and a short
``for`` loop (ten expressions in all). The template is compiled once, as the
service does per version, and only rendering is timed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.template._lang._engine import Engine

TEMPLATE = """<!doctype html>
<html><head><style>
  body { width: 1200px; height: 630px; font-family: Inter, sans-serif; }
  .badge { background: #ff5a1f; color: white; }
</style></head>
<body>
  <h1>{{ post.title | truncate: 60 }}</h1>
  <p class="by">by {{ post.author.name }} · {{ post.publishedAt | date: 'MMM D, YYYY' }}</p>
  {{ if post.onSale }}<span class="badge">{{ post.price * 0.9 | currency }}</span>
  {{ else }}<span>{{ post.price | currency }}</span>{{ end }}
  <ul>{{ for tag in post.tags }}
    <li>#{{ tag | lowercase }}{{ if !loop.last }},{{ end }}</li>{{ end }}</ul>
  <footer>{{ site | default: 'litho.dev' }}</footer>
</body></html>
"""

VARIABLES: dict[str, Any] = {
    "post": {
        "title": "Shipping a template language in an afternoon, and other tall tales",
        "author": {"name": "Ada Lovelace"},
        "publishedAt": "2024-03-15T09:30:00Z",
        "onSale": True,
        "price": 49,
        "tags": ["Python", "Templates", "OG"],
    },
}


@dataclass(frozen=True)
class BenchResult:
    runs: int
    median_us: float
    p95_us: float
    mean_us: float
    min_us: float

    def summary(self) -> str:
        return (f"expand (typical OG template, 10 expressions): median {self.median_us:.1f} µs, "
                f"p95 {self.p95_us:.1f} µs, min {self.min_us:.1f} µs over {self.runs} runs")


def bench_expand(runs: int = 2000, *, warmup: int = 200) -> BenchResult:
    engine = Engine(clock=lambda: datetime(2024, 3, 20, tzinfo=UTC))
    template = engine.compile(TEMPLATE)
    for _ in range(warmup):
        template.render(VARIABLES, max_output=1 << 20)
    timings: list[float] = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        template.render(VARIABLES, max_output=1 << 20)
        timings.append((time.perf_counter_ns() - start) / 1000)
    timings.sort()
    return BenchResult(
        runs=runs,
        median_us=statistics.median(timings),
        p95_us=timings[min(len(timings) - 1, int(len(timings) * 0.95))],
        mean_us=statistics.fmean(timings),
        min_us=timings[0],
    )


if __name__ == "__main__":
    print(bench_expand().summary())
