"""What can go wrong, as the command reports it.

    CliError               exit 1: the command ran and failed
    ├── UsageError         exit 2: a flag, a value or a setting is missing or wrong
    ├── Unreachable        the URL did not answer (refused, timed out, not HTTP)
    ├── ApiError           the API answered an error (status, problem detail)
    │   └── Unauthorized   401: the key was refused
    └── InvalidFolder      push refused the folder: every error, nothing changed

Foreign exceptions (aiohttp, OSError, JSON) are translated where they happen,
``raise CliError(...) from exc``; :func:`litho.cli._main.run` prints the
message and returns the exit code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class CliError(Exception):
    exit_code: ClassVar[int] = 1


class UsageError(CliError):
    exit_code = 2


class Unreachable(CliError):
    pass


class ApiError(CliError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(ApiError):
    pass


class InvalidFolder(CliError):
    """Each line is ``path:LINE:COLUMN: message`` (or ``path: message``)."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__(f"nothing was changed: {len(lines)} error(s)")
        self.lines = list(lines)
