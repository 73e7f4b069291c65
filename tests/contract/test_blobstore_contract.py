"""The blob-store contract: every test taking ``blob_store`` runs against the
local-directory adapter and against S3 (a real SeaweedFS server)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from pathlib import Path

import pytest

from litho.blobstore import (
    MAX_KEY_LENGTH,
    Blob,
    BlobInfo,
    BlobStore,
    open_blob_store,
)
from litho.blobstore._local import LocalBlobStore
from litho.blobstore._s3 import S3BlobStore
from litho.config import S3Settings
from litho.errors import ConfigError, FailedPrecondition, Unavailable
from tests.support.seaweed import TEST_BUCKET

ETAG_RE = re.compile(r'"[0-9a-f]{16,64}"')
MIB = 1024 * 1024

BAD_KEYS = [
    "",
    "../x",
    "a/../../x",
    "a/./b",
    "./a",
    "/abs",
    "a//b",
    "a/",
    ".hidden",
    "a\\b",
    "a b",
    "a\x00b",
    "ümlaut",
    "x" * (MAX_KEY_LENGTH + 1),
    "/".join(["abcdefgh"] * 64),  # 575 characters of valid segments
]


def _files(root: Path) -> list[str]:
    """Every regular file under ``root``, relative and sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)) * 4, os.urandom(MIB + 123)],
    ids=["empty", "all-bytes", "1MiB+"],
)
async def test_put_get_round_trips_binary_data(blob_store: BlobStore, data: bytes) -> None:
    key = "renders/ab/abcdef.png"

    put = await blob_store.put(key, data, "image/png")
    got = await blob_store.get(key)

    assert put == BlobInfo(key=key, size=len(data), content_type="image/png", etag=put.etag)
    assert ETAG_RE.fullmatch(put.etag), put.etag
    assert got == Blob(info=put, data=data)


@pytest.mark.parametrize(
    "content_type",
    ["image/png", "image/svg+xml", "text/html; charset=utf-8", "application/octet-stream"],
)
async def test_content_type_round_trips(blob_store: BlobStore, content_type: str) -> None:
    await blob_store.put("a/b.bin", b"payload", content_type)

    head = await blob_store.head("a/b.bin")
    got = await blob_store.get("a/b.bin")

    assert head is not None and head.content_type == content_type
    assert got is not None and got.info.content_type == content_type


async def test_head_returns_metadata_without_data(blob_store: BlobStore) -> None:
    data = os.urandom(4096)
    put = await blob_store.put("heads/one.webp", data, "image/webp")

    head = await blob_store.head("heads/one.webp")

    assert isinstance(head, BlobInfo)
    assert head == put
    assert (head.key, head.size, head.content_type) == ("heads/one.webp", 4096, "image/webp")


async def test_etag_is_equal_for_equal_bytes_and_differs_otherwise(blob_store: BlobStore) -> None:
    a = await blob_store.put("e/a.png", b"same bytes", "image/png")
    b = await blob_store.put("e/b.jpg", b"same bytes", "image/jpeg")
    c = await blob_store.put("e/c.png", b"other bytes", "image/png")
    again = await blob_store.put("e/a.png", b"same bytes", "image/png")

    assert a.etag == b.etag == again.etag
    assert c.etag != a.etag
    assert (await blob_store.head("e/b.jpg")) == b


async def test_missing_key_is_none(blob_store: BlobStore) -> None:
    assert await blob_store.get("missing/key.png") is None
    assert await blob_store.head("missing/key.png") is None


async def test_delete_reports_whether_a_blob_was_removed(blob_store: BlobStore) -> None:
    await blob_store.put("d/x.png", b"x", "image/png")
    await blob_store.put("d/y.png", b"y", "image/png")

    assert await blob_store.delete("d/x.png") is True
    assert await blob_store.get("d/x.png") is None
    assert await blob_store.head("d/x.png") is None
    assert await blob_store.delete("d/x.png") is False
    assert await blob_store.delete("never/was.png") is False
    # Its neighbour is untouched.
    neighbour = await blob_store.get("d/y.png")
    assert neighbour is not None and neighbour.data == b"y"


