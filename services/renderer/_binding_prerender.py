"""The pre-render of bindings: a durable consumer of ``binding.updated`` on
LITHO_EVENTS that renders the binding's image at once, at background
priority, so the next ``GET /b/{id}.{ext}`` is a warm hit.

Every replica runs a worker of the one durable consumer, so each event is
rendered once. Rendering is idempotent (content addressed): a redelivered or
an old event renders the binding's *current* data, which is a hit when it was
rendered already. A binding that no longer exists (or that does not render:
its error is served, its template fails) is acked and dropped; transient
failures (the pool full, a peer away) are retried up to ``max_deliver``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client

from litho import formats, messaging
from litho.consumers import ConsumerOptions, Delivery, Poison, PullConsumer, Retry, proto_decoder
from litho.errors import LithoError, ResourceExhausted
from litho.events.v1 import events_pb2
from litho.streams import EVENTS_STREAM
from services.renderer._bindings import TRANSIENT, BindingRenders

SUBJECT = "litho.events.v1.binding.updated"
DURABLE = "renderer-binding-prerender"


@dataclass(frozen=True)
class Prerenderer:
    renders: BindingRenders

    async def handle(self, event: events_pb2.BindingUpdated) -> None:
        """Pre-render the event's binding; raises :class:`Retry` for a
        transient failure."""
        if not event.binding_id:
            raise Poison("a binding.updated event without a binding id")
        fmt = formats.parse(event.format.lower()) if event.format else None
        try:
            await self.renders.prerender(event.binding_id, fmt.name if fmt else "",
                                         event.data_hash)
        except TRANSIENT as exc:
            delay = exc.retry_after if isinstance(exc, ResourceExhausted) else None
            raise Retry(exc.message, delay=delay) from exc
        except LithoError as exc:
            raise Retry(f"{exc.status}: {exc.message}") from exc


def consumer(nc: Client, prerenderer: Prerenderer, options: ConsumerOptions,
             publisher: messaging.Publisher) -> PullConsumer[events_pb2.BindingUpdated]:
    async def on_event(delivery: Delivery[events_pb2.BindingUpdated]) -> None:
        await prerenderer.handle(delivery.payload)

    return PullConsumer(nc, stream=EVENTS_STREAM, durable=DURABLE, subjects=[SUBJECT],
                        handler=on_event, decode=proto_decoder(events_pb2.BindingUpdated),
                        options=options, publisher=publisher)
