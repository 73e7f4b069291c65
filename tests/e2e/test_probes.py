"""The gateway's probes on the real stack: ``/livez`` and ``/readyz`` answer
without a key, and ``/readyz`` turns 503 naming the renderer while every
renderer replica hangs (``/livez`` stays 200), then ready again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import Live

pytestmark = pytest.mark.production

#: Seconds for a change of the render path to show in /readyz (a check times
#: out in under a second, and the answer is kept about a second).
SEEN_WITHIN = 15.0


async def _get(live: Live, path: str) -> tuple[int, dict[str, Any]]:
    async with live.http.get(f"{live.url}{path}") as r:
        return r.status, await r.json(content_type=None)


async def test_livez_and_readyz_answer_without_a_key(live: Live) -> None:
    assert await _get(live, "/livez") == (200, {"status": "ok"})
    assert await _get(live, "/readyz") == (200, {"status": "ready"})


async def _readyz_until(live: Live, url: str, status: int) -> dict[str, Any]:
    deadline = time.monotonic() + SEEN_WITHIN
    while True:
        async with live.http.get(f"{url}/readyz") as r:
            got, body = r.status, await r.json(content_type=None)
        if got == status:
            return dict(body)
        assert time.monotonic() < deadline, (url, got, body)
        await asyncio.sleep(0.2)


async def test_readyz_names_the_renderer_while_it_hangs(live: Live) -> None:
    """Every renderer replica stopped (SIGSTOP: it holds its connections and
    answers nothing, as a hung process does) is a 503 naming the renderer on
    every gateway, within the readiness check's timeout and cache; SIGCONT
    brings them back without a restart."""
    renderers = [live.stack.pid(n) for n in live.stack.names
                 if n == "renderer" or n.startswith("renderer-")]
    for pid in renderers:
        os.kill(pid, signal.SIGSTOP)
    try:
        for url in live.stack.urls:
            body = await _readyz_until(live, url, 503)
            assert body["detail"] == "not ready: renderer"
        assert await _get(live, "/livez") == (200, {"status": "ok"})
    finally:
        for pid in renderers:
            os.kill(pid, signal.SIGCONT)
    for url in live.stack.urls:
        await _readyz_until(live, url, 200)