async def test_put_over_an_existing_key_replaces_it(blob_store: BlobStore) -> None:
    first = await blob_store.put("o/k.bin", b"first version, longer", "image/png")
    second = await blob_store.put("o/k.bin", b"second", "text/plain")

    got = await blob_store.get("o/k.bin")

    assert second.etag != first.etag
    assert got == Blob(
        info=BlobInfo(key="o/k.bin", size=6, content_type="text/plain", etag=second.etag),
        data=b"second",
    )
    assert await blob_store.head("o/k.bin") == got.info


@pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
async def test_bad_keys_raise_value_error(blob_store: BlobStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await blob_store.put(key, b"x", "image/png")
    with pytest.raises(ValueError):
        await blob_store.get(key)
    with pytest.raises(ValueError):
        await blob_store.head(key)
    with pytest.raises(ValueError):
        await blob_store.delete(key)
    # Nothing escaped the local store's directory (tmp_path/blobs).
    assert await asyncio.to_thread(_files, tmp_path) == []


@pytest.mark.parametrize("content_type", ["", "png", "text/plain\r\nX-Injected: 1", "a/b" * 100])
async def test_bad_content_type_raises_value_error(
    blob_store: BlobStore, content_type: str
) -> None:
    with pytest.raises(ValueError):
        await blob_store.put("ct/x.png", b"x", content_type)
    assert await blob_store.head("ct/x.png") is None


async def test_concurrent_puts_of_different_keys(blob_store: BlobStore) -> None:
    blobs = {f"c/{i:02d}/{uuid.uuid4().hex}.bin": os.urandom(1000 + i) for i in range(24)}

    infos = await asyncio.gather(*(blob_store.put(k, v, "image/png") for k, v in blobs.items()))
    got = await asyncio.gather(*(blob_store.get(k) for k in blobs))

    assert [i.key for i in infos] == list(blobs)
    assert [g.data if g else None for g in got] == list(blobs.values())
    assert [g.info if g else None for g in got] == infos


async def test_concurrent_puts_of_one_key_leave_one_whole_blob(blob_store: BlobStore) -> None:
    versions = [bytes([i]) * (10_000 + i) for i in range(12)]

    infos = await asyncio.gather(*(blob_store.put("race/k.bin", v, "image/png") for v in versions))
    got = await blob_store.get("race/k.bin")

    assert got is not None
    winner = versions.index(got.data)
    assert got.info == infos[winner]


async def test_ping_succeeds(blob_store: BlobStore) -> None:
    await blob_store.ping()


# --------------------------------------------------------------- open_blob_store


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://example.com/blobs",
        "file://relative/dir",
        "file:///tmp/x?fsync=0",
        "s3://",
        "s3://Upper_Case",
        "s3://ab",
        "s3://bucket/../escape",
        "s3://bucket/bad prefix",
    ],
)
async def test_open_rejects_unusable_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="LITHO_BLOBSTORE_URL"):
        await open_blob_store(url, S3Settings(endpoint_url=None))


async def test_open_picks_the_adapter_from_the_scheme(tmp_path: Path) -> None:
    local = await open_blob_store((tmp_path / "new" / "dir").as_uri(), S3Settings())
    s3 = await open_blob_store("s3://some-bucket/pre/fix", S3Settings(endpoint_url=None))
    try:
        assert isinstance(local, LocalBlobStore)
        assert local.root == (tmp_path / "new" / "dir").resolve()
        assert (tmp_path / "new" / "dir").is_dir()
        assert isinstance(s3, S3BlobStore)
    finally:
        await local.close()
        await s3.close()


# --------------------------------------------------------------- local only


async def test_local_layout_is_one_file_per_key_without_leftovers(tmp_path: Path) -> None:
    store = await LocalBlobStore.open(tmp_path)
    await store.put("renders/ab/abcdef.png", b"\x89PNG", "image/png")
    await store.put("renders/ab/abcdef.png", b"\x89PNG2", "image/png")

    files = await asyncio.to_thread(_files, tmp_path)
    raw = await asyncio.to_thread((tmp_path / "renders" / "ab" / "abcdef.png").read_bytes)

    assert files == ["renders/ab/abcdef.png"]
    assert raw.startswith(b"LITHOBLOB1 {") and raw.endswith(b"}\n\x89PNG2")


