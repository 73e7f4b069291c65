"""Hostile input through the public API (issue 7, classes 3, 4 and 6): JSON
nested too deep to read back, text that is not valid Unicode, numbers too
large to repeat in an error or to store (int64), NUL in keys, and errors too
large to cross gRPC. Each is a fast 422 naming the field and the limit, and
nothing is stored. Also: listings of templates at their size limits fit
gRPC's message limit, and an Authorization header that is not UTF-8 is 401."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create

HTML = "<p>{{ title }}</p>"


def deep(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


def deep_text(levels: int) -> str:
    """``deep(levels)`` as JSON text, built without recursion (the client's
    own encoder gives up near 1,000 levels too)."""
    text = "1"
    for i in range(levels):
        text = f"[{text}]" if i % 2 else f'{{"k": {text}}}'
    return text


def with_deep(body: dict[str, Any], levels: int) -> str:
    """``body`` as JSON, with the string "DEEP" replaced by a deep value."""
    return json.dumps(body).replace('"DEEP"', deep_text(levels))


async def post_raw(live: Live, path: str, text: str, key: str | None = None,
                   method: str = "POST") -> tuple[int, dict[str, Any]]:
    """Send ``text`` as is, so it can carry escapes that json.dumps would not.
    (A path of one template, without a sub-resource, is an update: PUT.)"""
    if path.count("/") == 3 and path.startswith("/v1/templates/"):
        method = "PUT"
    async with live.http.request(method, f"{live.url}{path}", data=text.encode(),
                                 headers={**live.auth(key), "Content-Type": "application/json"}
                                 ) as r:
        body: dict[str, Any] = await r.json(content_type=None)
        return r.status, body


async def template_ids(live: Live, key: str | None = None) -> list[str]:
    async with live.http.get(f"{live.url}/v1/templates?pageSize=100",
                             headers=live.auth(key)) as r:
        assert r.status == 200, await r.text()
        return [t["id"] for t in (await r.json())["templates"]]


def assert_names(problem: dict[str, Any], field_prefix: str, *words: str) -> None:
    assert problem["status"] == 422, problem
    fields = [e["field"] for e in problem.get("errors", [])]
    assert any(f.startswith(field_prefix) for f in fields), (field_prefix, problem)
    text = json.dumps(problem)
    for word in words:
        assert word in text, (word, problem)


# ------------------------------------------------------------ class 3: depth


async def test_deeply_nested_json_is_422_naming_the_field_and_nothing_is_stored(
        live: Live) -> None:
    key = await live.stack.create_key("deep-tenant")
    before = await template_ids(live, key)
    spec = {"name": "d", "html": HTML, "width": 10, "height": 10}
    cases: list[tuple[str, str, str]] = [
        ("/v1/templates", with_deep({**spec, "sampleVariables": {"a": "DEEP"}}, 973),
         "/sampleVariables/a"),
        ("/v1/templates", with_deep({**spec, "sampleVariables": {"a": "DEEP"}}, 40),
         "/sampleVariables/a"),
        ("/v1/templates", with_deep({**spec, "variables": [
            {"name": "x", "type": "object", "defaultValue": "DEEP"}]}, 200),
         "/variables/0/defaultValue"),
        ("/v1/templates", with_deep({**spec, "variables": "DEEP"}, 5000), "/variables"),
    ]
    for path, text, field in cases:
        status, problem = await post_raw(live, path, text, key)
        assert status == 422, (field, problem)
        assert_names(problem, field, "LITHO_GATEWAY_JSON_MAX_DEPTH", "32 levels")
    assert await template_ids(live, key) == before

    template = await create(live, html=HTML)
    for text, field in [(with_deep({"variables": {"title": "DEEP"}}, 973), "/variables/title"),
                        (with_deep({"variables": {"title": "x", "o": "DEEP"}}, 33),
                         "/variables/o")]:
        status, problem = await post_raw(live, f"/v1/templates/{template['id']}/render", text)
        assert_names(problem, field, "LITHO_GATEWAY_JSON_MAX_DEPTH")
    status, problem = await post_raw(live, f"/v1/templates/{template['id']}",
                                     with_deep({"sampleVariables": "DEEP"}, 99))
    assert status == 422 and problem["errors"][0]["field"].startswith("/sampleVariables")
    status, problem = await post_raw(live, "/v1/expressions/test", with_deep(
        {"expression": "a", "variables": {"a": "DEEP"}}, 500))
    assert_names(problem, "/variables/a", "LITHO_GATEWAY_JSON_MAX_DEPTH")
    # Within the limit is fine, and the template still reads back.
    ok = await create(live, html=HTML, sampleVariables={"a": deep(30)})
    async with live.http.get(f"{live.url}/v1/templates/{ok['id']}", headers=live.auth()) as r:
        assert r.status == 200 and (await r.json())["sampleVariables"] == {"a": deep(30)}
    async with live.http.get(f"{live.url}/v1/templates/{template['id']}/versions",
                             headers=live.auth()) as r:
        assert r.status == 200 and len((await r.json())["versions"]) == 1
    async with live.http.delete(f"{live.url}/v1/templates/{ok['id']}",
                                headers=live.auth()) as r:
        assert r.status == 204


# -------------------------------------------------------- class 4: Unicode


async def test_lone_surrogates_are_422_naming_the_field(live: Live) -> None:
    key = await live.stack.create_key("surrogate-tenant")
    before = await template_ids(live, key)
    template = await create(live, html=HTML)
    tid = template["id"]
    cases = [
        ("/v1/templates", '{"name": "n", "html": "<p>\\ud800</p>", "width": 9, "height": 9}',
         "/html"),
        ("/v1/templates", '{"name": "n\\udfff", "html": "<p/>", "width": 9, "height": 9}',
         "/name"),
        ("/v1/templates", '{"name": "n", "html": "<p/>", "width": 9, "height": 9, '
                          '"sampleVariables": {"k\\ud83d": 1}}', "/sampleVariables/k"),
        ("/v1/templates", '{"name": "n", "html": "<p/>", "width": 9, "height": 9, '
                          '"variables": [{"name": "x", "type": "text", '
                          '"defaultValue": "\\udc00"}]}', "/variables/0/defaultValue"),
        (f"/v1/templates/{tid}", '{"html": "\\ud800{{ title }}"}', "/html"),
        (f"/v1/templates/{tid}/render", '{"variables": {"title": "a\\ud800b"}}',
         "/variables/title"),
        (f"/v1/templates/{tid}/render", '{"variables": {"t\\ud800": "x"}}', "/variables/t"),
        (f"/template/{tid}/render", '{"variables": {"title": ["\\udbff"]}}',
         "/variables/title/0"),
        (f"/v1/templates/{tid}/pdf", '{"variableSets": [{"title": "\\ud800"}]}',
         "/variableSets/0/title"),
        ("/v1/expressions/test", '{"expression": "\\ud800 + 1"}', "/expression"),
        ("/v1/expressions/test", '{"expression": "a", "variables": {"a": "\\ud800"}}',
         "/variables/a"),
        ("/v1/expressions/validate", '{"expression": "x\\ud800"}', "/expression"),
        ("/v1/expressions/validate", '{"template": "{{ \\udfff }}"}', "/template"),
        ("/v1/signed-urls", '{"templateId": "' + tid + '", "variables": {"title": "\\ud800"}}',
         "/variables/title"),
    ]
    for path, text, field in cases:
        status, problem = await post_raw(live, path, text, key if path == "/v1/templates"
                                         else None)
        assert status == 422, (path, text, problem)
        assert_names(problem, field, "not valid Unicode")
    assert await template_ids(live, key) == before
    async with live.http.get(f"{live.url}/v1/templates/{tid}", headers=live.auth()) as r:
        assert (await r.json())["version"] == 1  # the refused update stored nothing


async def test_urls_that_are_not_valid_utf8_are_422(live: Live) -> None:
    template = await create(live, html=HTML)
    async with live.http.post(f"{live.url}/v1/signed-urls", headers=live.auth(),
                              json={"templateId": template["id"],
                                    "variables": {"title": "ok"}}) as r:
        url = (await r.json())["url"]
    parts = urlsplit(url)
    query = "&".join(f"{k}={v}" for k, v in parse_qsl(parts.query) if k != "title")
    for bad in (f"{parts.path}?title=%ED%A0%80&{query}",
                f"{parts.path}?ti%ED%B0%80tle=x&{query}",
                f"{parts.path}?title=%FF&{query}",
                "/r/tpl_%ED%A0%80.png?sig=" + "0" * 64):
        async with live.http.get(live.url + bad, allow_redirects=False) as r:
            assert r.status == 422, (bad, await r.text())
            assert "not valid UTF-8" in (await r.json())["detail"]
    async with live.http.get(f"{live.url}/v1/templates?pageToken=%ED%A0%80",
                             headers=live.auth()) as r:
        assert r.status == 422
        assert (await r.json())["errors"][0]["field"] == "pageToken"
    async with live.http.get(url) as r:
        assert r.status == 200  # the untouched URL still renders


# ------------------------------------------------------ class 6: big numbers


async def test_huge_numbers_are_422_not_429(live: Live) -> None:
    template = await create(live, html="<p>{{ x * 2 }}</p>")
    for literal in ("9" * 4000, "9" * 5000, "1" + "0" * 40, "1e400", "-" + "7" * 100):
        text = '{"variables": {"x": ' + literal + "}}"
        status, problem = await post_raw(live, f"/v1/templates/{template['id']}/render", text)
        assert status == 422, (literal[:10], problem)
        assert_names(problem, "/variables/x", "LITHO_GATEWAY_JSON_MAX_NUMBER_CHARS")
        assert len(json.dumps(problem)) < 2000  # the number is not repeated
        status, problem = await post_raw(
            live, "/v1/expressions/test",
            '{"expression": "x * 2", "variables": {"x": ' + literal + "}}")
        assert status == 422, problem
    # What fits the limit still renders.
    status, result = await post_raw(live, f"/v1/templates/{template['id']}/render",
                                    '{"variables": {"x": 123456789012345678}}')
    assert status == 200, result


async def test_an_error_too_large_for_grpc_metadata_stays_a_clipped_422(live: Live) -> None:
    # Hundreds of syntax errors, each quoting a long token: the template
    # service's refusal is larger than gRPC's 8 KiB metadata limit.
    html = "".join(f"<p>{{{{ {'a' * 300}{i} + }}}}</p>" for i in range(300))
    status, problem = await post_raw(live, "/v1/templates", json.dumps(
        {"name": "broken", "html": html, "width": 10, "height": 10}))
    assert status == 422, problem
    assert problem["errors"] and len(problem["errors"]) <= 20
    assert all(len(e["message"]) <= 300 for e in problem["errors"])
    assert len(problem["detail"]) <= 500 and "more problems" in problem["detail"]
    assert all(e["field"] == "html" for e in problem["errors"])


# ------------------------------------- listings over gRPC's message limit


async def _walk(live: Live, path: str, items: str, key: str) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    token = ""
    for _ in range(20):
        query = f"?pageToken={token}" if token else ""
        async with live.http.get(f"{live.url}{path}{query}", headers=live.auth(key)) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        pages.append(body[items])
        token = body["nextPageToken"] or ""
        if not token:
            return pages
    raise AssertionError("the listing never ended")


async def test_nine_templates_at_the_html_limit_are_listed_a_page_at_a_time(
        live: Live) -> None:
    """Nine templates (or nine versions of one) with html near its 512 KiB
    limit are ~4.6 MiB: one page at the default size used to exceed gRPC's
    4 MiB message limit, and the listing was a 500 for good."""
    key = await live.stack.create_key("large-listing-tenant")
    html = "<p>{{ title }}</p>" + "x" * (510 * 1024)
    ids = []
    for i in range(9):
        async with live.http.post(f"{live.url}/v1/templates", headers=live.auth(key), json={
                "name": f"big{i}", "html": html, "width": 10, "height": 10}) as r:
            assert r.status == 201, await r.text()
            ids.append((await r.json())["id"])
    pages = await _walk(live, "/v1/templates", "templates", key)
    assert len(pages) > 1
    assert sorted(t["id"] for page in pages for t in page) == sorted(ids)
    assert all(t["html"] == html for page in pages for t in page)

    for version in range(2, 10):
        async with live.http.put(f"{live.url}/v1/templates/{ids[0]}", headers=live.auth(key),
                                 json={"html": html + str(version)}) as r:
            assert r.status == 200, await r.text()
    pages = await _walk(live, f"/v1/templates/{ids[0]}/versions", "versions", key)
    assert len(pages) > 1
    assert [v["version"] for page in pages for v in page] == list(range(9, 0, -1))
    async with live.http.get(f"{live.url}/v1/templates/{ids[0]}", headers=live.auth(key)) as r:
        assert r.status == 200 and (await r.json())["html"] == html + "9"


# ----------------------------------- JSON that MongoDB could not store


async def test_integers_past_int64_and_nul_in_keys_are_422(live: Live) -> None:
    """Within the 32-character number limit, but not storable in MongoDB
    (int64; keys are C strings): refused at the edge, naming the field."""
    key = await live.stack.create_key("bson-tenant")
    before = await template_ids(live, key)
    spec = '"name": "n", "html": "<p>{{ title }}</p>", "width": 9, "height": 9'
    cases = [
        ('{' + spec + ', "sampleVariables": {"n": 9223372036854775808}}',
         "/sampleVariables/n", "64-bit"),
        ('{' + spec + ', "sampleVariables": {"n": [-9223372036854775809]}}',
         "/sampleVariables/n/0", "64-bit"),
        ('{' + spec + ', "variables": [{"name": "t", "type": "text", '
                      '"validation": {"minLength": 99999999999999999999}}]}',
         "/variables/0/validation/minLength", "64-bit"),
        ('{' + spec + ', "variables": [{"name": "t", "type": "number", '
                      '"validation": {"enum": [1, 18446744073709551616]}}]}',
         "/variables/0/validation/enum/1", "64-bit"),
        ('{' + spec + ', "variables": [{"name": "t", "type": "number", '
                      '"defaultValue": 9223372036854775808}]}',
         "/variables/0/defaultValue", "64-bit"),
        ('{' + spec + ', "sampleVariables": {"a\\u0000b": 1}}',
         "/sampleVariables/a\\u0000b", "NUL"),
        ('{' + spec + ', "sampleVariables": {"o": [{"\\u0000": 1}]}}',
         "/sampleVariables/o/0/\\u0000", "NUL"),
    ]
    for text, field, word in cases:
        status, problem = await post_raw(live, "/v1/templates", text, key)
        assert status == 422, (text, problem)
        assert_names(problem, field, word)
    assert await template_ids(live, key) == before
    # The limits themselves are fine, and read back exactly.
    status, created = await post_raw(live, "/v1/templates", '{' + spec + (
        ', "sampleVariables": {"max": 9223372036854775807, "min": -9223372036854775808, '
        '"nul": "a\\u0000b"}}'), key)
    assert status == 201, created
    assert created["sampleVariables"] == {"max": 2**63 - 1, "min": -(2**63), "nul": "a\x00b"}


# --------------------------------- headers that are not UTF-8 (no key needed)


async def test_an_authorization_header_that_is_not_utf8_is_401(live: Live) -> None:
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    for value in (b"Bearer lk_\xff", b"Bearer lk_\xed\xa0\x80", b"Bearer \xff"):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /v1/templates HTTP/1.1\r\nHost: litho\r\nAuthorization: "
                         + value + b"\r\nConnection: close\r\n\r\n")
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), timeout=30)
        finally:
            writer.close()
        assert response.startswith(b"HTTP/1.1 401 "), response[:200]
        assert b"invalid API key" in response
