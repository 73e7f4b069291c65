"""The start-up every service shares, and the shape of a service declaration.

A service is declared once, as a :class:`ServiceSpec` in ``services/_registry.py``
(its name, module, gRPC service, default port and the services it calls), and
built by its composition root, ``build(host)``, from the settings handed to it.
:func:`serve` does what every service does around that: logging, telemetry, an
exit stack that unwinds in reverse order, and the :class:`Host`, which gives the
composition root what it shares with every other service — the document store,
the blob store, NATS, channels to the services it calls (targets from the
registry), and a gRPC server with the standard health service.

:func:`running` starts a service in this process (port 0 picks a free port),
so a test can start any service with the settings it chooses.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from nats.aio.client import Client

from litho import messaging, production, rpc, telemetry
from litho.blobstore import BlobStore, open_blob_store
from litho.config import BaseServiceSettings
from litho.docstore import DocumentStore, open_document_store
from litho.errors import ConfigError
from litho.logs import configure_logging, get_logger

log = get_logger(__name__)

S = TypeVar("S", bound=BaseServiceSettings)


@dataclass(frozen=True)
class ServiceSpec:
    """One service, as the registry declares it."""

    #: Short name: ``template``. Its package is ``services/<name>``.
    name: str
    #: What ``python -m`` runs: ``services.template``.
    module: str
    #: What it owns, for the service table of the docs.
    summary: str
    #: Full name of its gRPC service (``litho.template.v1.TemplateService``);
    #: empty for a service that serves no gRPC (the HTTP gateway).
    grpc_service: str = ""
    #: Port of its default gRPC address (``127.0.0.1:<port>``).
    default_port: int = 0
    #: Names of the services it calls over gRPC.
    calls: tuple[str, ...] = ()
    #: Where a service that serves HTTP instead of gRPC listens (for the docs).
    http_listens: str = ""

    @property
    def address_env(self) -> str:
        """The variable it reads its gRPC listen address from."""
        return f"LITHO_{_env_name(self.name)}_GRPC_ADDRESS"

    @property
    def target_env(self) -> str:
        """The variable its callers read to dial it."""
        return target_env(self.name)

    @property
    def default_address(self) -> str:
        return f"127.0.0.1:{self.default_port}"


def _env_name(service: str) -> str:
    return service.upper().replace("-", "_")


def target_env(service: str) -> str:
    """The variable the callers of ``service`` read to dial it."""
    return f"LITHO_{_env_name(service)}_GRPC_TARGET"


@dataclass(frozen=True)
class Endpoints:
    """Where a service listens (gRPC) and where each service it calls is."""

    listen: str = ""
    targets: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls, spec: ServiceSpec, registry: Mapping[str, ServiceSpec],
        environ: Mapping[str, str] | None = None,
    ) -> Endpoints:
        env = os.environ if environ is None else environ
        listen = env.get(spec.address_env, spec.default_address) if spec.grpc_service else ""
        targets = {}
        for name in spec.calls:
            callee = registry[name]
            targets[name] = env.get(callee.target_env, callee.default_address)
        return cls(listen=listen, targets=targets)


class Host(Generic[S]):
    """What a composition root gets: its settings, an exit stack that unwinds
    in reverse order, and the parts every service shares, opened on demand."""

    def __init__(self, spec: ServiceSpec, settings: S, endpoints: Endpoints,
                 stack: AsyncExitStack) -> None:
        self.spec = spec
        self.settings = settings
        self.endpoints = endpoints
        self.stack = stack
        #: Bound ports, once serving (port 0 in the settings picks a free one).
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self.health_port: int | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._nats: Client | None = None
        self._security: rpc.Security | None = None

    @property
    def security(self) -> rpc.Security:
        """TLS and the token of internal gRPC (``LITHO_GRPC_*``), read once."""
        if self._security is None:
            self._security = rpc.Security.from_settings(self.settings.grpc)
        return self._security

    async def document_store(self) -> DocumentStore:
        """The configured document store (``LITHO_DOCSTORE_URL``), or the
        service's own SQLite file under the data dir; closed on exit."""
        store = await open_document_store(
            self.settings.docstore_location(self.spec.name), self.settings.docstore_database)
        self.stack.push_async_callback(store.close)
        return store

    async def blob_store(self) -> BlobStore:
        blobs = await open_blob_store(self.settings.blobstore_location(), self.settings.s3)
        self.stack.push_async_callback(blobs.close)
        return blobs

    async def nats(self) -> Client:
        """One NATS connection per service, drained on exit. Litho's streams
        are ensured on it first, with ``LITHO_NATS_STREAM_REPLICAS`` replicas
        each (a refused number stops the start-up naming that variable)."""
        if self._nats is None:
            nc = await messaging.connect(
                self.stack, self.settings.nats_url, name=f"litho-{self.spec.name}")
            await messaging.ensure_streams(
                nc.jetstream(), replicas=self.settings.nats_stream_replicas)
            self._nats = nc
        return self._nats

    async def channel(self, name: str) -> grpc.aio.Channel:
        """A channel to a service this one calls (as the registry declares)."""
        if name not in self.spec.calls:
            raise ConfigError(
                f"{self.spec.name} does not call {name!r}; declare it in services/_registry.py")
        if name not in self.endpoints.targets:
            raise ConfigError(f"no target for {name!r}: the endpoints of {self.spec.name} "
                              f"name none ({target_env(name)})")
        if name not in self._channels:
            self._channels[name] = await rpc.open_channel(
                self.stack, self.endpoints.targets[name],
                default_deadline=self.settings.rpc_deadline, security=self.security)
        return self._channels[name]

    async def channels(self) -> dict[str, grpc.aio.Channel]:
        """A channel to every service this one calls, by name."""
        return {name: await self.channel(name) for name in self.spec.calls}

    async def serve_grpc(self, services: Iterable[tuple[rpc.Register, Any, str]], *,
                         max_receive_message_bytes: int | None = None) -> int:
        """Serve ``services`` and the health service at the listen address.

        ``max_receive_message_bytes``: the largest request message accepted,
        for a service that takes uploads larger than gRPC's default 4 MiB
        (the template service takes fonts); None keeps gRPC's default.
        """
        if not self.spec.grpc_service:
            raise ConfigError(f"{self.spec.name} declares no gRPC service in the registry")
        try:
            serving = await rpc.start_server(
                self.stack, address=self.endpoints.listen, services=services,
                grace=self.settings.shutdown_grace,
                max_receive_message_bytes=max_receive_message_bytes, security=self.security,
                address_variable=self.spec.address_env)
        except ConfigError as exc:
            # Each message names the variable to fix (the listen or the
            # health address, the TLS files).
            raise ConfigError(f"{self.spec.name} cannot serve gRPC: {exc}") from exc
        self.grpc_port = serving.port
        self.health_port = serving.health_port
        return serving.port


