"""Authentication, tenant isolation, and problem+json errors over HTTP."""

from __future__ import annotations

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create


async def test_missing_key_is_401(live: Live) -> None:
    async with live.http.get(f"{live.url}/v1/templates") as r:
        assert r.status == 401
        assert r.content_type == "application/problem+json"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        body = await r.json()
    assert body["status"] == 401 and "Authorization" in body["detail"]


async def test_wrong_key_is_401(live: Live) -> None:
    for key in ("lk_not-a-real-key", "nonsense"):
        async with live.http.get(f"{live.url}/v1/templates", headers=live.auth(key)) as r:
            assert r.status == 401
            assert (await r.json())["detail"] == "invalid API key"


async def test_other_tenants_template_is_404(live: Live) -> None:
    template = await create(live)
    other = live.auth(live.other_key)
    async with live.http.get(f"{live.url}/v1/templates/{template['id']}", headers=other) as r:
        assert r.status == 404
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/render", json={},
                              headers=other) as r:
        assert r.status == 404
    async with live.http.delete(f"{live.url}/v1/templates/{template['id']}",
                                headers=other) as r:
        assert r.status == 404
    async with live.http.get(f"{live.url}/v1/templates?pageSize=100", headers=other) as r:
        assert template["id"] not in {t["id"] for t in (await r.json())["templates"]}


async def test_malformed_json_is_400(live: Live) -> None:
    async with live.http.post(f"{live.url}/v1/templates", data=b'{"name": "x",',
                              headers={**live.auth(), "Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert r.content_type == "application/problem+json"
        assert "not valid JSON" in (await r.json())["detail"]


async def test_huge_width_is_422_naming_the_field(live: Live) -> None:
    body = {"name": "wide", "html": "<p>x</p>", "width": 100000, "height": 100}
    async with live.http.post(f"{live.url}/v1/templates", json=body, headers=live.auth()) as r:
        assert r.status == 422
        problem = await r.json()
    assert problem["status"] == 422
    assert [e["field"] for e in problem["errors"]] == ["/width"]


async def test_width_over_the_service_limit_is_422(live: Live) -> None:
    body = {"name": "wide", "html": "<p>x</p>", "width": 9000, "height": 100}
    async with live.http.post(f"{live.url}/v1/templates", json=body, headers=live.auth()) as r:
        assert r.status == 422
        problem = await r.json()
    assert problem["errors"] == [{"field": "width", "message":
                                  "must be between 1 and 5000 (LITHO_TEMPLATE_MAX_DIMENSION)"}]


async def test_unknown_fields_and_missing_fields_are_422(live: Live) -> None:
    body = {"name": "x", "html": "<p/>", "width": 10, "colour": "red"}
    async with live.http.post(f"{live.url}/v1/templates", json=body, headers=live.auth()) as r:
        assert r.status == 422
        messages = " ".join(e["message"] for e in (await r.json())["errors"])
    assert "height" in messages and "colour" in messages


async def test_bad_template_id_is_422_and_unknown_is_404(live: Live) -> None:
    async with live.http.get(f"{live.url}/v1/templates/nope", headers=live.auth()) as r:
        assert r.status == 422
    async with live.http.get(f"{live.url}/v1/templates/tpl_{'0' * 24}",
                             headers=live.auth()) as r:
        assert r.status == 404


async def test_template_syntax_error_is_422_with_position(live: Live) -> None:
    body = {"name": "x", "html": "<p>\n  {{ 1 + }}</p>", "width": 10, "height": 10}
    async with live.http.post(f"{live.url}/v1/templates", json=body, headers=live.auth()) as r:
        assert r.status == 422
        errors = (await r.json())["errors"]
    assert errors == [{"field": "html",
                       "message": "line 2, column 10: expected an expression, found '}}'"}]


async def test_unknown_route_and_method_are_problems(live: Live) -> None:
    async with live.http.get(f"{live.url}/v2/nothing", headers=live.auth()) as r:
        assert r.status == 404
        assert r.content_type == "application/problem+json"
    async with live.http.patch(f"{live.url}/v1/templates", headers=live.auth()) as r:
        assert r.status == 405
        assert "POST" in r.headers["Allow"]


async def test_oversized_body_is_413(live: Live) -> None:
    body = {"name": "big", "html": "x" * (2 * 1024 * 1024), "width": 10, "height": 10}
    async with live.http.post(f"{live.url}/v1/templates", json=body, headers=live.auth()) as r:
        assert r.status == 413
        assert "larger than 1048576 bytes" in (await r.json())["detail"]


async def test_malformed_json_bodies_are_400(live: Live) -> None:
    for raw in (b'{"name": NaN}', b'{"width": Infinity}', b'{"name": "x"'):
        async with live.http.post(f"{live.url}/v1/templates", data=raw,
                                  headers={**live.auth(), "Content-Type": "application/json"}
                                  ) as r:
            assert r.status == 400, raw[:40]


async def test_a_body_nested_too_deeply_is_422_naming_where(live: Live) -> None:
    # Well-formed JSON, but deeper than any layer could store and read back.
    deep = b'{"variables": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    async with live.http.post(f"{live.url}/v1/templates", data=deep,
                              headers={**live.auth(), "Content-Type": "application/json"}
                              ) as r:
        assert r.status == 422
        problem = await r.json()
    assert "LITHO_GATEWAY_JSON_MAX_DEPTH" in problem["detail"], problem
    assert problem["errors"][0]["field"].startswith("/variables/a/0/0"), problem


async def test_control_characters_in_path_parameters_are_422(live: Live) -> None:
    async with live.http.get(f"{live.url}/v1/templates/tpl_{'0' * 24}%0A",
                             headers=live.auth()) as r:
        assert r.status == 422


async def test_a_forged_version_page_token_is_422(live: Live) -> None:
    import base64

    template = await create(live)
    token = base64.urlsafe_b64encode(b"1" + b"0" * 30).decode().rstrip("=")
    async with live.http.get(f"{live.url}/v1/templates/{template['id']}/versions?pageToken="
                             f"{token}", headers=live.auth()) as r:
        assert r.status == 422
        assert (await r.json())["errors"][0]["field"] == "pageToken"


async def test_a_selector_box_beyond_the_pixel_limit_is_422(live: Live) -> None:
    html = '<div id="big" style="width:5000px;height:5000px;background:red"></div>'
    template = await create(live, html=html, width=100, height=100)
    async with live.http.post(f"{live.url}/v1/templates/{template['id']}/render",
                              json={"selector": "#big", "deviceScaleFactor": 4},
                              headers=live.auth()) as r:
        assert r.status == 422
        assert (await r.json())["errors"][0]["field"] == "selector"
