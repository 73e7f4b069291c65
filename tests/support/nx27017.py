"""A real MongoDB wire-protocol server for tests, from the ``nx-27017`` wheel.

nx-27017 speaks MongoDB's protocol over SQLite files, one file per logical
database under ``--data-dir``. It runs in the foreground as a child process on
a free loopback port, so parallel runs don't clash and nothing outlives the
session (with one fix to its compound indexes, see ``_nx27017_patched.py``).
Where its matching differs from MongoDB, the contract suite marks the
test as an expected failure on it (see ``test_docstore_contract.py``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

from litho.docstore import DocumentStore, open_document_store
from tests.support._process import ServerProcess, free_port, venv_binary

_START_TIMEOUT = 20.0


@dataclass
class Nx27017(ServerProcess):
    """A running nx-27017; use :func:`start_nx27017` and :meth:`stop`."""

    url: str


def _answers_ping(url: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(
        url, serverSelectionTimeoutMS=500, connectTimeoutMS=500
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _launch(workdir: Path) -> Nx27017:
    port = free_port()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "nx27017.log"
    venv_binary("nx-27017", "the dev extras (nx-27017)")  # says what to install if missing
    args = [
        sys.executable,
        str(Path(__file__).with_name("_nx27017_patched.py")),
        "--host",
        "127.0.0.1",
        "-p",
        str(port),
        "--data-dir",
        str(data),
        "--log-file",
        str(log_path),
        "--pid-file",
        str(workdir / "nx27017.pid"),
    ]
    # Its console output repeats the log file; keep it for start-up crashes.
    with (workdir / "console.log").open("wb") as console:
        process = subprocess.Popen(
            args, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
        )
    return Nx27017(
        process=process,
        url=f"mongodb://127.0.0.1:{port}/?directConnection=true",
        workdir=workdir,
        log_path=workdir / "console.log",
    )


def start_nx27017(workdir: Path, *, attempts: int = 3) -> Nx27017:
    """Start nx-27017 under ``workdir`` and wait until it answers a ping."""
    last = ""
    for attempt in range(attempts):
        run = workdir / f"run{attempt}"
        run.mkdir(parents=True, exist_ok=True)
        server = _launch(run)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and server.process.poll() is None:
            if _answers_ping(server.url):
                return server
            time.sleep(0.1)
        last = server.log_tail()
        with contextlib.suppress(Exception):
            server.stop()
    raise RuntimeError(f"nx-27017 did not start after {attempts} attempts; last log:\n{last}")


@asynccontextmanager
async def peer_stores(kind: str, tmp_path: Path, server: Nx27017 | None, *,
                      prefix: str, count: int = 2) -> AsyncIterator[list[DocumentStore]]:
    """``count`` document stores on the same data, each with its own
    connection, as replicas of one service have: SQLite files under
    ``tmp_path`` (``kind`` "sqlite"), or a fresh database of ``server``
    ("nx27017"), dropped afterwards."""
    if kind == "sqlite":
        url, database = f"sqlite://{tmp_path / f'{prefix}.db'}", "unused"
    else:
        assert server is not None
        url, database = server.url, f"litho_{prefix}_{uuid.uuid4().hex[:12]}"
    stores = [await open_document_store(url, database) for _ in range(count)]
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()
        if kind != "sqlite":
            admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
            try:
                await admin.drop_database(database)
            finally:
                await admin.close()
