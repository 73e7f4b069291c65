"""The gateway's binding edge: JSON <-> proto both ways, credentials that are
never answered, the exact paths that need no key, ``/b/`` ids refused before
any call, pushes over the limit, and how a binding's image is served.

The real app runs over a real key store and blob store; the binding service
and the renderer are recording fakes, so each test sees exactly which calls
the gateway made (and a refusal that must come first sees none)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from litho import errors, renders
from litho.binding.v1 import binding_pb2 as pb
from litho.renderer.v1 import renderer_pb2 as rpb
from litho.template.v1 import template_pb2 as tpb
from services.gateway import _bindings, _handlers
from services.gateway._middleware import is_public
from services.gateway._openapi import RequestValidator, load_document

BND = "bnd_" + "0123456789ab" + "e" * 24
TPL = "tpl_" + "1" * 24
RENDER_ID = "ab" * 32
BASE = "https://img.example.com"


class Recorder:
    """A gRPC stub stand-in: each method records its request and answers what
    the test set in ``answers`` (an exception is raised)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, Message | Exception] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(request: Any, **_: Any) -> Any:
            self.calls.append((name, request))
            answer = self.answers.get(name)
            if answer is None:
                raise AssertionError(f"unexpected call {name}")
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call

    def only(self, name: str) -> Any:
        assert [n for n, _ in self.calls] == [name], self.calls
        return self.calls[0][1]


