"""A/B experiments served and counted end to end: ``/s/{handle}/{slug}.png``
and its click-through, sticky over many visitors and split by the weights;
every view, click and reported event counted exactly (also across a restart
of the experiment service); bots counted apart; drafts, paused and completed
experiments counting nothing; the statistics of known counts recommending a
winner that everyone then sees; another tenant seeing and counting nothing.

Counting is asynchronous (JetStream, then the experiment service's counter
consumer), so every check of a count polls the stats until the expected
totals, with a deadline. That nothing was counted is checked with a later
counted event as a barrier: the counts are published to one stream and
applied in its order, so once the barrier's count shows, whatever was
published before it shows too.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, TypeVar

import aiohttp
import pytest_asyncio
from multidict import CIMultiDictProxy

from litho import assignment
from tests.e2e.conftest import Live
from tests.e2e.test_experiments import call, create, field_names, slug, template

A = TypeVar("A")
T = TypeVar("T")

CONTROL, B = "a", "b"
DESTINATION = "https://shop.example.com/buy?src=litho"
CLICK_GOAL = {"type": "click_through", "destinationUrl": DESTINATION}
#: How long counts may take to show in the stats.
COUNT_DEADLINE = 60.0
#: Concurrent requests of the load tests.
CONCURRENCY = 64
#: (impressions, clicks, conversions, botImpressions) of one variant.
Counts = tuple[int, int, int, int]
ZERO: Counts = (0, 0, 0, 0)


def weighted(a: int, b: int) -> list[dict[str, Any]]:
    return [{"id": CONTROL, "name": "Control", "variables": {"title": "Hello"}, "weight": a},
            {"id": B, "variables": {"title": "HELLO!"}, "weight": b}]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def public() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-less client of the public URLs: it keeps no cookies (each
    test sends the ones it means to) and never follows redirects."""
    async with aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=CONCURRENCY + 8)) as http:
        yield http


@dataclass(frozen=True)
class Seen:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def variant(self) -> str:
        return self.headers.get("Litho-Variant", "")

    @property
    def counted(self) -> bool:
        return self.headers.get("Litho-Counted") == "true"

    @property
    def cookie(self) -> SimpleCookie:
        jar: SimpleCookie = SimpleCookie()
        for header in self.headers.getall("Set-Cookie", []):
            jar.load(header)
        return jar


