"""Internal gRPC in production mode: every port under mutual TLS and the
token, as the Helm chart runs them. The Python client of docs/grpc.md runs
as written against the renderer; a caller without the client certificate,
without TLS or without the token gets nowhere; health checks need no
token. Skipped in embedded mode (no TLS there)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from litho import errors, rpc
from litho.renderer.v1 import renderer_pb2 as pb
from litho.renderer.v1 import renderer_pb2_grpc as pb_grpc
from tests.e2e.conftest import Live
from tests.support.production import MODE_ENV, PRODUCTION, current_mode

pytestmark = [
    pytest.mark.production,
    pytest.mark.skipif(current_mode() != PRODUCTION, reason=f"{MODE_ENV} is not production"),
]

DOC = Path(__file__).resolve().parents[2] / "docs" / "grpc.md"
HTML = ('<!doctype html><html><body style="margin:0;background:#123456">'
        '<h1 style="color:#fff;font:bold 30px sans-serif">{{ title }}</h1></body></html>')
#: The tenant of the stack's first key (Stack._first_key).
TENANT = "default"


def documented_client() -> str:
    """The block the doc marks as tested: the one after the marker."""
    text = DOC.read_text()
    marker = text.index("<!-- tested:")
    found = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert found is not None, "docs/grpc.md lost its tested Python block"
    return found.group(1)


def grpc_env(live: Live) -> dict[str, str]:
    assert live.production is not None
    return live.production.grpc_env


async def template(live: Live) -> str:
    body = {"name": "internal", "html": HTML, "width": 320, "height": 160}
    async with live.http.post(f"{live.url}/v1/templates", json=body,
                              headers=live.auth()) as r:
        assert r.status == 201, await r.text()
        created: dict[str, Any] = await r.json()
        return str(created["id"])


async def test_the_documented_python_client_renders_through_the_renderer(live: Live) -> None:
    template_id = await template(live)
    env = grpc_env(live)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", documented_client(),
        env={**os.environ,
             "LITHO_TLS_DIR": str(Path(env["LITHO_GRPC_TLS_CA"]).parent),
             "LITHO_GRPC_TLS_SERVER_NAME": env["LITHO_GRPC_TLS_SERVER_NAME"],
             "LITHO_RENDERER_TARGET": live.stack.grpc_targets["renderer"],
             "LITHO_GRPC_TOKEN": env["LITHO_GRPC_TOKEN"],
             "LITHO_TENANT": TENANT, "LITHO_TEMPLATE_ID": template_id},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    answer = json.loads(out.decode().strip().splitlines()[-1])
    assert (answer["width"], answer["height"]) == (320, 160)
    # The same render as the API's for the same variables: content addressed,
    # so the gateway answers the very image the internal caller made.
    async with live.http.post(f"{live.url}/v1/templates/{template_id}/render",
                              json={"variables": {"title": "Hello from gRPC"}},
                              headers=live.auth()) as r:
        assert r.status == 200, await r.text()
        rendered = await r.json()
    assert rendered["cached"] is True
    async with live.http.get(f"{live.url}/images/{answer['renderId']}.png") as r:
        assert r.status == 200
        data = await r.read()
    image = Image.open(io.BytesIO(data))
    assert image.size == (320, 160)
    assert image.convert("RGB").getpixel((300, 150)) == (0x12, 0x34, 0x56)


async def render_with(live: Live, security: rpc.Security, template_id: str) -> str:
    async with asyncio.timeout(30):
        channel = rpc.raw_channel(live.stack.grpc_targets["renderer"], security)
        async with channel:
            stub = pb_grpc.RendererServiceStub(channel)
            metadata = [("authorization", f"Bearer {security.token}")] if security.token else []
            try:
                answer = await stub.RenderTemplate(pb.RenderTemplateRequest(
                    tenant_id=TENANT, template_id=template_id, variables_json="{}",
                    format=pb.IMAGE_FORMAT_PNG), metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                raise rpc.error_from_rpc(exc) from exc
            return answer.render_id


async def test_every_port_refuses_callers_without_the_certificate_or_the_token(
        live: Live) -> None:
    template_id = await template(live)
    env = grpc_env(live)
    full = rpc.Security.from_environ(env)
    assert await render_with(live, full, template_id)
    no_token = rpc.Security.from_environ(
        {k: v for k, v in env.items() if k != "LITHO_GRPC_TOKEN"})
    with pytest.raises(errors.Unauthenticated):
        await render_with(live, no_token, template_id)
    # TLS without a client certificate: the handshake fails.
    server_only = rpc.Security.from_environ({
        "LITHO_GRPC_TLS": "true", "LITHO_GRPC_TLS_CA": env["LITHO_GRPC_TLS_CA"],
        "LITHO_GRPC_TLS_SERVER_NAME": env["LITHO_GRPC_TLS_SERVER_NAME"],
        "LITHO_GRPC_TOKEN": env["LITHO_GRPC_TOKEN"]})
    with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
        await render_with(live, server_only, template_id)
    # Plaintext, even with the token.
    with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
        await render_with(live, rpc.Security.from_environ(
            {"LITHO_GRPC_TOKEN": env["LITHO_GRPC_TOKEN"]}), template_id)


async def test_health_checks_need_no_token(live: Live) -> None:
    # Every gRPC service's health over mutual TLS without the token, as the
    # services' own start-up checks do; the plaintext health ports are
    # covered by tests/unit/test_rpc_security.py.
    no_token = rpc.Security.from_environ(
        {k: v for k, v in grpc_env(live).items() if k != "LITHO_GRPC_TOKEN"})
    for name, target in live.stack.grpc_targets.items():
        async with rpc.raw_channel(target, no_token) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
