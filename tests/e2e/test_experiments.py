"""A/B experiments end to end: the gateway's ``/v1/experiments`` over the real
experiment service (which asks the template service whether a template is
the tenant's), its state machine, its validation naming each field, tenant
isolation, and statistics over counters nothing has filled yet."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Live

pytestmark = pytest.mark.production

STATUSES = ("draft", "running", "paused", "completed", "archived")


async def call(live: Live, method: str, path: str, *, key: str | None = None,
               **kwargs: Any) -> tuple[int, Any]:
    async with live.http.request(method, live.url + path, headers=live.auth(key),
                                 **kwargs) as r:
        body = await r.read()
        return r.status, json.loads(body) if body else None


async def template(live: Live, key: str | None = None) -> str:
    status, body = await call(live, "POST", "/v1/templates", key=key, json={
        "name": "experiment card", "html": "<h1>{{ title }}</h1>", "width": 120,
        "height": 60})
    assert status == 201, body
    return str(body["id"])


def slug(prefix: str = "exp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def body_for(template_id: str, **fields: Any) -> dict[str, Any]:
    return {"name": "hero banner", "slug": slug(), "templateId": template_id,
            "variants": [{"id": "a", "name": "Control", "variables": {"title": "Hello"},
                          "weight": 5000},
                         {"id": "b", "variables": {"title": "HELLO!"}, "weight": 5000}],
            **fields}


async def create(live: Live, template_id: str, *, key: str | None = None,
                 **fields: Any) -> dict[str, Any]:
    status, created = await call(live, "POST", "/v1/experiments", key=key,
                                 json=body_for(template_id, **fields))
    assert status == 201, created
    return dict(created)


def field_names(problem: dict[str, Any]) -> set[str]:
    """The fields a problem names, the edge's JSON pointers (``/variants/1/id``)
    written as the service writes them (``variants[1].id``)."""
    names = set()
    for error in problem.get("errors", []):
        name = ""
        for part in error["field"].strip("/").split("/"):
            if part.isdigit():
                name += f"[{part}]"
            elif part:
                name += f".{part}" if name else part
        names.add(name)
    return names


async def all_ids(live: Live, key: str | None = None, query: str = "") -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        status, page = await call(live, "GET",
                                  f"/v1/experiments?pageSize=100{query}{token}", key=key)
        assert status == 200, page
        ids.extend(e["id"] for e in page["experiments"])
        if not page["nextPageToken"]:
            return ids
        token = f"&pageToken={quote(page['nextPageToken'])}"


async def test_an_experiment_through_its_states(live: Live) -> None:
    tid = await template(live)
    created = await create(live, tid)
    eid = created["id"]
    assert re.fullmatch(r"exp_[A-Za-z0-9_-]{22}", eid), eid
    assert re.fullmatch(r"[a-z2-7]{16}", created["tenantHandle"]), created
    assert created["status"] == "draft" and created["templateId"] == tid
    assert created["variants"] == [
        {"id": "a", "name": "Control", "templateId": None, "variables": {"title": "Hello"},
         "weight": 5000, "control": True},  # none named: the first is the control
        {"id": "b", "name": "b", "templateId": None, "variables": {"title": "HELLO!"},
         "weight": 5000, "control": False}]
    assert created["goal"] == {"type": "impressions_only"}
    assert created["bandit"] == {"enabled": False, "algorithm": "thompson_sampling",
                                 "warmupImpressions": 1000}
    assert (created["minimumSampleSize"], created["confidenceThreshold"]) == (1000, 0.95)
    assert created["output"] == {"format": "png"}
    assert created["servingWeights"] == {"a": 5000, "b": 5000}
    assert (created["winnerVariantId"], created["startedAt"], created["completedAt"]) == (
        None, None, None)
    assert created["createdAt"] and created["updatedAt"]
    # Its public image URL, under the tenant's handle; no click URL without a click goal.
    assert created["imageUrl"] == (
        f"{live.url}/s/{created['tenantHandle']}/{created['slug']}.png"), created
    assert created["clickUrl"] is None
    status, got = await call(live, "GET", f"/v1/experiments/{eid}")
    assert status == 200 and got == created

    assert eid in await all_ids(live, query="&status=draft")
    assert eid not in await all_ids(live, query="&status=running")

    # A draft changes anything; new variants are the serving weights.
    status, patched = await call(live, "PATCH", f"/v1/experiments/{eid}", json={
        "variants": [{"id": "a", "weight": 3000},
                     {"id": "b", "weight": 7000, "control": True}],
        "minimumSampleSize": 10, "output": {"format": "JPG", "quality": 70}})
    assert status == 200, patched
    assert [(v["id"], v["weight"], v["control"]) for v in patched["variants"]] == [
        ("a", 3000, False), ("b", 7000, True)]
    assert patched["servingWeights"] == {"a": 3000, "b": 7000}
    assert patched["minimumSampleSize"] == 10
    assert patched["output"] == {"format": "jpeg", "quality": 70}
    assert patched["name"] == "hero banner" and patched["slug"] == created["slug"]

    status, running = await call(live, "POST", f"/v1/experiments/{eid}/start")
    assert status == 200 and running["status"] == "running", running
    started = running["startedAt"]
    assert started and running["completedAt"] is None
    assert eid in await all_ids(live, query="&status=running")
    assert eid not in await all_ids(live, query="&status=draft")
    # Running: only the name, the threshold and the destination may change.
    for change, where in (({"minimumSampleSize": 5}, "minimumSampleSize"),
                          ({"variants": [{"id": "a", "weight": 5000},
                                         {"id": "b", "weight": 5000}]}, "variants"),
                          ({"slug": slug()}, "slug"),
                          ({"goal": {"type": "click_through",
                                     "destinationUrl": "https://shop.example.com/"}}, "goal")):
        status, problem = await call(live, "PATCH", f"/v1/experiments/{eid}", json=change)
        assert status == 409, (change, problem)
        assert where in json.dumps(problem), (where, problem)
    status, renamed = await call(live, "PATCH", f"/v1/experiments/{eid}", json={
        "name": "hero banner, round 2", "confidenceThreshold": 0.9})
    assert status == 200, renamed
    assert (renamed["name"], renamed["confidenceThreshold"], renamed["status"]) == (
        "hero banner, round 2", 0.9, "running")
    assert renamed["minimumSampleSize"] == 10
    status, problem = await call(live, "POST", f"/v1/experiments/{eid}/start")
    assert status == 409 and "running" in problem["detail"], problem
    status, problem = await call(live, "DELETE", f"/v1/experiments/{eid}")
    assert status == 409 and "pause" in problem["detail"].lower(), problem
    status, problem = await call(live, "POST", f"/v1/experiments/{eid}/archive")
    assert status == 409 and "running" in problem["detail"], problem

    status, paused = await call(live, "POST", f"/v1/experiments/{eid}/pause")
    assert status == 200 and paused["status"] == "paused", paused
    status, problem = await call(live, "POST", f"/v1/experiments/{eid}/pause")
    assert status == 409 and "paused" in problem["detail"], problem
    status, again = await call(live, "POST", f"/v1/experiments/{eid}/start")
    assert status == 200 and again["status"] == "running"
    assert again["startedAt"] == started  # the first start is kept

    # A winner that is no variant; no winner while nothing is counted.
    status, problem = await call(live, "POST", f"/v1/experiments/{eid}/complete",
                                 json={"winnerVariantId": "zz"})
    assert status == 422 and "winnerVariantId" in field_names(problem), problem
    status, problem = await call(live, "POST", f"/v1/experiments/{eid}/complete")
    assert status == 409 and "winnerVariantId" in problem["detail"], problem
    status, done = await call(live, "POST", f"/v1/experiments/{eid}/complete",
                              json={"winnerVariantId": "b"})
    assert status == 200, done
    assert (done["status"], done["winnerVariantId"]) == ("completed", "b")
    assert done["completedAt"] and done["startedAt"] == started
    assert eid in await all_ids(live, query="&status=completed")
    # Completed: only the name.
    status, problem = await call(live, "PATCH", f"/v1/experiments/{eid}",
                                 json={"confidenceThreshold": 0.8})
    assert status == 409 and "confidenceThreshold" in json.dumps(problem), problem
    status, named = await call(live, "PATCH", f"/v1/experiments/{eid}",
                               json={"name": "hero banner, done"})
    assert status == 200 and named["name"] == "hero banner, done"
    for verb in ("start", "pause", "complete"):
        status, problem = await call(live, "POST", f"/v1/experiments/{eid}/{verb}")
        assert status == 409 and "completed" in problem["detail"], (verb, problem)

    status, archived = await call(live, "POST", f"/v1/experiments/{eid}/archive")
    assert status == 200 and archived["status"] == "archived", archived
    assert archived["winnerVariantId"] == "b"
    assert eid in await all_ids(live, query="&status=archived")
    status, _ = await call(live, "DELETE", f"/v1/experiments/{eid}")
    assert status == 204
    for method, suffix in (("GET", ""), ("GET", "/stats"), ("DELETE", "")):
        status, problem = await call(live, method, f"/v1/experiments/{eid}{suffix}")
        assert status == 404, (method, suffix, problem)
    assert eid not in await all_ids(live)


async def test_delete_rules(live: Live) -> None:
    tid = await template(live)
    draft = await create(live, tid)
    status, _ = await call(live, "DELETE", f"/v1/experiments/{draft['id']}")
    assert status == 204
    paused = await create(live, tid)
    for verb, want in (("start", 200), ("pause", 200)):
        status, body = await call(live, "POST", f"/v1/experiments/{paused['id']}/{verb}")
        assert status == want, body
    status, _ = await call(live, "DELETE", f"/v1/experiments/{paused['id']}")
    assert status == 204
    # A draft is archived directly; an archived one is deleted too.
    archived = await create(live, tid)
    status, body = await call(live, "POST", f"/v1/experiments/{archived['id']}/archive")
    assert status == 200 and body["status"] == "archived", body
    status, problem = await call(live, "POST", f"/v1/experiments/{archived['id']}/start")
    assert status == 409 and "archived" in problem["detail"], problem
    status, _ = await call(live, "DELETE", f"/v1/experiments/{archived['id']}")
    assert status == 204
    remaining = await all_ids(live)
    assert not {draft["id"], paused["id"], archived["id"]} & set(remaining)


async def test_invalid_experiments_are_422s_naming_the_field_and_store_nothing(
    live: Live
) -> None:
    tid = await template(live)
    other_tid = await template(live, key=live.other_key)
    before = await all_ids(live)
    two = [{"id": "a", "weight": 5000}, {"id": "b", "weight": 5000}]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"variants": [{"id": "a", "weight": 5000}, {"id": "b", "weight": 4000}]},
         "variants"),
        ({"variants": [{"id": "a", "weight": 10000}]}, "variants"),
        ({"variants": [{"id": "a", "weight": 5000}, {"id": "a", "weight": 5000}]},
         "variants[1].id"),
        ({"variants": [{"id": "a", "weight": 5000, "control": True},
                       {"id": "b", "weight": 5000, "control": True}]}, "variants[1].control"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"slug": "trailing-newline\n"}, "slug"),
        ({"slug": "x" * 65}, "slug"),
        ({"name": "   "}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"goal": {"type": "click_through", "destinationUrl": "ftp://example.com/x"}},
         "goal.destinationUrl"),
        ({"goal": {"type": "click_through", "destinationUrl": "javascript:alert(1)"}},
         "goal.destinationUrl"),
        ({"goal": {"type": "click_through",
                   "destinationUrl": "https://user:pw@example.com/"}}, "goal.destinationUrl"),
        ({"goal": {"type": "click_through"}}, "goal.destinationUrl"),
        ({"goal": {"type": "impressions_only", "destinationUrl": "https://example.com/"}},
         "goal.destinationUrl"),
        ({"templateId": "tpl_" + "0" * 24}, "templateId"),
        ({"templateId": other_tid}, "templateId"),  # another tenant's reads as missing
        ({"variants": [{"id": "a", "weight": 5000},
                       {"id": "b", "weight": 5000, "templateId": other_tid}]},
         "variants[1].templateId"),
        ({"confidenceThreshold": 0.9999}, "confidenceThreshold"),
        ({"minimumSampleSize": -1}, "minimumSampleSize"),
        ({"variants": two, "bandit": {"algorithm": "ucb"}}, "bandit.algorithm"),
        ({"output": {"format": "tiff"}}, "output.format"),
    ]
    for fields, where in cases:
        status, problem = await call(live, "POST", "/v1/experiments",
                                     json=body_for(tid, **fields))
        assert status == 422, (fields, problem)
        assert where in field_names(problem), (where, problem)
    # Every problem of a request at once.
    status, problem = await call(live, "POST", "/v1/experiments", json=body_for(
        tid, variants=[{"id": "a", "weight": 6000}, {"id": "a", "weight": 6000}],
        goal={"type": "click_through", "destinationUrl": "ftp://x.example/"}))
    assert status == 422, problem
    assert {"variants", "variants[1].id", "goal.destinationUrl"} <= field_names(problem), problem
    # Junk is refused at the edge: not JSON, unknown fields.
    async with live.http.post(f"{live.url}/v1/experiments", data=b"{nope",
                              headers={**live.auth(), "Content-Type": "application/json"}) as r:
        assert r.status == 400
    status, problem = await call(live, "POST", "/v1/experiments",
                                 json=body_for(tid, imageUrl="https://x.example/"))
    assert status == 422 and "imageUrl" in json.dumps(problem), problem
    status, problem = await call(live, "GET", "/v1/experiments?status=finished")
    assert status == 422 and field_names(problem) == {"status"}, problem
    status, problem = await call(live, "GET", "/v1/experiments?pageToken=not-a-token")
    assert status == 422 and "pageToken" in json.dumps(problem), problem
    assert await all_ids(live) == before


async def test_a_slug_is_unique_per_tenant(live: Live) -> None:
    tid = await template(live)
    taken = slug("taken")
    first = await create(live, tid, slug=taken)
    status, problem = await call(live, "POST", "/v1/experiments",
                                 json=body_for(tid, slug=taken))
    assert status == 409 and "slug" in field_names(problem), problem
    second = await create(live, tid)
    status, problem = await call(live, "PATCH", f"/v1/experiments/{second['id']}",
                                 json={"slug": taken})
    assert status == 409 and "slug" in json.dumps(problem), problem
    # Another tenant's slugs never clash with ours: its handle differs.
    theirs = await create(live, await template(live, key=live.other_key),
                          key=live.other_key, slug=taken)
    assert theirs["tenantHandle"] != first["tenantHandle"]
    # Its own slug again is no clash.
    status, same = await call(live, "PATCH", f"/v1/experiments/{first['id']}",
                              json={"slug": taken, "name": "kept"})
    assert status == 200 and same["slug"] == taken, same


async def test_another_tenants_experiment_is_404_everywhere(live: Live) -> None:
    tid = await template(live)
    ours = await create(live, tid)
    missing = "exp_" + "A" * 22
    answers: dict[str, list[tuple[int, str]]] = {}
    for eid in (ours["id"], missing):
        for method, suffix, body in (
                ("GET", "", None), ("PATCH", "", {"name": "stolen"}), ("DELETE", "", None),
                ("POST", "/start", None), ("POST", "/pause", None),
                ("POST", "/complete", {"winnerVariantId": "a"}), ("POST", "/archive", None),
                ("GET", "/stats", None)):
            status, problem = await call(live, method, f"/v1/experiments/{eid}{suffix}",
                                         key=live.other_key, json=body)
            assert status == 404, (method, suffix, problem)
            answers.setdefault(eid, []).append(
                (status, json.dumps(problem).replace(eid, "<id>")))
    # Another tenant's reads exactly as one that does not exist.
    assert answers[ours["id"]] == answers[missing]
    assert ours["id"] not in await all_ids(live, key=live.other_key)
    status, still = await call(live, "GET", f"/v1/experiments/{ours['id']}")
    assert status == 200 and still == ours  # untouched


async def test_stats_before_any_count(live: Live) -> None:
    tid = await template(live)
    made = await create(live, tid, goal={"type": "click_through",
                                         "destinationUrl": "https://shop.example.com/buy"},
                        minimumSampleSize=50, confidenceThreshold=0.9)
    assert made["goal"] == {"type": "click_through",
                            "destinationUrl": "https://shop.example.com/buy"}
    status, stats = await call(live, "GET", f"/v1/experiments/{made['id']}/stats")
    assert status == 200, stats
    assert (stats["experimentId"], stats["status"], stats["minimumSampleSize"],
            stats["confidenceThreshold"]) == (made["id"], "draft", 50, 0.9)
    assert stats["minimumSampleReached"] is False and stats["confidenceReached"] is False
    assert stats["recommendedWinnerVariantId"] is None
    assert stats["draws"] > 0
    assert [(v["variantId"], v["name"], v["control"], v["servingWeight"])
            for v in stats["variants"]] == [("a", "Control", True, 5000),
                                            ("b", "b", False, 5000)]
    for v in stats["variants"]:
        assert (v["impressions"], v["clicks"], v["conversions"], v["botImpressions"],
                v["conversionRate"]) == (0, 0, 0, 0, 0), v
        interval = v["interval"]
        assert interval["level"] == 0.95
        # Beta(1, 1): the uniform's 95 % interval.
        assert abs(interval["low"] - 0.025) < 0.01 and abs(interval["high"] - 0.975) < 0.01
        assert 0 <= v["probabilityToBeBest"] <= 1 and v["expectedLoss"] >= 0
    assert stats["variants"][0]["probabilityToBeatControl"] == 0
    assert abs(sum(v["probabilityToBeBest"] for v in stats["variants"]) - 1) < 0.01
    # The same counts give the same numbers.
    status, again = await call(live, "GET", f"/v1/experiments/{made['id']}/stats")
    assert status == 200 and again == stats


async def test_a_page_at_a_time_newest_first(live: Live) -> None:
    tid = await template(live)
    older = await create(live, tid)
    newer = await create(live, tid)
    status, page = await call(live, "GET", "/v1/experiments?pageSize=1&status=draft")
    assert status == 200 and [e["id"] for e in page["experiments"]] == [newer["id"]], page
    assert page["nextPageToken"]
    status, rest = await call(live, "GET",
                              f"/v1/experiments?pageSize=1&status=draft&pageToken="
                              f"{quote(page['nextPageToken'])}")
    assert status == 200 and [e["id"] for e in rest["experiments"]] == [older["id"]], rest
