"""Templates carry tags and are listed by name prefix and by tag."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create

pytestmark = pytest.mark.production


async def listed(live: Live, query: str, key: str | None = None) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        url = f"{live.url}/v1/templates?pageSize=2&{query}" + (f"&pageToken={token}" if token
                                                                else "")
        async with live.http.get(url, headers=live.auth(key)) as r:
            assert r.status == 200, await r.text()
            page: dict[str, Any] = await r.json()
        names += [t["name"] for t in page["templates"]]
        token = page["nextPageToken"] or ""
        if not token:
            return names


async def test_tags_and_name_prefixes_find_templates(live: Live) -> None:
    run = uuid.uuid4().hex[:8]
    made = [await create(live, name=f"{run}/og/{n}", tags=tags)
            for n, tags in (("blog", ["og", "blue"]), ("docs", ["og"]), ("x", ["social"]))]
    assert made[0]["tags"] == ["og", "blue"]
    # Pages are in id order (ids are time-ordered to the millisecond).
    by_id = [t["name"] for t in sorted(made, key=lambda t: t["id"])]
    assert await listed(live, f"namePrefix={run}/og/") == by_id
    assert await listed(live, f"namePrefix={run}/&tag=og") == [
        n for n in by_id if not n.endswith("/x")]
    assert await listed(live, f"namePrefix={run}/&tag=og", key=live.other_key) == []
    # An update without tags keeps them; [] clears them.
    async with live.http.put(f"{live.url}/v1/templates/{made[1]['id']}",
                             json={"name": f"{run}/og/docs"}, headers=live.auth()) as r:
        assert (await r.json())["tags"] == ["og"]
    async with live.http.put(f"{live.url}/v1/templates/{made[1]['id']}",
                             json={"tags": []}, headers=live.auth()) as r:
        assert (await r.json())["tags"] == []
    assert await listed(live, f"namePrefix={run}/&tag=og") == [f"{run}/og/blog"]


async def test_bad_tags_are_422_naming_the_field(live: Live) -> None:
    for tags, field in ((["x" * 51], "tags"), ([" lead"], "tags"), (["a", "a"], "tags"),
                        ([str(i) for i in range(21)], "tags")):
        async with live.http.post(f"{live.url}/v1/templates", headers=live.auth(), json={
                "name": "t", "html": "<p>x</p>", "width": 10, "height": 10, "tags": tags}) as r:
            assert r.status == 422, tags
            assert field in await r.text()
