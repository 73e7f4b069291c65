"""Typed application state shared by the gateway's handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from grpc_health.v1.health_pb2_grpc import HealthStub

from litho.blobstore import BlobStore
from litho.renderer.v1 import renderer_pb2_grpc
from litho.template.v1 import template_pb2_grpc
from services.gateway._keys import ApiKey, KeyStore
from services.gateway._openapi import RequestValidator


@dataclass
class Deps:
    keys: KeyStore
    templates: template_pb2_grpc.TemplateServiceStub
    renderer: renderer_pb2_grpc.RendererServiceStub
    blobs: BlobStore
    openapi: dict[str, Any]
    validator: RequestValidator
    health: dict[str, HealthStub] = field(default_factory=dict)
    base_url: str = ""


DEPS = web.AppKey("deps", Deps)
API_KEY = "litho.api_key"


def deps(request: web.Request) -> Deps:
    return request.app[DEPS]


def caller(request: web.Request) -> ApiKey:
    key: ApiKey = request[API_KEY]
    return key
