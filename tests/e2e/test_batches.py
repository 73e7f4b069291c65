"""Batches and webhooks end to end: a stack of its own with two renderer
replicas sharing the JetStream work queue, real NATS and Chromium, and a
webhook receiver on loopback. A replica is killed (-9) and NATS restarted in
the middle of batches; every item still has exactly one result and the batch
completes."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image
from pymongo import MongoClient
from standardwebhooks.webhooks import Webhook

from services._stack import Stack
from tests.e2e.conftest import _print_logs, mode_env, serve_loopback
from tests.support.production import Production

pytestmark = pytest.mark.production

CARD = """<body style="margin:0;background:{{ bg }}">
<div style="font:16px sans-serif">{{ uppercase(title) }}</div>
{{ if fail }}<span hidden>{{ round(fail) }}</span>{{ end }}
{{ if featured }}<div id="badge" style="position:absolute;right:0;bottom:0;width:20px;
height:20px;background:#ff0000"></div>{{ end }}
</body>"""
FINAL = ("completed", "partial", "failed", "cancelled")


class Receiver:
    """A webhook receiver: every POST, with its headers and body."""

    def __init__(self) -> None:
        self.port = 0
        self.got: asyncio.Queue[tuple[str, dict[str, str], bytes]] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        await self.got.put((request.path, dict(request.headers), await request.read()))
        return web.Response(status=204)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def next(self, path: str) -> tuple[dict[str, str], bytes]:
        while True:
            got_path, headers, body = await asyncio.wait_for(self.got.get(), 60)
            if got_path == path:
                return headers, body


class Batchy:
    def __init__(self, stack: Stack, http: aiohttp.ClientSession, other_key: str,
                 receiver: Receiver) -> None:
        self.stack, self.http, self.other_key = stack, http, other_key
        self.receiver = receiver
        self.template_id = ""

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.stack.api_key}"}

    async def call(self, method: str, path: str, *, key: str | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.auth(key), **kwargs.pop("headers", {})}
        async with self.http.request(method, self.stack.url + path, headers=headers,
                                     **kwargs) as r:
            body = await r.read()
            if r.content_type == "application/zip":
                return r.status, body
            return r.status, json.loads(body) if body else None

    async def submit(self, sets: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
        status, batch = await self.call(
            "POST", f"/v1/templates/{self.template_id}/batch-render",
            json={"variableSets": sets, **options})
        assert status == 202, batch
        return dict(batch)

    async def wait(self, batch_id: str, within: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            status, batch = await self.call("GET", f"/v1/batches/{batch_id}")
            assert status == 200, batch
            if batch["status"] in FINAL:
                return dict(batch)
            assert time.monotonic() < deadline, f"batch not finished: {batch}"
            await asyncio.sleep(0.2)

    async def wait_for_results(self, batch_id: str, at_least: int) -> int:
        deadline = time.monotonic() + 60
        while True:
            _, batch = await self.call("GET", f"/v1/batches/{batch_id}")
            done = batch["completedItems"] + batch["failedItems"]
            if done >= at_least:
                return int(done)
            assert time.monotonic() < deadline, batch
            await asyncio.sleep(0.05)

    async def results(self, batch_id: str, **query: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"pageSize": "70", **query, **({"pageToken": token} if token else {})}
            status, page = await self.call("GET", f"/v1/batches/{batch_id}/results",
                                           params=params)
            assert status == 200, page
            out += page["results"]
            token = page["nextPageToken"]
            if not token:
                return out

    def workers(self, batch_id: str) -> list[str]:
        """Which replica stored each result (read from the renderers' store)."""
        if mongo_url := self.stack.env.get("LITHO_DOCSTORE_URL"):
            client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
            try:
                database = client[self.stack.env["LITHO_DOCSTORE_DATABASE"]]
                docs = list(database["batch_results"].find({}))
            finally:
                client.close()
        else:
            db = sqlite3.connect(f"file:{self.stack.data_dir / 'renderer.db'}?mode=ro",
                                 uri=True)
            try:
                rows = db.execute("SELECT doc FROM batch_results").fetchall()
            finally:
                db.close()
            docs = [json.loads(r[0]) for r in rows]
        return [d.get("worker", "") for d in docs
                if d["batchId"] == batch_id and d["status"] == "succeeded"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def batchy(tmp_path_factory: pytest.TempPathFactory,
                 production: Production | None) -> AsyncIterator[Batchy]:
    data_dir: Path = tmp_path_factory.mktemp("litho-batches")
    receiver = Receiver()
    runner, receiver.port = await serve_loopback(receiver.handle)
    stack = Stack(data_dir=data_dir, gateway_port=0, log_to_files=True, env={
        "LITHO_OUTBOUND_ALLOW": f"127.0.0.1:{receiver.port}",
        "LITHO_RENDERER_REPLICAS": "2",
        "LITHO_RENDERER_CONCURRENCY": "2",
        # A dead replica's item comes back after this many seconds.
        "LITHO_RENDERER_BATCH_ACK_WAIT": "3",
        "LITHO_BATCH_MAX_ITEMS": "300",
        "LITHO_LOG_LEVEL": "INFO",
        **mode_env(production, "batches"),
    })
    try:
        async with stack, aiohttp.ClientSession() as http:
            client = Batchy(stack, http, await stack.create_key("batch-other-tenant"),
                            receiver)
            status, template = await client.call("POST", "/v1/templates", json={
                "name": "batch card", "html": CARD, "width": 120, "height": 60,
                "sampleVariables": {"bg": "#ffffff", "title": "t", "featured": False}})
            assert status == 201, json.dumps(template)
            client.template_id = template["id"]
            yield client
    except BaseException:
        _print_logs(stack)
        raise
    finally:
        await runner.cleanup()
    assert stack.unclean_exits() == {}


def colours(n: int) -> list[dict[str, Any]]:
    return [{"bg": f"#{(n * 37 + i * 101) % 256:02x}{i % 256:02x}80", "title": f"card {i}"}
            for i in range(n)]


async def test_a_batch_renders_every_item_across_both_replicas(batchy: Batchy) -> None:
    sets = colours(30)
    created = await batchy.submit(sets, metadata={"campaign": "spring"})
    assert created["status"] == "pending" and created["totalItems"] == 30
    done = await batchy.wait(created["batchId"])
    assert (done["status"], done["progress"], done["completedItems"]) == ("completed", 100, 30)
    assert done["metadata"] == {"campaign": "spring"}
    assert done["startedAt"] and done["completedAt"]
    results = await batchy.results(created["batchId"])
    assert [r["index"] for r in results] == list(range(30))
    assert all(r["success"] and r["width"] == 120 for r in results)
    async with batchy.http.get(results[7]["url"]) as r:
        image = Image.open(io.BytesIO(await r.read())).convert("RGB")
    expected = sets[7]["bg"]
    assert image.getpixel((90, 50)) == tuple(int(expected[i:i + 2], 16) for i in (1, 3, 5))
    # Both replicas pulled from the one queue.
    assert len(set(batchy.workers(created["batchId"]))) == 2

    # The same items again are cache hits.
    again = await batchy.wait((await batchy.submit(sets))["batchId"])
    assert again["completedItems"] == 30
    assert all(r["cached"] for r in await batchy.results(again["batchId"]))

    status, archive = await batchy.call("GET", f"/v1/batches/{created['batchId']}/archive.zip")
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = z.namelist()
        assert names[:3] == ["00.png", "01.png", "02.png"] and names[-1] == "manifest.json"
        manifest = json.loads(z.read("manifest.json"))
        assert len(manifest["items"]) == 30 and manifest["items"][7]["file"] == "07.png"
        assert z.read("07.png")[:8] == b"\x89PNG\r\n\x1a\n"

    status, listing = await batchy.call("GET", "/v1/batches", params={"pageSize": "1"})
    assert status == 200 and listing["batches"][0]["batchId"] == again["batchId"]
    status, older = await batchy.call("GET", "/v1/batches", params={
        "pageSize": "1", "pageToken": listing["nextPageToken"]})
    assert older["batches"][0]["batchId"] == created["batchId"]


async def test_a_csv_batch_nests_dotted_names_and_types_text(batchy: Batchy) -> None:
    csv_text = ("bg,title,featured\n"
                "#0000ff,first,true\n"
                "#00ff00,\"second, with a comma\",false\n")
    status, created = await batchy.call(
        "POST", f"/v1/templates/{batchy.template_id}/batch-render",
        params={"format": "png"}, data=csv_text.encode(),
        headers={"Content-Type": "text/csv"})
    assert status == 202, created
    done = await batchy.wait(created["batchId"])
    assert done["status"] == "completed", done
    first, second = await batchy.results(created["batchId"])
    for result, badge in ((first, (255, 0, 0)), (second, (0, 255, 0))):
        async with batchy.http.get(result["url"]) as r:
            image = Image.open(io.BytesIO(await r.read())).convert("RGB")
        # "false" is false (the sample is a boolean): no red badge on the second.
        assert image.getpixel((110, 50)) == badge


async def test_a_failing_item_makes_the_batch_partial_and_all_failing_failed(
        batchy: Batchy) -> None:
    # round() of a text is an error of that item only.
    created = await batchy.submit([{"bg": "#123456", "title": "fine"},
                                   {"bg": "#123456", "title": "bad", "fail": "x"}])
    done = await batchy.wait(created["batchId"])
    assert (done["status"], done["completedItems"], done["failedItems"]) == ("partial", 1, 1)
    failed = await batchy.results(created["batchId"], status="failed")
    assert [r["index"] for r in failed] == [1]
    assert failed[0]["error"]["code"] == "INVALID_ARGUMENT" and not failed[0]["success"]
    assert failed[0]["url"] is None
    # 10,000 CSS pixels is over the renderer's side limit: every item fails.
    created = await batchy.submit([{"bg": "#123456"}] * 2, width=10_000)
    done = await batchy.wait(created["batchId"])
    assert (done["status"], done["failedItems"]) == ("failed", 2)


@pytest.mark.parametrize(("body", "field"), [
    ({"variableSets": []}, "/variableSets"),
    ({"variableSets": [{}] * 301}, "/variableSets"),
    ({"variableSets": [{}], "webhookUrl": "http://10.0.0.1/hook"}, "webhookUrl"),
    ({"variableSets": [{}], "webhookUrl": "ftp://example.com/"}, "/webhookUrl"),
    ({"variableSets": [{}], "metadata": "not an object"}, "/metadata"),
    ({"variableSets": [{}], "format": "bmp"}, "/format"),
])
async def test_bad_batches_are_422_naming_the_field_and_queue_nothing(
        batchy: Batchy, body: dict[str, Any], field: str) -> None:
    _, before = await batchy.call("GET", "/v1/batches", params={"pageSize": "100"})
    status, problem = await batchy.call(
        "POST", f"/v1/templates/{batchy.template_id}/batch-render", json=body)
    assert status == 422, problem
    assert field in json.dumps(problem)
    _, after = await batchy.call("GET", "/v1/batches", params={"pageSize": "100"})
    assert len(after["batches"]) == len(before["batches"])


@pytest.mark.parametrize(("data", "words"), [
    (b"bg,title\n#fff\n", "row 2 has 1 fields"),
    (b"bg\n\xff\xfe\n", "not UTF-8"),
    (b"bg,bg.x\n1,2\n", "clashes"),
    (b"bg\n", "no data rows"),
])
async def test_bad_csv_is_422_naming_the_row_or_column(
        batchy: Batchy, data: bytes, words: str) -> None:
    status, problem = await batchy.call(
        "POST", f"/v1/templates/{batchy.template_id}/batch-render", data=data,
        headers={"Content-Type": "text/csv"})
    assert status == 422 and words in problem["detail"], problem


async def test_bodies_that_grow_when_split_into_items_are_refused_not_500(
        batchy: Batchy) -> None:
    path = f"/v1/templates/{batchy.template_id}/batch-render"
    # One item over LITHO_BATCH_MAX_ITEM_BYTES (256 KiB as JSON): named.
    status, problem = await batchy.call("POST", path, json={
        "variableSets": [{}, {"title": "x" * 300_000}]})
    assert status == 422 and "/variableSets/1" in json.dumps(problem), problem
    assert "LITHO_BATCH_MAX_ITEM_BYTES" in problem["detail"]
    # A 550 KB CSV whose header is copied into each of its 170 items comes to
    # 35 MB of items: over LITHO_BATCH_MAX_BYTES, a 413, never a 500.
    names = [f"c{i:04d}" + "n" * 195 for i in range(1000)]
    csv_text = ",".join(names) + "\n" + "".join(",".join("1" * 1000) + "\n"
                                                 for _ in range(170))
    status, problem = await batchy.call("POST", path, data=csv_text.encode(),
                                        headers={"Content-Type": "text/csv"})
    assert status == 413 and "LITHO_BATCH_MAX_BYTES" in problem["detail"], problem
    # More columns than LITHO_BATCH_MAX_CSV_COLUMNS: refused before any row is read.
    status, problem = await batchy.call(
        "POST", path, data=(",".join(f"c{i}" for i in range(1001)) + "\n").encode(),
        headers={"Content-Type": "text/csv"})
    assert status == 422 and "LITHO_BATCH_MAX_CSV_COLUMNS" in problem["detail"], problem


async def test_other_requests_that_cannot_be_batches(batchy: Batchy) -> None:
    path = f"/v1/templates/{batchy.template_id}/batch-render"
    status, _ = await batchy.call("POST", path, data=b"x", headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _ = await batchy.call("POST", "/v1/templates/tpl_000000000000000000000000/"
                                  "batch-render", json={"variableSets": [{}]})
    assert status in (404, 422)
    status, problem = await batchy.call("POST", path, params={"format": "png"},
                                        json={"variableSets": [{}]})
    assert status == 422 and "format" in json.dumps(problem)
    status, _ = await batchy.call("POST", path, json={"variableSets": [{}], "version": 99})
    assert status == 404


async def test_another_tenants_batch_is_not_found_and_a_finished_one_cannot_be_cancelled(
        batchy: Batchy) -> None:
    done = await batchy.wait((await batchy.submit([{"bg": "#010203"}]))["batchId"])
    batch_id = done["batchId"]
    for method, path in (("GET", ""), ("GET", "/results"), ("POST", "/cancel"),
                         ("GET", "/archive.zip")):
        status, _ = await batchy.call(method, f"/v1/batches/{batch_id}{path}",
                                      key=batchy.other_key)
        assert status == 404, (method, path)
    status, problem = await batchy.call("POST", f"/v1/batches/{batch_id}/cancel")
    assert status == 409 and "completed" in problem["detail"]
    status, _ = await batchy.call("GET", "/v1/batches/not-a-batch")
    assert status in (404, 422)


async def test_killing_a_replica_mid_batch_loses_and_repeats_nothing(batchy: Batchy) -> None:
    created = await batchy.submit(colours(200))
    await batchy.wait_for_results(created["batchId"], at_least=20)
    batchy.stack.kill("renderer-2")
    done = await batchy.wait(created["batchId"], within=180)
    assert (done["status"], done["completedItems"], done["failedItems"]) == (
        "completed", 200, 0), done
    results = await batchy.results(created["batchId"])
    assert sorted(r["index"] for r in results) == list(range(200))
    await batchy.stack.restart("renderer-2")


async def test_a_nats_restart_mid_batch_heals_by_itself(batchy: Batchy) -> None:
    created = await batchy.submit(colours(60))
    await batchy.wait_for_results(created["batchId"], at_least=5)
    await batchy.stack.restart_nats(down_for=1.0)
    done = await batchy.wait(created["batchId"], within=180)
    assert (done["status"], done["completedItems"]) == ("completed", 60), done


async def test_nothing_renders_after_a_cancel_is_acknowledged(batchy: Batchy) -> None:
    created = await batchy.submit(colours(200))
    await batchy.wait_for_results(created["batchId"], at_least=10)
    status, cancelled = await batchy.call("POST", f"/v1/batches/{created['batchId']}/cancel")
    assert status == 200, cancelled
    assert cancelled["status"] == "cancelled" and cancelled["cancelledNow"] > 0
    rendered = cancelled["completedItems"]
    assert rendered + cancelled["cancelledItems"] + cancelled["failedItems"] == 200
    await asyncio.sleep(3)  # longer than any render in flight at the cancel
    _, later = await batchy.call("GET", f"/v1/batches/{created['batchId']}")
    assert (later["status"], later["completedItems"]) == ("cancelled", rendered)
    assert len(await batchy.results(created["batchId"], status="succeeded")) == rendered


async def test_a_subscription_gets_signed_render_events_and_logs_them(batchy: Batchy) -> None:
    status, sub = await batchy.call("POST", "/v1/webhook-subscriptions", json={
        "event": "render.completed", "targetUrl": batchy.receiver.url("/renders"),
        "filters": {"templateId": batchy.template_id}, "description": "renders"})
    assert status == 201, sub
    assert sub["secret"].startswith("whsec_") and sub["status"] == "active"
    status, rendered = await batchy.call(
        "POST", f"/v1/templates/{batchy.template_id}/render",
        json={"variables": {"bg": "#445566", "title": "hooked"}})
    assert status == 200, rendered
    headers, body = await batchy.receiver.next("/renders")
    # Verified as a receiver would, with the Standard Webhooks library.
    event = Webhook(sub["secret"]).verify(body, headers)
    assert event["type"] == "render.completed"
    assert event["data"]["renderId"] == rendered["id"]
    assert event["data"]["url"] == rendered["url"]
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        Webhook(sub["secret"]).verify(body.replace(rendered["id"].encode(), b"0" * 64),
                                      headers)

    deadline = time.monotonic() + 30
    while True:
        status, log = await batchy.call(
            "GET", f"/v1/webhook-subscriptions/{sub['id']}/deliveries")
        assert status == 200, log
        if log["deliveries"] and log["deliveries"][0]["status"] == "delivered":
            break
        assert time.monotonic() < deadline, log
        await asyncio.sleep(0.2)
    first = log["deliveries"][0]
    assert (first["attempts"], first["lastResponseCode"]) == (1, 204)
    status, again = await batchy.call(
        "POST", f"/v1/webhook-subscriptions/{sub['id']}/deliveries/{first['id']}/redeliver")
    assert status == 202, again
    headers, body = await batchy.receiver.next("/renders")
    assert Webhook(sub["secret"]).verify(body, headers)["data"]["renderId"] == rendered["id"]

    # Another tenant sees none of it.
    status, _ = await batchy.call("GET", f"/v1/webhook-subscriptions/{sub['id']}",
                                  key=batchy.other_key)
    assert status == 404
    status, _ = await batchy.call("DELETE", f"/v1/webhook-subscriptions/{sub['id']}")
    assert status == 204


@pytest.mark.parametrize(("body", "field"), [
    ({"event": "render.exploded", "targetUrl": "https://example.com/"}, "event"),
    ({"event": "render.completed", "targetUrl": "ftp://example.com/"}, "targetUrl"),
    ({"event": "render.completed", "targetUrl": "http://10.1.2.3/hook"}, "targetUrl"),
    ({"event": "render.completed", "targetUrl": "http://[::1]:9/hook"}, "targetUrl"),
])
async def test_bad_subscriptions_are_422_naming_the_field(
        batchy: Batchy, body: dict[str, Any], field: str) -> None:
    status, problem = await batchy.call("POST", "/v1/webhook-subscriptions", json=body)
    assert status == 422 and field in json.dumps(problem), problem


async def test_a_batch_webhook_url_gets_one_event_signed_with_the_keys_secret(
        batchy: Batchy) -> None:
    created = await batchy.submit(colours(3), webhookUrl=batchy.receiver.url("/batch"),
                                  metadata={"order": 42})
    await batchy.wait(created["batchId"])
    headers, body = await batchy.receiver.next("/batch")
    status, key = await batchy.call("GET", "/v1/signing-key")
    assert status == 200 and key["webhookSecret"].startswith("whsec_")
    event = Webhook(key["webhookSecret"]).verify(body, headers)
    # Not the secret that signs image URLs.
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        Webhook(key["secret"].encode()).verify(body, headers)
    assert event["type"] == "batch.completed"
    assert event["data"]["batchId"] == created["batchId"]
    assert event["data"]["metadata"] == {"order": 42}
    assert event["data"]["completedItems"] == 3
    # Delivered once: a second batch finishing later is the next thing the
    # receiver gets at /batch, not a repeat of this one.
    second = await batchy.submit(colours(1), webhookUrl=batchy.receiver.url("/batch"))
    await batchy.wait(second["batchId"])
    headers, body = await batchy.receiver.next("/batch")
    assert Webhook(key["webhookSecret"]).verify(body, headers)["data"]["batchId"] == (
        second["batchId"])
