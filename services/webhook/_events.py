"""The events a subscription can select, one row each, and what a delivery says.

Each row names the event (``render.completed``), its subject on LITHO_EVENTS
(``litho.events.v1.<name>``), the proto message published there
(``proto/litho/events/v1/events.proto``) and how that message becomes an
:class:`Event`: its tenant, what filters match on, and the ``data`` of the
delivery body ``{"type", "timestamp", "data"}``. Adding an event is one row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from litho import formats, renders
from litho.events.v1 import events_pb2

SUBJECT_PREFIX = "litho.events.v1."


@dataclass(frozen=True)
class Event:
    """One domain event, as deliveries see it."""

    type: str
    tenant_id: str
    #: What subscription filters match on ("" when the event has none).
    template_id: str
    binding_id: str
    #: Set for batch events: a batch's own webhook waits for it.
    batch_id: str
    #: When it happened (None when the publisher left it out).
    time: datetime | None
    data: dict[str, Any]

    def body(self, now: datetime) -> str:
        """The delivery body: compact JSON, signed and sent as is."""
        return json.dumps({"type": self.type, "timestamp": iso(self.time or now),
                           "data": self.data}, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Context:
    """What turning a message into an event needs besides the message."""

    #: ``LITHO_WEBHOOK_PUBLIC_URL``, without a trailing slash.
    public_url: str
    #: ``LITHO_IMAGE_BASE_URL`` (checked, without a trailing slash): where
    #: image URLs point instead of the gateway's /images/ when set.
    image_base_url: str = ""


@dataclass(frozen=True)
class EventType:
    name: str
    message: type[Message]
    describe: Callable[[Any, Context], Event]

    @property
    def subject(self) -> str:
        return SUBJECT_PREFIX + self.name

    def parse(self, data: bytes, context: Context) -> Event:
        """The event in a published message; ``ValueError`` if unreadable."""
        try:
            message = self.message.FromString(data)
        except DecodeError as exc:
            raise ValueError(f"not a valid {self.message.DESCRIPTOR.full_name}: {exc}") from exc
        return self.describe(message, context)


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-30T22:05:01.123Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _iso_or_none(ts: Timestamp) -> str | None:
    when = _time(ts)
    return iso(when) if when else None


def _render_completed(m: events_pb2.RenderCompleted, ctx: Context) -> Event:
    fmt = formats.by_name(m.format)
    extension = fmt.extension if fmt else m.format
    return Event(
        type="render.completed", tenant_id=m.tenant_id, template_id=m.template_id,
        binding_id="", batch_id="", time=_time(m.time),
        data={
            "renderId": m.render_id, "templateId": m.template_id,
            "templateVersion": m.template_version, "format": m.format, "width": m.width,
            "height": m.height, "cached": m.cached, "durationMs": round(m.duration_ms, 3),
            "url": renders.image_url(ctx.public_url, ctx.image_base_url, m.render_id,
                                     extension),
        })


def _render_failed(m: events_pb2.RenderFailed, ctx: Context) -> Event:
    return Event(
        type="render.failed", tenant_id=m.tenant_id, template_id=m.template_id,
        binding_id="", batch_id="", time=_time(m.time),
        data={"templateId": m.template_id, "templateVersion": m.template_version,
              "format": m.format, "status": m.status, "reason": m.reason})


def _metadata(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _batch_finished(name: str) -> Callable[[events_pb2.BatchFinished, Context], Event]:
    def describe(m: events_pb2.BatchFinished, ctx: Context) -> Event:
        return Event(
            type=name, tenant_id=m.tenant_id, template_id=m.template_id, binding_id="",
            batch_id=m.batch_id, time=_time(m.completed_at),
            data={"batchId": m.batch_id, "templateId": m.template_id,
                  "templateVersion": m.template_version, "status": m.status,
                  "totalItems": m.total_items, "completedItems": m.completed_items,
                  "failedItems": m.failed_items, "cancelledItems": m.cancelled_items,
                  "metadata": _metadata(m.metadata_json),
                  "createdAt": _iso_or_none(m.created_at),
                  "completedAt": _iso_or_none(m.completed_at)})
    return describe


def _binding_updated(m: events_pb2.BindingUpdated, ctx: Context) -> Event:
    fmt = formats.by_name(m.format)
    extension = fmt.extension if fmt else (m.format or formats.DEFAULT.extension)
    return Event(
        type="binding.updated", tenant_id=m.tenant_id, template_id=m.template_id,
        binding_id=m.binding_id, batch_id="", time=_time(m.time),
        data={"bindingId": m.binding_id, "templateId": m.template_id,
              "dataHash": m.data_hash, "source": m.source,
              "fetchedAt": _iso_or_none(m.fetch_time),
              # The binding's stable URL: it shows the new data from now on.
              "imageUrl": f"{ctx.public_url}/b/{m.binding_id}.{extension}"})


def _binding_failed(m: events_pb2.BindingFailed, ctx: Context) -> Event:
    return Event(
        type="binding.failed", tenant_id=m.tenant_id, template_id=m.template_id,
        binding_id=m.binding_id, batch_id="", time=_time(m.time),
        data={"bindingId": m.binding_id, "templateId": m.template_id, "error": m.error,
              "status": m.status})


def _winner_ready(m: events_pb2.ExperimentWinnerReady, ctx: Context) -> Event:
    return Event(
        type="experiment.winner_ready", tenant_id=m.tenant_id, template_id="", binding_id="",
        batch_id="", time=_time(m.time),
        data={"experimentId": m.experiment_id, "slug": m.slug,
              "recommendedWinnerVariantId": m.variant_id,
              "probabilityToBeBest": m.probability_to_be_best, "impressions": m.impressions,
              "statsUrl": f"{ctx.public_url}/v1/experiments/{m.experiment_id}/stats"})


#: Every event a subscription can select, in the order the API documents them.
EVENTS: tuple[EventType, ...] = (
    EventType("render.completed", events_pb2.RenderCompleted, _render_completed),
    EventType("render.failed", events_pb2.RenderFailed, _render_failed),
    EventType("batch.completed", events_pb2.BatchFinished, _batch_finished("batch.completed")),
    EventType("batch.failed", events_pb2.BatchFinished, _batch_finished("batch.failed")),
    EventType("binding.updated", events_pb2.BindingUpdated, _binding_updated),
    EventType("binding.failed", events_pb2.BindingFailed, _binding_failed),
    EventType("experiment.winner_ready", events_pb2.ExperimentWinnerReady, _winner_ready),
)

BY_NAME: Mapping[str, EventType] = {e.name: e for e in EVENTS}
BY_SUBJECT: Mapping[str, EventType] = {e.subject: e for e in EVENTS}


def names() -> tuple[str, ...]:
    return tuple(e.name for e in EVENTS)


def subjects() -> tuple[str, ...]:
    return tuple(e.subject for e in EVENTS)
