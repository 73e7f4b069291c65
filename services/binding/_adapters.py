"""The adapters behind :mod:`services.binding._ports`: the template service
over gRPC, and binding events on JetStream."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as Nats

from litho.errors import NotFound
from litho.events.v1 import events_pb2
from litho.messaging import Publisher
from litho.notes import send_note
from litho.streams import BINDING_CHANGED_SUBJECT
from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc

SUBJECT_UPDATED = "litho.events.v1.binding.updated"
SUBJECT_FAILED = "litho.events.v1.binding.failed"


class GrpcTemplateMapping:
    """``EvaluateMapping`` and ``GetTemplate`` of the template service; its
    errors arrive as the domain's (``litho.rpc.open_channel``)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.TemplateServiceStub(channel)

    async def evaluate(self, mapping: Mapping[str, str], data_json: str, *,
                       check_only: bool) -> str:
        response = await self._stub.EvaluateMapping(pb.EvaluateMappingRequest(
            mapping=dict(mapping), data_json="" if check_only else data_json,
            check_only=check_only))
        return response.variables_json or "{}"

    async def template_exists(self, tenant_id: str, template_id: str) -> bool:
        try:
            await self._stub.GetTemplate(pb.GetTemplateRequest(
                tenant_id=tenant_id, template_id=template_id))
        except NotFound:
            return False
        return True


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def updated_msg_id(binding_id: str, data_hash: str, fetched_at: float) -> str:
    """One event per change: a re-publish of the same change is stored once,
    while data that goes A, B, A again within the stream's duplicate window is
    three changes (the time the data came tells the two A apart)."""
    return f"binding-updated:{binding_id}:{data_hash}:{round(fetched_at * 1000)}"


def failed_msg_id(binding_id: str, error: str, at: float) -> str:
    digest = hashlib.sha256(error.encode()).hexdigest()[:16]
    return f"binding-failed:{binding_id}:{digest}:{round(at * 1000)}"


class NatsBindingEvents:
    """Publishes and waits for the stream's ack, so the domain knows whether a
    failure was reported (it reports it again at the next failure if not).
    Change notes are core NATS, flushed to the server before the write
    answers (so replicas usually have them within milliseconds)."""

    def __init__(self, publisher: Publisher, nc: Nats) -> None:
        self._publisher = publisher
        self._nc = nc

    async def changed(self, binding_id: str) -> None:
        await send_note(self._nc, BINDING_CHANGED_SUBJECT, binding_id)

    async def updated(self, *, binding_id: str, tenant_id: str, template_id: str,
                      data_hash: str, format: str, source: str, fetched_at: float,
                      at: float) -> None:
        await self._publisher.publish(SUBJECT_UPDATED, events_pb2.BindingUpdated(
            binding_id=binding_id, tenant_id=tenant_id, template_id=template_id,
            data_hash=data_hash, format=format, source=source,
            fetch_time=_timestamp(fetched_at), time=_timestamp(at)),
            msg_id=updated_msg_id(binding_id, data_hash, fetched_at))

    async def failed(self, *, binding_id: str, tenant_id: str, template_id: str,
                     error: str, status: str, at: float) -> None:
        await self._publisher.publish(SUBJECT_FAILED, events_pb2.BindingFailed(
            binding_id=binding_id, tenant_id=tenant_id, template_id=template_id,
            error=error, status=status, time=_timestamp(at)),
            msg_id=failed_msg_id(binding_id, error, at))