async def see(http: aiohttp.ClientSession, url: str, *, vid: str | None = None,
              cookie: str | None = None, agent: str | None = None, method: str = "GET",
              headers: Mapping[str, str] | None = None) -> Seen:
    """One request of a public URL, as a browser (or a bot) would make it."""
    sent = {"User-Agent": agent or "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            **(headers or {})}
    if cookie is not None:
        sent["Cookie"] = f"litho_vid={cookie}"
    params = {"vid": vid} if vid is not None else None
    async with http.request(method, url, params=params, headers=sent,
                            allow_redirects=False) as r:
        return Seen(r.status, r.headers, await r.read())


async def bounded(items: Iterable[A], job: Callable[[A], Awaitable[T]],
                  concurrency: int = CONCURRENCY) -> list[T]:
    """``job`` of every item, at most ``concurrency`` at a time; results in order."""
    queue = list(items)
    results: dict[int, T] = {}
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(queue):
            index = position
            position += 1
            results[index] = await job(queue[index])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [results[i] for i in range(len(queue))]


def counts_of(stats: Mapping[str, Any]) -> dict[str, Counts]:
    return {v["variantId"]: (v["impressions"], v["clicks"], v["conversions"],
                             v["botImpressions"]) for v in stats["variants"]}


def plus(base: Mapping[str, Counts], **more: Counts) -> dict[str, Counts]:
    out = dict(base)
    for variant_id, extra in more.items():
        out[variant_id] = tuple(x + y for x, y in zip(out.get(variant_id, ZERO), extra,
                                                      strict=True))  # type: ignore[assignment]
    return out


async def stats_of(live: Live, eid: str) -> dict[str, Any]:
    status, stats = await call(live, "GET", f"/v1/experiments/{eid}/stats")
    assert status == 200, stats
    return dict(stats)


async def counted(live: Live, eid: str, want: Mapping[str, Counts], *,
                  key: str | None = None, deadline: float = COUNT_DEADLINE) -> dict[str, Any]:
    """The stats once their counts are exactly ``want`` (polled; counts only
    grow, so one past ``want`` fails at once). Stats that fail meanwhile
    (the experiment service restarting) are polled again."""
    until = time.monotonic() + deadline
    last: Any = None
    while True:
        status, stats = await call(live, "GET", f"/v1/experiments/{eid}/stats", key=key)
        if status == 200:
            got = counts_of(stats)
            last = got
            if got == dict(want):
                return dict(stats)
            over = {v: (got.get(v), w) for v, w in want.items()
                    if any(g > x for g, x in zip(got.get(v, ZERO), w, strict=True))}
            assert not over, f"counted more than sent: {over} (got {got}, want {dict(want)})"
        else:
            last = (status, stats)
        assert time.monotonic() < until, (
            f"counts not {dict(want)} after {deadline} s: last {last}")
        await asyncio.sleep(0.05)


async def events(live: Live, batch: Sequence[Mapping[str, Any]], *,
                 key: str | None = None) -> tuple[int, Any]:
    return await call(live, "POST", "/v1/events", key=key, json={"events": list(batch)})


async def barrier(live: Live, experiment: Mapping[str, Any], before: Mapping[str, Counts],
                  *, variant: str = CONTROL) -> dict[str, Any]:
    """One conversion reported after whatever should not have counted: the
    stats once it shows, which must be ``before`` plus it alone."""
    status, body = await events(live, [{"type": "conversion", "experiment": experiment["id"],
                                        "variantId": variant}])
    assert status == 200 and body == {"accepted": 1}, body
    return await counted(live, experiment["id"], plus(before, **{variant: (0, 0, 1, 0)}))


async def started(live: Live, key: str | None = None, **fields: Any) -> dict[str, Any]:
    made = await create(live, await template(live, key=key), key=key, **fields)
    status, running = await call(live, "POST", f"/v1/experiments/{made['id']}/start", key=key)
    assert status == 200 and running["status"] == "running", running
    return dict(running)


def assigned(eid: str, vid: str, weights: Sequence[tuple[str, int]]) -> str:
    return assignment.assign(eid, vid, [assignment.Epoch(0.0, tuple(weights))])


# ------------------------------------------------------------------ tests ----

async def test_sticky_over_1000_visitors_split_by_the_weights_and_counted(
    live: Live, public: aiohttp.ClientSession
) -> None:
    exp = await started(live, variants=weighted(2000, 8000))
    eid, url = exp["id"], exp["imageUrl"]
    assert url == f"{live.url}/s/{exp['tenantHandle']}/{exp['slug']}.png", exp
    assert exp["clickUrl"] is None  # impressions_only: nothing to click through to
    vids = [f"visitor-{i}" for i in range(1000)]
    first = await bounded(vids, lambda vid: see(public, url, vid=vid))
    second = await bounded(reversed(vids), lambda vid: see(public, url, vid=vid))
    second.reverse()
    weights = [(CONTROL, 2000), (B, 8000)]
    for vid, one, two in zip(vids, first, second, strict=True):
        assert (one.status, two.status) == (200, 200), (vid, one, two)
        assert one.variant == two.variant == assigned(eid, vid, weights), (vid, one, two)
        assert one.counted and two.counted, (vid, one.headers)
        assert not one.cookie, one.headers  # a given vid needs no cookie
        assert one.body.startswith(b"\x89PNG") and one.headers["Content-Type"] == "image/png"
    split = Counter(s.variant for s in first)
    # Binomial(1000, 0.2): within five standard deviations of 200.
    sd = math.sqrt(1000 * 0.2 * 0.8)
    assert abs(split[CONTROL] - 200) <= 5 * sd and split[CONTROL] + split[B] == 1000, split
    # The two variants are two images.
    etags = {s.variant: s.headers["ETag"] for s in first}
    assert etags[CONTROL] != etags[B], etags

    # A visitor without a vid gets a cookie, and keeps its variant with it.
    fresh = await see(public, url)
    assert fresh.status == 200 and fresh.counted, fresh.headers
    morsel = fresh.cookie["litho_vid"]
    cookie_vid = morsel.value
    assert assignment.is_cookie_vid(cookie_vid), cookie_vid
    assert morsel["path"] == "/s/" and morsel["httponly"] is True, morsel.OutputString()
    assert morsel["samesite"].lower() == "lax", morsel.OutputString()
    assert int(morsel["max-age"]) == 400 * 86_400, morsel.OutputString()
    assert fresh.variant == assigned(eid, cookie_vid, weights)
    again = await bounded(range(5), lambda _: see(public, url, cookie=cookie_vid))
    for seen in again:
        assert (seen.status, seen.variant, seen.counted) == (200, fresh.variant, True)
        assert not seen.cookie, seen.headers  # known: no new cookie
    # Another visitor without a cookie is another visitor.
    other = await see(public, url)
    assert other.cookie["litho_vid"].value != cookie_vid

    # Every view counted, by the variant it showed.
    shown = Counter(s.variant for s in [*first, *second, fresh, *again, other])
    assert sum(shown.values()) == 2007
    await counted(live, eid, {v: (shown[v], 0, 0, 0) for v in (CONTROL, B)})


async def test_10000_views_and_clicks_counted_exactly_across_a_restart(
    live: Live, public: aiohttp.ClientSession
) -> None:
    exp = await started(live, variants=weighted(5000, 5000), goal=CLICK_GOAL)
    eid, url, click = exp["id"], exp["imageUrl"], exp["clickUrl"]
    assert click == f"{live.url}/s/{exp['tenantHandle']}/{exp['slug']}/click", exp
    weights = [(CONTROL, 5000), (B, 5000)]

    async def phase(name: str, views: int, clicks: int) -> tuple[dict[str, Counts], int]:
        """``views`` views and ``clicks`` clicks (of the first visitors) sent
        mixed, CONCURRENCY at a time: what they should count, and how many
        answers failed."""
        jobs: list[tuple[str, str]] = []
        for i in range(views):
            jobs.append(("view", f"{name}-{i}"))
            if i < clicks:
                jobs.append(("click", f"{name}-{i}"))

        async def send(job: tuple[str, str]) -> Seen:
            kind, vid = job
            return await see(public, url if kind == "view" else click, vid=vid)

        want: dict[str, Counts] = {CONTROL: ZERO, B: ZERO}
        failed = 0
        for (kind, vid), seen in zip(jobs, await bounded(jobs, send), strict=True):
            if kind == "view":
                if seen.status != 200 or not seen.counted:
                    failed += 1
                    continue
                want = plus(want, **{seen.variant: (1, 0, 0, 0)})
            else:
                if seen.status != 302:
                    failed += 1
                    continue
                assert seen.headers["Location"] == DESTINATION, seen.headers
                want = plus(want, **{seen.variant: (0, 1, 0, 0)})
            assert seen.variant == assigned(eid, vid, weights), (kind, vid, seen.headers)
        return want, failed

    began = time.monotonic()
    want, failed = await phase("before", 2400, 600)
    assert failed == 0, f"{failed} of 3000 requests failed"
    sent = time.monotonic()
    await counted(live, eid, want)
    lag = time.monotonic() - sent
    # The rest while the experiment service (its counter consumer) restarts:
    # the views are published meanwhile and counted when it is back. (The
    # gateway serves them from its memo of the experiment, loaded by the
    # first view above and kept LITHO_GATEWAY_EXPERIMENT_MEMO_SECONDS, 30 s:
    # the first phase is kept short so that the memo outlives the restart.)
    (more, failed), _ = await asyncio.gather(phase("during", 5600, 1400),
                                             live.stack.restart("experiment"))
    assert failed == 0, f"{failed} of 7000 requests failed during the restart"
    want = plus(want, **more)
    assert sum(c[0] for c in want.values()) == 8000 and sum(c[1] for c in want.values()) == 2000
    await counted(live, eid, want)
    # Nothing more comes after: a later event shows with these counts alone.
    await barrier(live, exp, want)
    print(f"10,000 views and clicks: the first 3,000 sent in {sent - began:.1f} s and counted "
          f"{lag:.2f} s later; all counted after {time.monotonic() - began:.1f} s")


async def test_bots_are_counted_apart_and_get_no_cookie(
    live: Live, public: aiohttp.ClientSession
) -> None:
    exp = await started(live, variants=weighted(0, 10000))  # people all see b
    url = exp["imageUrl"]
    person = await see(public, url, vid="a-person")
    assert (person.status, person.variant, person.counted) == (200, B, True)
    for agent in ("Twitterbot/1.0", "facebookexternalhit/1.1",
                  "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"):
        bot = await see(public, url, agent=agent)
        assert bot.status == 200, (agent, bot)
        assert (bot.variant, bot.counted) == (CONTROL, True), (agent, bot.headers)
        assert "Set-Cookie" not in bot.headers, (agent, bot.headers)
        assert bot.body.startswith(b"\x89PNG")
    # A bot with a vid is still a bot.
    bot = await see(public, url, vid="a-person", agent="Twitterbot/1.0")
    assert (bot.status, bot.variant) == (200, CONTROL), bot.headers
    await counted(live, exp["id"], {CONTROL: (0, 0, 0, 4), B: (1, 0, 0, 0)})


async def test_draft_and_paused_serve_the_control_and_count_nothing(
    live: Live, public: aiohttp.ClientSession
) -> None:
    exp = await create(live, await template(live), variants=weighted(0, 10000),
                       goal=CLICK_GOAL)
    eid, url, click = exp["id"], exp["imageUrl"], exp["clickUrl"]
    draft = await bounded(range(20), lambda i: see(public, url, vid=f"d-{i}"))
    for seen in draft:
        assert (seen.status, seen.variant, seen.counted) == (200, CONTROL, False), seen.headers
    seen = await see(public, click, vid="d-0")
    assert (seen.status, seen.headers["Location"], seen.variant) == (302, DESTINATION, CONTROL)
    # A draft counts no event either.
    status, problem = await events(live, [{"type": "impression", "experiment": eid,
                                           "variantId": B}])
    assert status == 409 and "draft" in json.dumps(problem), problem

    status, body = await call(live, "POST", f"/v1/experiments/{eid}/start")
    assert status == 200, body
    running = await see(public, url, vid="d-0")
    assert (running.status, running.variant, running.counted) == (200, B, True)
    # The draft's views were never published: only the running one shows.
    await counted(live, eid, {CONTROL: ZERO, B: (1, 0, 0, 0)})

    status, body = await call(live, "POST", f"/v1/experiments/{eid}/pause")
    assert status == 200 and body["status"] == "paused", body
    paused = await bounded(range(20), lambda i: see(public, url, vid=f"p-{i}"))
    paused.append(await see(public, url))  # a cookie is still given
    for seen in paused:
        assert (seen.status, seen.variant, seen.counted) == (200, CONTROL, False), seen.headers
    assert "litho_vid" in paused[-1].cookie
    seen = await see(public, click, vid="p-0")
    assert (seen.status, seen.variant) == (302, CONTROL), seen.headers
    status, problem = await events(live, [{"type": "conversion", "experiment": exp["slug"],
                                           "vid": "p-0"}])
    assert status == 409 and "paused" in json.dumps(problem), problem

    status, body = await call(live, "POST", f"/v1/experiments/{eid}/start")
    assert status == 200, body
    await barrier(live, exp, {CONTROL: ZERO, B: (1, 0, 0, 0)}, variant=B)


async def test_a_completed_experiment_serves_its_winner_to_everyone(
    live: Live, public: aiohttp.ClientSession
) -> None:
    exp = await started(live, variants=weighted(5000, 5000))
    eid, url = exp["id"], exp["imageUrl"]
    vids = [f"w-{i}" for i in range(200)]
    before = await bounded(vids, lambda vid: see(public, url, vid=vid))
    assert {s.variant for s in before} == {CONTROL, B}
    shown = Counter(s.variant for s in before)
    await counted(live, eid, {v: (shown[v], 0, 0, 0) for v in (CONTROL, B)})
    status, done = await call(live, "POST", f"/v1/experiments/{eid}/complete",
                              json={"winnerVariantId": CONTROL})
    assert status == 200 and done["winnerVariantId"] == CONTROL, done
    after = await bounded(vids, lambda vid: see(public, url, vid=vid))
    after += [await see(public, url), await see(public, url, agent="Twitterbot/1.0")]
    for seen in after:
        assert (seen.status, seen.variant, seen.counted) == (200, CONTROL, False), seen.headers
    etags = {s.headers["ETag"] for s in after}
    assert len(etags) == 1, etags
    # Archived: still the winner.
    status, body = await call(live, "POST", f"/v1/experiments/{eid}/archive")
    assert status == 200 and body["status"] == "archived", body
    seen = await see(public, url, vid=vids[0])
    assert (seen.status, seen.variant, seen.counted) == (200, CONTROL, False), seen.headers
    stats = await stats_of(live, eid)
    assert counts_of(stats) == {v: (shown[v], 0, 0, 0) for v in (CONTROL, B)}


async def test_reported_events_count_and_bad_ones_count_nothing(
    live: Live, public: aiohttp.ClientSession
) -> None:
    exp = await started(live, variants=weighted(5000, 5000))
    eid, ref = exp["id"], exp["slug"]
    weights = [(CONTROL, 5000), (B, 5000)]
    # A visitor seen at /s/, then converting on the tenant's backend: the
    # conversion is credited to the variant it saw.
    seen = await see(public, exp["imageUrl"], vid="buyer-1")
    assert seen.status == 200 and seen.variant == assigned(eid, "buyer-1", weights)
    status, body = await events(live, [
        {"type": "conversion", "experiment": eid, "vid": "buyer-1"},
        {"type": "conversion", "experiment": ref, "variantId": B, "eventId": "order-1"},
        {"type": "impression", "experiment": ref, "variantId": CONTROL},
        {"type": "click", "experiment": eid, "variantId": CONTROL}])
    assert status == 200 and body == {"accepted": 4}, body
    want = plus({CONTROL: ZERO, B: ZERO}, **{seen.variant: (1, 0, 1, 0)})
    want = plus(want, **{B: (0, 0, 1, 0), CONTROL: (1, 1, 0, 0)})
    await counted(live, eid, want)
    # The same eventId again within the window counts once.
    status, body = await events(live, [{"type": "conversion", "experiment": ref,
                                        "variantId": B, "eventId": "order-1"}])
    assert status == 200, body

    good = {"type": "conversion", "experiment": eid, "variantId": B}
    bad_cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "variantId": "zz"}, "variantId"),
        ({**good, "type": "purchase"}, "type"),
        ({**good, "experiment": "no-such-experiment"}, "experiment"),
        ({**good, "experiment": "exp_" + "A" * 22}, "experiment"),
        ({"type": "conversion", "experiment": eid}, ""),  # neither variantId nor vid
        ({**good, "vid": "both-given"}, ""),
        ({**good, "variantId": "", }, "variantId"),
        ({**good, "eventId": "not an id!"}, "eventId"),
        ({"type": "conversion", "experiment": eid, "vid": "x" * 10_240}, "vid"),
        ({**good, "colour": "red"}, "colour"),
    ]
    for event, where in bad_cases:
        status, problem = await events(live, [good, event, good])
        assert status == 422, (event, problem)
        names = field_names(problem)
        if where:
            assert f"events[1].{where}" in names or (
                where == "colour" and "colour" in json.dumps(problem)), (where, problem)
        else:
            assert any(n.startswith("events[1]") for n in names), (event, problem)
        assert not any(n.startswith(("events[0]", "events[2]")) for n in names), problem
    status, problem = await events(live, [good] * 101)
    assert 400 <= status < 500 and "events" in json.dumps(problem), (status, problem)
    status, problem = await events(live, [])
    assert 400 <= status < 500, (status, problem)
    # Nothing of the refused requests (nor the repeated eventId) was counted.
    await barrier(live, exp, want)


