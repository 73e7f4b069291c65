"""``LITHO_NATS_STREAM_REPLICAS``: every stream Litho creates gets that many
replicas, an existing stream is updated to it, and a single server's refusal
of more than one is a ConfigError naming the variable, at start-up
(``Host.nats``). Against a real ``nats-server`` (``tests/support/nats_server.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy
from nats.js.errors import NotFoundError

from litho import messaging
from litho.config import BaseServiceSettings
from litho.errors import ConfigError
from litho.service import Endpoints, Host, ServiceSpec, running
from litho.streams import COUNTS_STREAM, EVENTS_STREAM, JOBS_STREAM, StreamSpec, ensure_streams
from tests.support.nats_server import NatsServer, start_nats

ALL = (EVENTS_STREAM, JOBS_STREAM, COUNTS_STREAM)
TOY = ServiceSpec(name="toy", module="tests.unit.toy", summary="a service that only uses NATS")


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats-replicas"))
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    async with AsyncExitStack() as stack:
        nc = await messaging.connect(stack, nats_server.url, name="replicas-test")
        js = nc.jetstream()
        yield js
        for name in (*ALL, "LITHO_REPLICAS_NEW"):
            try:
                await js.delete_stream(name)
            except NotFoundError:
                pass


def _spec(name: str, max_age: float = 3600.0) -> StreamSpec:
    return StreamSpec(name=name, subjects=(f"litho.test.{name.lower()}.>",),
                      retention=RetentionPolicy.LIMITS, max_age=max_age)


async def test_one_replica_creates_every_stream_and_is_idempotent(js: JetStreamContext) -> None:
    await ensure_streams(js, replicas=1)
    for name in ALL:
        assert (await js.stream_info(name)).config.num_replicas == 1
    before = {name: (await js.stream_info(name)).created for name in ALL}
    await ensure_streams(js, replicas=1)
    assert {name: (await js.stream_info(name)).created for name in ALL} == before


async def test_three_replicas_on_one_server_name_the_variable(js: JetStreamContext) -> None:
    # A new stream: refused when it is created, and not left half made.
    with pytest.raises(ConfigError, match="LITHO_NATS_STREAM_REPLICAS") as created:
        await ensure_streams(js, [_spec("LITHO_REPLICAS_NEW")], replicas=3)
    assert "LITHO_REPLICAS_NEW" in str(created.value)
    with pytest.raises(NotFoundError):
        await js.stream_info("LITHO_REPLICAS_NEW")
    # An existing one: raising its replicas is an update the server refuses.
    await ensure_streams(js, replicas=1)
    with pytest.raises(ConfigError, match="LITHO_NATS_STREAM_REPLICAS") as updated:
        await ensure_streams(js, replicas=3)
    assert "3 servers" in str(updated.value)
    assert (await js.stream_info(EVENTS_STREAM)).config.num_replicas == 1


async def test_without_replicas_an_update_keeps_the_streams_own(js: JetStreamContext) -> None:
    await ensure_streams(js, [_spec("LITHO_REPLICAS_NEW")], replicas=1)
    # Another field drifted; None leaves replicas as they are (no error, no reset).
    await ensure_streams(js, [_spec("LITHO_REPLICAS_NEW", max_age=7200.0)])
    info = await js.stream_info("LITHO_REPLICAS_NEW")
    assert info.config.max_age == 7200.0
    assert info.config.num_replicas == 1


async def _only_nats(host: Host[BaseServiceSettings]) -> None:
    await host.nats()


async def test_start_up_threads_the_setting(nats_server: NatsServer, js: JetStreamContext,
                                            tmp_path: Path) -> None:
    for name in ALL:
        try:
            await js.delete_stream(name)
        except NotFoundError:
            pass
    three = BaseServiceSettings(data_dir=tmp_path, nats_url=nats_server.url,
                                nats_stream_replicas=3)
    with pytest.raises(ConfigError, match="LITHO_NATS_STREAM_REPLICAS"):
        async with running(TOY, three, _only_nats, endpoints=Endpoints()):
            pass
    one = three.model_copy(update={"nats_stream_replicas": 1})
    async with running(TOY, one, _only_nats, endpoints=Endpoints()):
        for name in ALL:
            assert (await js.stream_info(name)).config.num_replicas == 1
