"""gRPC adapter of the binding service's two ports: the pipeline's
DataSources (templates' declared data sources) and the BindingResolver
(a binding's current variables)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from litho import formats
from litho.binding.v1 import binding_pb2 as pb
from litho.binding.v1 import binding_pb2_grpc as pb_grpc
from litho.renderer.v1 import renderer_pb2
from services.renderer._bindings import ResolvedBinding
from services.renderer._pipeline import FetchedSource, PendingSource
from services.renderer._spec import RenderOptions


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


class GrpcBindingClient:
    def __init__(self, channel: grpc.aio.Channel, *,
                 options_of: Callable[[renderer_pb2.RenderOptions], RenderOptions]) -> None:
        self._stub = pb_grpc.BindingServiceStub(channel)
        self._options_of = options_of

    async def fetch(self, tenant_id: str,
                    sources: Sequence[PendingSource]) -> list[FetchedSource]:
        response = await self._stub.FetchDataSources(pb.FetchDataSourcesRequest(
            tenant_id=tenant_id,
            sources=[pb.DataSourceCall(name=s.name, url=s.url, method=s.method,
                                       headers=dict(s.headers), body=s.body,
                                       ttl_seconds=s.ttl_seconds) for s in sources]))
        return [FetchedSource(name=r.name, data_json=r.data_json,
                              fetch_time=_seconds(r.fetch_time), from_cache=r.from_cache)
                for r in response.results]

    async def resolve(self, binding_id: str, *, refresh: bool = True) -> ResolvedBinding:
        r = await self._stub.ResolveBinding(pb.ResolveBindingRequest(
            binding_id=binding_id, no_refresh=not refresh))
        fmt = formats.by_enum(r.output.format)
        return ResolvedBinding(
            binding_id=r.binding_id or binding_id, tenant_id=r.tenant_id,
            template_id=r.template_id, variables_json=r.variables_json or "{}",
            format=fmt.name if fmt else "",
            options=self._options_of(r.output.options),
            strict_assets=r.output.options.assets == renderer_pb2.ASSET_POLICY_STRICT,
            data_hash=r.data_hash,
            fresh_until=_seconds(r.fresh_until) if r.HasField("fresh_until") else None)
