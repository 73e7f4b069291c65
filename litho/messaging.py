"""NATS JetStream helpers: connect, declare streams, publish proto messages idempotently.

Streams are declared in :mod:`litho.streams` (re-exported here); consumers
live in :mod:`litho.consumers`. Every message Litho publishes carries the
headers built by :func:`message_headers`, and a ``Nats-Msg-Id`` so that a
re-publish inside the stream's duplicate window (a retry after a lost ack, a
worker redoing a step) is stored once.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import nats
import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from litho import errors, telemetry
from litho.logs import get_logger
from litho.streams import (
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    JOBS_STREAM,
    JOBS_SUBJECTS,
    StreamSpec,
    default_streams,
    ensure_streams,
    events_stream,
    jobs_stream,
)

__all__ = [
    "CONTENT_TYPE",
    "EVENTS_STREAM",
    "EVENTS_SUBJECTS",
    "HEADER_CONTENT_TYPE",
    "HEADER_MESSAGE_TYPE",
    "HEADER_MSG_ID",
    "JOBS_STREAM",
    "JOBS_SUBJECTS",
    "EventPublisher",
    "PublishAck",
    "Publisher",
    "StreamSpec",
    "connect",
    "default_streams",
    "delivered",
    "ensure_streams",
    "events_stream",
    "jobs_stream",
    "message_headers",
]

log = get_logger(__name__)

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_CONTENT_TYPE = "Content-Type"
#: Full proto name of the payload, e.g. ``litho.events.v1.RenderCompleted``.
HEADER_MESSAGE_TYPE = "Litho-Message-Type"
CONTENT_TYPE = "application/protobuf"


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


async def delivered(nc: Client, *, timeout: int = 10) -> None:  # noqa: ASYNC109
    """Return once the server has processed everything sent on ``nc`` so far
    (publishes, subscriptions): raises ``nats.errors.FlushTimeoutError``.

    One ``flush()`` is not enough: nats-py writes its PING straight to the
    socket, ahead of commands still waiting for its flusher task, so the PONG
    can come back before a ``SUB`` or ``PUB`` sent just before it reached
    the server. By the first PONG the flusher has written them (it was woken
    before the PING left); the second PING follows them on the wire.
    """
    for _ in range(2):
        await nc.flush(timeout=timeout)


def message_headers(
    message: Message, *, msg_id: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers of every message Litho publishes.

    This is the one place they are built (:meth:`Publisher.publish` adds the
    trace context). ``extra`` cannot override the de-duplication id or the
    payload type.
    """
    headers = dict(extra or {})
    headers[HEADER_MSG_ID] = msg_id
    headers[HEADER_CONTENT_TYPE] = CONTENT_TYPE
    headers[HEADER_MESSAGE_TYPE] = message.DESCRIPTOR.full_name
    return headers


@dataclass(frozen=True)
class PublishAck:
    stream: str
    sequence: int
    #: True when the stream already held a message with this ``Nats-Msg-Id``
    #: (inside its duplicate window) and stored nothing new.
    duplicate: bool


class Publisher:
    """Publishes proto messages (events and jobs) to JetStream and waits for
    the stream's ack, so a returned :class:`PublishAck` means stored."""

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> PublishAck:
        """Publish ``message`` on ``subject`` with ``msg_id`` as its
        ``Nats-Msg-Id``: choose an id that names the fact (``render:<id>``,
        ``job:<batch>:<n>``) so that a retry is the same message."""
        body = message.SerializeToString()
        sent = message_headers(message, msg_id=msg_id, extra=headers)
        try:
            # A PRODUCER span whose context travels in the headers, so the
            # consumer's span continues this trace.
            with telemetry.publish_span(subject, sent, message_id=msg_id, body_size=len(body)):
                ack = await self._js.publish(subject, body, timeout=self._timeout, headers=sent)
        except NoStreamResponseError as exc:
            raise errors.Unavailable(
                f"no JetStream stream stores {subject}; streams are declared in litho.streams"
            ) from exc
        except ServiceUnavailableError as exc:
            # A bounded stream that discards new messages answers "maximum
            # messages/bytes exceeded" with 503: the queue is full, try later.
            if exc.description and "maximum" in exc.description:
                raise errors.ResourceExhausted(
                    f"the stream for {subject} is full ({exc.description}); try again later",
                    retry_after=5.0,
                ) from exc
            raise errors.Unavailable(f"JetStream refused {subject}: {exc.description}") from exc
        except APIError as exc:
            raise errors.Unavailable(f"JetStream refused {subject}: {exc.description}") from exc
        except nats.errors.MaxPayloadError as exc:
            # No retry can succeed: the message itself is too large.
            raise errors.InvalidArgument(
                f"a message of {len(body)} bytes is larger than the NATS server accepts "
                f"(max_payload); make it smaller") from exc
        except nats.errors.Error as exc:
            raise errors.Unavailable(f"publishing to {subject} failed: {exc}") from exc
        return PublishAck(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))


#: The name services used before jobs existed; the same publisher.
EventPublisher = Publisher
