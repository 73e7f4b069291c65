"""Typed settings read once from ``LITHO_*`` environment variables.

Each service declares a frozen ``Settings`` subclass of :class:`BaseServiceSettings`
and calls :func:`load` in its composition root. Invalid or missing values fail
at start-up with a message that names the variable to set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from litho.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


class S3Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LITHO_S3_", frozen=True, extra="ignore")

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    #: Path-style addressing is what most self-hosted S3 servers expect.
    path_style: bool = True


class OutboundSettings(BaseSettings):
    """Limits and the allow-list of the outbound HTTP guard (``LITHO_OUTBOUND_*``)."""

    model_config = SettingsConfigDict(env_prefix="LITHO_OUTBOUND_", frozen=True, extra="ignore")

    #: Comma-separated entries that bypass the private-address rules: an IP,
    #: a CIDR, or either with ``:port`` (``127.0.0.1:8081``, ``[::1]:9000``, ``10.0.0.0/8``).
    allow: str = ""
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    timeout: float = Field(default=10.0, gt=0, le=300)
    max_redirects: int = Field(default=5, ge=0, le=20)


#: What a gRPC token may hold: it travels in a header.
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")


class GrpcSettings(BaseSettings):
    """Transport security of every internal gRPC port (``LITHO_GRPC_*``): TLS,
    optionally mutual, and a shared bearer token. Every service reads the
    same variables; each is a server for its callers and a client of its
    callees. Off by default (the embedded stack listens on loopback)."""

    model_config = SettingsConfigDict(env_prefix="LITHO_GRPC_", frozen=True, extra="ignore")

    #: Serve and dial with TLS.
    tls: bool = False
    #: PEM files: this service's certificate chain and private key (what a
    #: server presents; what a client presents under mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: PEM file of the CA that signed the peers' certificates (clients check
    #: servers with it, servers check clients under mutual TLS); empty: the
    #: system's roots.
    tls_ca: Path | None = None
    #: Mutual TLS: servers require a client certificate signed by ``tls_ca``.
    tls_client_auth: bool = False
    #: The name clients expect in servers' certificates, when it is not the
    #: host of the target (one certificate for every internal service).
    tls_server_name: str = Field(default="", max_length=253)
    #: Shared bearer token every call must carry (``authorization`` metadata);
    #: health checks are exempt. At least 32 characters.
    token: SecretStr | None = Field(default=None, min_length=32, max_length=512)
    #: A token servers still accept while a new one is rolled out.
    previous_token: SecretStr | None = Field(default=None, min_length=32, max_length=512)
    #: Where a plaintext server answering only ``grpc.health.v1`` listens
    #: (``host:port``), for probes that cannot speak TLS (Kubernetes' native
    #: gRPC probes); empty: none.
    health_address: str = Field(default="", max_length=300)

    @model_validator(mode="after")
    def _complete(self) -> GrpcSettings:
        problems = []
        if self.tls and (self.tls_cert is None) != (self.tls_key is None):
            problems.append("LITHO_GRPC_TLS_CERT and LITHO_GRPC_TLS_KEY go together")
        if self.tls_client_auth:
            if not self.tls:
                problems.append("LITHO_GRPC_TLS_CLIENT_AUTH needs LITHO_GRPC_TLS=true")
            if self.tls_ca is None or self.tls_cert is None:
                problems.append("LITHO_GRPC_TLS_CLIENT_AUTH needs LITHO_GRPC_TLS_CA, "
                                "LITHO_GRPC_TLS_CERT and LITHO_GRPC_TLS_KEY")
        if self.previous_token is not None and self.token is None:
            problems.append("LITHO_GRPC_PREVIOUS_TOKEN needs LITHO_GRPC_TOKEN")
        if not self.tls:
            given = [name for name, value in (
                ("LITHO_GRPC_TLS_CERT", self.tls_cert), ("LITHO_GRPC_TLS_KEY", self.tls_key),
                ("LITHO_GRPC_TLS_CA", self.tls_ca),
                ("LITHO_GRPC_TLS_SERVER_NAME", self.tls_server_name)) if value]
            if given:
                # Files given and TLS forgotten would serve plaintext unnoticed.
                problems.append(f"{', '.join(given)} set without LITHO_GRPC_TLS=true")
        for name, token in (("LITHO_GRPC_TOKEN", self.token),
                            ("LITHO_GRPC_PREVIOUS_TOKEN", self.previous_token)):
            if token is not None and not _TOKEN_TEXT.fullmatch(token.get_secret_value()):
                # A trailing newline (a secret made from `echo`) or a
                # non-ASCII character would fail every call instead.
                problems.append(f"{name} must be printable ASCII without spaces "
                                "(a trailing newline?)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class BatchSettings(BaseSettings):
    """Batch limits the gateway (reading a request) and the renderer (taking
    it over gRPC, storing it) share: ``LITHO_BATCH_*``. Mixed into both
    services' settings, so each reads the same variables."""

    model_config = SettingsConfigDict(env_prefix="LITHO_", frozen=True, extra="ignore")

    #: Most items (variable sets or CSV rows) in one batch.
    batch_max_items: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Largest batch request body (JSON or CSV), in bytes; also the largest
    #: CreateBatch message the renderer accepts.
    batch_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024**3)
    #: Largest variable set of one item, as JSON, in bytes (one NATS message each).
    batch_max_item_bytes: int = Field(default=256 * 1024, ge=1024, le=900 * 1024)
    #: Most columns of a batch's CSV: each column is a path kept for every row.
    batch_max_csv_columns: int = Field(default=1000, ge=1, le=100_000)
    #: Items of one tenant's unfinished batches, in all, before a new batch is
    #: a 429 (every tenant shares the work queue).
    batch_max_pending_items: int = Field(default=50_000, ge=1)
    #: Seconds a batch and its results are kept after creation (7 days).
    batch_retention: float = Field(default=7 * 24 * 3600.0, gt=0)


