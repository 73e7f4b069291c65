"""The development stack: NATS and every registered service as child processes.

``python -m services`` (``make run``) and the end-to-end tests both use
:class:`Stack`. It starts what ``services/_registry.py`` declares, callees
before callers, each gRPC service on a free loopback port that its callers are
told through the registry's target variables.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import aiohttp

from litho import rpc
from litho.service import ServiceSpec
from services import _registry

GATEWAY = "gateway"
KEY_FILE = "first-api-key"
#: The renderer's render id secret, generated at the first start and kept
#: (mode 600): a new one would change every image URL.
RENDER_ID_SECRET_FILE = "render-id-secret"
RENDER_ID_SECRET_ENV = "LITHO_RENDERER_RENDER_ID_SECRET"
#: The binding service's key for credentials and push secrets at rest, kept
#: the same way: a new one would leave every stored secret unreadable.
BINDING_SECRET_KEY_FILE = "binding-secret-key"
BINDING_SECRET_KEY_ENV = "LITHO_BINDING_SECRET_KEY"
#: The key of tenants' public experiment handles: with a new one, a tenant's
#: new experiments live under another handle than its old ones.
EXPERIMENT_HANDLE_KEY_FILE = "experiment-handle-key"
EXPERIMENT_HANDLE_KEY_ENV = "LITHO_EXPERIMENT_HANDLE_KEY"
#: Each secret setting the stack generates once into the data dir, by file name.
_KEPT_SECRETS = ((RENDER_ID_SECRET_ENV, RENDER_ID_SECRET_FILE),
                 (BINDING_SECRET_KEY_ENV, BINDING_SECRET_KEY_FILE),
                 (EXPERIMENT_HANDLE_KEY_ENV, EXPERIMENT_HANDLE_KEY_FILE))


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so a killed
    launcher (or a killed ``make``) never leaves services running."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: str) -> str:
    scripts = Path(sysconfig.get_path("scripts"))
    candidate = scripts / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StartupError(f"{name} not found; run `make install`")
    return found


class StartupError(RuntimeError):
    """The stack could not start; the message says what to look at."""


def port_taken(host: str, port: int) -> str | None:
    """Why the gateway could not listen on ``host:port``, or None if it can."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As the server binds: a port left in TIME_WAIT is not taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@dataclass
