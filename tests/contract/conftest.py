"""Fixtures for the contract suites: each port's suite runs against every adapter."""

from __future__ import annotations

# ---------------------------------------------------------------------------
# Blob-store fixtures (tests/contract/test_blobstore_contract.py).
# `blob_store` is parametrized over [local, s3]; the S3 side starts one real
# SeaweedFS server per session, only when an s3 test is selected.
# ---------------------------------------------------------------------------
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from litho.blobstore import BlobStore, open_blob_store
from litho.blobstore._s3 import S3BlobStore
from litho.config import S3Settings
from tests.support.seaweed import TEST_BUCKET, SeaweedS3, start_seaweed


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_s3_settings(seaweed: SeaweedS3) -> S3Settings:
    return S3Settings(
        endpoint_url=seaweed.endpoint_url,
        region="us-east-1",
        access_key_id=seaweed.access_key,
        secret_access_key=seaweed.secret_key,
        path_style=True,
    )


@pytest.fixture(params=["local", "s3"])
def blob_store_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, S3Settings]:
    """A fresh store location per test: a new directory, or a new key prefix."""
    if request.param == "local":
        return (tmp_path / "blobs").as_uri(), S3Settings(endpoint_url=None)
    settings: S3Settings = request.getfixturevalue("seaweed_s3_settings")
    return f"s3://{TEST_BUCKET}/t-{uuid.uuid4().hex}", settings


@pytest_asyncio.fixture(loop_scope="session")
async def blob_store(blob_store_target: tuple[str, S3Settings]) -> AsyncIterator[BlobStore]:
    url, settings = blob_store_target
    store = await open_blob_store(url, settings)
    try:
        if isinstance(store, S3BlobStore):
            await store.ensure_bucket()  # idempotent; cheap after the first test
        yield store
    finally:
        await store.close()


# --------------------------- end of blob-store fixtures ---------------------


# ---------------------------------------------------------------------------
# Document-store fixtures (tests/contract/test_docstore_contract.py).
# `docstore` runs each test against SQLite in a tmp dir; against the MongoDB
# adapter on one nx-27017 server per session (started only when an nx27017
# test is selected); and against real MongoDB when LITHO_MONGODB_URI is set.
# Each test gets a fresh database (a new file, or a new name dropped after).
# ---------------------------------------------------------------------------
import os  # noqa: E402

from pymongo import AsyncMongoClient  # noqa: E402

from litho.docstore import DocumentStore, open_document_store  # noqa: E402
from tests.support.nx27017 import Nx27017, start_nx27017  # noqa: E402


@pytest.fixture(scope="session")
def nx27017(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nx27017]:
    server = start_nx27017(tmp_path_factory.mktemp("nx27017"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "nx27017", "mongodb"])
def docstore_backend(request: pytest.FixtureRequest) -> str:
    """Which adapter and server ``docstore`` uses; tests read it to mark
    nx-27017's known deviations from MongoDB."""
    backend: str = request.param
    if backend == "mongodb" and not os.environ.get("LITHO_MONGODB_URI"):
        pytest.skip("LITHO_MONGODB_URI is not set; set it to a MongoDB URI to run against MongoDB")
    return backend


@pytest_asyncio.fixture(loop_scope="session")
async def docstore_target(
    docstore_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """``(url, database)`` of a fresh, empty store, dropped afterwards."""
    if docstore_backend == "sqlite":
        yield f"sqlite://{tmp_path / 'docs.db'}", "unused"
        return
    if docstore_backend == "nx27017":
        server: Nx27017 = request.getfixturevalue("nx27017")
        url = server.url
    else:
        url = os.environ["LITHO_MONGODB_URI"]
    database = f"litho_contract_{uuid.uuid4().hex[:16]}"
    try:
        yield url, database
    finally:
        admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            url, serverSelectionTimeoutMS=5000
        )
        try:
            await admin.drop_database(database)
        finally:
            await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def docstore(docstore_target: tuple[str, str]) -> AsyncIterator[DocumentStore]:
    store = await open_document_store(*docstore_target)
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture(loop_scope="session")
async def docstore_peers(
    docstore: DocumentStore, docstore_target: tuple[str, str]
) -> AsyncIterator[list[DocumentStore]]:
    """``docstore`` and three more stores on the same data, each with its own
    connection (own SQLite connection to the file, own MongoDB client), as
    separate processes would have: concurrency tests contend across them."""
    peers = [docstore]
    try:
        for _ in range(3):
            peers.append(await open_document_store(*docstore_target))
        yield peers
    finally:
        for peer in peers[1:]:
            await peer.close()


# --------------------------- end of document-store fixtures -----------------
