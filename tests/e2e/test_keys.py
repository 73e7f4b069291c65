"""API keys over the API against the live stack: create, list, delete; scopes;
tenants apart; and revocation seen by a second gateway process (same data
dir, same NATS) within a fraction of the cache's time to live, thanks to the
deletion's note."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from services._stack import Stack, free_port
from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create

pytestmark = pytest.mark.production

#: The second gateway keeps verified keys this long: only the note can make
#: it refuse a deleted key sooner.
SECOND_GATEWAY_TTL = 60


async def _call(live: Live, method: str, path: str, *, key: str | None = None,
                url: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    async with live.http.request(method, (url or live.url) + path, headers=live.auth(key),
                                 **kwargs) as r:
        text = await r.text()
        return r.status, (await r.json(content_type=None) if text else None)


async def _make(live: Live, name: str, scopes: list[str], key: str | None = None
                ) -> dict[str, Any]:
    status, made = await _call(live, "POST", "/v1/keys", key=key,
                               json={"name": name, "scopes": scopes})
    assert status == 201, made
    return dict(made)


async def _all_keys(live: Live, key: str | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params = {"pageSize": "100"}
    while True:
        status, page = await _call(live, "GET", "/v1/keys", key=key, params=params)
        assert status == 200, page
        found += page["keys"]
        if not page["nextPageToken"]:
            return found
        params = {"pageSize": "100", "pageToken": page["nextPageToken"]}


async def test_keys_are_created_listed_and_deleted(live: Live) -> None:
    made = await _make(live, "ci", ["render"])
    assert made["key"].startswith("lk_") and made["scopes"] == ["render"]
    listed = {k["id"]: k for k in await _all_keys(live)}
    assert listed[made["id"]]["name"] == "ci"
    assert "key" not in listed[made["id"]]
    status, _ = await _call(live, "DELETE", f"/v1/keys/{made['id']}")
    assert status == 204
    assert made["id"] not in {k["id"] for k in await _all_keys(live)}
    # Behind a balancer (production mode) the next request may reach the
    # other gateway, which refuses the key once the deletion's note is in.
    assert await _refused_after(live, live.url, made["key"], 2.0) < 2.0
    status, _ = await _call(live, "DELETE", f"/v1/keys/{made['id']}")
    assert status == 404


async def test_a_render_key_renders_but_cannot_create_a_template(live: Live) -> None:
    template = await create(live)
    render_key = (await _make(live, "renders only", ["render"]))["key"]
    status, result = await _call(live, "POST", f"/v1/templates/{template['id']}/render",
                                 key=render_key, json={"variables": {}})
    assert status == 200, result
    async with live.http.get(result["url"]) as image:
        assert image.status == 200
    status, _ = await _call(live, "GET", f"/v1/templates/{template['id']}", key=render_key)
    assert status == 200
    status, problem = await _call(live, "POST", "/v1/templates", key=render_key,
                                  json={"name": "x", "html": "<p>x</p>", "width": 10,
                                        "height": 10})
    assert status == 403
    assert "'full' scope" in problem["detail"] and "createTemplate" in problem["detail"]
    status, _ = await _call(live, "POST", "/v1/keys", key=render_key,
                            json={"name": "escalate", "scopes": ["full"]})
    assert status == 403


async def test_last_used_time_follows_use(live: Live) -> None:
    made = await _make(live, "used", ["render"])
    assert {k["id"]: k for k in await _all_keys(live)}[made["id"]]["lastUsedTime"] is None
    status, _ = await _call(live, "GET", "/v1/templates", key=made["key"])
    assert status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        used = {k["id"]: k for k in await _all_keys(live)}[made["id"]]["lastUsedTime"]
        if used is not None:
            break
        await asyncio.sleep(0.05)
    assert used is not None and used.endswith("Z")


async def test_another_tenants_key_id_is_404(live: Live) -> None:
    theirs = await _all_keys(live, live.other_key)
    assert theirs
    for key in theirs:
        status, problem = await _call(live, "DELETE", f"/v1/keys/{key['id']}")
        assert status == 404, problem
    mine = {k["id"] for k in await _all_keys(live)}
    assert not mine & {k["id"] for k in theirs}
    status, _ = await _call(live, "GET", "/v1/keys", key=live.other_key)
    assert status == 200


async def test_an_unknown_scope_is_a_422_naming_it(live: Live) -> None:
    status, problem = await _call(live, "POST", "/v1/keys",
                                  json={"name": "x", "scopes": ["admin"]})
    assert status == 422
    assert problem["errors"][0]["field"] == "/scopes/0"
    assert "'render'" in problem["errors"][0]["message"]


async def test_the_last_full_key_cannot_be_deleted(live: Live) -> None:
    # A tenant of its own, whose only key is the one the CLI made (full).
    key = await live.stack.create_key("lonely-tenant")
    (only,) = await _all_keys(live, key)
    assert only["scopes"] == ["full"]
    status, problem = await _call(live, "DELETE", f"/v1/keys/{only['id']}", key=key)
    assert status == 409 and "'full'" in problem["detail"]
    status, _ = await _call(live, "GET", "/v1/keys", key=key)
    assert status == 200


# -- two gateways ------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def second_gateway(live: Live) -> AsyncIterator[str]:
    """Another gateway process on the live stack's data dir, NATS and
    backends, as a second replica behind a load balancer would be: the
    stack's own second replica when it runs several, else one started here
    (whose cache keeps keys for a minute)."""
    replicas: list[str] = getattr(live.stack, "urls", [])
    if len(replicas) > 1:
        yield replicas[1]
        return
    url, process = await _start_gateway(live.stack)
    try:
        yield url
    finally:
        await _stop(process)


async def _start_gateway(stack: Stack) -> tuple[str, asyncio.subprocess.Process]:
    first = next(c for c in stack._children if c.name == "gateway")
    port = free_port()
    env = {**os.environ, **first.env, "LITHO_GATEWAY_PORT": str(port),
           "LITHO_GATEWAY_KEY_CACHE_TTL": str(SECOND_GATEWAY_TTL)}
    log = open(stack.log_path("gateway-second"), "ab")  # noqa: ASYNC230
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway", env=env, stdout=log, stderr=log)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{url}/healthz") as r:
                    if r.status == 200:
                        return url, process
            except aiohttp.ClientError:
                pass
            if process.returncode is not None or time.monotonic() > deadline:
                await _stop(process)
                raise AssertionError(f"the second gateway did not start; see "
                                     f"{stack.log_path('gateway-second')}")
            await asyncio.sleep(0.1)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _refused_after(live: Live, url: str, key: str, limit: float) -> float:
    """Seconds until ``url`` answers 401 for ``key`` (polling), at most ``limit``."""
    started = time.monotonic()
    while True:
        status, _ = await _call(live, "GET", "/v1/templates", key=key, url=url)
        elapsed = time.monotonic() - started
        if status == 401:
            return elapsed
        assert status == 200, status
        assert elapsed < limit, f"still accepted after {elapsed:.2f} s"
        await asyncio.sleep(0.02)


async def test_a_deleted_key_is_refused_by_the_other_gateway_at_once(
        live: Live, second_gateway: str) -> None:
    first = live.stack.url  # the first gateway itself, not a balancer in front
    for deleted_on, other in ((first, second_gateway), (second_gateway, first)):
        made = await _make(live, "replicated", ["render"])
        for url in (first, second_gateway):  # each replica now keeps it
            status, _ = await _call(live, "GET", "/v1/templates", key=made["key"], url=url)
            assert status == 200
        status, _ = await _call(live, "DELETE", f"/v1/keys/{made['id']}", url=deleted_on)
        assert status == 204
        # The deleting replica refuses it at once; the other as soon as the
        # note arrives: far inside the caches' time to live (5 s, or 60 s).
        assert await _refused_after(live, deleted_on, made["key"], 0.5) < 0.5
        assert await _refused_after(live, other, made["key"], 2.0) < 2.0


async def test_the_litho_command_manages_keys_over_the_api(live: Live) -> None:
    from litho.cli import run

    async def litho(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await run(["--url", live.url, "--key", live.stack.api_key, "keys", *argv],
                         out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = await litho("create", "from-the-cli", "--scope", "render")
    assert code == 0, err
    made = out.strip()
    assert made.startswith("lk_")
    code, out, err = await litho("list")
    assert code == 0, err
    (row,) = [line for line in out.splitlines() if "from-the-cli" in line]
    key_id = row.split()[0]
    assert row.split()[2] == "render" and made not in out
    code, out, err = await litho("delete", key_id)
    assert (code, out) == (0, f"deleted key {key_id}\n"), err
    assert await _refused_after(live, live.url, made, 2.0) < 2.0