@dataclass
class Edge:
    url: str
    key: str
    bindings: Recorder
    renderer: Recorder
    blobs: Any
    http: aiohttp.ClientSession
    auth: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    from aiohttp import web

    from litho.blobstore import open_blob_store
    from litho.config import S3Settings
    from litho.docstore import open_document_store
    from services.gateway._app import create_app
    from services.gateway._keys import KeyStore
    from services.gateway._state import Deps

    store = await open_document_store(f"sqlite://{tmp_path / 'keys.db'}", "unused")
    blobs = await open_blob_store((tmp_path / "blobs").as_uri(), S3Settings(endpoint_url=None))
    keys = KeyStore(store, cache_ttl=0)
    await keys.prepare()
    key = await keys.create("tenant-a")
    doc = load_document()
    bindings, renderer = Recorder(), Recorder()
    deps = Deps(keys=keys, templates=None, renderer=renderer,  # type: ignore[arg-type]
                webhooks=None, blobs=blobs,  # type: ignore[arg-type]
                openapi=doc, validator=RequestValidator(doc), base_url=BASE,
                bindings=bindings, binding_max_push_bytes=1000)  # type: ignore[arg-type]
    runner = web.AppRunner(create_app(deps, max_body_bytes=1 << 20), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession() as http:
            yield Edge(f"http://127.0.0.1:{runner.addresses[0][1]}", key, bindings, renderer,
                       blobs, http, {"Authorization": f"Bearer {key}"})
    finally:
        await runner.cleanup()
        await blobs.close()
        await store.close()


async def _call(edge: Edge, method: str, path: str, *, auth: bool = True,
                **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {**(edge.auth if auth else {}), **kwargs.pop("headers", {})}
    async with edge.http.request(method, edge.url + path, headers=headers, **kwargs) as r:
        raw = await r.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        return r.status, body, r.headers


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _binding(**changes: Any) -> pb.Binding:
    b = pb.Binding(
        id=BND, tenant_id="tenant-a", name="price card", template_id=TPL,
        data_source=pb.DataSource(type="http", url="https://api.example.com/items/1",
                                  method="GET", headers={"Accept": "application/json"}),
        mapping={"price": "price * 1.2", "user.name": "name"},
        defaults_json='{"price": 0}',
        refresh_policy=pb.RefreshPolicy(type="ttl", ttl_seconds=60, on_error="serve_default"),
        output=pb.BindingOutput(format=rpb.IMAGE_FORMAT_PNG),
        status="active", data_hash="cd" * 32,
        create_time=_ts(1_700_000_000), update_time=_ts(1_700_000_001),
        fetch_time=_ts(1_700_000_002))
    for name, value in changes.items():
        if isinstance(value, Message):
            getattr(b, name).CopyFrom(value)
        else:
            setattr(b, name, value)
    return b


# ------------------------------------------------------------ proto -> JSON ----

def test_a_binding_as_json() -> None:
    out = _bindings.binding_json(_binding(), BASE)
    assert out == {
        "id": BND, "name": "price card", "templateId": TPL,
        "dataSource": {"type": "http", "url": "https://api.example.com/items/1",
                       "method": "GET", "headers": {"Accept": "application/json"}},
        "mapping": {"price": "price * 1.2", "user.name": "name"},
        "defaults": {"price": 0},
        "refreshPolicy": {"type": "ttl", "ttlSeconds": 60, "onError": "serve_default"},
        "output": {"format": "png"}, "status": "active", "lastError": None,
        "lastErrorAt": None, "fetchedAt": "2023-11-14T22:13:22.000Z", "nextRefreshAt": None,
        "dataHash": "cd" * 32, "createdAt": "2023-11-14T22:13:20.000Z",
        "updatedAt": "2023-11-14T22:13:21.000Z",
        "imageUrl": f"{BASE}/b/{BND}.png",
    }


def test_credentials_are_never_answered_even_when_the_service_sends_them() -> None:
    leaky = _binding(
        credentials_type="bearer",
        data_source=pb.DataSource(type="http", url="https://a.example.com/x",
                                  credentials=pb.Credentials(type="bearer", token="tok-XYZ",
                                                             password="pw-XYZ")))
    out = _bindings.binding_json(leaky, BASE, with_secret=True)
    assert out["dataSource"]["credentials"] == {"type": "bearer"}
    assert "XYZ" not in json.dumps(out)
    assert "credentials" not in _bindings.binding_json(_binding(), BASE)["dataSource"]


def test_a_push_binding_shows_its_push_url_and_its_secret_only_when_asked() -> None:
    push = _binding(data_source=pb.DataSource(type="push"),
                    refresh_policy=pb.RefreshPolicy(type="push"), push_secret="lps_s3cret",
                    output=pb.BindingOutput(format=rpb.IMAGE_FORMAT_JPEG))
    shown = _bindings.binding_json(push, BASE)
    assert shown["dataSource"] == {"type": "push"}
    assert shown["pushUrl"] == f"{BASE}/b/{BND}/push"
    assert shown["imageUrl"] == f"{BASE}/b/{BND}.jpeg"
    assert shown["refreshPolicy"] == {"type": "push", "onError": "serve_stale"}
    assert "lps_s3cret" not in json.dumps(shown)
    assert _bindings.binding_json(push, BASE, with_secret=True)["pushSecret"] == "lps_s3cret"
    # A binding that is not a push one has neither, whatever the service sent.
    http = _bindings.binding_json(_binding(push_secret="lps_s3cret"), BASE, with_secret=True)
    assert "pushUrl" not in http and "pushSecret" not in http


# ------------------------------------------------------------ JSON -> proto ----

FULL = {
    "name": "card", "templateId": TPL,
    "dataSource": {"type": "http", "url": "https://api.example.com/x", "method": "POST",
                   "headers": {"X-Tenant": "7"}, "body": '{"q": 1}',
                   "credentials": {"type": "header", "headerName": "X-Key",
                                   "headerValue": "k1"}},
    "mapping": {"title": "items[0].name"}, "defaults": {"title": "—"},
    "refreshPolicy": {"type": "cron", "cron": "*/10 * * * *", "onError": "serve_error"},
    "output": {"format": "webp", "quality": 80, "width": 600, "transparent": True,
               "deviceScaleFactor": 2, "selector": "#card", "assets": "strict"},
}


def test_a_create_body_as_a_spec() -> None:
    RequestValidator(load_document()).check_body("createBinding", FULL)
    spec = _bindings.binding_spec(FULL)
    assert (spec.name, spec.template_id) == ("card", TPL)
    s = spec.data_source
    assert (s.type, s.url, s.method, dict(s.headers), s.body) == (
        "http", "https://api.example.com/x", "POST", {"X-Tenant": "7"}, '{"q": 1}')
    assert (s.credentials.type, s.credentials.header_name, s.credentials.header_value) == (
        "header", "X-Key", "k1")
    assert not spec.clear_credentials
    assert dict(spec.mapping) == {"title": "items[0].name"} and spec.has_mapping
    assert json.loads(spec.defaults_json) == {"title": "—"}
    assert (spec.refresh_policy.type, spec.refresh_policy.cron,
            spec.refresh_policy.on_error) == ("cron", "*/10 * * * *", "serve_error")
    assert spec.output.format == rpb.IMAGE_FORMAT_WEBP
    o = spec.output.options
    assert (o.quality, o.width, o.transparent, o.device_scale_factor, o.selector,
            o.assets) == (80, 600, True, 2, "#card", rpb.ASSET_POLICY_STRICT)


def test_the_output_reads_back_as_it_was_given() -> None:
    binding = _binding(output=_bindings.binding_spec(FULL).output)
    assert _bindings.binding_json(binding, BASE)["output"] == FULL["output"]
    pdf = {"format": "pdf", "pdf": {"preset": "A4", "landscape": True,
                                    "margins": {"top": "10mm", "left": "1in"}}}
    binding = _binding(output=_bindings.binding_output(pdf))
    assert _bindings.binding_json(binding, BASE)["output"] == pdf


def test_an_update_sets_only_what_it_gives() -> None:
    spec = _bindings.binding_spec({"name": "renamed"})
    assert spec.HasField("name") and spec.name == "renamed"
    for absent in ("template_id", "data_source", "defaults_json", "refresh_policy", "output"):
        assert not spec.HasField(absent), absent
    assert not spec.has_mapping and not spec.clear_credentials


@pytest.mark.parametrize(("credentials", "clear", "kept"), [
    ({"credentials": None}, True, False),  # null removes them
    ({}, False, False),  # absent keeps the stored ones
    ({"credentials": {"type": "bearer", "token": "t"}}, False, True),
])
def test_credentials_on_update(credentials: dict[str, Any], clear: bool, kept: bool) -> None:
    body = {"dataSource": {"type": "http", "url": "https://a.example.com/", **credentials}}
    RequestValidator(load_document()).check_body("updateBinding", body)
    spec = _bindings.binding_spec(body)
    assert spec.clear_credentials is clear
    assert spec.data_source.HasField("credentials") is kept


def test_an_empty_mapping_on_update_is_refused_by_the_document() -> None:
    with pytest.raises(errors.InvalidArgument):
        RequestValidator(load_document()).check_body("updateBinding", {"mapping": {}})


# -------------------------------------------------------------- over HTTP ----

async def test_create_answers_201_with_the_secret_and_get_never_shows_it(edge: Edge) -> None:
    created = _binding(data_source=pb.DataSource(type="push"), credentials_type="",
                       refresh_policy=pb.RefreshPolicy(type="push"), push_secret="lps_once")
    edge.bindings.answers["CreateBinding"] = pb.CreateBindingResponse(binding=created)
    body = {"name": "p", "templateId": TPL, "dataSource": {"type": "push"},
            "mapping": {"price": "price"}, "refreshPolicy": {"type": "push"},
            "output": {"format": "PNG"}}
    status, out, headers = await _call(edge, "POST", "/v1/bindings", json=body)
    assert status == 201, out
    assert out["pushSecret"] == "lps_once" and out["pushUrl"] == f"{BASE}/b/{BND}/push"
    assert headers["Location"] == f"/v1/bindings/{BND}"
    request = edge.bindings.only("CreateBinding")
    assert request.tenant_id == "tenant-a"
    assert request.spec.output.format == rpb.IMAGE_FORMAT_PNG  # PNG folded to png
    edge.bindings.calls.clear()
    edge.bindings.answers["GetBinding"] = pb.GetBindingResponse(binding=created)
    status, shown, _ = await _call(edge, "GET", f"/v1/bindings/{BND}")
    assert status == 200 and "pushSecret" not in shown and "lps_once" not in json.dumps(shown)
    assert edge.bindings.only("GetBinding").binding_id == BND


async def test_an_update_into_a_push_binding_answers_its_new_secret(edge: Edge) -> None:
    made_push = _binding(data_source=pb.DataSource(type="push"), credentials_type="",
                         refresh_policy=pb.RefreshPolicy(type="push"), push_secret="lps_new")
    edge.bindings.answers["UpdateBinding"] = pb.UpdateBindingResponse(binding=made_push)
    status, out, _ = await _call(edge, "PATCH", f"/v1/bindings/{BND}", json={
        "dataSource": {"type": "push"}, "refreshPolicy": {"type": "push"}})
    assert status == 200, out
    assert out["pushSecret"] == "lps_new"  # the only time it is shown


async def test_list_passes_its_filters(edge: Edge) -> None:
    edge.bindings.answers["ListBindings"] = pb.ListBindingsResponse(
        bindings=[_binding()], next_page_token="next")
    status, out, _ = await _call(
        edge, "GET", f"/v1/bindings?templateId={TPL}&status=paused&pageSize=7&pageToken=t")
    assert status == 200 and out["nextPageToken"] == "next" and out["bindings"][0]["id"] == BND
    request = edge.bindings.only("ListBindings")
    assert (request.template_id, request.status, request.page_size, request.page_token) == (
        TPL, "paused", 7, "t")


@pytest.mark.parametrize("query", ["status=stale", "templateId=nope", "pageSize=0"])
async def test_list_filters_are_checked_before_any_call(edge: Edge, query: str) -> None:
    status, _, _ = await _call(edge, "GET", f"/v1/bindings?{query}")
    assert status == 422 and edge.bindings.calls == []


async def test_patch_null_credentials_clears_them(edge: Edge) -> None:
    edge.bindings.answers["UpdateBinding"] = pb.UpdateBindingResponse(binding=_binding())
    status, _, _ = await _call(edge, "PATCH", f"/v1/bindings/{BND}", json={
        "dataSource": {"type": "http", "url": "https://a.example.com/", "credentials": None},
        "mapping": {"a": "b"}})
    assert status == 200
    request = edge.bindings.only("UpdateBinding")
    assert request.binding_id == BND and request.spec.clear_credentials
    assert request.spec.has_mapping and not request.spec.HasField("name")


async def test_refresh_data_and_the_other_actions(edge: Edge) -> None:
    edge.bindings.answers.update(
        RefreshBinding=pb.RefreshBindingResponse(binding=_binding(), changed=True),
        PauseBinding=pb.PauseBindingResponse(binding=_binding(status="paused")),
        ResumeBinding=pb.ResumeBindingResponse(binding=_binding()),
        DeleteBinding=pb.DeleteBindingResponse(),
        GetBindingData=pb.GetBindingDataResponse(
            data_json='{"price": 80}', variables_json='{"color": "#f00"}', etag='"v2"',
            status="active", data_hash="ef" * 32, source="fetch", fetch_time=_ts(1_700_000_000)))
    status, out, _ = await _call(edge, "POST", f"/v1/bindings/{BND}/refresh")
    assert status == 200 and out["changed"] is True and out["binding"]["id"] == BND
    status, out, _ = await _call(edge, "POST", f"/v1/bindings/{BND}/pause")
    assert status == 200 and out["status"] == "paused"
    status, out, _ = await _call(edge, "POST", f"/v1/bindings/{BND}/resume")
    assert status == 200 and out["status"] == "active"
    status, out, _ = await _call(edge, "GET", f"/v1/bindings/{BND}/data")
    assert status == 200 and out == {
        "data": {"price": 80}, "variables": {"color": "#f00"},
        "fetchedAt": "2023-11-14T22:13:20.000Z", "etag": '"v2"', "lastModified": None,
        "status": "active", "lastError": None, "lastErrorAt": None, "dataHash": "ef" * 32,
        "source": "fetch"}
    status, _, _ = await _call(edge, "DELETE", f"/v1/bindings/{BND}")
    assert status == 204
    assert [n for n, _ in edge.bindings.calls] == [
        "RefreshBinding", "PauseBinding", "ResumeBinding", "GetBindingData", "DeleteBinding"]
    assert {(r.tenant_id, r.binding_id) for _, r in edge.bindings.calls} == {
        ("tenant-a", BND)}


async def test_preview_maps_then_renders(edge: Edge) -> None:
    edge.bindings.answers["PreviewBinding"] = pb.PreviewBindingResponse(
        variables_json='{"title": "Lamp"}', data_json='{"name": "Lamp"}')
    edge.renderer.answers["RenderTemplate"] = rpb.RenderTemplateResponse(
        render_id=RENDER_ID, format=rpb.IMAGE_FORMAT_JPEG, width=120, height=60, cached=True)
    status, out, _ = await _call(edge, "POST", "/v1/bindings/preview", json={
        "templateId": TPL, "sampleData": {"name": "Lamp"}, "mapping": {"title": "name"},
        "defaults": {"title": "none"}, "output": {"format": "jpg", "quality": 70}})
    assert status == 200, out
    assert out == {"variables": {"title": "Lamp"}, "data": {"name": "Lamp"},
                   "imageUrl": f"{BASE}/images/{RENDER_ID}.jpeg", "width": 120, "height": 60,
                   "cached": True, "warnings": []}
    preview = edge.bindings.only("PreviewBinding")
    assert json.loads(preview.sample_data_json) == {"name": "Lamp"}
    assert not preview.HasField("data_source")
    assert dict(preview.mapping) == {"title": "name"}
    assert json.loads(preview.defaults_json) == {"title": "none"}
    render = edge.renderer.only("RenderTemplate")
    assert (render.tenant_id, render.template_id, render.variables_json, render.format,
            render.options.quality) == ("tenant-a", TPL, '{"title": "Lamp"}',
                                        rpb.IMAGE_FORMAT_JPEG, 70)


@pytest.mark.parametrize("body", [
    {"templateId": TPL, "mapping": {"a": "b"}},  # neither source nor sample
    {"templateId": TPL, "mapping": {"a": "b"}, "sampleData": 1,
     "dataSource": {"type": "http", "url": "https://a.example.com/"}},  # both
])
async def test_preview_needs_exactly_one_of_source_and_sample(
    edge: Edge, body: dict[str, Any]
) -> None:
    status, _, _ = await _call(edge, "POST", "/v1/bindings/preview", json=body)
    assert status == 422 and edge.bindings.calls == []


async def test_data_source_test(edge: Edge) -> None:
    edge.bindings.answers["TestDataSource"] = pb.TestDataSourceResponse(
        success=False, status=200, duration_ms=12.3456, error="answered text/html, not JSON")
    status, out, _ = await _call(edge, "POST", "/v1/data-sources/test", json={
        "type": "http", "url": "https://a.example.com/page",
        "credentials": {"type": "basic", "username": "u", "password": "p"}})
    assert status == 200 and out == {"success": False, "status": 200, "data": None,
                                     "durationMs": 12.346,
                                     "error": "answered text/html, not JSON"}
    request = edge.bindings.only("TestDataSource")
    assert request.data_source.credentials.password == "p"


# ------------------------------------------------------- without a key ----

@pytest.mark.parametrize(("method", "path", "public"), [
    ("GET", f"/b/{BND}.png", True),
    ("HEAD", f"/b/{BND}.png", True),
    ("GET", "/b/anything", True),  # one segment: the handler says 404
    ("POST", f"/b/{BND}/push", True),
    ("POST", f"/b/{BND}.png", False),
    ("DELETE", f"/b/{BND}.png", False),
    ("GET", f"/b/{BND}/push", False),
    ("PUT", f"/b/{BND}/push", False),
    ("POST", f"/b/{BND}/push/more", False),
    ("POST", "/b//push", False),
    ("GET", f"/b/{BND}/x.png", False),
    ("GET", "/b/", False),
    ("GET", "/b", False),
    ("GET", "/bindings", False),
    ("GET", "/v1/bindings", False),
    ("POST", "/v1/bindings", False),
    ("GET", f"/v1/bindings/{BND}", False),
    ("GET", f"/x/b/{BND}.png", False),
])
def test_exactly_the_binding_image_and_push_need_no_key(
    method: str, path: str, public: bool
) -> None:
    assert is_public(method, path) is public


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/bindings"), ("POST", f"/b/{BND}.png"), ("GET", f"/b/{BND}/push"),
    ("POST", "/v1/data-sources/test"), ("POST", "/v1/bindings/preview"),
])
async def test_other_binding_paths_need_a_key(edge: Edge, method: str, path: str) -> None:
    status, _, _ = await _call(edge, method, path, auth=False)
    assert status == 401
    assert edge.bindings.calls == [] and edge.renderer.calls == []


