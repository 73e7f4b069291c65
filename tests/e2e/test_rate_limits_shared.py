"""Rate limits and render quotas are one bucket across the gateway replicas:
requests sent straight to each gateway in turn (``Stack.urls``, two in
production mode) are limited as if they had all reached one. A tenant's
limits are set with ``python -m services.gateway.limits`` before its first
request (no replica has cached them yet).

Windows are wide so that a slow machine changes nothing: the per-second
limit refills one request every 50 s, and the quota is per month. What a
test would see pass beyond the limit, were the replicas counting apart, is
the limit times the number of gateways."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest

from services.gateway._signing import sign
from tests.e2e.conftest import Live
from tests.support.production import PRODUCTION, current_mode

pytestmark = pytest.mark.production

#: One request every 50 s: none comes back while a test runs.
PER_SECOND = 0.02


async def limits(live: Live, command: str, tenant: str, *options: str) -> dict[str, Any]:
    """``python -m services.gateway.limits`` against the stack's store."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway.limits", command, "--tenant", tenant, *options,
        env={**os.environ, "LITHO_DATA_DIR": str(live.stack.data_dir), **live.stack.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    answer: dict[str, Any] = json.loads(out)
    return answer


async def tenant_with(live: Live, name: str, *options: str) -> tuple[str, dict[str, str]]:
    """A new tenant, its key's headers, and its limits set."""
    tenant = f"{name}-{uuid.uuid4().hex[:8]}"
    key = await live.stack.create_key(tenant)
    await limits(live, "set", tenant, *options)
    return tenant, {"Authorization": f"Bearer {key}"}


def gateways(live: Live) -> list[str]:
    urls = list(live.stack.urls)
    if current_mode() == PRODUCTION:
        assert len(urls) == 2, urls
    return urls


async def test_the_tenant_request_rate_is_one_bucket_across_gateways(live: Live) -> None:
    burst = 6
    _, auth = await tenant_with(live, "rl-rate", "--per-second", str(PER_SECOND),
                                "--burst", str(burst), "--key-per-second", "0")
    urls = gateways(live)
    started = time.monotonic()
    seen: list[tuple[str, int, str]] = []
    for url in itertools.islice(itertools.cycle(urls), 2 * burst):
        async with live.http.get(f"{url}/v1/templates", headers=auth) as r:
            await r.read()
            seen.append((url, r.status, r.headers.get("X-RateLimit-Scope", "")))
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
    refilled = int((time.monotonic() - started) * PER_SECOND)
    passed = [url for url, status, _ in seen if status == 200]
    # The burst, and not the burst on each gateway.
    assert burst <= len(passed) <= burst + refilled, seen
    assert [status for _, status, _ in seen[:burst]] == [200] * burst, seen
    assert {scope for _, status, scope in seen if status == 429} == {"tenant"}, seen
    # Both gateways admitted some of the burst and refused some past it.
    assert set(passed) == set(urls)
    assert {url for url, status, _ in seen if status == 429} == set(urls)


async def test_the_monthly_render_quota_is_one_count_across_gateways(live: Live) -> None:
    quota = 3
    tenant, auth = await tenant_with(live, "rl-quota", "--renders-per-month", str(quota))
    urls = gateways(live)
    async with live.http.post(f"{urls[0]}/v1/templates", headers=auth, json={
            "name": "quota", "html": "<p>{{ n }}</p>", "width": 40, "height": 20}) as r:
        assert r.status == 201, await r.text()
        template_id = (await r.json())["id"]
    seen: list[tuple[str, int]] = []
    for i, url in enumerate(itertools.islice(itertools.cycle(urls), 2 * quota)):
        async with live.http.post(f"{url}/v1/templates/{template_id}/render", headers=auth,
                                  json={"variables": {"n": i}}) as r:
            body = await r.json()
            seen.append((url, r.status))
            if r.status == 429:
                assert r.headers["X-RateLimit-Scope"] == "tenant-renders-month"
                assert r.headers["X-RateLimit-Remaining"] == "0"
                assert int(r.headers["Retry-After"]) >= 1
                assert f"quota of {quota} renders" in body["detail"]
    assert [status for _, status in seen] == [200] * quota + [429] * quota, seen
    assert {url for url, status in seen if status == 429} == set(urls)
    shown = await limits(live, "show", tenant)
    assert shown["rendersThisMonth"] == quota


async def test_signed_urls_count_new_renders_in_the_quota_across_gateways(live: Live) -> None:
    quota = 2
    tenant, auth = await tenant_with(live, "rl-signed", "--renders-per-month", str(quota))
    urls = gateways(live)
    first, second = urls[0], urls[-1]
    async with live.http.post(f"{first}/v1/templates", headers=auth, json={
            "name": "signed", "html": "<p>{{ t }}</p>", "width": 40, "height": 20}) as r:
        assert r.status == 201, await r.text()
        template_id = (await r.json())["id"]
    async with live.http.get(f"{second}/v1/signing-key", headers=auth) as r:
        signing = await r.json()

    def signed(title: str) -> str:
        path = f"/r/{template_id}.png"
        params = [("kid", signing["keyId"]), ("t", title)]
        return f"{path}?{urlencode(params)}&sig={sign(signing['secret'], path, params)}"

    async def view(url: str) -> tuple[int, str]:
        async with live.http.get(url) as r:
            await r.read()
            return r.status, r.headers.get("X-RateLimit-Scope", "")

    # A new render, then views of it on either gateway: one counted.
    assert (await view(first + signed("a")))[0] == 200
    for url in (second, first, second):
        assert (await view(url + signed("a")))[0] == 200
    assert (await limits(live, "show", tenant))["rendersThisMonth"] == 1
    assert (await view(second + signed("b")))[0] == 200
    # Used up: new renders are refused on both gateways, with nothing of the
    # owner's quota in the answer; what is rendered is still served (the
    # gateway asks the real renderer for a stored output only).
    assert await view(first + signed("c")) == (429, "")
    assert await view(second + signed("d")) == (429, "")
    for url in (first, second):
        assert await view(url + signed("a")) == (200, "")
    assert (await limits(live, "show", tenant))["rendersThisMonth"] == quota
