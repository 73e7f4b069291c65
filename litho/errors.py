"""One error tree for every Litho service.

    LithoError                       status INTERNAL
    ├── InvalidArgument              INVALID_ARGUMENT (carries field errors)
    ├── NotFound                     NOT_FOUND
    ├── AlreadyExists                ALREADY_EXISTS
    ├── Conflict                     ABORTED
    ├── FailedPrecondition           FAILED_PRECONDITION
    ├── Unauthenticated              UNAUTHENTICATED
    ├── PermissionDenied             PERMISSION_DENIED
    │   └── OutboundDenied           a fetch was refused by the outbound guard
    ├── ResourceExhausted            RESOURCE_EXHAUSTED (carries retry_after)
    ├── DeadlineExceeded             DEADLINE_EXCEEDED
    ├── Unavailable                  UNAVAILABLE
    ├── OutboundError                UNAVAILABLE: a guarded fetch failed or broke a limit
    └── ConfigError                  raised at start-up; never crosses a wire

The status is a class attribute naming a gRPC status code; domain code imports
no grpc. ``litho.rpc`` maps these to gRPC status in one interceptor and back on
the client side; the gateway maps gRPC status to HTTP in one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field, named by a JSON-pointer-like path."""

    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class LithoError(Exception):
    status: ClassVar[str] = "INTERNAL"
    #: Safe to show to a client. 5xx statuses never show their message.
    public: ClassVar[bool] = True

    def __init__(self, message: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors: list[FieldError] = list(errors or [])

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.message}
        if self.errors:
            out["errors"] = [e.to_json() for e in self.errors]
        return out


class InvalidArgument(LithoError):
    status = "INVALID_ARGUMENT"


class NotFound(LithoError):
    status = "NOT_FOUND"


class AlreadyExists(LithoError):
    status = "ALREADY_EXISTS"


class Conflict(LithoError):
    status = "ABORTED"


class FailedPrecondition(LithoError):
    status = "FAILED_PRECONDITION"


class Unauthenticated(LithoError):
    status = "UNAUTHENTICATED"


class PermissionDenied(LithoError):
    status = "PERMISSION_DENIED"


class OutboundDenied(PermissionDenied):
    """The outbound guard refused a URL. The message stays generic on purpose."""


class ResourceExhausted(LithoError):
    status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        return {**super().details(), "retryAfter": self.retry_after}


class DeadlineExceeded(LithoError):
    status = "DEADLINE_EXCEEDED"


class Unavailable(LithoError):
    status = "UNAVAILABLE"


class OutboundError(Unavailable):
    """A guarded fetch failed: connection error, bad status, or a size/time limit."""


class ConfigError(LithoError):
    """A setting is missing or invalid. Raised at start-up, before serving."""
