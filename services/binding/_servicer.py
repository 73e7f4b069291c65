"""gRPC translation for the binding service: proto in, domain call, proto out.
Domain errors become gRPC status in ``litho.rpc``'s interceptor."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from litho import formats
from litho.binding.v1 import binding_pb2 as pb
from litho.binding.v1 import binding_pb2_grpc as pb_grpc
from litho.errors import FieldError, InvalidArgument
from litho.renderer.v1 import renderer_pb2
from services.binding._bindings import Bindings
from services.binding._model import Binding, BindingSpec, Output, PolicyInput, SourceInput
from services.binding._sources import DataSources, SourceCall

Context = grpc.aio.ServicerContext[Any, Any]


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def _credentials(c: pb.Credentials) -> dict[str, str]:
    return {"type": c.type, "token": c.token, "username": c.username,
            "password": c.password, "headerName": c.header_name,
            "headerValue": c.header_value}


def source_in(ds: pb.DataSource) -> SourceInput:
    return SourceInput(type=ds.type, url=ds.url, method=ds.method, headers=dict(ds.headers),
                       body=ds.body,
                       credentials=_credentials(ds.credentials)
                       if ds.HasField("credentials") else None)


def output_in(o: pb.BindingOutput, *, field: str = "output.format") -> Output:
    if o.format == renderer_pb2.IMAGE_FORMAT_UNSPECIFIED:
        name = "png"
    else:
        known = formats.by_enum(o.format)
        if known is None:
            raise InvalidArgument(f"{field} is not a format Litho renders",
                                  errors=[FieldError(field, "must be one of "
                                                     + ", ".join(formats.names()))])
        name = known.name
    return Output(format=name, options_json=json_format.MessageToJson(o.options, indent=None))


def output_out(o: Output) -> pb.BindingOutput:
    known = formats.by_name(o.format)
    options = renderer_pb2.RenderOptions()
    json_format.Parse(o.options_json or "{}", options, ignore_unknown_fields=True)
    return pb.BindingOutput(
        format=known.enum if known else renderer_pb2.IMAGE_FORMAT_PNG, options=options)


def spec_in(s: pb.BindingSpec) -> BindingSpec:
    policy = s.refresh_policy
    return BindingSpec(
        name=s.name if s.HasField("name") else None,
        template_id=s.template_id if s.HasField("template_id") else None,
        data_source=source_in(s.data_source) if s.HasField("data_source") else None,
        clear_credentials=s.clear_credentials,
        mapping=dict(s.mapping) if s.has_mapping or s.mapping else None,
        defaults_json=s.defaults_json if s.HasField("defaults_json") else None,
        refresh_policy=PolicyInput(type=policy.type, ttl_seconds=policy.ttl_seconds,
                                   cron=policy.cron, on_error=policy.on_error)
        if s.HasField("refresh_policy") else None,
        output=output_in(s.output) if s.HasField("output") else None,
    )


def binding_out(b: Binding) -> pb.Binding:
    ds, policy = b.data_source, b.refresh_policy
    return pb.Binding(
        id=b.id, tenant_id=b.tenant_id, name=b.name, template_id=b.template_id,
        data_source=pb.DataSource(
            type=str(ds.get("type") or ""), url=str(ds.get("url") or ""),
            method=str(ds.get("method") or ""), headers=dict(ds.get("headers") or {}),
            body=str(ds.get("body") or "")),
        credentials_type=b.credentials_type, mapping=dict(b.mapping),
        defaults_json=b.defaults_json,
        refresh_policy=pb.RefreshPolicy(
            type=str(policy.get("type") or ""), ttl_seconds=int(policy.get("ttlSeconds") or 0),
            cron=str(policy.get("cron") or ""), on_error=str(policy.get("onError") or "")),
        output=output_out(b.output), status=b.status, last_error=b.last_error,
        last_error_time=_timestamp(b.last_error_at), fetch_time=_timestamp(b.fetched_at),
        next_refresh_time=_timestamp(b.next_refresh_at), data_hash=b.data_hash,
        create_time=_timestamp(b.created_at), update_time=_timestamp(b.updated_at),
        push_secret=b.push_secret)


class BindingServicer(pb_grpc.BindingServiceServicer):
    def __init__(self, bindings: Bindings, sources: DataSources) -> None:
        self._bindings = bindings
        self._sources = sources

    async def CreateBinding(self, request: pb.CreateBindingRequest,
                            context: Context) -> pb.CreateBindingResponse:
        binding = await self._bindings.create(request.tenant_id, spec_in(request.spec))
        return pb.CreateBindingResponse(binding=binding_out(binding))

    async def GetBinding(self, request: pb.GetBindingRequest,
                         context: Context) -> pb.GetBindingResponse:
        binding = await self._bindings.get(request.tenant_id, request.binding_id)
        return pb.GetBindingResponse(binding=binding_out(binding))

    async def ListBindings(self, request: pb.ListBindingsRequest,
                           context: Context) -> pb.ListBindingsResponse:
        items, token = await self._bindings.list_bindings(
            request.tenant_id, page_size=request.page_size, page_token=request.page_token,
            template_id=request.template_id, status=request.status)
        return pb.ListBindingsResponse(bindings=[binding_out(b) for b in items],
                                       next_page_token=token)

    async def UpdateBinding(self, request: pb.UpdateBindingRequest,
                            context: Context) -> pb.UpdateBindingResponse:
        binding = await self._bindings.update(request.tenant_id, request.binding_id,
                                              spec_in(request.spec))
        return pb.UpdateBindingResponse(binding=binding_out(binding))

    async def DeleteBinding(self, request: pb.DeleteBindingRequest,
                            context: Context) -> pb.DeleteBindingResponse:
        await self._bindings.delete(request.tenant_id, request.binding_id)
        return pb.DeleteBindingResponse()

    async def PauseBinding(self, request: pb.PauseBindingRequest,
                           context: Context) -> pb.PauseBindingResponse:
        binding = await self._bindings.pause(request.tenant_id, request.binding_id)
        return pb.PauseBindingResponse(binding=binding_out(binding))

    async def ResumeBinding(self, request: pb.ResumeBindingRequest,
                            context: Context) -> pb.ResumeBindingResponse:
        binding = await self._bindings.resume(request.tenant_id, request.binding_id)
        return pb.ResumeBindingResponse(binding=binding_out(binding))

    async def RefreshBinding(self, request: pb.RefreshBindingRequest,
                             context: Context) -> pb.RefreshBindingResponse:
        binding, changed = await self._bindings.refresh(request.tenant_id, request.binding_id)
        return pb.RefreshBindingResponse(binding=binding_out(binding), changed=changed)

    async def GetBindingData(self, request: pb.GetBindingDataRequest,
                             context: Context) -> pb.GetBindingDataResponse:
        d = await self._bindings.data(request.tenant_id, request.binding_id)
        return pb.GetBindingDataResponse(
            data_json=d.data_json, fetch_time=_timestamp(d.fetched_at), etag=d.etag,
            last_modified=d.last_modified, status=d.status, last_error=d.last_error,
            last_error_time=_timestamp(d.last_error_at), data_hash=d.data_hash,
            source=d.source, variables_json=d.variables_json)

    async def PreviewBinding(self, request: pb.PreviewBindingRequest,
                             context: Context) -> pb.PreviewBindingResponse:
        variables, data = await self._bindings.preview(
            request.tenant_id, template_id=request.template_id,
            data_source=source_in(request.data_source)
            if request.HasField("data_source") else None,
            sample_data_json=request.sample_data_json, mapping=dict(request.mapping),
            defaults_json=request.defaults_json)
        return pb.PreviewBindingResponse(variables_json=variables, data_json=data)

    async def TestDataSource(self, request: pb.TestDataSourceRequest,
                             context: Context) -> pb.TestDataSourceResponse:
        tested = await self._bindings.test_source(request.tenant_id,
                                                  source_in(request.data_source))
        return pb.TestDataSourceResponse(
            success=tested.success, status=tested.status, data_json=tested.data_json,
            duration_ms=tested.duration_ms, error=tested.error)

    async def PushBindingData(self, request: pb.PushBindingDataRequest,
                              context: Context) -> pb.PushBindingDataResponse:
        changed, digest = await self._bindings.push(
            request.binding_id, request.body, signature=request.signature,
            secret=request.secret)
        return pb.PushBindingDataResponse(changed=changed, data_hash=digest)

    async def ResolveBinding(self, request: pb.ResolveBindingRequest,
                             context: Context) -> pb.ResolveBindingResponse:
        r = await self._bindings.resolve(request.binding_id, refresh=not request.no_refresh)
        return pb.ResolveBindingResponse(
            binding_id=r.binding_id, tenant_id=r.tenant_id, template_id=r.template_id,
            variables_json=r.variables_json, output=output_out(r.output), status=r.status,
            data_hash=r.data_hash, fresh_until=_timestamp(r.fresh_until))

    async def FetchDataSources(self, request: pb.FetchDataSourcesRequest,
                               context: Context) -> pb.FetchDataSourcesResponse:
        # A turn to fetch is waited for no longer than the caller waits.
        left = context.time_remaining()
        results = await self._sources.fetch(request.tenant_id, [
            SourceCall(name=s.name, url=s.url, method=s.method or "GET",
                       headers=dict(s.headers), body=s.body, ttl_seconds=s.ttl_seconds)
            for s in request.sources], wait=left if left is not None and left > 0 else None)
        return pb.FetchDataSourcesResponse(results=[
            pb.DataSourceResult(name=r.name, data_json=r.data_json,
                                fetch_time=_timestamp(r.fetched_at), from_cache=r.from_cache)
            for r in results])
