"""The adapter behind :mod:`services.experiment._ports`: the template service
over gRPC."""

from __future__ import annotations

import grpc

from litho.errors import NotFound
from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc


class GrpcTemplateCatalog:
    """``GetTemplate`` of the template service; its errors arrive as the
    domain's (``litho.rpc.open_channel``), and NOT_FOUND means missing."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.TemplateServiceStub(channel)

    async def exists(self, tenant_id: str, template_id: str) -> bool:
        try:
            await self._stub.GetTemplate(pb.GetTemplateRequest(
                tenant_id=tenant_id, template_id=template_id))
        except NotFound:
            return False
        return True
