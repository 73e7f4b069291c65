"""Production mode is what it says (``LITHO_TEST_MODE=production``): documents
in MongoDB, images in S3, nothing on the local disk, two gateways behind the
balancer taking turns, two renderers. Skipped in embedded mode."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from litho import renders
from litho.blobstore import open_blob_store
from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create, render
from tests.support.production import MODE_ENV, PRODUCTION, current_mode

pytestmark = [
    pytest.mark.production,
    pytest.mark.skipif(current_mode() != PRODUCTION, reason=f"{MODE_ENV} is not production"),
]


async def test_consecutive_requests_take_turns_on_the_two_gateways(live: Live) -> None:
    assert live.balancer is not None and len(live.stack.urls) == 2
    assert live.url == live.balancer.url and live.url not in live.stack.urls
    before = dict(live.balancer.served)
    for _ in range(2):
        async with live.http.get(f"{live.url}/v1/templates", headers=live.auth()) as r:
            assert r.status == 200, await r.text()
    assert {url: live.balancer.served[url] - before.get(url, 0)
            for url in live.stack.urls} == dict.fromkeys(live.stack.urls, 1)


async def test_what_one_gateway_writes_the_other_reads(live: Live) -> None:
    first, second = live.stack.urls
    async with live.http.post(f"{first}/v1/templates", headers=live.auth(), json={
            "name": "across", "html": "<p>{{ x }}</p>", "width": 40, "height": 20}) as r:
        assert r.status == 201, await r.text()
        template: dict[str, Any] = await r.json()
    async with live.http.get(f"{second}/v1/templates/{template['id']}",
                             headers=live.auth()) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["name"] == "across"
    # Image URLs name the balancer (LITHO_PUBLIC_URL), as a Service's address.
    async with live.http.post(f"{second}/v1/templates/{template['id']}/render",
                              headers=live.auth(), json={"variables": {"x": 1}}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["url"].startswith(live.url + "/")


async def test_documents_live_in_mongodb_and_images_in_s3(live: Live) -> None:
    assert live.production is not None
    env = live.stack.env
    template = await create(live)
    result = await render(live, template["id"], {"variables": {"title": "where"}})

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        env["LITHO_DOCSTORE_URL"], serverSelectionTimeoutMS=5000)
    try:
        database = client[env["LITHO_DOCSTORE_DATABASE"]]
        assert await database["templates"].find_one({"_id": template["id"]}) is not None
    finally:
        await client.close()

    store = await open_blob_store(env["LITHO_BLOBSTORE_URL"], live.production.s3_settings())
    try:
        assert await store.head(renders.blob_key(result["id"], "png")) is not None
    finally:
        await store.close()
    # Nothing of the embedded defaults: no SQLite files, no blob directory.
    assert not list(live.stack.data_dir.glob("*.db")) + list(live.stack.data_dir.glob("blobs"))


def test_every_service_is_its_own_process_with_two_renderers(live: Live) -> None:
    names = live.stack.names
    assert {"renderer", "renderer-2", "gateway", "gateway-2"} <= set(names)
    assert len({live.stack.pid(name) for name in names}) == len(names)