async def test_statistics_of_known_counts_recommend_a_winner_everyone_then_sees(
    live: Live, public: aiohttp.ClientSession
) -> None:
    """1,000 impressions and 100 clicks for the control against 1,000 and
    130 for b: b beats the control with probability ≈ 0.98 (two Beta
    posteriors, normal approximation: z = 0.03 / 0.01425 ≈ 2.1)."""
    exp = await started(live, variants=weighted(5000, 5000), goal=CLICK_GOAL,
                        minimumSampleSize=1000, confidenceThreshold=0.95)
    eid = exp["id"]
    batch = ([{"type": "impression", "experiment": eid, "variantId": CONTROL}] * 999
             + [{"type": "click", "experiment": eid, "variantId": CONTROL}] * 100
             + [{"type": "impression", "experiment": eid, "variantId": B}] * 1000
             + [{"type": "click", "experiment": eid, "variantId": B}] * 130)
    chunks = [batch[i:i + 100] for i in range(0, len(batch), 100)]
    answers = await bounded(chunks, lambda chunk: events(live, chunk), concurrency=8)
    for (status, body), chunk in zip(answers, chunks, strict=True):
        assert status == 200 and body == {"accepted": len(chunk)}, body
    # One impression short of the minimum sample: no recommendation yet.
    stats = await counted(live, eid, {CONTROL: (999, 100, 0, 0), B: (1000, 130, 0, 0)})
    assert stats["minimumSampleReached"] is False, stats
    assert stats["recommendedWinnerVariantId"] is None, stats
    status, problem = await call(live, "POST", f"/v1/experiments/{eid}/complete")
    assert status == 409 and "winnerVariantId" in problem["detail"], problem

    status, body = await events(live, [{"type": "impression", "experiment": eid,
                                        "variantId": CONTROL}])
    assert status == 200, body
    stats = await counted(live, eid, {CONTROL: (1000, 100, 0, 0), B: (1000, 130, 0, 0)})
    a, b = stats["variants"]
    assert (a["variantId"], a["control"], b["variantId"]) == (CONTROL, True, B), stats
    assert (a["conversionRate"], b["conversionRate"]) == (0.1, 0.13), stats
    assert abs(b["probabilityToBeatControl"] - 0.982) < 0.01, b
    assert a["probabilityToBeatControl"] == 0, a
    assert abs(b["probabilityToBeBest"] - b["probabilityToBeatControl"]) < 0.01, stats
    assert abs(a["probabilityToBeBest"] + b["probabilityToBeBest"] - 1) < 1e-6, stats
    # Beta(131, 871): its 95 % interval is about 0.110 .. 0.152.
    assert abs(b["interval"]["low"] - 0.110) < 0.005, b
    assert abs(b["interval"]["high"] - 0.152) < 0.005, b
    assert b["expectedLoss"] < a["expectedLoss"], stats
    assert stats["minimumSampleReached"] is True and stats["confidenceReached"] is True
    assert stats["recommendedWinnerVariantId"] == B, stats

    # Complete with the recommendation: everyone sees b from now on.
    status, done = await call(live, "POST", f"/v1/experiments/{eid}/complete")
    assert status == 200 and done["winnerVariantId"] == B, done
    seen = await bounded(range(100), lambda i: see(public, exp["imageUrl"], vid=f"late-{i}"))
    seen += [await see(public, exp["imageUrl"]),
             await see(public, exp["imageUrl"], agent="Twitterbot/1.0")]
    assert {(s.status, s.variant, s.counted) for s in seen} == {(200, B, False)}
    # Clicks still go to the destination, uncounted.
    clicked = await see(public, exp["clickUrl"], vid="late-0")
    assert (clicked.status, clicked.headers["Location"], clicked.variant) == (
        302, DESTINATION, B)
    stats = await stats_of(live, eid)
    assert counts_of(stats) == {CONTROL: (1000, 100, 0, 0), B: (1000, 130, 0, 0)}


