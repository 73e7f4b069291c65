"""Renders cannot reach each other: not through a pooled page, not through an id.

Issue 7, items 2 and 8. A stack of its own: an "evil" server and a "good"
server, both on the outbound allow-list (so a navigation to evil would
succeed if it were not blocked), and the document base URL pointed at good,
so a relative ``<img src="logo.png">`` must draw good's green logo, never
evil's red one.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from services._stack import RENDER_ID_SECRET_FILE, Stack
from tests.e2e.conftest import mode_env, serve_loopback, solid_png
from tests.support.production import Production

pytestmark = [pytest.mark.e2e, pytest.mark.production]

BLUE = (0, 0, 255)
GREEN = (0, 200, 0)
RED = (255, 0, 0)
#: Refused by the outbound guard: a link-local metadata address.
DENIED = "http://169.254.169.254/latest/meta-data/"
#: Hostile documents that do not paint themselves blue (their own CSP forbids
#: the style, or a frameset has no body).
UNPAINTED = ("meta csp and color scheme", "frameset")


@dataclass
class Server:
    color: tuple[int, int, int]
    port: int = 0
    hits: list[str] = field(default_factory=list)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


async def _serve(server: Server) -> web.AppRunner:
    image = solid_png(server.color)
    page = (f"<html><body style='margin:0;background:rgb{server.color}'>"
            "<img src='logo.png'></body></html>").encode()

    async def handler(request: web.Request) -> web.Response:
        server.hits.append(request.path)
        if request.path.endswith(".png"):
            return web.Response(body=image, content_type="image/png")
        return web.Response(body=page, content_type="text/html")

    runner, server.port = await serve_loopback(handler)
    return runner


@dataclass
class Env:
    stack: Stack
    http: aiohttp.ClientSession
    evil: Server
    good: Server
    #: Tenant "default" (the first key) and tenant "other".
    keys: tuple[str, str]


@pytest_asyncio.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory,
              production: Production | None) -> AsyncIterator[Env]:
    evil, good = Server(RED), Server(GREEN)
    runners = [await _serve(evil), await _serve(good)]
    data_dir: Path = tmp_path_factory.mktemp("litho-isolation")
    settings = {
        "LITHO_OUTBOUND_ALLOW": f"127.0.0.1:{evil.port},127.0.0.1:{good.port}",
        "LITHO_RENDERER_BASE_URL": good.url(),
        "LITHO_RENDERER_CONCURRENCY": "2",
        "LITHO_LOG_LEVEL": "INFO",
        **mode_env(production, "isolation"),
    }
    stack = Stack(data_dir=data_dir, gateway_port=0, log_to_files=True, env=settings)
    try:
        async with stack, aiohttp.ClientSession() as http:
            other = await stack.create_key("other")
            live = Env(stack, http, evil, good, (stack.api_key, other))
            yield live
            await live.stack.stop()  # a test may have restarted it
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        for runner in runners:
            await runner.cleanup()


async def create(env: Env, key: str, html: str, *, width: int = 200,
                 height: int = 100) -> str:
    body = {"name": "isolation", "html": html, "width": width, "height": height}
    async with env.http.post(f"{env.stack.url}/v1/templates", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 201, await r.text()
        template_id: str = (await r.json())["id"]
        return template_id


async def render(env: Env, key: str, template_id: str, variables: dict[str, Any] | None = None,
                 fmt: str = "png") -> dict[str, Any]:
    async with env.http.post(f"{env.stack.url}/v1/templates/{template_id}/render",
                             json={"variables": variables or {}, "format": fmt},
                             headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 200, f"{r.status} {await r.text()}"
        result: dict[str, Any] = await r.json()
        return result


async def pixel(env: Env, result: dict[str, Any], xy: tuple[int, int]) -> tuple[int, ...]:
    async with env.http.get(result["url"]) as r:
        assert r.status == 200
        image = Image.open(io.BytesIO(await r.read())).convert("RGB")
    value: tuple[int, ...] = image.getpixel(xy)  # type: ignore[assignment]
    return value


def hostile_documents(evil: Server) -> dict[str, str]:
    """Every way we know for a document to navigate itself or a frame in it.
    Each paints its body blue; none may end up anywhere else."""
    page = evil.url("page.html")
    blue = "<body style='margin:0;background:#0000ff'>{{ n }}"
    refresh = "<meta http-equiv='refresh' content='{}'>" + blue
    return {
        "refresh 0 to evil": refresh.format(f"0;url={page}"),
        "refresh 1 s to evil": refresh.format(f"1; URL={page}"),
        "refresh 0 to a denied url": refresh.format(f"0;url={DENIED}"),
        "refresh 1 s to a denied url": refresh.format(f"1;url={DENIED}"),
        "refresh 0 to about:blank": refresh.format("0;url=about:blank"),
        "refresh 1 s to about:blank": refresh.format("1;url=about:blank"),
        "refresh to itself": "<META HTTP-EQUIV='Refresh' CONTENT='0'>" + blue,
        "refresh in the body": blue + f"<meta http-equiv=refresh content='0;url={page}'>",
        "base href elsewhere": f"<base href='{evil.url()}'>" + blue
                               + "<a href='page.html'>link</a>",
        "form": blue + f"<form id=f action='{page}' method=post><input name=a autofocus>"
                       "<button>go</button></form>",
        "location in attributes": blue + f"<a href='{page}'>a</a><area href='{page}'>"
                                         f"<link rel=next href='{page}'>",
        "iframe": blue + f"<iframe src='{page}' width=10 height=10></iframe>",
        "iframe srcdoc refreshing": blue + "<iframe srcdoc=\"<meta http-equiv=refresh "
                                           f"content='0;url={page}'>\"></iframe>",
        "iframe navigating the top": blue + "<iframe srcdoc=\"<a target=_top "
                                            f"href='{page}'>x</a><meta http-equiv=refresh "
                                            f"content='0;url={page}'>\"></iframe>",
        "object and embed": blue + f"<object data='{page}'></object><embed src='{page}'>",
        # Not navigations, but state that document.open() would carry into
        # the next document written into the same page.
        "meta csp and color scheme": "<meta http-equiv='Content-Security-Policy' "
                                     "content=\"default-src 'none'; img-src 'none'\">"
                                     "<meta name='color-scheme' content='dark'>" + blue,
        "frameset": f"<frameset cols='50%,50%'><frame src='{page}'><frame src='{DENIED}'>"
                    "</frameset>",
    }


async def test_a_page_that_navigates_itself_never_affects_another_render(env: Env) -> None:
    own, other = env.keys
    hostile = {name: await create(env, own, html)
               for name, html in hostile_documents(env.evil).items()}
    relative = await create(env, other, "<body style='margin:0;background:#ffffff'>"
                            "<img src='logo.png' style='position:absolute;left:0;top:0;"
                            "width:50px;height:50px'><p style='margin-left:60px'>{{ n }}</p>")
    plain = await create(env, other, "<body style='margin:0;background:#00c800'>{{ n }}")
    unstyled = await create(env, other, "<p>{{ n }}</p>")

    async def check_hostile(name: str, n: int) -> None:
        result = await render(env, own, hostile[name], {"n": n})
        if name not in UNPAINTED:
            assert await pixel(env, result, (150, 80)) == BLUE, name

    async def check_relative(n: int) -> None:
        result = await render(env, other, relative, {"n": n})
        assert result["cached"] is False
        # Resolved against the configured base (good), never against evil.
        assert await pixel(env, result, (25, 25)) == GREEN, n

    async def check_unstyled(n: int) -> None:
        result = await render(env, other, unstyled, {"n": n})
        assert await pixel(env, result, (150, 80)) == (255, 255, 255)

    async def check_plain(n: int, fmt: str) -> None:
        result = await render(env, other, plain, {"n": n}, fmt)
        if fmt != "pdf":
            color = await pixel(env, result, (150, 80))
            assert max(abs(a - b) for a, b in zip(color, GREEN, strict=True)) <= 8, color

    # Hostile and innocent renders side by side on the two pooled pages,
    # then again after every delayed refresh had time to fire.
    n = 0
    for _ in range(3):
        work = [check_hostile(name, n) for name in hostile]
        for _ in range(4):
            n += 1
            work += [check_relative(n), check_plain(n, "png"), check_plain(n, "jpeg"),
                     check_unstyled(n)]
        work.append(check_plain(n, "pdf"))
        await asyncio.gather(*work)
        await asyncio.sleep(1.5)
    for _ in range(8):
        n += 1
        await check_relative(n)
        await check_plain(n, "png")
        await check_unstyled(n)

    # No navigation of any kind reached evil: not the page, not a frame.
    assert env.evil.hits == []
    assert set(env.good.hits) == {"/logo.png"}


async def test_the_image_of_a_denied_refresh_is_the_document_not_an_error(env: Env) -> None:
    own, _ = env.keys
    html = hostile_documents(env.evil)["refresh 0 to a denied url"]
    template = await create(env, own, html)
    results = await asyncio.gather(*(render(env, own, template, {"n": n}) for n in range(8)))
    for result in results:
        assert await pixel(env, result, (150, 80)) == BLUE


async def test_render_ids_are_per_tenant_and_stable(env: Env) -> None:
    own, other = env.keys
    html = "<body style='margin:0;background:#0000ff'>Certificate for {{ name }}"
    mine, theirs = await create(env, own, html), await create(env, other, html)
    variables = {"name": "Ada Lovelace"}
    first = await render(env, own, mine, variables)
    again = await render(env, own, mine, variables)
    assert first["cached"] is False
    assert again["cached"] is True and again["id"] == first["id"]
    # The same document from another tenant is its own miss at its own URL:
    # a hit would tell it that someone else rendered that certificate.
    foreign = await render(env, other, theirs, variables)
    assert foreign["cached"] is False and foreign["id"] != first["id"]
    assert foreign["url"] != first["url"]
    assert await pixel(env, foreign, (150, 80)) == BLUE

    # The secret is kept in the data dir, private, and ids survive a restart.
    path = env.stack.data_dir / RENDER_ID_SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32
    await env.stack.stop()
    restarted = Stack(data_dir=env.stack.data_dir, gateway_port=0, log_to_files=True,
                      env=env.stack.env)
    await restarted.__aenter__()
    env.stack = restarted
    after = await render(env, own, mine, variables)
    assert after["cached"] is True and after["id"] == first["id"]
