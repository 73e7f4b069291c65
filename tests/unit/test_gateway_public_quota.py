"""Renders caused by public URLs count in the tenant's monthly render quota:
a signed URL (``/r/``), an experiment image (``/s/``) and a binding image
(``/b/``) count a render the renderer made for that view (``rendered``), not
a view of one already made, nor a reused recent render with warnings (whose
``cached`` is false too). Past the quota, what is stored is still served
(``/r/`` and ``/s/`` ask the renderer for a stored output only); else a 429
that names nothing of the owner, with a short ``Retry-After``. Public views
carry no X-RateLimit-* headers and take none of the per-second limit.

The real app (real key store, real limiter and counters in SQLite, real blob
store); the renderer is a recording fake that answers what each test says."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from litho import errors, renders
from litho.blobstore import BlobStore, open_blob_store
from litho.config import S3Settings
from litho.docstore import DocumentStore, open_document_store
from litho.renderer.v1 import renderer_pb2 as rpb
from services.gateway import _signing
from services.gateway._app import create_app
from services.gateway._experiment_images import (
    ExperimentImages,
    _Always,
    experiment_memo,
    render_memo,
)
from services.gateway._keys import KeyStore
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._ratelimit import Limits, SharedCounters, limiter_from
from services.gateway._state import Deps
from tests.unit.test_experiment_images import resolved
from tests.unit.test_gateway_bindings import BND, Recorder

RENDER_ID = "cd" * 32
TPL = "tpl_" + "2" * 24


def _month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


@dataclass
class Edge:
    url: str
    http: aiohttp.ClientSession
    renderer: Renderer
    store: DocumentStore
    key_id: str
    secret: str
    tenant: str = "tenant-a"

    def signed(self, **variables: str) -> str:
        params = sorted(variables.items())
        params.append(("kid", self.key_id))
        path = f"/r/{TPL}.png"
        sig = _signing.sign(self.secret, path, params)
        return f"{path}?{_signing.canonical_query(params)}&sig={sig}"

    def answer(self, *, cached: bool, rpc: str = "RenderTemplate",
               rendered: bool | None = None) -> None:
        """What the renderer answers: ``rendered`` defaults to ``not cached``
        (False with cached False: a reused render with warnings)."""
        response = rpb.RenderTemplateResponse(
            render_id=RENDER_ID, blob_key=renders.blob_key(RENDER_ID, "png"),
            format=rpb.IMAGE_FORMAT_PNG, content_type="image/png", cached=cached,
            rendered=(not cached) if rendered is None else rendered)
        self.renderer.answers[rpc] = (
            response if rpc == "RenderTemplate"
            else rpb.RenderBindingResponse(render=response, tenant_id=self.tenant))

    async def get(self, path: str) -> tuple[int, Any, Any]:
        async with self.http.get(self.url + path) as r:
            raw = await r.read()
            body = json.loads(raw) if r.content_type.endswith("json") else raw
            return r.status, body, r.headers

    async def renders(self) -> int:
        return await SharedCounters(self.store).renders(self.tenant, _month())


class Renderer(Recorder):
    """The recording renderer, answering a stored-only request
    (CACHE_POLICY_STORED) as the real one does: what is stored, never a render."""

    def __init__(self) -> None:
        super().__init__()
        #: Whether an output is stored for a stored-only request to find.
        self.stored = True

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)

        async def stored_or_call(request: Any, **kwargs: Any) -> Any:
            if name == "RenderTemplate" and request.options.cache == rpb.CACHE_POLICY_STORED:
                self.calls.append((name, request))
                if not self.stored:
                    raise errors.FailedPrecondition("not rendered yet")
                answer = self.answers[name]
                assert isinstance(answer, rpb.RenderTemplateResponse)
                hit = rpb.RenderTemplateResponse()
                hit.CopyFrom(answer)
                hit.cached, hit.rendered = True, False
                return hit
            return await call(request, **kwargs)

        return stored_or_call


def _images(renderer: Recorder, blobs: BlobStore) -> ExperimentImages:
    """``/s/`` of one running experiment of tenant-a, each view asking the renderer."""
    experiments = Recorder()
    answer = resolved()
    answer.experiment.tenant_id = "tenant-a"
    experiments.answers["ResolveExperiment"] = answer
    return ExperimentImages(
        experiments=experiments, renderer=renderer, blobs=blobs,  # type: ignore[arg-type]
        counts=None, memo=experiment_memo(_Always(), seconds=60, max_bytes=1 << 20),
        bots=re.compile("bot"), renders=render_memo(0.0))


async def _edge(tmp_path: Path, limits: Limits) -> AsyncIterator[Edge]:
    store = await open_document_store(f"sqlite://{tmp_path / 'gateway.db'}", "unused")
    blobs = await open_blob_store((tmp_path / "blobs").as_uri(), S3Settings(endpoint_url=None))
    await blobs.put(renders.blob_key(RENDER_ID, "png"), b"\x89PNG-bytes",
                    content_type="image/png")
    keys = KeyStore(store, cache_ttl=0)
    await keys.prepare()
    key = await keys.create("tenant-a")
    found = await keys.verify(key)
    assert found is not None
    doc = load_document()
    renderer = Renderer()
    deps = Deps(keys=keys, templates=None, renderer=renderer,  # type: ignore[arg-type]
                webhooks=None, blobs=blobs,  # type: ignore[arg-type]
                openapi=doc, validator=RequestValidator(doc), base_url="https://x.example",
                bindings=Recorder(), binding_max_push_bytes=1000)  # type: ignore[arg-type]
    limiter = limiter_from(store, limits, overrides_ttl=0)
    app = create_app(deps, max_body_bytes=1 << 20, limiter=limiter,
                     images=_images(renderer, blobs))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession() as http:
            yield Edge(f"http://127.0.0.1:{runner.addresses[0][1]}", http, renderer, store,
                       found.key_id, found.signing_secret)
    finally:
        await runner.cleanup()
        await blobs.close()
        await store.close()


@pytest.fixture
async def quota(tmp_path: Path) -> AsyncIterator[Edge]:
    """A quota of 2 renders a month, no per-second limits."""
    async for edge in _edge(tmp_path, Limits(per_second=0, key_per_second=0,
                                             renders_per_month=2)):
        yield edge


async def test_a_signed_url_counts_new_renders_not_views_of_rendered_ones(quota: Edge) -> None:
    quota.answer(cached=False)
    status, body, headers = await quota.get(quota.signed(title="a"))
    assert (status, body) == (200, b"\x89PNG-bytes")
    # The owner's limits are not a visitor's business.
    assert not any(h.startswith("X-RateLimit") for h in headers)
    assert await quota.renders() == 1
    # Viewed again (the renderer had it): not counted.
    quota.answer(cached=True)
    for _ in range(5):
        assert (await quota.get(quota.signed(title="a")))[0] == 200
    assert await quota.renders() == 1
    # A recent render with warnings reused: not cached, yet nothing rendered.
    quota.answer(cached=False, rendered=False)
    for _ in range(5):
        assert (await quota.get(quota.signed(title="a")))[0] == 200
    assert await quota.renders() == 1
    # A render that fails is given back.
    quota.renderer.answers["RenderTemplate"] = errors.NotFound("template not found")
    status, _, _ = await quota.get(quota.signed(title="gone"))
    assert status == 404 and await quota.renders() == 1
    quota.answer(cached=False)
    assert (await quota.get(quota.signed(title="b")))[0] == 200
    assert await quota.renders() == 2
    # Used up: what is stored is still served, asked for as stored only...
    status, body, _ = await quota.get(quota.signed(title="b"))
    assert (status, body) == (200, b"\x89PNG-bytes")
    _, request = quota.renderer.calls[-1]
    assert request.options.cache == rpb.CACHE_POLICY_STORED
    # ...and what is not, a 429 naming nothing of the owner, with a short wait.
    quota.renderer.stored = False
    status, body, headers = await quota.get(quota.signed(title="c"))
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 3600
    assert not any(h.startswith("X-RateLimit") for h in headers)
    assert "quota" not in body["detail"] and "LITHO_" not in body["detail"]
    assert quota.renderer.calls[-1][1].options.cache == rpb.CACHE_POLICY_STORED
    assert await quota.renders() == 2


async def test_a_bad_signature_spends_nothing_of_the_tenant(quota: Edge) -> None:
    quota.answer(cached=False)
    url = quota.signed(title="a")
    status, _, headers = await quota.get(url[:-1] + ("0" if url[-1] != "0" else "1"))
    assert status == 403 and "X-RateLimit-Scope" not in headers
    assert quota.renderer.calls == [] and await quota.renders() == 0


async def test_a_binding_image_counts_a_render_its_view_caused(quota: Edge) -> None:
    quota.answer(cached=True, rpc="RenderBinding")
    status, _, headers = await quota.get(f"/b/{BND}.png")
    assert status == 200 and "X-RateLimit-Scope" not in headers
    assert await quota.renders() == 0
    # A reused render with warnings: nothing rendered, nothing counted.
    quota.answer(cached=False, rendered=False, rpc="RenderBinding")
    assert (await quota.get(f"/b/{BND}.png"))[0] == 200
    assert await quota.renders() == 0
    quota.answer(cached=False, rpc="RenderBinding")
    for _ in range(2):
        status, _, headers = await quota.get(f"/b/{BND}.png")
        assert status == 200 and not any(h.startswith("X-RateLimit") for h in headers)
    assert await quota.renders() == 2
    status, body, headers = await quota.get(f"/b/{BND}.png")
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 3600
    assert "quota" not in body["detail"] and "X-RateLimit-Scope" not in headers
    # A view of the image already rendered is served all the same.
    quota.answer(cached=True, rpc="RenderBinding")
    assert (await quota.get(f"/b/{BND}.png"))[0] == 200
    assert await quota.renders() == 2


async def test_signed_url_views_take_none_of_the_tenant_request_rate(tmp_path: Path) -> None:
    """A popular og:image that crawlers fetch must not starve the tenant's
    API calls: views count in the month only when they render."""
    async for edge in _edge(tmp_path, Limits(per_second=0.01, burst=3, key_per_second=0)):
        edge.answer(cached=True)
        statuses = [(await edge.get(edge.signed(title=str(i))))[0] for i in range(6)]
        assert statuses == [200] * 6
        assert len(edge.renderer.calls) == 6


async def test_an_experiment_image_counts_a_render_its_view_caused(quota: Edge) -> None:
    path = f"/s/{'a' * 16}/hero.png?vid=visitor-1"
    quota.answer(cached=True)
    status, body, headers = await quota.get(path)
    assert (status, body) == (200, b"\x89PNG-bytes") and await quota.renders() == 0
    assert not any(h.startswith("X-RateLimit") for h in headers)
    quota.answer(cached=False)
    for _ in range(2):
        assert (await quota.get(path))[0] == 200
    assert await quota.renders() == 2
    # Used up: the stored variant is still served; an unstored one is a 429.
    assert (await quota.get(path))[0] == 200
    assert quota.renderer.calls[-1][1].options.cache == rpb.CACHE_POLICY_STORED
    quota.renderer.stored = False
    status, body, headers = await quota.get(path)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 3600
    assert "quota" not in body["detail"]
    assert await quota.renders() == 2


async def test_experiment_views_take_no_request_rate(tmp_path: Path) -> None:
    """Served from memory when warm, and often opened all at once (an email):
    a view is not one of the tenant's requests."""
    async for edge in _edge(tmp_path, Limits(per_second=0.01, burst=1, key_per_second=0)):
        edge.answer(cached=True)
        for _ in range(4):
            assert (await edge.get(f"/s/{'a' * 16}/hero.png?vid=v"))[0] == 200
