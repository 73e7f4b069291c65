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

An error's text often quotes the input that caused it, and input can be huge;
:meth:`LithoError.bounded_details` is what may cross a wire: each text clipped
and the list of field errors capped (see the ``MAX_*`` constants).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

#: Longest ``detail`` and field-error texts, and most field errors, that an
#: error carries across a wire. gRPC refuses metadata over 8 KiB by default
#: and reports that as RESOURCE_EXHAUSTED, which clients would retry.
MAX_DETAIL_CHARS = 500
MAX_FIELD_NAME_CHARS = 200
MAX_FIELD_MESSAGE_CHARS = 300
MAX_FIELD_ERRORS = 20

_SURROGATE = re.compile("[\ud800-\udfff]")


def clip(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters (marked when cut), and valid
    Unicode: an error quoting a lone surrogate must still be encodable."""
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 30)] + f"… ({len(text)} characters in all)"


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

    def bounded_details(
        self, *, max_errors: int = MAX_FIELD_ERRORS, max_detail: int = MAX_DETAIL_CHARS
    ) -> dict[str, Any]:
        """:meth:`details` with every text clipped and at most ``max_errors``
        field errors; the detail says how many more there were."""
        out = self.details()
        detail = str(out.get("detail", ""))
        omitted = max(0, len(self.errors) - max_errors)
        if omitted:
            note = f" (and {omitted} more problems)"
            detail = clip(detail, max(0, max_detail - len(note))) + note
        out["detail"] = clip(detail, max_detail)
        if self.errors:
            out["errors"] = [
                {"field": clip(e.field, MAX_FIELD_NAME_CHARS),
                 "message": clip(e.message, MAX_FIELD_MESSAGE_CHARS)}
                for e in self.errors[:max_errors]
            ]
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


class OutboundUnresolved(OutboundError):
    """A guarded fetch's host name does not resolve."""


class OutboundTimeout(OutboundError):
    """A guarded fetch ran out of its time limit (``LITHO_OUTBOUND_TIMEOUT``)."""


class OutboundTooLarge(OutboundError):
    """A guarded fetch's answer passed its size limit (``LITHO_OUTBOUND_MAX_BYTES``)."""


class ConfigError(LithoError):
    """A setting is missing or invalid. Raised at start-up, before serving."""