async def test_local_blobs_survive_reopening(tmp_path: Path) -> None:
    put = await (await LocalBlobStore.open(tmp_path, fsync=False)).put("k/v", b"v", "text/css")

    reopened = await LocalBlobStore.open(tmp_path)

    assert await reopened.head("k/v") == put


async def test_local_key_cannot_be_both_blob_and_directory(tmp_path: Path) -> None:
    store = await LocalBlobStore.open(tmp_path)
    await store.put("a/b", b"x", "image/png")

    with pytest.raises(FailedPrecondition):
        await store.put("a", b"x", "image/png")
    with pytest.raises(FailedPrecondition):
        await store.put("a/b/c", b"x", "image/png")
    assert await store.get("a") is None
    assert await store.head("a/b/c") is None
    assert await store.delete("a") is False
    assert await store.delete("a/b/c") is False


async def test_local_ping_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = await LocalBlobStore.open(tmp_path / "gone")
    (tmp_path / "gone").rmdir()

    with pytest.raises(Unavailable):
        await store.ping()


# --------------------------------------------------------------- S3 only


async def test_s3_wrong_secret_is_rejected_not_silently_accepted(
    seaweed_s3_settings: S3Settings,
) -> None:
    good = await S3BlobStore.open(seaweed_s3_settings, bucket=TEST_BUCKET, prefix="auth")
    bad_settings = seaweed_s3_settings.model_copy(update={"secret_access_key": "not-the-secret"})
    bad = await S3BlobStore.open(bad_settings, bucket=TEST_BUCKET, prefix="auth")
    key = f"k/{uuid.uuid4().hex}.png"
    try:
        await good.ensure_bucket()
        with pytest.raises(Unavailable, match="rejected our credentials"):
            await bad.put(key, b"x", "image/png")
        await good.put("k/existing.png", b"secret data", "image/png")
        with pytest.raises(Unavailable, match="rejected our credentials"):
            await bad.get("k/existing.png")
        with pytest.raises(Unavailable, match="rejected our credentials"):
            await bad.head("k/existing.png")
        with pytest.raises(Unavailable, match="rejected our credentials"):
            await bad.delete("k/existing.png")
        with pytest.raises(Unavailable, match="rejected our credentials"):
            await bad.ping()
        assert await good.head(key) is None
        assert await good.head("k/existing.png") is not None
    finally:
        await good.close()
        await bad.close()


async def test_s3_prefix_namespaces_keys(seaweed_s3_settings: S3Settings) -> None:
    prefix = f"p-{uuid.uuid4().hex}"
    inner = await open_blob_store(f"s3://{TEST_BUCKET}/{prefix}/", seaweed_s3_settings)
    outer = await open_blob_store(f"s3://{TEST_BUCKET}", seaweed_s3_settings)
    try:
        await inner.put("a/b.png", b"inside", "image/png")

        assert await outer.head("a/b.png") is None
        seen = await outer.get(f"{prefix}/a/b.png")
        assert seen is not None and seen.data == b"inside"
    finally:
        await inner.close()
        await outer.close()


async def test_s3_missing_bucket_is_unavailable(seaweed_s3_settings: S3Settings) -> None:
    store = await S3BlobStore.open(seaweed_s3_settings, bucket=f"missing-{uuid.uuid4().hex[:12]}")
    try:
        with pytest.raises(Unavailable, match="bucket does not exist"):
            await store.ping()
    finally:
        await store.close()


async def test_s3_unreachable_endpoint_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = S3Settings(
        endpoint_url=f"http://127.0.0.1:{port}", access_key_id="a", secret_access_key="b"
    )
    store = await S3BlobStore.open(settings, bucket="nowhere", connect_timeout=1, max_attempts=1)
    try:
        with pytest.raises(Unavailable, match="cannot reach S3"):
            await store.get("k")
        with pytest.raises(Unavailable, match="cannot reach S3"):
            await store.put("k", b"x", "image/png")
    finally:
        await store.close()