@pytest.mark.parametrize("file", [
    "bnd_123.png", f"{BND.upper()}.png", f"bnd_{'0' * 35}g.png", f"{BND}.bmp", f"{BND}.PNG",
    BND, f"{BND}.png.png", f"{TPL}.png", f"x{BND}.png", f"{BND}.", ".png",
])
async def test_a_malformed_binding_image_is_404_without_any_call(edge: Edge, file: str) -> None:
    for method in ("GET", "HEAD"):
        status, _, _ = await _call(edge, method, f"/b/{file}", auth=False)
        assert status == 404, (method, file)
    assert edge.renderer.calls == [] and edge.bindings.calls == []


async def _stored_image(edge: Edge, **render: Any) -> None:
    await edge.blobs.put(renders.blob_key(RENDER_ID, "png"), b"\x89PNG-bytes",
                         content_type="image/png")
    edge.renderer.answers["RenderBinding"] = rpb.RenderBindingResponse(
        render=rpb.RenderTemplateResponse(render_id=RENDER_ID, format=rpb.IMAGE_FORMAT_PNG,
                                          **render.pop("response", {})),
        tenant_id="tenant-a", **render)


async def test_a_binding_image_is_cacheable_until_its_data_goes_stale(edge: Edge) -> None:
    await _stored_image(edge, fresh_until=_ts(time.time() + 30.5))
    status, body, headers = await _call(edge, "GET", f"/b/{BND}.png", auth=False)
    assert status == 200 and body == b"\x89PNG-bytes"
    assert headers["Content-Type"] == "image/png"
    assert headers["ETag"] == f'"{RENDER_ID}"'
    assert headers["Cache-Control"] in ("public, max-age=30", "public, max-age=29")
    assert "Litho-Warnings" not in headers
    request = edge.renderer.only("RenderBinding")
    assert (request.binding_id, request.format) == (BND, rpb.IMAGE_FORMAT_PNG)
    # The same render: a 304, with no need of the stored bytes.
    await edge.blobs.delete(renders.blob_key(RENDER_ID, "png"))
    status, body, headers = await _call(edge, "GET", f"/b/{BND}.png", auth=False,
                                        headers={"If-None-Match": f'"{RENDER_ID}"'})
    assert status == 304 and headers["ETag"] == f'"{RENDER_ID}"'


