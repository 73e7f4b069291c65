"""The launcher's first-hour messages (``make run``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from services._stack import port_taken


def _listening() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_a_port_in_use_is_reported_and_a_free_one_is_not() -> None:
    sock, port = _listening()
    with sock:
        assert port_taken("127.0.0.1", port) == "Address already in use"
    assert port_taken("127.0.0.1", port) is None


def test_make_run_on_a_taken_port_names_the_port_and_the_setting(tmp_path: Path) -> None:
    sock, port = _listening()
    with sock:
        done = subprocess.run(
            [sys.executable, "-m", "services"], capture_output=True, text=True, timeout=60,
            env={**os.environ, "LITHO_DATA_DIR": str(tmp_path),
                 "LITHO_GATEWAY_PORT": str(port)})
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and "LITHO_GATEWAY_PORT" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    # Nothing was started, so nothing was written.
    assert list(tmp_path.iterdir()) == []
