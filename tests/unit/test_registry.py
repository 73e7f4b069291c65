"""The service registry: one declaration of every service, read by the dev
stack, the gateway, the end-to-end harness and the docs."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from litho import rpc
from litho.config import BaseServiceSettings
from litho.errors import ConfigError
from litho.service import Endpoints, ServiceSpec, running
from services import _registry
from services.gateway._settings import GatewaySettings
from tests.support.nats_server import NatsServer, start_nats

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    started = start_nats(tmp_path_factory.mktemp("nats-registry"))
    try:
        yield started
    finally:
        started.stop()


def test_every_service_package_is_registered() -> None:
    packages = {p.parent.name for p in (ROOT / "services").glob("*/__init__.py")
                if not p.parent.name.startswith("_")}
    assert packages == set(_registry.registry())


@pytest.mark.parametrize("spec", _registry.SERVICES, ids=lambda s: s.name)
def test_each_service_has_a_composition_root_and_an_entry_point(spec: ServiceSpec) -> None:
    app = _registry.app(spec)
    assert issubclass(app.settings, BaseServiceSettings)
    assert callable(app.build)
    main = (ROOT / spec.module.replace(".", "/") / "__main__.py").read_text()
    assert f'main("{spec.name}")' in main
    if spec.grpc_service:
        module = importlib.import_module(f"{spec.module}._app")
        assert module.SERVICE_NAME == spec.grpc_service


def test_the_docs_service_table_is_the_registry() -> None:
    docs = (ROOT / "docs" / "architecture.md").read_text()
    table = _registry.service_table()
    assert table in docs, f"paste this over the service table of docs/architecture.md:\n{table}"


def test_callees_start_before_callers() -> None:
    order = [s.name for s in _registry.start_order(_registry.registry())]
    for spec in _registry.SERVICES:
        for callee in spec.calls:
            assert order.index(callee) < order.index(spec.name)


@pytest.mark.parametrize(("services", "message"), [
    ([ServiceSpec("a", "m.a", "", "a.A", 1), ServiceSpec("a", "m.b", "", "b.B", 2)],
     "declared twice"),
    ([ServiceSpec("a", "m.a", "", "a.A", 1, calls=("b",))], "not declared"),
    ([ServiceSpec("a", "m.a", "", "a.A", 1, calls=("b",)),
      ServiceSpec("b", "m.b", "", "b.B", 2, calls=("a",))], "cycle"),
    ([ServiceSpec("a", "m.a", "", "a.A", 1, calls=("b",)),
      ServiceSpec("b", "m.b", "")], "serves no gRPC"),
])
def test_a_wrong_registry_is_refused(services: list[ServiceSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _registry.registry(services)


def test_endpoints_come_from_the_registry_variables() -> None:
    specs = _registry.registry()
    env = {"LITHO_TEMPLATE_GRPC_TARGET": "template.svc:1", "LITHO_RENDERER_GRPC_ADDRESS": "[::]:9"}
    renderer = Endpoints.from_env(specs["renderer"], specs, env)
    assert renderer.listen == "[::]:9"
    assert renderer.targets == {"template": "template.svc:1", "binding": "127.0.0.1:50053"}
    gateway = Endpoints.from_env(specs["gateway"], specs, {})
    assert gateway.listen == ""
    assert gateway.targets == {"template": "127.0.0.1:50051", "renderer": "127.0.0.1:50052",
                               "webhook": "127.0.0.1:50055", "binding": "127.0.0.1:50053",
                               "experiment": "127.0.0.1:50054"}


# ------------------------------------------ a new service: only its own files ----

_TOY_APP = '''
from typing import Any

import grpc

from litho.config import BaseServiceSettings
from litho.errors import ConfigError
from litho.service import Host

SETTINGS = BaseServiceSettings
SERVICE_NAME = "toy.v1.ToyService"


def _register(servicer: Any, server: grpc.aio.Server) -> None:
    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Echo": grpc.unary_unary_rpc_method_handler(echo)})])


async def build(host: Host[BaseServiceSettings]) -> None:
    store = await host.document_store()  # the shared parts are there for it
    await store.collection("toys").insert({"_id": "t1"})
    await host.serve_grpc([(_register, None, SERVICE_NAME)])
'''


@pytest.fixture
def toy_package(tmp_path: Path) -> Iterator[str]:
    """A service package written by the test: ``toyservice`` with an ``_app``."""
    package = tmp_path / "pkgs" / "toyservice"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_app.py").write_text(textwrap.dedent(_TOY_APP))
    sys.path.insert(0, str(package.parent))
    try:
        yield "toyservice"
    finally:
        sys.path.remove(str(package.parent))
        for name in [m for m in sys.modules if m.startswith("toyservice")]:
            del sys.modules[name]


async def test_a_trivial_service_needs_only_its_registry_entry(
    toy_package: str, tmp_path: Path
) -> None:
    toy = ServiceSpec("toy", toy_package, "toys", grpc_service="toy.v1.ToyService",
                      default_port=0)
    gateway = dataclasses.replace(_registry.registry()["gateway"],
                                  calls=("template", "renderer", "webhook", "toy"))
    services = [s for s in _registry.SERVICES if s.name != "gateway"] + [toy, gateway]
    specs = _registry.registry(services)
    root = _registry.app(toy)
    settings = root.settings(data_dir=tmp_path)
    async with running(toy, settings, root.build,
                       endpoints=Endpoints(listen="127.0.0.1:0")) as host:
        assert host.grpc_port
        target = f"127.0.0.1:{host.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            await rpc.wait_healthy(channel, service="toy.v1.ToyService", timeout=10)
            echo: Any = channel.unary_unary("/toy.v1.ToyService/Echo")
            assert await echo(b"hi", timeout=10) == b"hi"

        # The gateway's /healthz reports every service it calls, from the registry.
        endpoints = Endpoints.from_env(gateway, specs, {
            "LITHO_TOY_GRPC_TARGET": target,
            "LITHO_TEMPLATE_GRPC_TARGET": "127.0.0.1:1",
            "LITHO_RENDERER_GRPC_TARGET": "127.0.0.1:1",
            "LITHO_WEBHOOK_GRPC_TARGET": "127.0.0.1:1",
        })
        gw = _registry.app(gateway)
        gw_settings = GatewaySettings(data_dir=tmp_path, gateway_port=0)
        async with running(gateway, gw_settings, gw.build, endpoints=endpoints) as edge, \
                aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{edge.http_port}/healthz") as resp:
                body = await resp.json()
        assert resp.status == 503
        assert all(name in body["detail"] for name in ("template", "renderer", "webhook"))
        assert "toy" not in body["detail"]
    assert (tmp_path / "toy.db").exists()  # its own document store, under the data dir


async def test_a_service_that_fails_to_build_says_why(tmp_path: Path) -> None:
    spec = _registry.registry()["template"]
    root = _registry.app(spec)
    settings = root.settings(data_dir=tmp_path, docstore_url="nosuch://x")
    with pytest.raises(ConfigError, match="LITHO_DOCSTORE_URL must be"):
        async with running(spec, settings, root.build, endpoints=Endpoints("127.0.0.1:0")):
            pass


async def test_a_service_starts_in_process_on_port_zero(tmp_path: Path) -> None:
    spec = _registry.registry()["template"]
    root = _registry.app(spec)
    settings = root.settings(data_dir=tmp_path)
    async with running(spec, settings, root.build,
                       endpoints=Endpoints(listen="127.0.0.1:0")) as host:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.grpc_port}") as channel:
            await rpc.wait_healthy(channel, service=spec.grpc_service, timeout=10)
    # Stopped: the port no longer answers.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{host.grpc_port}") as channel:
        with pytest.raises(Exception):  # noqa: B017 - any transport failure
            await rpc.wait_healthy(channel, timeout=1)


@pytest.mark.parametrize("address", ["nonsense", "", "127.0.0.1:busy"])
async def test_a_listen_address_that_cannot_be_bound_names_its_variable(
    tmp_path: Path, address: str
) -> None:
    spec = _registry.registry()["template"]
    root = _registry.app(spec)
    settings = root.settings(data_dir=tmp_path)
    async with AsyncExitStack() as hold:
        if address == "127.0.0.1:busy":
            busy = await hold.enter_async_context(running(
                spec, root.settings(data_dir=tmp_path / "other"), root.build,
                endpoints=Endpoints("127.0.0.1:0")))
            address = f"127.0.0.1:{busy.grpc_port}"
        with pytest.raises(ConfigError, match="LITHO_TEMPLATE_GRPC_ADDRESS"):
            async with running(spec, settings, root.build, endpoints=Endpoints(address)):
                pass


async def test_a_channel_only_to_a_declared_callee_with_a_target(tmp_path: Path) -> None:
    from litho.service import Host

    specs = _registry.registry()
    renderer = specs["renderer"]
    async with AsyncExitStack() as stack:
        settings = BaseServiceSettings(data_dir=tmp_path)
        host = Host(renderer, settings, Endpoints.from_env(renderer, specs, {}), stack)
        assert await host.channel("template") is await host.channel("template")  # one
        with pytest.raises(ConfigError, match="does not call 'gateway'"):
            await host.channel("gateway")
        bare = Host(renderer, settings, Endpoints(listen="127.0.0.1:0"), stack)
        with pytest.raises(ConfigError, match="LITHO_TEMPLATE_GRPC_TARGET"):
            await bare.channel("template")
        gateway = Host(specs["gateway"], settings, Endpoints(), stack)
        with pytest.raises(ConfigError, match="declares no gRPC service"):
            await gateway.serve_grpc([])


@pytest.mark.parametrize("trusted", [False, True])
async def test_the_gateway_joins_a_client_trace_only_when_its_setting_says(
    tmp_path: Path, trusted: bool, nats_server: NatsServer,
) -> None:
    specs = _registry.registry()
    gateway = specs["gateway"]
    root = _registry.app(gateway)
    # NATS: the gateway publishes experiment counts and follows change notes.
    settings = GatewaySettings(data_dir=tmp_path, gateway_port=0, nats_url=nats_server.url,
                               gateway_trust_client_trace=trusted)
    client_trace = "0af7651916cd43dd8448eb211c80319c"
    async with running(gateway, settings, root.build,
                       endpoints=Endpoints.from_env(gateway, specs, {})) as edge, \
            aiohttp.ClientSession() as http:
        sent = {"traceparent": f"00-{client_trace}-b7ad6b7169203331-01"}
        async with http.get(f"http://127.0.0.1:{edge.http_port}/openapi.json",
                            headers=sent) as r:
            assert r.status == 200
            answered = r.headers.get("traceparent", "--").split("-")[1]
    assert (answered == client_trace) is trusted