@pytest.mark.parametrize(("fresh", "expected"), [
    (None, "no-cache"),  # push and manual bindings: revalidate every time
    (-100.0, "public, max-age=0"),  # already stale: never negative
])
async def test_a_binding_image_without_freshness_is_revalidated(
    edge: Edge, fresh: float | None, expected: str
) -> None:
    await _stored_image(edge, **({} if fresh is None
                                 else {"fresh_until": _ts(time.time() + fresh)}))
    status, _, headers = await _call(edge, "GET", f"/b/{BND}.png", auth=False)
    assert status == 200 and headers["Cache-Control"] == expected


async def test_a_binding_image_with_warnings_is_never_stored(edge: Edge) -> None:
    await _stored_image(edge, fresh_until=_ts(time.time() + 300), response={
        "warnings": [rpb.AssetWarning(url="https://cdn.example.com/a.png", outcome="denied",
                                      hint="allow it with LITHO_OUTBOUND_ALLOW")],
        "data_sources": [rpb.DataSourceUse(name="stock", origin="cache",
                                           fetch_time=_ts(time.time() - 5), age_seconds=5.04)]})
    status, _, headers = await _call(edge, "GET", f"/b/{BND}.png", auth=False)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert headers["Litho-Warnings"].startswith("1 asset(s) did not load; first: denied")
    assert headers["Litho-Data-Sources"] == "stock;origin=cache;age=5.0"


