"""Internal gRPC under TLS, mutual TLS and the shared token (``LITHO_GRPC_*``):
real servers and channels on loopback, certificates from a throwaway CA
(trustme). Every refusal is checked along with the call that passes."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from litho import errors, rpc
from litho.config import GrpcSettings
from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc
from tests.unit.test_rpc import _SERVICE as STREAMS
from tests.unit.test_rpc import _register as streams_register
from tests.unit.test_rpc import _requests

TOKEN = "t" * 40
OLD_TOKEN = "o" * 40
SERVICE = "litho.template.v1.TemplateService"
#: The one name the internal certificate carries (LITHO_GRPC_TLS_SERVER_NAME).
INTERNAL_NAME = "litho-internal"


class Servicer(pb_grpc.TemplateServiceServicer):
    async def GetTemplate(self, request: pb.GetTemplateRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetTemplateResponse:
        return pb.GetTemplateResponse(template=pb.Template(id=request.template_id))

    async def ListTemplates(self, request: pb.ListTemplatesRequest,
                            context: grpc.aio.ServicerContext[Any, Any],
                            ) -> pb.ListTemplatesResponse:
        return pb.ListTemplatesResponse()


SERVICES = [(pb_grpc.add_TemplateServiceServicer_to_server, Servicer(), SERVICE)]  # type: ignore[abstract]


class Pki:
    """A CA, a server certificate for the internal name and loopback, a
    client certificate, and a second CA nobody trusts: as PEM files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ca = trustme.CA()
        self.ca = self._write("ca.pem", ca.cert_pem.bytes())
        server = ca.issue_cert(INTERNAL_NAME, "127.0.0.1", "localhost")
        self.server_cert = self._write("server.pem", server.cert_chain_pems[0].bytes())
        self.server_key = self._write("server.key", server.private_key_pem.bytes())
        client = ca.issue_cert("litho-gateway")
        self.client_cert = self._write("client.pem", client.cert_chain_pems[0].bytes())
        self.client_key = self._write("client.key", client.private_key_pem.bytes())
        stranger = trustme.CA().issue_cert("litho-gateway")
        self.stranger_cert = self._write("stranger.pem", stranger.cert_chain_pems[0].bytes())
        self.stranger_key = self._write("stranger.key", stranger.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def server(self, **extra: Any) -> GrpcSettings:
        return GrpcSettings.model_validate({
            "tls": True, "tls_ca": self.ca, "tls_cert": self.server_cert,
            "tls_key": self.server_key, **extra})

    def client(self, **extra: Any) -> GrpcSettings:
        return GrpcSettings.model_validate({
            "tls": True, "tls_ca": self.ca, "tls_cert": self.client_cert,
            "tls_key": self.client_key, **extra})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield Pki(tmp_path_factory.mktemp("pki"))


async def serve(stack: AsyncExitStack, settings: GrpcSettings) -> rpc.Serving:
    return await rpc.start_server(stack, address="127.0.0.1:0", services=SERVICES, grace=0.1,
                                  security=rpc.Security.from_settings(settings))


async def get(stack: AsyncExitStack, port: int, settings: GrpcSettings,
              *, deadline: float = 5) -> str:
    channel = await rpc.open_channel(stack, f"127.0.0.1:{port}", default_deadline=deadline,
                                     security=rpc.Security.from_settings(settings))
    answer = await pb_grpc.TemplateServiceStub(channel).GetTemplate(
        pb.GetTemplateRequest(template_id="tpl"))
    return answer.template.id


async def healthy(channel: grpc.aio.Channel) -> bool:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


# ------------------------------------------------------------------- token


async def test_a_call_without_the_token_is_unauthenticated_and_health_stays_open() -> None:
    with_token = GrpcSettings.model_validate({"token": TOKEN})
    async with AsyncExitStack() as stack:
        serving = await serve(stack, with_token)
        assert await get(stack, serving.port, with_token) == "tpl"
        with pytest.raises(errors.Unauthenticated, match="LITHO_GRPC_TOKEN"):
            await get(stack, serving.port, GrpcSettings())
        wrong = GrpcSettings.model_validate({"token": "w" * 40})
        with pytest.raises(errors.Unauthenticated):
            await get(stack, serving.port, wrong)
        # Probes carry no token.
        async with rpc.raw_channel(f"127.0.0.1:{serving.port}") as channel:
            assert await healthy(channel)


async def test_calls_of_every_shape_without_the_token_are_refused() -> None:
    with_token = rpc.Security.from_settings(GrpcSettings.model_validate({"token": TOKEN}))
    async with AsyncExitStack() as stack:
        serving = await rpc.start_server(stack, address="127.0.0.1:0", grace=0.1,
                                         services=[(streams_register, None, STREAMS)],
                                         security=with_token)
        target = f"127.0.0.1:{serving.port}"
        for security, refused in ((rpc.PLAINTEXT, True), (with_token, False)):
            channel = await rpc.open_channel(stack, target, default_deadline=5,
                                             security=security)
            calls: list[Any] = [
                lambda c: _read(c.unary_stream(f"/{STREAMS}/ServerStream")(b"x")),
                lambda c: c.stream_unary(f"/{STREAMS}/ClientStream")(_requests(b"x")),
                lambda c: _read(c.stream_stream(f"/{STREAMS}/Bidi")(_requests(b"x"))),
            ]
            for call in calls:
                if refused:
                    with pytest.raises(errors.Unauthenticated):
                        await call(channel)
                else:
                    assert await call(channel)
        # A bearer that is not the token, and an unknown method (nothing to guard).
        async with rpc.raw_channel(target) as raw:
            unary: Any = raw.unary_stream(f"/{STREAMS}/ServerStream")
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await _read(unary(b"x", metadata=(("authorization", "Bearer x"),)))
            assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
            unknown: Any = raw.unary_unary(f"/{STREAMS}/Nothing")
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await unknown(b"x")
            assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def _read(call: Any) -> list[Any]:
    return [item async for item in call]


async def test_the_previous_token_is_accepted_while_a_new_one_rolls_out() -> None:
    rolling = GrpcSettings.model_validate({"token": TOKEN, "previous_token": OLD_TOKEN})
    async with AsyncExitStack() as stack:
        serving = await serve(stack, rolling)
        assert await get(stack, serving.port, GrpcSettings.model_validate(
            {"token": OLD_TOKEN})) == "tpl"
        assert await get(stack, serving.port, GrpcSettings.model_validate(
            {"token": TOKEN})) == "tpl"


def test_the_token_never_shows_in_a_repr() -> None:
    security = rpc.Security.from_settings(GrpcSettings.model_validate({"token": TOKEN}))
    assert TOKEN not in repr(security)
    assert TOKEN not in repr(GrpcSettings.model_validate({"token": TOKEN}))


# --------------------------------------------------------------------- TLS


async def test_tls_serves_a_client_that_trusts_the_ca_and_only_that_one(pki: Pki) -> None:
    async with AsyncExitStack() as stack:
        serving = await serve(stack, pki.server())
        assert await get(stack, serving.port, GrpcSettings.model_validate(
            {"tls": True, "tls_ca": pki.ca})) == "tpl"
        # A plaintext client, or one trusting another CA, gets nowhere.
        with pytest.raises(errors.Unavailable):
            await get(stack, serving.port, GrpcSettings(), deadline=2)
        stranger_ca = pki.root / "stranger-ca.pem"
        stranger_ca.write_bytes(trustme.CA().cert_pem.bytes())
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await get(stack, serving.port, GrpcSettings.model_validate(
                {"tls": True, "tls_ca": stranger_ca}), deadline=2)


async def test_one_internal_certificate_for_every_service_by_its_name(pki: Pki) -> None:
    # Targets are DNS names of Services; the certificate names the one
    # internal name. Dialled as "localhost", a certificate for another
    # name alone would fail; the override checks the internal name.
    internal_only = pki.root / "internal-only"
    internal_only.mkdir(exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(INTERNAL_NAME)
    (internal_only / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (internal_only / "cert.pem").write_bytes(cert.cert_chain_pems[0].bytes())
    (internal_only / "key.pem").write_bytes(cert.private_key_pem.bytes())
    server = GrpcSettings.model_validate({
        "tls": True, "tls_cert": internal_only / "cert.pem", "tls_key": internal_only / "key.pem"})
    async with AsyncExitStack() as stack:
        serving = await serve(stack, server)
        client = {"tls": True, "tls_ca": internal_only / "ca.pem"}
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await get(stack, serving.port, GrpcSettings.model_validate(client), deadline=2)
        assert await get(stack, serving.port, GrpcSettings.model_validate(
            {**client, "tls_server_name": INTERNAL_NAME})) == "tpl"


async def test_mutual_tls_refuses_a_client_without_a_certificate_of_the_ca(pki: Pki) -> None:
    async with AsyncExitStack() as stack:
        serving = await serve(stack, pki.server(tls_client_auth=True))
        assert await get(stack, serving.port, pki.client(tls_client_auth=True)) == "tpl"
        # TLS but no client certificate.
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await get(stack, serving.port, GrpcSettings.model_validate(
                {"tls": True, "tls_ca": pki.ca}), deadline=2)
        # A certificate from a CA the server does not trust.
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await get(stack, serving.port, GrpcSettings.model_validate({
                "tls": True, "tls_ca": pki.ca, "tls_cert": pki.stranger_cert,
                "tls_key": pki.stranger_key, "tls_client_auth": True}), deadline=2)


async def test_with_tls_probes_ask_the_plaintext_health_port_which_serves_nothing_else(
        pki: Pki) -> None:
    settings = pki.server(tls_client_auth=True, token=TOKEN, health_address="127.0.0.1:0")
    async with AsyncExitStack() as stack:
        serving = await serve(stack, settings)
        assert serving.health_port is not None and serving.health_port != serving.port
        async with rpc.raw_channel(f"127.0.0.1:{serving.health_port}") as channel:
            assert await healthy(channel)
            listing: Any = channel.unary_unary(
                f"/{SERVICE}/GetTemplate",
                request_serializer=pb.GetTemplateRequest.SerializeToString,
                response_deserializer=pb.GetTemplateResponse.FromString)
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await listing(pb.GetTemplateRequest(template_id="tpl"), timeout=5,
                              metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # TLS, mutual TLS and the token together.
        assert await get(stack, serving.port, pki.client(tls_client_auth=True,
                                                         token=TOKEN)) == "tpl"


async def test_serving_tls_without_a_certificate_names_the_variables(pki: Pki) -> None:
    async with AsyncExitStack() as stack:
        with pytest.raises(errors.ConfigError, match="LITHO_GRPC_TLS_CERT"):
            await serve(stack, GrpcSettings.model_validate({"tls": True, "tls_ca": pki.ca}))


def test_an_unreadable_pem_file_names_its_variable(tmp_path: Path) -> None:
    settings = GrpcSettings.model_validate({"tls": True, "tls_ca": tmp_path / "missing.pem"})
    with pytest.raises(errors.ConfigError, match="LITHO_GRPC_TLS_CA"):
        rpc.Security.from_settings(settings)


def test_settings_that_do_not_go_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="LITHO_GRPC_TLS_CLIENT_AUTH"):
        rpc.Security.from_environ({"LITHO_GRPC_TLS_CLIENT_AUTH": "true"})
    with pytest.raises(errors.ConfigError, match="LITHO_GRPC_PREVIOUS_TOKEN"):
        rpc.Security.from_environ({"LITHO_GRPC_PREVIOUS_TOKEN": OLD_TOKEN})
    # Never the value itself in the message: it may be a token pasted short.
    pasted = "k3y-" * 7
    with pytest.raises(errors.ConfigError, match="LITHO_GRPC_TOKEN") as short:
        rpc.Security.from_environ({"LITHO_GRPC_TOKEN": pasted})
    assert pasted not in str(short.value) and "k3y-k3y" not in str(short.value)
    # A secret made from `echo` ends in a newline: refused, not sent.
    with pytest.raises(errors.ConfigError, match=r"LITHO_GRPC_TOKEN.*newline"):
        rpc.Security.from_environ({"LITHO_GRPC_TOKEN": TOKEN + "\n"})
    # Certificate files given but TLS forgotten would serve plaintext.
    with pytest.raises(errors.ConfigError, match=r"LITHO_GRPC_TLS_CERT.*LITHO_GRPC_TLS=true"):
        rpc.Security.from_environ({"LITHO_GRPC_TLS_CERT": str(tmp_path / "c.pem"),
                                   "LITHO_GRPC_TLS_KEY": str(tmp_path / "k.pem")})
    environ = {"LITHO_GRPC_TOKEN": TOKEN, "LITHO_GRPC_HEALTH_ADDRESS": "127.0.0.1:0"}
    security = rpc.Security.from_environ(environ)
    assert security.token == TOKEN and security.health_address == "127.0.0.1:0"
    assert security.channel_credentials is None


async def test_an_expired_certificate_turns_health_not_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A running process keeps the certificate it read; once that expires,
    # every call fails its handshake while a plaintext probe would still
    # say SERVING. Health turns NOT_SERVING, so a liveness probe restarts it.
    monkeypatch.setattr(rpc, "CERTIFICATE_CHECK_SECONDS", 0.05)
    ca = trustme.CA()
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=4)
    issued = ca.issue_cert(INTERNAL_NAME, "127.0.0.1", not_after=soon)
    (tmp_path / "cert.pem").write_bytes(issued.cert_chain_pems[0].bytes())
    (tmp_path / "key.pem").write_bytes(issued.private_key_pem.bytes())
    settings = GrpcSettings.model_validate({
        "tls": True, "tls_cert": tmp_path / "cert.pem", "tls_key": tmp_path / "key.pem",
        "health_address": "127.0.0.1:0"})
    security = rpc.Security.from_settings(settings)
    assert security.certificate_expires == pytest.approx(soon.timestamp(), abs=1)
    async with AsyncExitStack() as stack:
        serving = await serve(stack, settings)
        async with rpc.raw_channel(f"127.0.0.1:{serving.health_port}") as channel:
            if time.time() < soon.timestamp() - 1:  # a loaded machine may be past it
                assert await healthy(channel)
            async with asyncio.timeout(20):
                while await healthy(channel):  # noqa: ASYNC110 - a remote state
                    await asyncio.sleep(0.1)


def test_a_certificate_file_that_holds_no_certificate_names_its_variable(
        tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    settings = GrpcSettings.model_validate({
        "tls": True, "tls_cert": tmp_path / "cert.pem", "tls_key": tmp_path / "key.pem"})
    with pytest.raises(errors.ConfigError, match="LITHO_GRPC_TLS_CERT"):
        rpc.Security.from_settings(settings)


async def test_health_watch_needs_the_token_and_the_probe_port_answers_only_small_checks(
        ) -> None:
    settings = GrpcSettings.model_validate({"token": TOKEN, "health_address": "127.0.0.1:0"})
    async with AsyncExitStack() as stack:
        serving = await serve(stack, settings)
        request = health_pb2.HealthCheckRequest(service=SERVICE)
        async with rpc.raw_channel(f"127.0.0.1:{serving.port}") as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            assert await healthy(channel)
            # Watch holds a stream open and its name in the servicer: not a probe's call.
            with pytest.raises(grpc.aio.AioRpcError) as watch:
                async for _ in stub.Watch(request, timeout=5):
                    break
            assert watch.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with rpc.raw_channel(f"127.0.0.1:{serving.health_port}") as probe:
            stub = health_pb2_grpc.HealthStub(probe)
            assert await healthy(probe)
            with pytest.raises(grpc.aio.AioRpcError) as watch:
                async for _ in stub.Watch(request, timeout=5):
                    break
            assert watch.value.code() == grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.aio.AioRpcError) as big:
                await stub.Check(health_pb2.HealthCheckRequest(service="x" * 100_000),
                                 timeout=5)
            assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_refused_call_is_never_read_nor_parsed() -> None:
    parsed: list[int] = []

    def parse(data: bytes) -> bytes:
        parsed.append(len(data))
        return data

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return request

    def register(_servicer: Any, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo, request_deserializer=parse)}),))

    security = rpc.Security.from_settings(GrpcSettings.model_validate({"token": TOKEN}))
    async with AsyncExitStack() as stack:
        serving = await rpc.start_server(stack, address="127.0.0.1:0", grace=0.1,
                                         services=[(register, None, "t.Echo")],
                                         security=security)
        async with rpc.raw_channel(f"127.0.0.1:{serving.port}") as channel:
            call: Any = channel.unary_unary("/t.Echo/Echo")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(b"x" * 1_000_000, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert parsed == []
            answer = await call(b"ok", timeout=5,
                                metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert answer == b"ok" and parsed == [2]


async def test_a_health_address_that_cannot_be_bound_names_its_own_variable() -> None:
    async with AsyncExitStack() as stack:
        serving = await serve(stack, GrpcSettings())
        taken = GrpcSettings.model_validate({"health_address": f"127.0.0.1:{serving.port}"})
        with pytest.raises(errors.ConfigError, match="LITHO_GRPC_HEALTH_ADDRESS") as failed:
            await rpc.start_server(stack, address="127.0.0.1:0", services=SERVICES, grace=0.1,
                                   security=rpc.Security.from_settings(taken),
                                   address_variable="LITHO_TEMPLATE_GRPC_ADDRESS")
        assert "LITHO_TEMPLATE_GRPC_ADDRESS" not in str(failed.value)
