"""The end-to-end suite's two modes, chosen by ``LITHO_TEST_MODE``.

``embedded`` (the default) runs the stack as ``make run`` does: SQLite files
and a blob directory under the data dir, one process of each service.
``production`` runs it as the Helm chart does: the MongoDB adapter (on
nx-27017), the S3 adapter (on SeaweedFS), two renderer replicas and two
gateway replicas, every service its own process, internal gRPC under mutual
TLS and a token (one certificate for every service, as the chart's Secret).
:class:`Production` holds the two servers for the session; each stack gets
a fresh database and a fresh key prefix from :meth:`Production.env`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import AsyncMongoClient

from litho.blobstore import open_blob_store
from litho.blobstore._s3 import S3BlobStore
from litho.config import S3Settings
from tests.support.nx27017 import Nx27017, start_nx27017
from tests.support.pki import internal_grpc_env
from tests.support.seaweed import SeaweedS3, start_seaweed

MODE_ENV = "LITHO_TEST_MODE"
EMBEDDED, PRODUCTION = "embedded", "production"
#: The bucket of the stacks' blobs (each stack under its own prefix).
BUCKET = "litho-e2e"


def current_mode() -> str:
    mode = os.environ.get(MODE_ENV, "") or EMBEDDED
    if mode not in (EMBEDDED, PRODUCTION):
        raise ValueError(f"{MODE_ENV} must be {EMBEDDED} or {PRODUCTION}, got {mode!r}")
    return mode


@dataclass
class Production:
    """nx-27017 and SeaweedFS for the session; see :func:`start_production`."""

    mongo: Nx27017
    s3: SeaweedS3
    #: ``LITHO_GRPC_*``: TLS, mutual TLS and the token (tests.support.pki).
    grpc_env: dict[str, str] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)

    def s3_settings(self) -> S3Settings:
        return S3Settings(endpoint_url=self.s3.endpoint_url, region="us-east-1",
                          access_key_id=self.s3.access_key,
                          secret_access_key=self.s3.secret_key, path_style=True)

    def env(self, name: str) -> dict[str, str]:
        """The settings of one stack: its own database and key prefix, two
        renderers and two gateways. ``name`` only makes them easy to find."""
        tag = f"{name}_{uuid.uuid4().hex[:10]}"
        self.databases.append(f"litho_e2e_{tag}")
        s3 = self.s3_settings()
        return {
            "LITHO_DOCSTORE_URL": self.mongo.url,
            "LITHO_DOCSTORE_DATABASE": self.databases[-1],
            "LITHO_BLOBSTORE_URL": f"s3://{BUCKET}/{tag}",
            "LITHO_S3_ENDPOINT_URL": str(s3.endpoint_url),
            "LITHO_S3_REGION": s3.region,
            "LITHO_S3_ACCESS_KEY_ID": str(s3.access_key_id),
            "LITHO_S3_SECRET_ACCESS_KEY": str(s3.secret_access_key),
            "LITHO_S3_PATH_STYLE": "true",
            "LITHO_RENDERER_REPLICAS": "2",
            "LITHO_GATEWAY_REPLICAS": "2",
            # The limiter admits a request whose counter store answers late
            # (fail open); on a loaded test machine nx-27017 can take longer
            # than the default 0.5 s, and tests of the limits would see it.
            "LITHO_GATEWAY_RATE_LIMIT_STORE_TIMEOUT": "10",
            **self.grpc_env,
        }

    async def ensure_bucket(self) -> None:
        store = await open_blob_store(f"s3://{BUCKET}", self.s3_settings())
        try:
            assert isinstance(store, S3BlobStore)
            await store.ensure_bucket()
        finally:
            await store.close()

    async def drop_databases(self) -> None:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            self.mongo.url, serverSelectionTimeoutMS=5000)
        try:
            for database in self.databases:
                await client.drop_database(database)
        finally:
            await client.close()

    def stop(self) -> None:
        try:
            self.s3.stop()
        finally:
            self.mongo.stop()


def start_production(workdir: Path) -> Production:
    """Start nx-27017 and SeaweedFS under ``workdir`` (blocking: a few seconds)."""
    mongo = start_nx27017(workdir / "nx27017")
    try:
        return Production(mongo, start_seaweed(workdir / "seaweed"),
                          grpc_env=internal_grpc_env(workdir / "pki"))
    except BaseException:
        mongo.stop()
        raise