async def test_another_tenant_cannot_see_or_count_it(
    live: Live, public: aiohttp.ClientSession
) -> None:
    ours = await started(live, variants=weighted(5000, 5000))
    eid = ours["id"]
    for ref in (eid, ours["slug"]):
        for event in ({"type": "conversion", "experiment": ref, "variantId": B},
                      {"type": "impression", "experiment": ref, "vid": "someone"}):
            status, problem = await events(live, [event], key=live.other_key)
            assert status == 422, (event, problem)
            assert field_names(problem) == {"events[0].experiment"}, problem
            assert "running" not in json.dumps(problem)  # nothing said about ours
    status, problem = await call(live, "GET", f"/v1/experiments/{eid}/stats",
                                 key=live.other_key)
    assert status == 404, problem
    # Its experiment of the same slug is its own, at its own handle.
    theirs = await started(live, key=live.other_key, slug=ours["slug"],
                           variants=weighted(5000, 5000))
    assert theirs["tenantHandle"] != ours["tenantHandle"]
    assert theirs["imageUrl"] != ours["imageUrl"]
    seen = await see(public, theirs["imageUrl"], vid="shared-visitor")
    assert seen.status == 200 and seen.counted, seen.headers
    status, body = await events(live, [{"type": "conversion", "experiment": ours["slug"],
                                        "variantId": B}], key=live.other_key)
    assert status == 200, body  # its own experiment, by the same slug
    their_counts = plus({CONTROL: ZERO, B: (0, 0, 1, 0)}, **{seen.variant: (1, 0, 0, 0)})
    await counted(live, theirs["id"], their_counts, key=live.other_key)
    # Ours counted none of it.
    await barrier(live, ours, {CONTROL: ZERO, B: ZERO})


