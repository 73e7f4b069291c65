"""Asset outcomes end to end: an image that did not load is a warning, never a
cached output; strict refuses; refresh replaces; and once the cause is fixed
(the destination allowed), the same request renders the image."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.e2e.conftest import ImageServer, Live, serve_loopback, solid_png
from tests.e2e.test_render_path import create, fetch_image, render
from tests.e2e.test_signed_urls import signed_url

pytestmark = pytest.mark.production

BLUE = (0, 0, 255)


def page_with(src: str) -> str:
    return f"""<html><body style="margin:0;background:#ffffff">
      <img src="{src}" style="position:absolute;left:0;top:0;width:50px;height:50px">
      <p style="position:absolute;left:60px;top:0;margin:0">{{{{ title }}}}</p>
    </body></html>"""


async def test_a_template_without_assets_has_no_warnings(live: Live) -> None:
    template = await create(live, html="<p style='margin:0'>{{ title }}</p>", width=80,
                            height=40)
    result = await render(live, template["id"], {"variables": {"title": "plain"}})
    assert result["warnings"] == [] and result["cached"] is False
    assert (await render(live, template["id"], {"variables": {"title": "plain"}}))["cached"]


async def test_a_denied_image_warns_names_the_setting_and_renders_once_allowed(
        live: Live) -> None:
    # A server of this test's own, not on the allow-list the stack started with.
    server = ImageServer(color=BLUE)

    async def handler(request: web.Request) -> web.Response:
        server.hits.append(request.path)
        return web.Response(body=solid_png(BLUE), content_type="image/png")

    runner, server.port = await serve_loopback(handler)
    try:
        template = await create(live, html=page_with(server.url("logo.png")), width=120,
                                height=50)
        body = {"variables": {"title": "x"}}
        first = await render(live, template["id"], body)
        assert first["cached"] is False
        [warning] = first["warnings"]
        assert warning["url"] == server.url("logo.png") and warning["outcome"] == "denied"
        assert "LITHO_OUTBOUND_ALLOW" in warning["hint"]
        image, _ = await fetch_image(live, first["url"])
        assert image.convert("RGB").getpixel((25, 25)) != BLUE
        assert server.hits == []
        # Never a hit: the same request renders again (its output replaces
        # the first's, under one id per input that is never the content address).
        second = await render(live, template["id"], body)
        assert second["cached"] is False and second["id"] == first["id"]
        assert second["warnings"] == first["warnings"]

        # strict: a 422 naming the asset, the outcome and the setting.
        async with live.http.post(f"{live.url}/v1/templates/{template['id']}/render",
                                  json={**body, "assets": "strict"},
                                  headers=live.auth()) as r:
            assert r.status == 422, await r.text()
            problem = await r.json()
        assert problem["errors"][0]["field"] == "assets"
        assert server.url("logo.png") in problem["errors"][0]["message"]
        assert "LITHO_OUTBOUND_ALLOW" in problem["errors"][0]["message"]

        # The operator allows the destination: the same request draws the image,
        # is stored under its content address, and is then a hit.
        await live.restart("renderer", env={
            "LITHO_OUTBOUND_ALLOW": f"127.0.0.1:{live.allowed.port},127.0.0.1:{server.port}"})
        fixed = await render(live, template["id"], body)
        assert fixed["warnings"] == [] and fixed["cached"] is False
        image, _ = await fetch_image(live, fixed["url"])
        assert image.convert("RGB").getpixel((25, 25)) == BLUE
        assert server.hits == ["/logo.png"]
        again = await render(live, template["id"], {**body, "assets": "strict"})
        assert again["cached"] is True and again["id"] == fixed["id"]
    finally:
        await runner.cleanup()


async def test_a_failed_image_and_a_relative_url_are_warnings(live: Live) -> None:
    missing = live.allowed.url("missing/logo.png")
    html = page_with(missing).replace(
        "</body>", '<img src="relative/logo.png"><iframe src="https://example.com/"></iframe>'
                   "</body>")
    template = await create(live, html=html, width=120, height=50)
    result = await render(live, template["id"], {"variables": {"title": "y"}})
    by_url = {w["url"]: w for w in result["warnings"]}
    assert set(by_url) == {missing, "http://document.invalid/relative/logo.png",
                           "https://example.com/"}
    assert "never loaded" in by_url["https://example.com/"]["reason"]
    assert (by_url[missing]["outcome"], by_url[missing]["reason"]) == (
        "failed", "the server answered HTTP 404")
    relative = by_url["http://document.invalid/relative/logo.png"]
    assert relative["outcome"] == "failed" and "relative URL" in relative["reason"]
    assert result["cached"] is False


async def test_refresh_renders_again_and_replaces_the_stored_output(live: Live) -> None:
    template = await create(live, html=page_with(live.allowed.url("fresh.png")), width=120,
                            height=50)
    body = {"variables": {"title": "z"}}
    first = await render(live, template["id"], body)
    assert (await render(live, template["id"], body))["cached"] is True
    refreshed = await render(live, template["id"], {**body, "cache": "refresh"})
    assert refreshed["cached"] is False and refreshed["id"] == first["id"]
    assert refreshed["warnings"] == []


async def test_bad_policies_are_422_naming_the_field_and_the_values(live: Live) -> None:
    template = await create(live)
    for field, value in (("cache", "sometimes"), ("assets", "lenient")):
        async with live.http.post(f"{live.url}/v1/templates/{template['id']}/render",
                                  json={field: value}, headers=live.auth()) as r:
            assert r.status == 422
            text = await r.text()
        assert f"/{field}" in text


async def test_a_signed_url_with_a_missing_image_is_not_stored_by_caches(live: Live) -> None:
    template = await create(live, html=page_with(live.secret.url("signed.png")), width=120,
                            height=50)
    url = await signed_url(live, {"templateId": template["id"], "format": "png",
                                  "variables": {"title": "s"}})
    async with live.http.get(url) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        assert "1 asset(s) did not load" in r.headers["Litho-Warnings"]
        assert "LITHO_OUTBOUND_ALLOW" in r.headers["Litho-Warnings"]
    assert live.secret.hits == []
