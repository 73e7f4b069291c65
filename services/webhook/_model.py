"""Subscriptions and deliveries, their ids, and the checks on what callers send."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

import idna

from litho.errors import FieldError, InvalidArgument, OutboundDenied
from litho.outbound import AllowList, check_url
from services.webhook import _events
from services.webhook._events import Event

#: Longest id a filter may name (template and binding ids are far shorter).
MAX_FILTER_ID_CHARS = 200
_BINDING_ID = re.compile(r"bnd_[0-9a-f]{36}")
MAX_BATCH_ID_CHARS = 200
MAX_SECRET_CHARS = 500
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Filters:
    """Which events of the subscribed type match; "" matches any."""

    template_id: str = ""
    binding_id: str = ""

    def matches(self, event: Event) -> bool:
        return ((not self.template_id or self.template_id == event.template_id)
                and (not self.binding_id or self.binding_id == event.binding_id))


@dataclass(frozen=True)
class Subscription:
    id: str
    tenant_id: str
    event: str
    target_url: str
    filters: Filters
    description: str
    status: SubscriptionStatus
    status_reason: str
    consecutive_failures: int
    secret: str
    create_time: datetime
    update_time: datetime
    #: The secret before the last rotation, still signing (alongside the new
    #: one) until ``previous_secret_until`` (``LITHO_WEBHOOK_ROTATION_OVERLAP``).
    previous_secret: str = ""
    previous_secret_until: datetime | None = None

    def secrets_at(self, now: datetime) -> tuple[str, ...]:
        """The secrets that sign a delivery sent at ``now``: the current one first."""
        if (self.previous_secret and self.previous_secret_until is not None
                and now < self.previous_secret_until):
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True)
class Delivery:
    """One event (or redelivery) on its way to one subscription or batch webhook."""

    id: str
    tenant_id: str
    #: "" for a batch's own webhook (which shows in no subscription's log).
    subscription_id: str
    batch_webhook_id: str
    event: str
    #: The ``webhook-id`` header: the same across attempts and redeliveries.
    message_id: str
    #: The signed body, sent byte for byte on every attempt.
    body: str
    status: DeliveryStatus
    attempts: int
    last_response_code: int
    last_duration_ms: int
    last_error: str
    next_retry_time: datetime | None
    delivered_time: datetime | None
    create_time: datetime
    redelivery_of: str


@dataclass(frozen=True)
class Limits:
    max_subscriptions: int
    max_description_chars: int
    max_url_chars: int
    #: Deliveries one tenant may have pending; past it, new ones are logged as failed.
    max_pending_per_tenant: int = 1000


@dataclass(frozen=True)
class SubscriptionChange:
    """An update: None keeps a field."""

    target_url: str | None = None
    filters: Filters | None = None
    status: SubscriptionStatus | None = None
    description: str | None = None


def _timed_id(prefix: str, millis: int, tail: str) -> str:
    # Time first, so ids sort by time: listing by id lists by creation.
    return f"{prefix}{millis:012x}{tail}"


def new_subscription_id() -> str:
    return _timed_id("whs_", int(time.time() * 1000), secrets.token_hex(6))


def new_delivery_id(now: datetime) -> str:
    return _timed_id("whd_", int(now.timestamp() * 1000), secrets.token_hex(6))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def event_delivery_id(event_id: str, target: str, event_time: datetime) -> str:
    """The delivery of event ``event_id`` to ``target`` (a subscription or batch
    webhook id) at ``event_time``: the same every time the event is handled,
    so a redelivered event never makes a second delivery. For an event that
    carries no time the dispatcher passes the time it first handled it (and
    finds the stored delivery by its message id when it comes back)."""
    millis = int(event_time.timestamp() * 1000)
    return _timed_id("whd_", millis, _digest("delivery", event_id, target)[:12])


def event_message_id(event_id: str, target: str) -> str:
    return "msg_" + _digest("message", event_id, target)[:24]


def batch_webhook_id(tenant_id: str, batch_id: str) -> str:
    return "bwh_" + _digest(tenant_id, batch_id)[:24]


# ------------------------------------------------------------------ checks ----

def invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", errors=[FieldError(field, message)])


def check_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise invalid("tenantId", "is required")


def check_event(name: str) -> str:
    if name not in _events.BY_NAME:
        raise invalid("event", f"unknown event {name[:100]!r}; one of "
                               + ", ".join(_events.names()))
    return name


def check_target_url(url: str, *, allow: AllowList, max_chars: int,
                     field: str = "targetUrl") -> str:
    """An http(s) URL to a public address (or one ``LITHO_OUTBOUND_ALLOW``
    covers); host names are vetted again at each attempt, when they resolve."""
    if not url:
        raise invalid(field, "is required")
    if len(url) > max_chars:
        raise invalid(field, f"is {len(url)} characters; at most {max_chars}")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise invalid(field, "must not contain spaces or control characters")
    if not url.lower().startswith(("http://", "https://")):
        raise invalid(field, "must be an http:// or https:// URL")
    _check_host(url, field)
    try:
        check_url(url, allow)
    except OutboundDenied as exc:
        raise invalid(field, "must point to a public address (not a private, loopback "
                             "or link-local one)") from exc
    return url


_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
MAX_LABEL_CHARS = 63
MAX_HOST_CHARS = 253


def _idna(name: str) -> str:
    """The ASCII of a host name as yarl (aiohttp) sends it: IDNA 2008 with
    UTS 46 mapping, else IDNA 2003."""
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return name.encode("idna").decode("ascii")


def _valid_punycode(label: str) -> bool:
    for decode in (idna.decode, lambda text: text.encode("ascii").decode("idna")):
        try:
            decode(label)
        except (idna.IDNAError, UnicodeError, ValueError):
            continue
        return True
    return False


def _check_host(url: str, field: str) -> None:
    """A host that is an IP literal, or a host name IDNA (as yarl sends it)
    can encode: labels of 1-63 letters, digits,
    hyphens (and underscores), ``xn--`` ones valid punycode."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:  # "[::1": not a host at all
        raise invalid(field, "has no valid host") from exc
    if not host:
        raise invalid(field, "has no host")
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise invalid(field, f"[{host[:100]}] is not an IPv6 address") from exc
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    try:
        ascii_name = _idna(name)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise invalid(field, f"host {host[:100]!r} is not a valid host name (an empty "
                             "label, one over 63 characters, or characters IDNA "
                             "cannot encode)") from exc
    if len(ascii_name) > MAX_HOST_CHARS:
        raise invalid(field, f"host is {len(ascii_name)} characters; at most {MAX_HOST_CHARS}")
    for label in ascii_name.split("."):
        bad = not label or len(label) > MAX_LABEL_CHARS or not _LABEL.match(label)
        if not bad and label.startswith("xn--"):
            bad = not _valid_punycode(label)
        if bad:
            raise invalid(field, f"host {host[:100]!r} is not a valid host name (label "
                                 f"{label[:70]!r})")


def check_description(text: str, max_chars: int) -> str:
    if len(text) > max_chars:
        raise invalid("description", f"is {len(text)} characters; at most {max_chars}")
    return text


def check_filters(filters: Filters) -> Filters:
    for field, value in (("filters.templateId", filters.template_id),
                         ("filters.bindingId", filters.binding_id)):
        if len(value) > MAX_FILTER_ID_CHARS:
            raise invalid(field, f"is {len(value)} characters; at most {MAX_FILTER_ID_CHARS}")
        if not value.isprintable():
            raise invalid(field, "must not contain control characters")
    if filters.binding_id and not _BINDING_ID.fullmatch(filters.binding_id):
        # Only binding events carry a binding id, always of this form: any
        # other value would make a subscription that never matches.
        raise invalid("filters.bindingId",
                      "must be a binding id (bnd_ and 36 hex digits); it matches "
                      "binding.updated and binding.failed events of that binding")
    return filters


def check_settable_status(status: SubscriptionStatus) -> SubscriptionStatus:
    if status not in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAUSED):
        raise invalid("status", "must be active or paused")
    return status


def page_size(requested: int) -> int:
    if requested < 0:
        raise invalid("pageSize", "must be between 1 and 100")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