Build = Callable[[Host[S]], Awaitable[None]]


async def serve(
    spec: ServiceSpec, settings: S, build: Build[S], stop: asyncio.Event, *,
    endpoints: Endpoints, process: bool = True,
    ready: Callable[[Host[S]], None] | None = None,
) -> None:
    """Build the service, serve until ``stop`` is set, then unwind.

    ``process`` configures what belongs to the whole process (logging and
    telemetry); a service started inside a test's process leaves them alone.
    With ``LITHO_PRODUCTION`` on, :func:`litho.production.check` refuses an
    embedded part or a missing secret before anything is built.
    """
    production.check(settings)
    if process:
        configure_logging(spec.name, level=settings.log_level, fmt=settings.log_format)
    async with AsyncExitStack() as stack:
        if process:
            telemetry.configure(spec.name, stack)
        host = Host(spec, settings, endpoints, stack)
        await build(host)
        log.info("service ready", service=spec.name, grpc_port=host.grpc_port,
                 http_port=host.http_port)
        if ready is not None:
            ready(host)
        await stop.wait()


@asynccontextmanager
async def running(
    spec: ServiceSpec, settings: S, build: Build[S], *, endpoints: Endpoints,
) -> AsyncIterator[Host[S]]:
    """Run a service inside this process until the block ends (for tests)."""
    stop = asyncio.Event()
    started: asyncio.Future[Host[S]] = asyncio.get_running_loop().create_future()

    def ready(host: Host[S]) -> None:
        started.set_result(host)

    task = asyncio.create_task(
        serve(spec, settings, build, stop, endpoints=endpoints, process=False, ready=ready))
    try:
        waiters: set[asyncio.Future[Any]] = {task, started}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            task.result()  # raises what the start-up raised
            raise RuntimeError(f"{spec.name} stopped during start-up")
        yield started.result()
    finally:
        stop.set()
        await task
