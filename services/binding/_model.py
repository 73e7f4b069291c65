"""The binding service's model: ids, statuses, the domain's dataclasses, page
tokens and how a stored document becomes a :class:`Binding`."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from litho import jsonlimits
from litho.errors import FieldError, InvalidArgument, NotFound
from services.binding._settings import DEFAULT_JSON_LIMITS

COLLECTION = "bindings"
ID_PREFIX = "bnd_"
#: A binding id, whole (``fullmatch``: ``$`` alone would let a trailing newline by).
ID_PATTERN = re.compile(r"bnd_[0-9a-f]{36}")

ACTIVE, PAUSED, ERROR = "active", "paused", "error"
STATUSES = (ACTIVE, PAUSED, ERROR)
#: Where the current data came from.
FETCH, PUSH = "fetch", "push"
FETCHED_TYPES = ("http", "static")
SERVE_STALE, SERVE_ERROR, SERVE_DEFAULT = "serve_stale", "serve_error", "serve_default"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100

Clock = Callable[[], float]


def new_binding_id(now: float) -> str:
    """``bnd_`` + 12 hex of the time in ms (ids list in creation order) + 24
    random hex: the id is the only credential of ``/b/{id}.{ext}``."""
    return f"{ID_PREFIX}{int(now * 1000) % 16**12:012x}{secrets.token_hex(12)}"


def is_binding_id(value: str) -> bool:
    """Whether ``value`` is an id of the form :func:`new_binding_id` makes."""
    return ID_PATTERN.fullmatch(value) is not None


def not_found(binding_id: str) -> NotFound:
    return NotFound(f"binding {binding_id[:100]!r} not found")


def invalid(field_name: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field_name} {message}",
                           errors=[FieldError(field_name, message)])


def deep_merge(defaults: Any, mapped: Any) -> Any:
    """``mapped`` where it gives a value, ``defaults`` where it gives null or
    nothing; objects merge key by key."""
    if mapped is None:
        return defaults
    if isinstance(defaults, dict) and isinstance(mapped, dict):
        merged = dict(defaults)
        for key, value in mapped.items():
            merged[key] = deep_merge(defaults.get(key), value)
        return merged
    return mapped


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        value = ""
    if not is_binding_id(value):
        raise invalid("pageToken", "is not a token this API issued")
    return value


def mapping_failure(exc: InvalidArgument) -> str:
    """One line for a mapping that failed over data: each field and its problem."""
    if exc.errors:
        return "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return exc.message


# ------------------------------------------------------------------ model ----

@dataclass(frozen=True)
class Output:
    #: A format name of :mod:`litho.formats` (png, jpeg, webp, pdf, gif).
    format: str = "png"
    #: JSON text of the RenderOptions (``json_format.MessageToJson``).
    options_json: str = "{}"


@dataclass(frozen=True)
class SourceInput:
    """A data source as received; ``credentials`` is None when none came."""

    type: str = ""
    url: str = ""
    method: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    credentials: Mapping[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "url": self.url, "method": self.method,
                "headers": dict(self.headers), "body": self.body}


@dataclass(frozen=True)
class PolicyInput:
    type: str = ""
    ttl_seconds: int = 0
    cron: str = ""
    on_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ttlSeconds": self.ttl_seconds, "cron": self.cron,
                "onError": self.on_error}


@dataclass(frozen=True)
class BindingSpec:
    """The editable fields; None keeps the stored value on update."""

    name: str | None = None
    template_id: str | None = None
    data_source: SourceInput | None = None
    clear_credentials: bool = False
    mapping: Mapping[str, str] | None = None
    defaults_json: str | None = None
    refresh_policy: PolicyInput | None = None
    output: Output | None = None


@dataclass(frozen=True)
class Binding:
    """A binding as answered: never its credentials nor (but once) its push secret."""

    id: str
    tenant_id: str
    name: str
    template_id: str
    #: type, url, method, headers, body.
    data_source: Mapping[str, Any]
    credentials_type: str
    mapping: Mapping[str, str]
    defaults_json: str
    #: type, ttlSeconds, cron, onError.
    refresh_policy: Mapping[str, Any]
    output: Output
    status: str
    last_error: str
    last_error_at: float | None
    fetched_at: float | None
    next_refresh_at: float | None
    data_hash: str
    created_at: float
    updated_at: float
    push_secret: str = ""


@dataclass(frozen=True)
class BindingData:
    data_json: str
    fetched_at: float | None
    etag: str
    last_modified: str
    status: str
    last_error: str
    last_error_at: float | None
    data_hash: str
    #: fetch, push or none.
    source: str
    variables_json: str


@dataclass(frozen=True)
class Resolved:
    binding_id: str
    tenant_id: str
    template_id: str
    variables_json: str
    output: Output
    status: str
    data_hash: str
    #: Until when the data is fresh; None for push and manual bindings.
    fresh_until: float | None


@dataclass(frozen=True)
class Tested:
    success: bool
    status: int
    data_json: str
    duration_ms: float
    error: str


@dataclass(frozen=True)
class Limits:
    max_per_tenant: int = 1000
    min_ttl_seconds: int = 10
    min_cron_interval: float = 300.0
    max_push_bytes: int = 1024 * 1024
    max_data_bytes: int = 1024 * 1024
    #: Seconds a refresh holds its binding: the fetch's timeout and room to settle.
    lease_seconds: float = 40.0
    #: Limits of pushed and sample JSON (the fetcher holds fetched data to its own).
    json_limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS


def opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value else None


def binding_from_doc(doc: Mapping[str, Any], *, push_secret: str = "") -> Binding:
    policy = dict(doc.get("refreshPolicy") or {})
    output = doc.get("output") or {}
    next_refresh = opt_float(doc.get("nextRefreshAt"))
    fetched_at = opt_float(doc.get("fetchedAt"))
    if policy.get("type") == "ttl" and fetched_at is not None:
        next_refresh = fetched_at + float(policy.get("ttlSeconds") or 0)
    return Binding(
        id=doc["_id"], tenant_id=doc["tenantId"], name=doc["name"],
        template_id=doc["templateId"], data_source=dict(doc.get("dataSource") or {}),
        credentials_type=str(doc.get("credentialsType") or ""),
        mapping=dict(doc.get("mapping") or {}), defaults_json=doc.get("defaults") or "{}",
        refresh_policy=policy,
        output=Output(format=str(output.get("format") or "png"),
                      options_json=str(output.get("options") or "{}")),
        status=doc["status"], last_error=str(doc.get("lastError") or ""),
        last_error_at=opt_float(doc.get("lastErrorAt")), fetched_at=fetched_at,
        next_refresh_at=next_refresh, data_hash=str(doc.get("dataHash") or ""),
        created_at=float(doc["createdAt"]), updated_at=float(doc["updatedAt"]),
        push_secret=push_secret)
