"""``litho keys`` against a tiny fake of the keys API (its contract: POST
answers 201 with the key once, GET pages without it, DELETE answers 204), and
the command's answers to a refused key, an unreachable URL and a 429."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web

from litho.cli import run

KEY = "lk_test"


@dataclass
class FakeKeys:
    url: str = ""
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    bodies: list[Any] = field(default_factory=list)
    busy: int = 0  # answer this many 429s first

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"title": "Unauthorized", "status": 401,
                                      "detail": "invalid API key"}, status=401)
        if self.busy:
            self.busy -= 1
            return web.json_response({"status": 429}, status=429,
                                     headers={"Retry-After": "0"})
        if request.method == "POST":
            body = await request.json()
            self.bodies.append(body)
            if body.get("scopes") not in (["render"], ["full"]):
                return web.json_response({"title": "Unprocessable Entity", "status": 422,
                                          "detail": "invalid", "errors": [
                                              {"field": "scopes", "message": "unknown"}]},
                                         status=422)
            key_id = f"key_{len(self.keys) + 1}"
            self.keys[key_id] = {"id": key_id, "name": body["name"], "scopes": body["scopes"],
                                 "createTime": "2026-12-01T10:00:00Z", "lastUsedTime": None}
            return web.json_response({**self.keys[key_id], "key": f"lk_secret_{key_id}"},
                                     status=201)
        if request.method == "DELETE":
            key_id = request.match_info["tail"].removeprefix("v1/keys/")
            if self.keys.pop(key_id, None) is None:
                return web.json_response({"title": "Not Found", "status": 404,
                                          "detail": "no such key"}, status=404)
            return web.Response(status=204)
        # Pages of one key each, to exercise nextPageToken.
        ordered = sorted(self.keys)
        start = int(request.query.get("pageToken", "0"))
        page = ordered[start:start + 1]
        more = start + 1 < len(ordered)
        return web.json_response({"keys": [self.keys[k] for k in page],
                                  "nextPageToken": str(start + 1) if more else None})


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeKeys]:
    fake = FakeKeys()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


async def litho(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_create_list_and_delete_keys(fake: FakeKeys) -> None:
    code, out, err = await litho("--url", fake.url, "--key", KEY,
                                 "keys", "create", "ci", "--scope", "render")
    assert code == 0, err
    assert out == "lk_secret_key_1\n"  # the key alone on stdout, for KEY=$(…)
    assert "shown only now" in err
    assert fake.bodies == [{"name": "ci", "scopes": ["render"]}]
    await litho("--url", fake.url, "--key", KEY, "keys", "create", "admin", "--scope", "full")

    code, out, err = await litho("--url", fake.url, "--key", KEY, "keys", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SCOPES", "CREATED", "LAST", "USED"]
    assert [line.split()[:3] for line in lines[1:]] == [["key_1", "ci", "render"],
                                                        ["key_2", "admin", "full"]]
    assert "never" in lines[1] and "lk_secret" not in out

    code, out, _ = await litho("--url", fake.url, "--key", KEY, "keys", "delete", "key_1")
    assert (code, out) == (0, "deleted key key_1\n")
    assert list(fake.keys) == ["key_2"]
    code, _, err = await litho("--url", fake.url, "--key", KEY, "keys", "delete", "key_1")
    assert code == 1 and "404 no such key" in err


async def test_an_unknown_scope_is_a_usage_error_before_any_call(fake: FakeKeys) -> None:
    code, _, err = await litho("--url", fake.url, "--key", KEY,
                               "keys", "create", "x", "--scope", "admin")
    assert code == 2 and "invalid choice: 'admin'" in err
    assert fake.bodies == []


async def test_a_refused_key_says_which_setting_to_fix(fake: FakeKeys) -> None:
    code, out, err = await litho("--url", fake.url, "--key", "lk_wrong", "keys", "list")
    assert (code, out) == (1, "")
    assert "the API key was refused (401 invalid API key): check --key or LITHO_API_KEY" in err


async def test_429_is_retried_after_retry_after(fake: FakeKeys) -> None:
    fake.busy = 2
    code, _, err = await litho("--url", fake.url, "--key", KEY, "keys", "list")
    assert code == 0, err
    assert fake.busy == 0


async def test_an_unreachable_url_is_a_clear_error(fake: FakeKeys) -> None:
    code, _, err = await litho("--url", "http://127.0.0.1:9", "--key", KEY, "keys", "list")
    assert code == 1
    assert "GET http://127.0.0.1:9/v1/keys: cannot connect" in err


async def test_a_missing_url_or_key_is_a_usage_error(
        fake: FakeKeys, monkeypatch: Any) -> None:
    monkeypatch.delenv("LITHO_URL", raising=False)
    monkeypatch.delenv("LITHO_API_KEY", raising=False)
    assert (await litho("keys", "list"))[0] == 2
    code, _, err = await litho("--url", fake.url, "keys", "list")
    assert code == 2 and "no API key: pass --key or set LITHO_API_KEY" in err
    code, _, err = await litho("--url", "ftp://x", "--key", KEY, "keys", "list")
    assert code == 2 and "http(s) URL" in err
    # The environment works as the flags do.
    monkeypatch.setenv("LITHO_URL", fake.url)
    monkeypatch.setenv("LITHO_API_KEY", KEY)
    assert (await litho("keys", "list"))[0] == 0
    monkeypatch.setenv("LITHO_CLI_TIMEOUT", "-1")
    code, _, err = await litho("keys", "list")
    assert code == 2 and "LITHO_CLI_TIMEOUT" in err


async def test_a_non_litho_answer_is_reported(fake: FakeKeys) -> None:
    async def login_page(_: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>")

    app = web.Application()
    app.router.add_get("/v1/keys", login_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        code, _, err = await litho("--url", url, "--key", KEY, "keys", "list")
        assert code == 1 and "is the URL a Litho gateway?" in err
    finally:
        await runner.cleanup()
    assert json.dumps(fake.bodies) == "[]"