class _Child:
    name: str
    process: asyncio.subprocess.Process
    log: IO[bytes] | None
    #: The service it runs, and what it was started with (see ``Stack.restart``).
    spec: ServiceSpec | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    data_dir: Path
    gateway_port: int = 8080
    #: Extra LITHO_* settings for every service (tests allow-list their servers here).
    env: dict[str, str] = field(default_factory=dict)
    #: Write each child's output to data_dir/logs/<name>.log instead of inheriting it.
    log_to_files: bool = False
    start_timeout: float = 60.0
    #: What to start (the registry; a test may start its own list).
    services: Sequence[ServiceSpec] = _registry.SERVICES
    #: The first gateway's base URL (what ``make run`` prints).
    url: str = ""
    #: Every gateway replica's base URL (``LITHO_GATEWAY_REPLICAS``), ``url`` first.
    urls: list[str] = field(default_factory=list)
    api_key: str = ""
    nats_url: str = ""
    #: What callers dial for each gRPC service (every replica's address).
    grpc_targets: dict[str, str] = field(default_factory=dict)
    #: Exit status of each child after :meth:`stop`, by name.
    exit_codes: dict[str, int] = field(default_factory=dict)
    _children: list[_Child] = field(default_factory=list)

    async def __aenter__(self) -> Stack:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def pid(self, name: str) -> int:
        for child in self._children:
            if child.name == name:
                return child.process.pid
        raise KeyError(name)

    def log_path(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    @property
    def names(self) -> list[str]:
        """NATS and every service (each replica: ``renderer``, ``renderer-2``,
        …), in start order."""
        return ["nats", *(name for s in _registry.start_order(_registry.registry(
            self.services)) for name in replica_names(s, self._replicas(s)))]

    def _replicas(self, spec: ServiceSpec) -> int:
        """``LITHO_<NAME>_REPLICAS`` (from the stack's env, else the
        environment): how many processes of a gRPC service (or of the
        gateway, each on its own port) to start."""
        text = self.env.get(replicas_env(spec)) or os.environ.get(replicas_env(spec)) or "1"
        try:
            count = int(text)
        except ValueError:
            raise StartupError(f"{replicas_env(spec)} must be a whole number, got {text!r}"
                               ) from None
        if not 1 <= count <= 16 or (count > 1 and not spec.grpc_service
                                     and spec.name != GATEWAY):
            raise StartupError(f"{replicas_env(spec)} must be 1 to 16, and more than 1 only "
                               "for a gRPC service or the gateway")
        return count

    def log_tails(self, max_chars: int = 4000) -> str:
        """The end of every child's log file, for a failed test to print."""
        parts = []
        for name in self.names:
            path = self.log_path(name)
            if path.exists():
                parts.append(f"----- {name} log (tail) -----\n{path.read_text()[-max_chars:]}")
        return "\n".join(parts)

    def unclean_exits(self) -> dict[str, int | None]:
        """Each registered service that did not exit 0 after :meth:`stop`
        (SIGTERM is a graceful stop: every service drains and exits 0)."""
        services = [name for name in self.names if name != "nats"]
        return {name: self.exit_codes.get(name) for name in services
                if self.exit_codes.get(name) != 0}

    async def _start(self) -> None:
        self.data_dir = self.data_dir.resolve()
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        nats_port = free_port()
        self.nats_url = f"nats://127.0.0.1:{nats_port}"
        await self._spawn("nats", _nats_argv(nats_port, self.data_dir))
        await _wait_port(nats_port, self.start_timeout)

        env = {
            "LITHO_DATA_DIR": str(self.data_dir),
            "LITHO_NATS_URL": self.nats_url,
            "LITHO_GATEWAY_PORT": str(self.gateway_port or free_port()),
            **self.env,
        }
        for variable, file_name in _KEPT_SECRETS:
            if variable not in env and variable not in os.environ:
                env[variable] = self._kept_secret(file_name)
        if not any(v in env or v in os.environ
                   for v in ("LITHO_PUBLIC_URL", "LITHO_WEBHOOK_PUBLIC_URL")):
            # Image URLs in webhooks point at this stack's gateway.
            host = env.get("LITHO_GATEWAY_HOST", "127.0.0.1")
            env["LITHO_WEBHOOK_PUBLIC_URL"] = f"http://{host}:{env['LITHO_GATEWAY_PORT']}"
        order = _registry.start_order(_registry.registry(self.services))
        # Every replica listens on its own address; callers dial them all
        # (gRPC's ipv4: target with several addresses, round robin).
        addresses: dict[str, list[str]] = {}
        for spec in order:
            if spec.grpc_service:
                first = env.get(spec.address_env) or f"127.0.0.1:{free_port()}"
                addresses[spec.name] = [first, *(f"127.0.0.1:{free_port()}"
                                                 for _ in range(self._replicas(spec) - 1))]
                env[spec.address_env] = first
                env.setdefault(spec.target_env, first if len(addresses[spec.name]) == 1
                               else "ipv4:" + ",".join(addresses[spec.name]))
                self.grpc_targets[spec.name] = env[spec.target_env]
        # Gateway replicas: the first on the stack's port, the others on free ones.
        ports = [env["LITHO_GATEWAY_PORT"], *(str(free_port()) for spec in order
                                              if spec.name == GATEWAY
                                              for _ in range(self._replicas(spec) - 1))]
        deadline = time.monotonic() + self.start_timeout
        children: list[tuple[str, ServiceSpec, dict[str, str], str]] = []
        for spec in order:
            listens = addresses.get(spec.name, [""])
            if spec.name == GATEWAY:
                for name, port in zip(replica_names(spec, len(ports)), ports, strict=True):
                    children.append((name, spec, {**env, "LITHO_GATEWAY_PORT": port}, ""))
                continue
            for name, address in zip(replica_names(spec, len(listens)), listens, strict=True):
                child_env = {**env, spec.address_env: address} if address else env
                children.append((name, spec, child_env, address))
        for name, spec, child_env, _ in children:
            await self._spawn(name, [sys.executable, "-m", spec.module], child_env, spec=spec)
        for name, _, _, address in children:
            if address:
                await self._wait_grpc(name, address, deadline)
        if not any(spec.name == GATEWAY for spec in order):
            return
        host = env.get("LITHO_GATEWAY_HOST", "127.0.0.1")
        self.urls = [f"http://{host}:{port}" for port in ports]
        self.url = self.urls[0]
        for url in self.urls:
            await self._wait_http(f"{url}/healthz", deadline)
        self.api_key = await self._first_key(env)

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                     *, spec: ServiceSpec | None = None) -> None:
        # One log file per child, opened once at start-up.
        log = open(self.log_path(name), "ab") if self.log_to_files else None  # noqa: ASYNC230
        process = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **(env or {})},
            stdout=log or None,
            stderr=log or None,
            # Own session: Ctrl-C reaches only the launcher, which stops
            # children in order; they still die if the launcher is killed.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._children.append(_Child(name, process, log, spec, dict(env or {})))

    def _check_alive(self) -> None:
        for child in self._children:
            if child.process.returncode is not None:
                hint = f"; see {self.log_path(child.name)}" if child.log else ""
                raise StartupError(
                    f"{child.name} exited with {child.process.returncode} during start-up{hint}")

    async def _wait_grpc(self, name: str, address: str, deadline: float) -> None:
        child = next(c for c in self._children if c.name == name)
        security = rpc.Security.from_environ({**os.environ, **child.env})
        async with rpc.raw_channel(address, security) as channel:
            while True:
                self._check_alive()
                try:
                    await rpc.wait_healthy(channel, timeout=1)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise StartupError(f"{name} did not become healthy at {address}") from None
                    await asyncio.sleep(0.1)

    async def _wait_http(self, url: str, deadline: float) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                self._check_alive()
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise StartupError(f"the gateway did not become healthy at {url}")
                await asyncio.sleep(0.1)

    async def _first_key(self, env: dict[str, str]) -> str:
        """The key printed at the first start, kept (mode 600) to print again later."""
        path = self.data_dir / KEY_FILE
        if path.exists():
            return path.read_text().strip()
        key = await self.create_key("default", env)
        # Created 0600 from the start: the key is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        return key

    def _kept_secret(self, file_name: str) -> str:
        """The secret kept in ``data_dir/<file_name>``, generated at the first start."""
        path = self.data_dir / file_name
        if not path.exists():
            # Created 0600 from the start, like the first key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
        return path.read_text().strip()

    async def create_key(self, tenant: str, env: dict[str, str] | None = None) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.gateway.keys", "create", "--tenant", tenant,
            env={**os.environ, "LITHO_DATA_DIR": str(self.data_dir), **self.env, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise StartupError("creating an API key failed")
        return out.decode().strip()

    async def restart(self, name: str, env: dict[str, str] | None = None,
                      grace: float = 15.0) -> None:
        """Stop one gRPC service (or one replica, ``renderer-2``) gracefully and
        start it again on the same address, with ``env`` over the settings it
        had (a test that changes a setting, such as the outbound allow-list,
        for the rest of the run), or restart one killed by :meth:`kill`."""
        index, child = next((i, c) for i, c in enumerate(self._children) if c.name == name)
        spec = child.spec
        if spec is None:
            raise ValueError(f"{name} is not a service")
        await _terminate(child, grace)
        self._children.pop(index)
        if child.process.returncode not in (0, -signal.SIGKILL):
            raise RuntimeError(f"{name} exited with {child.process.returncode} on SIGTERM")
        child_env = {**child.env, **(env or {})}
        await self._spawn(name, [sys.executable, "-m", spec.module], child_env, spec=spec)
        # Back in its place, so that stop() keeps the reverse start order.
        self._children.insert(index, self._children.pop())
        deadline = time.monotonic() + self.start_timeout
        await self._wait_grpc(name, child_env[spec.address_env], deadline)
        if any(c.name == "gateway" for c in self._children):
            # Until each gateway's own channel has reconnected (its backoff
            # may still be waiting), its callers would get 503s.
            for url in self.urls:
                await self._wait_http(f"{url}/healthz", deadline)

    def kill(self, name: str) -> None:
        """SIGKILL one child (a test of a replica or NATS dying mid-work)."""
        child = next(c for c in self._children if c.name == name)
        child.process.kill()

    async def restart_nats(self, *, down_for: float = 0.0) -> None:
        """Stop ``nats-server`` (SIGTERM), wait ``down_for`` seconds, and start
        it again on the same port and store; services reconnect by themselves."""
        index, child = next((i, c) for i, c in enumerate(self._children) if c.name == "nats")
        await _terminate(child, 15.0)
        self._children.pop(index)
        await asyncio.sleep(down_for)
        port = int(self.nats_url.rsplit(":", 1)[1])
        await self._spawn("nats", _nats_argv(port, self.data_dir))
        self._children.insert(index, self._children.pop())
        await _wait_port(port, self.start_timeout)

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM in reverse start order (gateway first, NATS last), then SIGKILL."""
        for child in reversed(self._children):
            await _terminate(child, grace)
            self.exit_codes[child.name] = child.process.returncode or 0
        self._children.clear()


def replicas_env(spec: ServiceSpec) -> str:
    return f"LITHO_{spec.name.upper()}_REPLICAS"


def replica_names(spec: ServiceSpec, count: int) -> list[str]:
    return [spec.name, *(f"{spec.name}-{n}" for n in range(2, count + 1))]


def _nats_argv(port: int, data_dir: Path) -> list[str]:
    return [_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js",
            "-sd", str(data_dir / "nats")]


async def _terminate(child: _Child, grace: float) -> None:
    """SIGTERM, SIGKILL after ``grace`` seconds, and close its log."""
    if child.process.returncode is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.process.wait(), grace)
        except TimeoutError:
            child.process.kill()
            await child.process.wait()
    if child.log:
        child.log.close()


async def _wait_port(port: int, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
