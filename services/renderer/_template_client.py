"""gRPC adapter of the pipeline's TemplateSource port."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc
from services.renderer._pipeline import (
    Expanded,
    FontFace,
    InlineSource,
    KnownSource,
    PendingSource,
)


class GrpcTemplateSource:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.TemplateServiceStub(channel)

    async def expand(
        self, tenant_id: str, template_id: str, version: int, variables_json: str,
        *, coerce_strings: bool = False, inline: InlineSource | None = None,
        data_json: str = "", known: Sequence[KnownSource] = (),
    ) -> Expanded:
        response = await self._stub.ExpandTemplate(pb.ExpandTemplateRequest(
            tenant_id=tenant_id, template_id=template_id, version=version,
            variables_json=variables_json, coerce_strings=coerce_strings,
            inline=pb.TemplateSpec(html=inline.html, width=inline.width, height=inline.height)
            if inline else None,
            data_json=data_json,
            known_data_sources=[pb.KnownDataSource(name=k.name, key=k.key,
                                                   data_json=k.data_json) for k in known],
        ))
        return Expanded(
            template_id=response.template_id, version=response.version, html=response.html,
            width=response.width, height=response.height,
            fonts=tuple(FontFace(family=f.family, weight=f.weight, style=f.style, id=f.id,
                                 format=f.format, sha256=f.sha256, blob_key=f.blob_key,
                                 size=f.size_bytes)
                        for f in response.fonts),
            pending=tuple(PendingSource(name=p.name, url=p.url, method=p.method or "GET",
                                        headers=tuple(sorted(p.headers.items())), body=p.body,
                                        ttl_seconds=p.ttl_seconds)
                          for p in response.pending_data_sources),
            known_used=tuple(response.known_data_sources_used),
        )

    async def latest_version(self, tenant_id: str, template_id: str) -> int:
        response = await self._stub.GetTemplate(pb.GetTemplateRequest(
            tenant_id=tenant_id, template_id=template_id))
        return response.template.version