class _EnvWithoutParts(EnvSettingsSource):
    """The environment, less ``LITHO_S3``, ``LITHO_OUTBOUND`` and ``LITHO_GRPC``
    as whole JSON values: those parts read their own variables
    (``LITHO_S3_*``, ``LITHO_OUTBOUND_*``, ``LITHO_GRPC_*``), and a second
    spelling of the outbound allow-list would be one nobody reviews."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in _PARTS:
            return None, field_name, False
        return super().get_field_value(field, field_name)


_PARTS = ("s3", "outbound", "grpc")


class BaseServiceSettings(BaseSettings):
    """Settings every service shares: where data lives and how to reach NATS."""

    model_config = SettingsConfigDict(env_prefix="LITHO_", frozen=True, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvWithoutParts(settings_cls), dotenv_settings,
                file_secret_settings)

    data_dir: Path = Field(default=Path("data"), description="Embedded-default data directory")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field(default="json", pattern="^(json|console)$")
    nats_url: str = Field(default="nats://127.0.0.1:4222")
    #: Seconds a stopping service waits for in-flight RPCs before cancelling them.
    shutdown_grace: float = Field(default=10.0, gt=0, le=300)
    #: Default deadline, in seconds, of every outgoing gRPC call.
    rpc_deadline: float = Field(default=60.0, gt=0, le=600)
    #: ``sqlite:///path/to/file.db`` (default: ``<data dir>/<service>.db``) or
    #: ``mongodb://...``; ``LITHO_DOCSTORE_DATABASE`` names the Mongo database.
    docstore_url: str = ""
    docstore_database: str = "litho"
    #: ``file:///dir`` (default: ``<data dir>/blobs``) or ``s3://bucket[/prefix]``.
    blobstore_url: str = ""
    #: The S3 client (``LITHO_S3_*``), used when the blob store is ``s3://``.
    s3: S3Settings = Field(default_factory=S3Settings)
    #: The outbound HTTP guard (``LITHO_OUTBOUND_*``).
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    #: TLS and a token on internal gRPC (``LITHO_GRPC_*``).
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    #: Replicas of every JetStream stream Litho creates (a NATS cluster keeps
    #: each stream on this many servers; 1 for a single server). Unset: new
    #: streams get 1 and existing ones keep theirs (an operator's raise is
    #: not undone by a start without the setting).
    nats_stream_replicas: int | None = Field(default=None, ge=1, le=5)
    #: Production: refuse to start with an embedded part or a missing secret
    #: (see ``litho.production``); the Helm chart sets it.
    production: bool = False

    def docstore_location(self, service: str) -> str:
        """The configured document store, or a SQLite file of the service's own."""
        return self.docstore_url or f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def blobstore_location(self) -> str:
        """The configured blob store, or the ``blobs`` directory under the data dir."""
        return self.blobstore_url or f"file://{(self.data_dir / 'blobs').resolve()}"


def load(cls: type[S]) -> S:
    """Build ``cls`` from the environment, turning validation errors into one
    :class:`ConfigError` that names each ``LITHO_*`` variable to fix."""
    try:
        return cls()
    except ValidationError as exc:
        # A part's own defaults (S3, outbound) are read by its factory: its
        # error names that part's model, whose prefix names the variables.
        parts = {c.__name__: c for c in (S3Settings, OutboundSettings, GrpcSettings)}
        prefix = str(parts.get(exc.title, cls).model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a rule across settings: its message names them
                problems.append(str(err["msg"]))
                continue
            name = prefix + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid settings; set " + "; ".join(problems)) from exc