async def test_http_rules_of_the_public_urls(
    live: Live, public: aiohttp.ClientSession
) -> None:
    exp = await started(live, variants=weighted(5000, 5000), goal=CLICK_GOAL)
    url = exp["imageUrl"]
    got = await see(public, url, vid="http-1")
    assert got.status == 200, got
    assert got.headers["Cache-Control"] == "private, no-cache", got.headers
    assert "Cookie" in got.headers.get("Vary", ""), got.headers
    etag = got.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), etag
    want = {got.variant: (1, 0, 0, 0)}

    # HEAD is no view (link checkers send one before their GET).
    head = await see(public, url, vid="http-1", method="HEAD")
    assert (head.status, head.body, head.variant, head.counted) == (
        200, b"", got.variant, False), head.headers
    assert head.headers["ETag"] == etag and head.headers["Content-Type"] == "image/png"
    assert head.headers.get("Content-Length") in (None, str(len(got.body))), head.headers

    # Revalidation: 304 without a body, still a view.
    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        not_modified = await see(public, url, vid="http-1", headers={"If-None-Match": tag})
        assert not_modified.status == 304 and not_modified.body == b"", (tag, not_modified)
        assert (not_modified.variant, not_modified.counted) == (got.variant, True)
        assert not_modified.headers["ETag"] == etag
        assert not_modified.headers["Cache-Control"] == "private, no-cache"
        want = plus(want, **{got.variant: (1, 0, 0, 0)})
    stale = await see(public, url, vid="http-1", headers={"If-None-Match": '"other"'})
    assert stale.status == 200 and stale.body == got.body, stale.headers
    want = plus(want, **{got.variant: (1, 0, 0, 0)})

    # The same image under another extension is another format.
    jpeg = await see(public, url.removesuffix(".png") + ".jpg", vid="http-1")
    assert jpeg.status == 200 and jpeg.headers["Content-Type"] == "image/jpeg", jpeg.headers
    assert jpeg.body.startswith(b"\xff\xd8") and jpeg.variant == got.variant
    assert jpeg.headers["ETag"] != etag
    want = plus(want, **{got.variant: (1, 0, 0, 0)})

    # The click: a 302 to the destination, the visitor's variant, counted.
    clicked = await see(public, exp["clickUrl"], vid="http-1")
    assert clicked.status == 302 and clicked.headers["Location"] == DESTINATION, clicked
    assert clicked.variant == got.variant
    assert "no-store" in clicked.headers["Cache-Control"] or "private" in clicked.headers[
        "Cache-Control"], clicked.headers
    want = plus(want, **{got.variant: (0, 1, 0, 0)})
    # A cookie visitor's click is credited to the variant its view showed.
    fresh = await see(public, url)
    cookie = fresh.cookie["litho_vid"].value
    clicked = await see(public, exp["clickUrl"], cookie=cookie)
    assert (clicked.status, clicked.variant) == (302, fresh.variant), clicked.headers
    assert "Set-Cookie" not in clicked.headers, clicked.headers
    want = plus(want, **{fresh.variant: (1, 1, 0, 0)})
    # A bot's click goes through, uncounted and without a cookie.
    clicked = await see(public, exp["clickUrl"], agent="Twitterbot/1.0")
    assert (clicked.status, clicked.headers["Location"]) == (302, DESTINATION), clicked
    assert "Set-Cookie" not in clicked.headers, clicked.headers

    handle, name = exp["tenantHandle"], exp["slug"]
    base = f"{live.url}/s"
    for missing in (f"{base}/{handle}/{slug()}.png", f"{base}/{'a' * 16}/{name}.png",
                    f"{base}/{handle}/{name}.tiff", f"{base}/{handle}/{name}",
                    f"{base}/{handle.upper()}/{name}.png", f"{base}/{handle}/{slug()}/click",
                    f"{base}/{handle}/{name}.png/click"):
        seen = await see(public, missing, vid="http-1")
        assert seen.status == 404, (missing, seen)
        assert seen.headers["Content-Type"].startswith("application/problem+json"), missing
    # An impressions_only experiment has nothing to click through to.
    plain = await started(live, variants=weighted(5000, 5000))
    seen = await see(public, f"{base}/{plain['tenantHandle']}/{plain['slug']}/click",
                     vid="http-1")
    assert seen.status == 404 and "Location" not in seen.headers, seen

    # Visitor ids that are not: 422 naming vid.
    for vid in ("x" * 129, "tab\there", " "):
        for where in (url, exp["clickUrl"]):
            seen = await see(public, where, vid=vid)
            assert seen.status == 422, (where, vid[:20], seen.status, seen.body[:200])
            assert "vid" in field_names(json.loads(seen.body)), (vid[:20], seen.body[:200])
    # An API key is not needed, and not looked at.
    seen = await see(public, url, vid="http-2", headers={"Authorization": "Bearer nonsense"})
    assert seen.status == 200 and seen.counted, seen
    want = plus(want, **{seen.variant: (1, 0, 0, 0)})

    await barrier(live, exp, plus({CONTROL: ZERO, B: ZERO}, **want))