async def test_jpg_asks_for_jpeg_and_a_failed_binding_is_its_error(edge: Edge) -> None:
    edge.renderer.answers["RenderBinding"] = errors.FailedPrecondition(
        "the binding's data source failed: the source answered 500")
    status, body, _ = await _call(edge, "GET", f"/b/{BND}.jpg", auth=False)
    assert status == 409 and "answered 500" in body["detail"]
    assert edge.renderer.only("RenderBinding").format == rpb.IMAGE_FORMAT_JPEG


# ----------------------------------------------------------------- push ----

async def test_a_push_passes_the_raw_body_and_its_credentials(edge: Edge) -> None:
    edge.bindings.answers["PushBindingData"] = pb.PushBindingDataResponse(
        changed=True, data_hash="aa" * 32)
    raw = b'{"price":  70, "name": "Chair"}'
    status, out, _ = await _call(edge, "POST", f"/b/{BND}/push", auth=False, data=raw,
                                 headers={"X-Litho-Signature": "sha256=" + "0" * 64,
                                          "Content-Type": "application/json"})
    assert status == 200 and out == {"changed": True, "dataHash": "aa" * 32}
    request = edge.bindings.only("PushBindingData")
    assert (request.binding_id, request.body, request.signature, request.secret) == (
        BND, raw, "sha256=" + "0" * 64, "")


