"""Images from the bucket (``LITHO_IMAGE_BASE_URL``), in production mode.

A stack of its own (nx-27017 from the session, two gateways, two renderers)
keeps its images in a SeaweedFS whose bucket anyone may read, as a public
bucket or a CDN's origin is, and points image URLs at that bucket's public
endpoint. The URL an answer gives is then fetched from SeaweedFS itself,
with no key, and must be the gateway's ``/images/`` answer: the same bytes,
``Content-Type`` and immutable ``Cache-Control``. Skipped in embedded mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from litho import renders
from litho.blobstore import open_blob_store
from litho.blobstore._s3 import S3BlobStore
from litho.config import S3Settings
from services._stack import Stack
from tests.support.production import MODE_ENV, PRODUCTION, Production, current_mode
from tests.support.seaweed import start_seaweed

pytestmark = [
    pytest.mark.production,
    pytest.mark.skipif(current_mode() != PRODUCTION, reason=f"{MODE_ENV} is not production"),
]

#: Readable by anyone on this test's SeaweedFS (and only this bucket).
PUBLIC_BUCKET = "litho-public-images"
PREFIX = "stack"


@dataclass
class Cdn:
    stack: Stack
    http: aiohttp.ClientSession
    #: LITHO_IMAGE_BASE_URL as the gateways read it (no trailing slash).
    base: str
    s3_endpoint: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.stack.api_key}"}

    async def post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(url, json=body, headers=self.auth) as r:
            assert r.status in (200, 201), await r.text()
            answer: dict[str, Any] = await r.json()
            return answer


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cdn(tmp_path_factory: pytest.TempPathFactory,
              production: Production | None) -> AsyncIterator[Cdn]:
    assert production is not None
    s3 = await asyncio.to_thread(start_seaweed, tmp_path_factory.mktemp("seaweed-public"),
                                 public_read=(PUBLIC_BUCKET,))
    try:
        settings = S3Settings(endpoint_url=s3.endpoint_url, region="us-east-1",
                              access_key_id=s3.access_key, secret_access_key=s3.secret_key,
                              path_style=True)
        store = await open_blob_store(f"s3://{PUBLIC_BUCKET}", settings)
        try:
            assert isinstance(store, S3BlobStore)
            await store.ensure_bucket()
        finally:
            await store.close()
        base = f"{s3.endpoint_url}/{PUBLIC_BUCKET}/{PREFIX}"
        stack = Stack(data_dir=tmp_path_factory.mktemp("litho-cdn"), gateway_port=0,
                      log_to_files=True, env={
                          "LITHO_LOG_LEVEL": "INFO",
                          **production.env("cdn"),
                          # This test's SeaweedFS (same credentials), not the session's.
                          "LITHO_S3_ENDPOINT_URL": s3.endpoint_url,
                          "LITHO_BLOBSTORE_URL": f"s3://{PUBLIC_BUCKET}/{PREFIX}",
                          "LITHO_IMAGE_BASE_URL": base + "/",
                      })
        try:
            async with stack, aiohttp.ClientSession() as http:
                yield Cdn(stack, http, base, s3.endpoint_url)
        except BaseException:
            print(stack.log_tails())
            raise
        assert stack.unclean_exits() == {}
    finally:
        await asyncio.to_thread(s3.stop)


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[bytes, dict[str, str]]:
    async with http.get(url) as r:  # no key: both are public
        assert r.status == 200, (url, r.status, await r.text())
        return await r.read(), {"Content-Type": r.headers.get("Content-Type", ""),
                                "Cache-Control": r.headers.get("Cache-Control", "")}


@pytest.mark.parametrize(("fmt", "extension", "content_type"), [
    ("png", "png", "image/png"), ("pdf", "pdf", "application/pdf")])
async def test_the_bucket_serves_the_gateways_image_at_the_answers_url(
        cdn: Cdn, fmt: str, extension: str, content_type: str) -> None:
    # Each gateway replica builds the same URLs.
    for n, gateway in enumerate(cdn.stack.urls):
        template = await cdn.post(f"{gateway}/v1/templates", {
            "name": f"cdn {fmt} {n}", "html": "<h1>{{ title }}</h1>",
            "width": 120, "height": 60})
        result = await cdn.post(f"{gateway}/v1/templates/{template['id']}/render",
                                {"variables": {"title": f"from the bucket {n}"},
                                 "format": fmt})
        key = renders.blob_key(result["id"], extension)
        assert result["url"] == f"{cdn.base}/{key}"
        assert result["url"].startswith(f"{cdn.s3_endpoint}/{PUBLIC_BUCKET}/{PREFIX}/outputs/")

        from_bucket, bucket_headers = await _get(cdn.http, result["url"])
        from_gateway, gateway_headers = await _get(
            cdn.http, f"{gateway}/images/{result['id']}.{extension}")
        assert from_bucket == from_gateway and len(from_bucket) == result["size"]
        assert bucket_headers == gateway_headers == {
            "Content-Type": content_type, "Cache-Control": renders.IMMUTABLE_CACHE_CONTROL}


async def test_a_cached_render_answers_the_same_bucket_url(cdn: Cdn) -> None:
    template = await cdn.post(f"{cdn.stack.url}/v1/templates", {
        "name": "cdn again", "html": "<p>{{ n }}</p>", "width": 40, "height": 20})
    first, second = [await cdn.post(f"{url}/v1/templates/{template['id']}/render",
                                    {"variables": {"n": 7}}) for url in cdn.stack.urls]
    assert second["cached"] and second["url"] == first["url"]
    assert first["url"].startswith(cdn.base + "/outputs/")


async def test_the_bucket_lists_nothing_and_refuses_writes_without_a_key(cdn: Cdn) -> None:
    # What anyone may do with the public bucket is read an object they know.
    async with cdn.http.get(f"{cdn.s3_endpoint}/{PUBLIC_BUCKET}/") as r:
        assert r.status == 403
    async with cdn.http.put(f"{cdn.base}/outputs/ab/{'ab' * 32}.png", data=b"x") as r:
        assert r.status == 403
