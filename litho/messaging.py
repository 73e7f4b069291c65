"""NATS JetStream helpers: connect, declare streams, publish events idempotently."""

from __future__ import annotations

from contextlib import AsyncExitStack
from urllib.parse import urlsplit

import nats
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from litho import errors
from litho.logs import get_logger

log = get_logger(__name__)

#: Every Litho event lives on this stream, under subjects ``litho.events.v1.>``.
EVENTS_STREAM = "LITHO_EVENTS"
EVENTS_SUBJECTS = ["litho.events.v1.>"]


async def connect(stack: AsyncExitStack, url: str, *, name: str) -> Client:
    """Connect to NATS; the stack drains the connection on the way out."""
    try:
        nc = await nats.connect(
            url, name=name, connect_timeout=5, max_reconnect_attempts=-1, allow_reconnect=True
        )
    except Exception as exc:
        # The URL may carry credentials: name only where it points.
        where = urlsplit(url).hostname or "the configured server"
        raise errors.Unavailable(f"cannot connect to NATS at {where}: {exc}") from exc

    async def drain() -> None:
        if nc.is_connected:
            await nc.drain()

    stack.push_async_callback(drain)
    return nc


async def ensure_stream(js: JetStreamContext, name: str, subjects: list[str]) -> None:
    """Create the stream, or update it if its config drifted."""
    config = StreamConfig(name=name, subjects=subjects, max_age=7 * 24 * 3600)
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


class EventPublisher:
    """Publishes proto events to JetStream with ``Nats-Msg-Id`` for de-duplication."""

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, subject: str, event: Message, *, msg_id: str) -> None:
        await self._js.publish(
            subject,
            event.SerializeToString(),
            timeout=self._timeout,
            headers={"Nats-Msg-Id": msg_id, "Content-Type": "application/protobuf",
                     "Litho-Message-Type": event.DESCRIPTOR.full_name},
        )