async def test_a_10kb_visitor_id_is_a_422_naming_vid(
    live: Live, public: aiohttp.ClientSession
) -> None:
    """Past the HTTP parser's default line limit (8,190 bytes): still the
    contract's 422 naming ``vid``, and nothing counted."""
    exp = await started(live, variants=weighted(5000, 5000), goal=CLICK_GOAL)
    for where in (exp["imageUrl"], exp["clickUrl"]):
        seen = await see(public, where, vid="x" * 10_240)
        assert seen.status == 422, (where, seen.status, seen.headers, seen.body[:200])
        assert "vid" in field_names(json.loads(seen.body)), seen.body[:200]
    await barrier(live, exp, {CONTROL: ZERO, B: ZERO})


async def test_views_held_by_a_killed_counter_are_redelivered_and_counted_once(
    live: Live, public: aiohttp.ClientSession
) -> None:
    """SIGKILL of the experiment service while views pour in: the deliveries
    it held unacked (fetched, perhaps applied with their acks lost) come
    again after ``ack_wait`` (2 s from here on, not 30, to keep the suite
    short) and are counted once each. Last in the file: it restarts the
    service with that setting for the rest of the run."""
    exp = await started(live, variants=weighted(5000, 5000))
    eid, url = exp["id"], exp["imageUrl"]
    killed_at = 0.0

    async def kill_while_counting() -> None:
        nonlocal killed_at
        until = time.monotonic() + COUNT_DEADLINE
        while True:  # some views counted: the consumer is busy with the rest
            stats = await stats_of(live, eid)
            if sum(c[0] for c in counts_of(stats).values()) >= 300:
                break
            assert time.monotonic() < until, stats
            await asyncio.sleep(0.02)
        live.stack.kill("experiment")
        killed_at = time.monotonic()

    views, _ = await asyncio.gather(
        bounded(range(3000), lambda i: see(public, url, vid=f"kill-{i}")),
        kill_while_counting())
    sent_at = time.monotonic()
    await live.stack.restart("experiment", env={"LITHO_EXPERIMENT_COUNTER_ACK_WAIT": "2"})
    assert all(v.status == 200 and v.counted for v in views), Counter(
        (v.status, v.counted) for v in views)
    shown = Counter(v.variant for v in views)
    want = {v: (shown[v], 0, 0, 0) for v in (CONTROL, B)}
    await counted(live, eid, want)
    await barrier(live, exp, want)
    print(f"killed {sent_at - killed_at:.1f} s before the last view was answered; "
          f"3,000 views counted once each")
