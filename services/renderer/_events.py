"""NATS adapter of the pipeline's RenderEvents port.

Events are published in the background so the answer to a render never waits
for JetStream; the set of pending publishes is bounded, and a publish that
fails is logged, not retried (events are notifications, the image is stored).
"""

from __future__ import annotations

import asyncio
import uuid

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from litho.errors import LithoError
from litho.events.v1 import events_pb2
from litho.logs import get_logger
from litho.messaging import EventPublisher
from services.renderer._pipeline import RenderRequest, RenderResult

log = get_logger(__name__)

SUBJECT_COMPLETED = "litho.events.v1.render.completed"
SUBJECT_FAILED = "litho.events.v1.render.failed"


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class NatsRenderEvents:
    def __init__(self, publisher: EventPublisher, *, max_pending: int = 1000) -> None:
        self._publisher = publisher
        self._max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()

    def completed(self, request: RenderRequest, result: RenderResult, duration_ms: float) -> None:
        self._send(SUBJECT_COMPLETED, events_pb2.RenderCompleted(
            render_id=result.render_id, tenant_id=request.tenant_id,
            template_id=request.template_id, template_version=result.template_version,
            blob_key=result.blob_key, format=result.format, width=result.width,
            height=result.height, cached=result.cached, duration_ms=duration_ms, time=_now(),
        ))

    def failed(self, request: RenderRequest, error: LithoError, template_version: int) -> None:
        self._send(SUBJECT_FAILED, events_pb2.RenderFailed(
            tenant_id=request.tenant_id, template_id=request.template_id,
            template_version=template_version, format=request.format, status=error.status,
            reason=error.message if error.public else "internal error", time=_now(),
        ))

    def _send(self, subject: str, event: Message) -> None:
        if len(self._pending) >= self._max_pending:
            log.warning("event backlog full; dropping event", subject=subject)
            return
        task = asyncio.create_task(self._publish(subject, event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, subject: str, event: Message) -> None:
        try:
            await self._publisher.publish(subject, event, msg_id=uuid.uuid4().hex)
        except Exception as exc:
            log.warning("publishing an event failed", subject=subject, error=str(exc))

    async def flush(self) -> None:
        """Wait for pending publishes; called before NATS drains on shutdown."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=5)
