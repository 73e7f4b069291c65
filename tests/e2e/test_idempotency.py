"""``Idempotency-Key`` against the live stack (issue 14, item 5): a retried
create or batch runs once, another body with the same key is a 422, and
concurrent duplicates make one template. Production mode (two gateways on
one MongoDB) should run the same tests with requests spread over both."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from multidict import CIMultiDict

from tests.e2e.conftest import Live

pytestmark = [pytest.mark.e2e, pytest.mark.production]

HTML = "<body style='margin:0;background:{{ bg }}'>{{ title }}</body>"


def _template(name: str) -> dict[str, Any]:
    return {"name": name, "width": 40, "height": 20, "html": HTML}


async def _post(live: Live, path: str, key: str | None, *, api_key: str | None = None,
                **kwargs: Any) -> tuple[int, CIMultiDict[str], Any]:
    headers = {**live.auth(api_key), **kwargs.pop("headers", {})}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with live.http.post(live.url + path, headers=headers, **kwargs) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None)


async def _templates_named(live: Live, name: str, api_key: str | None = None) -> int:
    async with live.http.get(live.url + "/v1/templates", params={"namePrefix": name},
                             headers=live.auth(api_key)) as resp:
        assert resp.status == 200
        return sum(t["name"] == name for t in (await resp.json())["templates"])


async def test_a_retried_create_returns_the_first_template(live: Live) -> None:
    name, key = f"idem-{secrets.token_hex(4)}", secrets.token_hex(8)
    first = await _post(live, "/v1/templates", key, json=_template(name))
    again = await _post(live, "/v1/templates", key, json=_template(name))
    assert first[0] == again[0] == 201
    assert again[2] == first[2] and again[1]["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first[1]
    # The replay's own request id, not the first one's.
    assert again[1]["X-Request-Id"] != first[1]["X-Request-Id"]
    assert await _templates_named(live, name) == 1


async def test_the_same_key_with_another_body_is_a_422(live: Live) -> None:
    name, key = f"idem-{secrets.token_hex(4)}", secrets.token_hex(8)
    assert (await _post(live, "/v1/templates", key, json=_template(name)))[0] == 201
    status, _, problem = await _post(live, "/v1/templates", key,
                                     json=_template(name + "-other"))
    assert status == 422 and problem["errors"][0]["field"] == "Idempotency-Key"
    assert await _templates_named(live, name + "-other") == 0


async def test_a_key_over_255_characters_is_a_422_naming_it(live: Live) -> None:
    status, _, problem = await _post(live, "/v1/templates", "k" * 256,
                                     json=_template("idem-long"))
    assert status == 422
    assert problem["errors"] == [{"field": "Idempotency-Key",
                                  "message": "must be 1 to 255 printable ASCII characters"}]


async def test_concurrent_duplicates_create_one_template(live: Live) -> None:
    name, key = f"idem-{secrets.token_hex(4)}", secrets.token_hex(8)
    answers = await asyncio.gather(*[
        _post(live, "/v1/templates", key, json=_template(name)) for _ in range(6)])
    assert {a[0] for a in answers} == {201}
    assert len({a[2]["id"] for a in answers}) == 1
    assert await _templates_named(live, name) == 1


async def test_a_request_refused_by_validation_claims_nothing(live: Live) -> None:
    name, key = f"idem-{secrets.token_hex(4)}", secrets.token_hex(8)
    assert (await _post(live, "/v1/templates", key, json={"name": name}))[0] == 422
    status, headers, _ = await _post(live, "/v1/templates", key, json=_template(name))
    assert status == 201 and "Idempotent-Replayed" not in headers


async def test_keys_belong_to_their_tenant(live: Live) -> None:
    name, key = f"idem-{secrets.token_hex(4)}", secrets.token_hex(8)
    mine = await _post(live, "/v1/templates", key, json=_template(name))
    theirs = await _post(live, "/v1/templates", key, api_key=live.other_key,
                         json=_template(name))
    assert mine[0] == theirs[0] == 201 and mine[2]["id"] != theirs[2]["id"]
    assert "Idempotent-Replayed" not in theirs[1]


async def test_a_retried_csv_batch_is_one_batch(live: Live) -> None:
    """A body the handler streams itself (CSV) is fingerprinted too."""
    created = await _post(live, "/v1/templates", None,
                          json=_template(f"idem-{secrets.token_hex(4)}"))
    path = f"/v1/templates/{created[2]['id']}/batch-render"
    key, csv = secrets.token_hex(8), b"bg,title\n#fff,a\n#000,b\n"
    first = await _post(live, path, key, data=csv, headers={"Content-Type": "text/csv"})
    again = await _post(live, path, key, data=csv, headers={"Content-Type": "text/csv"})
    assert first[0] == again[0] == 202
    assert again[2]["batchId"] == first[2]["batchId"]
    assert again[1]["Location"] == first[1]["Location"]
    other = await _post(live, path, key, data=csv + b"#f00,c\n",
                        headers={"Content-Type": "text/csv"})
    assert other[0] == 422


async def test_a_retried_render_is_replayed(live: Live) -> None:
    created = await _post(live, "/v1/templates", None,
                          json=_template(f"idem-{secrets.token_hex(4)}"))
    path, key = f"/v1/templates/{created[2]['id']}/render", secrets.token_hex(8)
    body = {"variables": {"bg": "#123456", "title": "x"}, "format": "png"}
    first = await _post(live, path, key, json=body)
    again = await _post(live, path, key, json=body)
    assert first[0] == again[0] == 200 and again[2] == first[2]
    assert again[1]["Idempotent-Replayed"] == "true"


async def test_a_replayed_subscription_create_leaves_its_secret_out(live: Live) -> None:
    """The signing secret is shown once: the kept copy goes without it, and a
    replay says so (``Idempotent-Redacted``) instead of showing it again."""
    key = secrets.token_hex(8)
    body = {"event": "render.failed", "targetUrl": "https://hooks.example.com/litho",
            "description": f"idem-{key}"}
    status, _, first = await _post(live, "/v1/webhook-subscriptions", key, json=body)
    assert status == 201 and first["secret"].startswith("whsec_")
    try:
        status, headers, again = await _post(live, "/v1/webhook-subscriptions", key,
                                             json=body)
        assert status == 201 and headers["Idempotent-Replayed"] == "true"
        assert headers["Idempotent-Redacted"] == "secret"
        assert again == {name: value for name, value in first.items() if name != "secret"}
    finally:
        async with live.http.delete(f"{live.url}/v1/webhook-subscriptions/{first['id']}",
                                    headers=live.auth()) as resp:
            assert resp.status == 204
