"""Every service, declared once.

The dev stack (``services/_stack.py``), the end-to-end harness, the gateway's
``/healthz`` and backend clients, and the service table of
``docs/architecture.md`` all read this list. A test fails when a package under
``services/`` is missing from it.

Each service's package has ``_app.py`` with ``SETTINGS`` (its settings class)
and ``build(host)`` (its composition root); ``python -m services.<name>`` runs
it through :func:`main`.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litho import lifecycle
from litho.config import BaseServiceSettings, load
from litho.service import Build, Endpoints, ServiceSpec, serve

SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="template", module="services.template",
        summary="templates (`templates` heads, immutable `template_versions`), "
                "validation and expansion; uploaded fonts (`fonts`, bytes in the blob store)",
        grpc_service="litho.template.v1.TemplateService", default_port=50051,
    ),
    ServiceSpec(
        name="renderer", module="services.renderer",
        summary="the Chromium pool, the render cache, rendered images in the blob store",
        grpc_service="litho.renderer.v1.RendererService", default_port=50052,
        calls=("template", "binding"),
    ),
    ServiceSpec(
        name="binding", module="services.binding",
        summary="live data bindings (`bindings`: a template, a data source, a mapping, a "
                "refresh policy and the last data) and the TTL cache of templates' data "
                "sources (`data_source_cache`); every fetch through the outbound guard",
        grpc_service="litho.binding.v1.BindingService", default_port=50053,
        calls=("template",),
    ),
    ServiceSpec(
        name="experiment", module="services.experiment",
        summary="A/B experiments on images (`experiments`: variants, weights, state) and "
                "their counters (`experiment_counters`); statistics (Beta-Bernoulli)",
        grpc_service="litho.experiment.v1.ExperimentService", default_port=50054,
        calls=("template",),
    ),
    ServiceSpec(
        name="webhook", module="services.webhook",
        summary="webhook subscriptions (`webhook_subscriptions`), their delivery logs "
                "(`webhook_deliveries`) and batches' own webhooks (`batch_webhooks`); "
                "signed deliveries of render, batch and binding events, retried on a schedule",
        grpc_service="litho.webhook.v1.WebhookService", default_port=50055,
    ),
    ServiceSpec(
        name="gateway", module="services.gateway",
        summary="the public HTTP API; API keys (`api_keys`, SHA-256 of each key, "
                "one tenant per key)",
        calls=("template", "renderer", "webhook", "binding", "experiment"),
        http_listens="HTTP `LITHO_GATEWAY_HOST:LITHO_GATEWAY_PORT` (127.0.0.1:8080)",
    ),
)


@dataclass(frozen=True)
class App:
    """A service's composition root and the settings class it is built from."""

    settings: type[BaseServiceSettings]
    build: Build[Any]


def registry(services: Sequence[ServiceSpec] = SERVICES) -> dict[str, ServiceSpec]:
    """The services by name, checked: unique names, known callees, no cycles."""
    by_name: dict[str, ServiceSpec] = {}
    for spec in services:
        if spec.name in by_name:
            raise ValueError(f"service {spec.name!r} is declared twice")
        by_name[spec.name] = spec
    for spec in services:
        for callee in spec.calls:
            if callee not in by_name:
                raise ValueError(f"{spec.name} calls {callee!r}, which is not declared")
            if not by_name[callee].grpc_service:
                raise ValueError(f"{spec.name} calls {callee!r}, which serves no gRPC")
    start_order(by_name)
    return by_name


def start_order(by_name: Mapping[str, ServiceSpec]) -> list[ServiceSpec]:
    """Callees before their callers (a caller's first call then finds its
    callee up); a cycle is refused."""
    order: list[ServiceSpec] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError("services call each other in a cycle: " + " -> ".join(
                (*path, name)))
        state[name] = "visiting"
        for callee in by_name[name].calls:
            visit(callee, (*path, name))
        state[name] = "done"
        order.append(by_name[name])

    for name in by_name:
        visit(name, ())
    return order


def app(spec: ServiceSpec) -> App:
    """Import the service's composition root (``<module>._app``)."""
    module = importlib.import_module(f"{spec.module}._app")
    return App(settings=module.SETTINGS, build=module.build)


def main(name: str, services: Sequence[ServiceSpec] = SERVICES) -> None:
    """``python -m services.<name>``: settings from the environment, then serve
    until SIGTERM or SIGINT."""
    specs = registry(services)
    spec = specs[name]
    root = app(spec)

    async def run(stop: asyncio.Event) -> None:
        settings = load(root.settings)
        await serve(spec, settings, root.build, stop, endpoints=Endpoints.from_env(spec, specs))

    lifecycle.run(run)


def service_table(services: Sequence[ServiceSpec] = SERVICES) -> str:
    """The service table of ``docs/architecture.md`` (a test keeps them equal)."""
    rows = ["| service | module | owns | listens on | calls |",
            "| --- | --- | --- | --- | --- |"]
    for spec in services:
        listens = (f"gRPC `{spec.address_env}` ({spec.default_address}); callers dial "
                   f"`{spec.target_env}`" if spec.grpc_service else spec.http_listens)
        calls = ", ".join(spec.calls) or "—"
        rows.append(f"| {spec.name} | `{spec.module}` | {spec.summary} | {listens} | {calls} |")
    return "\n".join(rows)
