"""``LITHO_IMAGE_BASE_URL``: image URLs in answers name the object in the
bucket (``<base>/<blob key>``) instead of the gateway's ``/images/``; a base
that cannot prefix such URLs is refused at start with the variable's name;
and the blob store keeps the caller's ``Cache-Control`` with an S3 object
(the one the gateway answers for ``/images/``), nothing for other blobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from litho import renders
from litho.blobstore import validate_cache_control
from litho.blobstore._local import LocalBlobStore
from litho.blobstore._s3 import S3BlobStore
from litho.config import load
from litho.errors import ConfigError
from litho.renderer.v1 import renderer_pb2 as pb
from services.gateway._formats import render_json
from services.gateway._image_urls import check_image_base_url, image_url
from services.gateway._settings import GatewaySettings
from services.gateway._state import Deps

RENDER_ID = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
GATEWAY = "http://127.0.0.1:8080"


def test_without_a_base_image_urls_are_the_gateways() -> None:
    assert image_url(GATEWAY, "", RENDER_ID, "png") == f"{GATEWAY}/images/{RENDER_ID}.png"


def test_with_a_base_an_image_url_is_the_base_and_the_blob_key() -> None:
    base = "https://cdn.example.com/litho"
    url = image_url(GATEWAY, base, RENDER_ID, "pdf")
    assert url == f"{base}/outputs/ab/{RENDER_ID}.pdf"
    assert url == f"{base}/{renders.blob_key(RENDER_ID, 'pdf')}"


def test_an_image_url_is_built_only_for_a_render_id() -> None:
    with pytest.raises(ValueError, match="not a render id"):
        image_url(GATEWAY, "https://cdn.example.com", "../../etc/passwd", "png")


def _deps(image_base_url: str) -> Deps:
    return Deps(keys=None, templates=None, renderer=None, webhooks=None,  # type: ignore[arg-type]
                blobs=None, openapi={}, validator=None,  # type: ignore[arg-type]
                base_url=GATEWAY, image_base_url=image_base_url)


@pytest.mark.parametrize(("base", "expected"), [
    ("", f"{GATEWAY}/images/{RENDER_ID}.png"),
    ("http://127.0.0.1:8333/litho-bucket/prefix",
     f"http://127.0.0.1:8333/litho-bucket/prefix/outputs/ab/{RENDER_ID}.png"),
])
def test_a_render_answer_carries_the_configured_url(base: str, expected: str) -> None:
    response = pb.RenderTemplateResponse(render_id=RENDER_ID, format=pb.IMAGE_FORMAT_PNG,
                                         width=10, height=10)
    assert render_json(response, _deps(base).image_url)["url"] == expected


@pytest.mark.parametrize(("value", "kept"), [
    ("", ""),
    ("https://cdn.example.com", "https://cdn.example.com"),
    ("https://cdn.example.com/litho/", "https://cdn.example.com/litho"),
    ("http://127.0.0.1:8333/litho-bucket/prefix", "http://127.0.0.1:8333/litho-bucket/prefix"),
    ("https://[2001:db8::1]:8443/b", "https://[2001:db8::1]:8443/b"),
])
def test_a_usable_base_is_taken_without_its_trailing_slash(
        value: str, kept: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITHO_IMAGE_BASE_URL", value)
    assert load(GatewaySettings).image_base_url == kept


@pytest.mark.parametrize(("value", "why"), [
    ("cdn.example.com/litho", "http:// or https://"),
    ("ftp://cdn.example.com/litho", "http:// or https://"),
    ("https:///litho", "with a host"),
    ("https://cdn.example.com/litho?v=1", "query string"),
    ("https://cdn.example.com/litho#top", "fragment"),
    ("https://user:secret@cdn.example.com/", "user name or password"),
    ("https://cdn.example.com:99999/", "invalid port"),
    ("https://cdn.example.com/a/../b", r"\.\. path segments"),
    ("https://cdn.example.com/a b", "without spaces"),
    ('https://cdn.example.com/"><script>', "without spaces"),
    ("https://cdn.example.com/\u00e9", "without spaces"),
    ("https://cdn.example.com/" + "a" * 1000, "at most 1000"),
])
def test_a_base_that_cannot_prefix_image_urls_is_refused_by_name(
        value: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITHO_IMAGE_BASE_URL", value)
    with pytest.raises(ConfigError, match=f"LITHO_IMAGE_BASE_URL: .*{why}"):
        load(GatewaySettings)
    with pytest.raises(ValueError, match=why):
        check_image_base_url(value)


class _Client:
    """An aiobotocore S3 client stand-in that records ``put_object``."""

    def __init__(self) -> None:
        self.puts: list[dict[str, Any]] = []

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.puts.append(kwargs)
        return {"ETag": '"e"'}


async def test_s3_stores_the_callers_cache_control_and_none_by_default() -> None:
    client = _Client()
    store = S3BlobStore(client, bucket="litho", prefix="p")
    await store.put("outputs/ab/x.png", b"img", "image/png",
                    cache_control=renders.IMMUTABLE_CACHE_CONTROL)
    await store.put("fonts/f.woff2", b"font", "font/woff2")
    image, font = client.puts
    assert image["Key"] == "p/outputs/ab/x.png"
    assert (image["ContentType"], image["CacheControl"]) == (
        "image/png", renders.IMMUTABLE_CACHE_CONTROL)
    assert font["ContentType"] == "font/woff2" and "CacheControl" not in font


@pytest.mark.parametrize("bad", ["public\r\nX-Evil: 1", " public", "max-age=1 ", "é", "a" * 256])
async def test_a_cache_control_that_is_not_a_header_is_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid Cache-Control"):
        validate_cache_control(bad)
    client = _Client()
    with pytest.raises(ValueError, match="invalid Cache-Control"):
        await S3BlobStore(client, bucket="litho").put("k", b"x", "image/png", cache_control=bad)
    assert client.puts == []
    local = await LocalBlobStore.open(tmp_path, fsync=False)
    with pytest.raises(ValueError, match="invalid Cache-Control"):
        await local.put("k", b"x", "image/png", cache_control=bad)


async def test_the_local_store_takes_a_cache_control_and_serves_the_bytes(tmp_path: Path) -> None:
    local = await LocalBlobStore.open(tmp_path, fsync=False)
    info = await local.put("outputs/ab/x.png", b"img", "image/png",
                           cache_control=renders.IMMUTABLE_CACHE_CONTROL)
    blob = await local.get("outputs/ab/x.png")
    assert blob is not None and blob.data == b"img" and blob.info == info
