"""Signed on-the-fly render URLs over HTTP."""

from __future__ import annotations

import io
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from PIL import Image

from services.gateway._signing import sign
from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create

pytestmark = pytest.mark.production


async def signed_url(live: Live, body: dict[str, Any]) -> str:
    async with live.http.post(f"{live.url}/v1/signed-urls", json=body, headers=live.auth()) as r:
        assert r.status == 201, await r.text()
        url: str = (await r.json())["url"]
        return url


async def test_signed_url_renders_then_serves_from_cache(live: Live) -> None:
    template = await create(live)
    url = await signed_url(live, {"templateId": template["id"], "format": "png",
                                  "variables": {"title": "Signed", "user": {"name": "Bo"}},
                                  "expiresIn": 600})
    assert "sig=" in url and live.stack.api_key not in url
    async with live.http.get(url) as r:
        assert r.status == 200 and r.content_type == "image/png"
        etag = r.headers["ETag"]
        image = Image.open(io.BytesIO(await r.read()))
    assert image.size == (400, 200)
    assert image.convert("RGB").getpixel((50, 50)) == (0, 0, 255)
    async with live.http.get(url) as r:
        assert r.status == 200 and r.headers["ETag"] == etag
    async with live.http.get(url, headers={"If-None-Match": etag}) as r:
        assert r.status == 304


async def test_client_side_signing_matches_the_documented_scheme(live: Live) -> None:
    template = await create(live)
    async with live.http.get(f"{live.url}/v1/signing-key", headers=live.auth()) as r:
        signing = await r.json()
    path = f"/r/{template['id']}.jpg"
    params = [("title", "Mine"), ("kid", signing["keyId"])]
    sig = sign(signing["secret"], path, params)
    async with live.http.get(f"{live.url}{path}?{urlencode(params)}&sig={sig}") as r:
        assert r.status == 200 and r.content_type == "image/jpeg"


async def test_tampered_expired_and_unsigned_urls_are_403_and_render_nothing(live: Live) -> None:
    template = await create(live)
    good = await signed_url(live, {"templateId": template["id"],
                                   "variables": {"title": "Original"}})
    parts = urlsplit(good)
    params = dict(parse_qsl(parts.query))
    tampered = {**params, "title": "Tampered"}
    expired_params = [("title", "Old"), ("kid", params["kid"]),
                      ("exp", str(int(time.time()) - 10))]
    async with live.http.get(f"{live.url}/v1/signing-key", headers=live.auth()) as r:
        secret = (await r.json())["secret"]
    expired_sig = sign(secret, parts.path, expired_params)
    bad_urls = [
        f"{live.url}{parts.path}?{urlencode(tampered)}",
        f"{live.url}{parts.path}?{urlencode({k: v for k, v in params.items() if k != 'sig'})}",
        f"{live.url}{parts.path}?{urlencode({**params, 'sig': '0' * 64})}",
        f"{live.url}{parts.path}?{urlencode({**params, 'kid': 'kid_0000000000000000'})}",
        f"{live.url}{parts.path}?{urlencode(expired_params)}&sig={expired_sig}",
        f"{live.url}{parts.path.replace('.png', '.jpeg')}?{parts.query}",
    ]
    for url in bad_urls:
        async with live.http.get(url) as r:
            assert r.status == 403, url
            assert r.content_type == "application/problem+json"
    # Nothing was rendered for the tampered variables: rendering them now is a miss.
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/render",
                              json={"variables": {"title": "Tampered"}},
                              headers=live.auth()) as r:
        assert (await r.json())["cached"] is False


async def test_another_tenants_key_cannot_sign_for_this_template(live: Live) -> None:
    template = await create(live)
    async with live.http.post(f"{live.url}/v1/signed-urls", headers=live.auth(live.other_key),
                              json={"templateId": template["id"]}) as r:
        url = (await r.json())["url"]
    async with live.http.get(url) as r:
        assert r.status == 404


async def test_malformed_signatures_and_unsignable_variables(live: Live) -> None:
    template = await create(live)
    good = await signed_url(live, {"templateId": template["id"], "variables": {"title": "x"}})
    parts = urlsplit(good)
    params = dict(parse_qsl(parts.query))
    for sig in ("é", "zz", "0" * 63):
        async with live.http.get(f"{live.url}{parts.path}?"
                                 f"{urlencode({**params, 'sig': sig})}") as r:
            assert r.status == 403
    for variables in ({"a.b": 1}, {"": 1}, {"items": [1]}):
        async with live.http.post(f"{live.url}/v1/signed-urls", headers=live.auth(),
                                  json={"templateId": template["id"],
                                        "variables": variables}) as r:
            assert r.status == 422, variables


async def test_false_from_a_url_is_false_with_a_boolean_sample(live: Live) -> None:
    """Without definitions, URL text takes its sample's type: ``featured=false``
    must not show the badge that the text "false" (truthy) would."""
    async with live.http.post(f"{live.url}/v1/templates", headers=live.auth(), json={
            "name": "badge", "width": 100, "height": 100,
            "sampleVariables": {"featured": True, "count": 2},
            "html": '<body style="margin:0;background:#fff">'
                    '{{ if featured }}<div style="width:100px;height:100px;'
                    'background:#f00"></div>{{ end }}'
                    '{{ if count > 10 }}<p>many</p>{{ end }}</body>'}) as r:
        assert r.status == 201, await r.text()
        template_id = (await r.json())["id"]

    async def pixel(featured: str) -> object:
        url = await signed_url(live, {"templateId": template_id,
                                      "variables": {"featured": featured, "count": "9"}})
        async with live.http.get(url) as r:
            assert r.status == 200, await r.text()
            image = Image.open(io.BytesIO(await r.read())).convert("RGB")
        return image.getpixel((50, 50))

    assert await pixel("false") == (255, 255, 255)
    assert await pixel("true") == (255, 0, 0)


async def test_signing_a_url_that_has_already_expired_is_a_422(live: Live) -> None:
    template = await create(live)
    async with live.http.post(f"{live.url}/v1/signed-urls", headers=live.auth(), json={
            "templateId": template["id"], "expiresAt": 1_000_000_000}) as r:
        assert r.status == 422
        problem = await r.json()
    assert problem["errors"][0]["field"] == "expiresAt"
    assert "in the past" in problem["detail"]
