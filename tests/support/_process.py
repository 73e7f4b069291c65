"""What the real servers tests start from wheels (nx-27017, SeaweedFS) share:
a child process, its work directory and log, and a graceful stop."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    #: Seconds between SIGTERM and SIGKILL.
    stop_grace: ClassVar[float] = 5.0

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def venv_binary(name: str, package: str) -> Path:
    """``name`` next to this interpreter (the venv's bin), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return here
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the {name} binary is missing; install {package}")
    return Path(found)


def free_port() -> int:
    """A free loopback port (the race, someone else binding it first, is
    retried by the server's start function)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