async def test_a_push_the_binding_service_refuses_is_a_401(edge: Edge) -> None:
    edge.bindings.answers["PushBindingData"] = errors.Unauthenticated(
        "the push signature or secret is invalid")
    status, _, _ = await _call(edge, "POST", f"/b/{BND}/push", auth=False, data=b"{}",
                               headers={"X-Litho-Push-Secret": "lps_wrong"})
    assert status == 401
    assert edge.bindings.only("PushBindingData").secret == "lps_wrong"


async def test_a_push_over_the_limit_is_a_413_without_any_call(edge: Edge) -> None:
    # binding_max_push_bytes is 1000 in this app.
    status, body, _ = await _call(edge, "POST", f"/b/{BND}/push", auth=False,
                                  data=b'{"a": "' + b"x" * 1000 + b'"}',
                                  headers={"X-Litho-Push-Secret": "s"})
    assert status == 413 and "LITHO_BINDING_MAX_PUSH_BYTES" in body["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read, then cut off
        for _ in range(20):
            yield b" " * 100
            await asyncio.sleep(0)

    status, body, _ = await _call(edge, "POST", f"/b/{BND}/push", auth=False, data=chunks(),
                                  headers={"X-Litho-Push-Secret": "s"})
    assert status == 413 and "LITHO_BINDING_MAX_PUSH_BYTES" in body["detail"]
    # At the limit it is read and passed on.
    edge.bindings.answers["PushBindingData"] = pb.PushBindingDataResponse(data_hash="x")
    data = b"[" + b" " * 998 + b"]"
    status, _, _ = await _call(edge, "POST", f"/b/{BND}/push", auth=False, data=data,
                               headers={"X-Litho-Push-Secret": "s"})
    assert status == 200 and edge.bindings.only("PushBindingData").body == data


@pytest.mark.parametrize(("body", "status"), [
    (b"", 422), (b"  ", 422), (b"{not json", 400), (b'{"a": NaN}', 400),
    (b"[" * 40 + b"]" * 40, 422),  # deeper than LITHO_GATEWAY_JSON_MAX_DEPTH
])
async def test_a_push_that_is_not_json_is_refused_without_any_call(
    edge: Edge, body: bytes, status: int
) -> None:
    got, _, _ = await _call(edge, "POST", f"/b/{BND}/push", auth=False, data=body,
                            headers={"X-Litho-Push-Secret": "s"})
    assert got == status and edge.bindings.calls == []


async def test_a_push_to_a_malformed_id_is_refused_without_any_call(edge: Edge) -> None:
    status, _, _ = await _call(edge, "POST", "/b/bnd_1/push", auth=False, data=b"{}",
                               headers={"X-Litho-Push-Secret": "s"})
    assert status in (404, 422) and edge.bindings.calls == []


async def test_a_push_credential_that_is_not_text_is_a_401_without_any_call(
    edge: Edge
) -> None:
    port = int(edge.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /b/" + BND.encode() + b"/push HTTP/1.1\r\nHost: gw\r\n"
                     b"X-Litho-Push-Secret: lps_\xff\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    assert response.split(b" ", 2)[1] == b"401"
    assert edge.bindings.calls == []


def test_the_push_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.gateway._settings import GatewaySettings

    assert GatewaySettings().binding_max_push_bytes == 1024 * 1024
    monkeypatch.setenv("LITHO_BINDING_MAX_PUSH_BYTES", "2048")
    assert GatewaySettings().binding_max_push_bytes == 2048


# ------------------------------------------------------ template data sources ----

SOURCES = [{"name": "stock", "url": "https://api.example.com/items/{{ sku }}",
            "ttlSeconds": 30, "headers": {"Accept": "application/json"}},
           {"name": "rates", "url": "https://api.example.com/rates", "method": "POST",
            "body": "{}"}]


def test_template_data_sources_both_ways() -> None:
    validator = RequestValidator(load_document())
    validator.check_body("createTemplate", {"name": "n", "html": "h", "width": 1, "height": 1,
                                            "dataSources": SOURCES})
    validator.check_body("updateTemplate", {"dataSources": []})
    spec = _handlers._spec({"dataSources": SOURCES})
    assert json.loads(spec.data_sources_json) == SOURCES
    assert not _handlers._spec({"name": "x"}).HasField("data_sources_json")
    assert _handlers._spec({"dataSources": []}).data_sources_json == "[]"
    template = tpb.Template(id=TPL, data_sources_json=json.dumps(SOURCES))
    assert _handlers.template_json(template)["dataSources"] == SOURCES
    assert _handlers.template_json(tpb.Template(id=TPL))["dataSources"] == []


@pytest.mark.parametrize("source", [
    {"name": "1st", "url": "https://a.example.com/"},
    {"name": "a"},
    {"name": "a", "url": "https://a.example.com/", "ttlSeconds": 86401},
    {"name": "a", "url": "https://a.example.com/", "method": "PUT"},
    {"name": "a", "url": "https://a.example.com/", "extra": 1},
])
def test_a_template_data_source_off_the_document_is_refused(source: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidArgument):
        RequestValidator(load_document()).check_body("updateTemplate", {"dataSources": [source]})


async def test_a_render_answer_lists_its_data_sources(edge: Edge) -> None:
    edge.renderer.answers["RenderTemplate"] = rpb.RenderTemplateResponse(
        render_id=RENDER_ID, format=rpb.IMAGE_FORMAT_PNG, template_version=3,
        data_sources=[rpb.DataSourceUse(name="stock", origin="fetched",
                                        fetch_time=_ts(1_700_000_000), age_seconds=0.01234),
                      rpb.DataSourceUse(name="rates", origin="variables")])
    status, out, _ = await _call(edge, "POST", f"/v1/templates/{TPL}/render",
                                 json={"variables": {"sku": "1"}})
    assert status == 200, out
    assert out["dataSources"] == [
        {"name": "stock", "origin": "fetched", "fetchedAt": "2023-11-14T22:13:20.000Z",
         "ageSeconds": 0.012},
        {"name": "rates", "origin": "variables", "fetchedAt": None, "ageSeconds": None}]
