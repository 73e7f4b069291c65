"""Typed application state shared by the gateway's handlers."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web

from litho.blobstore import BlobStore
from litho.jsonlimits import JsonLimits
from litho.outbound import AllowList
from services.gateway._image_urls import image_url
from services.gateway._keys import ApiKey, KeyStore
from services.gateway._openapi import RequestValidator

if TYPE_CHECKING:
    from litho.binding.v1.binding_pb2_grpc import BindingServiceAsyncStub
    from litho.experiment.v1.experiment_pb2_grpc import ExperimentServiceAsyncStub
    from litho.renderer.v1.renderer_pb2_grpc import RendererServiceAsyncStub
    from litho.template.v1.template_pb2_grpc import TemplateServiceAsyncStub
    from litho.webhook.v1.webhook_pb2_grpc import WebhookServiceAsyncStub
    from services.gateway._health import Readiness
    from services.gateway._web import WebFile


@dataclass
class Deps:
    keys: KeyStore
    templates: TemplateServiceAsyncStub
    renderer: RendererServiceAsyncStub
    webhooks: WebhookServiceAsyncStub
    blobs: BlobStore
    openapi: dict[str, Any]
    validator: RequestValidator
    #: Channels whose health /healthz reports, by service name.
    backends: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    #: What /readyz asks (the render path); None: always ready (tests).
    readiness: Readiness | None = None
    #: Cache-Control of signed render URLs: their image follows the template's
    #: latest version, so they are cacheable but not immutable.
    signed_cache_control: str = "public, max-age=3600"
    base_url: str = ""
    #: LITHO_IMAGE_BASE_URL: where image URLs point instead of ``/images/``.
    image_base_url: str = ""
    #: Depth, Unicode and number limits of every JSON body.
    json_limits: JsonLimits = field(default_factory=JsonLimits)
    #: Most bytes of an uploaded font read before a 413.
    max_font_bytes: int = 10 * 1024 * 1024
    #: A batch request's most bytes and items (LITHO_BATCH_MAX_BYTES, _MAX_ITEMS).
    batch_max_bytes: int = 32 * 1024 * 1024
    batch_max_items: int = 10_000
    batch_max_item_bytes: int = 256 * 1024
    batch_max_csv_columns: int = 1000
    #: Private destinations a webhook URL may name (LITHO_OUTBOUND_ALLOW).
    outbound_allow: AllowList = field(default_factory=AllowList)
    #: Registers a batch's own webhook URL (and the caller's signing secret)
    #: with the webhook service before the batch exists.
    register_batch_webhook: Callable[[ApiKey, str, str], Awaitable[None]] | None = None
    #: The binding service (None where a test leaves it out: a 503).
    bindings: BindingServiceAsyncStub | None = None
    #: Most bytes of a push to a binding read before a 413 (LITHO_BINDING_MAX_PUSH_BYTES).
    binding_max_push_bytes: int = 1024 * 1024
    #: The experiment service (None where a test leaves it out: a 503).
    experiments: ExperimentServiceAsyncStub | None = None

    def image_url(self, render_id: str, extension: str) -> str:
        """The URL an answer gives for a stored render (see ``_image_urls``)."""
        return image_url(self.base_url, self.image_base_url, render_id, extension)

    @functools.cached_property
    def openapi_file(self) -> WebFile:
        """``/openapi.json`` as served: its bytes, ETag and gzipped copy, made once."""
        # Imported here: _web imports _images, which imports this module.
        from services.gateway._web import web_file
        return web_file(json.dumps(self.openapi).encode(), "json")


DEPS = web.AppKey("deps", Deps)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
API_KEY = web.RequestKey("api_key", ApiKey)
#: What ``_validation`` checked: the operation id, the JSON body, the typed query.
OPERATION = web.RequestKey("operation", str)
BODY = web.RequestKey("body", dict[str, Any])
QUERY = web.RequestKey("query", dict[str, Any])


def deps(request: web.Request) -> Deps:
    return request.app[DEPS]


def caller(request: web.Request) -> ApiKey:
    return request[API_KEY]
