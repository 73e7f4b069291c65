"""Cron refreshes driven by an injectable clock, on the real SQLite store:
two binding replicas (each its own store connection, domain and scheduler)
on one database file fetch each fire once, as the data server counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio

from litho.config import OutboundSettings
from litho.docstore import DocumentStore, open_document_store
from litho.outbound import AllowList, OutboundGuard
from services.binding._bindings import SCHEDULED_FETCH_WAIT, Bindings
from services.binding._fetch import FetchSlots
from services.binding._model import PolicyInput
from services.binding._scheduler import Scheduler
from tests.unit.test_binding_domain import (
    T1,
    Clock,
    DataServer,
    FakeEvents,
    FakeTemplates,
    build_bindings,
    server,  # noqa: F401  (the data server fixture)
    spec,
)

#: 2023-11-14 22:13:20 UTC: "*/5 * * * *" fires next at 22:15:00.
START = 1_700_000_000.0
FIRST_FIRE = START + 100
EVERY_5_MIN = PolicyInput(type="cron", cron="*/5 * * * *")
LEASE = 30.0


@dataclass
class Replica:
    store: DocumentStore
    bindings: Bindings
    scheduler: Scheduler
    events: FakeEvents


@dataclass
class Cluster:
    server: DataServer
    clock: Clock
    replicas: list[Replica]

    async def tick_all(self) -> int:
        counts = await asyncio.gather(*(r.scheduler.tick() for r in self.replicas))
        return sum(counts)


@pytest_asyncio.fixture
async def cluster(server: DataServer, tmp_path: Path) -> AsyncIterator[Cluster]:  # noqa: F811
    allow = f"127.0.0.1:{server.port}"
    clock = Clock(START)
    replicas: list[Replica] = []
    async with OutboundGuard(OutboundSettings(allow=allow)) as guard:
        for _ in range(2):
            store = await open_document_store(f"sqlite:///{tmp_path / 'binding.db'}", "litho")
            events = FakeEvents()
            bindings = build_bindings(store, guard, AllowList.parse(allow), FakeTemplates(),
                                      events, clock)
            await bindings.store.prepare()
            replicas.append(Replica(store, bindings,
                                    Scheduler(bindings, lease_seconds=LEASE, clock=clock),
                                    events))
        yield Cluster(server, clock, replicas)
        for replica in replicas:
            await replica.store.close()


async def test_a_cron_binding_refreshes_at_each_fire_once_across_replicas(
        cluster: Cluster) -> None:
    first = cluster.replicas[0]
    binding = await first.bindings.create(T1, spec(cluster.server, policy=EVERY_5_MIN))
    assert binding.next_refresh_at == FIRST_FIRE
    assert cluster.server.hits["/items"] == 1  # the fetch at create
    cluster.clock.now = FIRST_FIRE - 1
    assert await cluster.tick_all() == 0
    assert cluster.server.hits["/items"] == 1
    for fire in range(3):
        cluster.clock.now = FIRST_FIRE + fire * 300 + 0.5
        cluster.server.payload = {"price": 20 + fire, "name": "Lamp"}
        assert await cluster.tick_all() == 1
        assert await cluster.tick_all() == 0  # the fire is spent
        assert cluster.server.hits["/items"] == 2 + fire
        stored = await cluster.replicas[1].bindings.get(T1, binding.id)
        assert stored.next_refresh_at == FIRST_FIRE + (fire + 1) * 300
        assert stored.fetched_at == cluster.clock.now
    resolved = await cluster.replicas[1].bindings.resolve(binding.id)
    assert json.loads(resolved.variables_json)["price"] == 22
    assert resolved.fresh_until == FIRST_FIRE + 3 * 300
    updates = [e for r in cluster.replicas for e in r.events.updates]
    assert len(updates) == 4  # create + three changed fires, each published once


async def test_missed_fires_are_not_caught_up(cluster: Cluster) -> None:
    first = cluster.replicas[0]
    binding = await first.bindings.create(T1, spec(cluster.server, policy=EVERY_5_MIN))
    cluster.clock.now = FIRST_FIRE + 10 * 300 + 7  # ten fires missed (the service was down)
    assert await cluster.tick_all() == 1
    assert await cluster.tick_all() == 0
    stored = await first.bindings.get(T1, binding.id)
    assert stored.next_refresh_at == FIRST_FIRE + 11 * 300


async def test_a_held_lease_delays_the_fire_until_it_ends(cluster: Cluster) -> None:
    first = cluster.replicas[0]
    binding = await first.bindings.create(T1, spec(cluster.server, policy=EVERY_5_MIN))
    cluster.clock.now = FIRST_FIRE + 1
    # A replica that claimed the fire and died: its lease must end first.
    assert await first.bindings.store.claim(binding.id, cluster.clock.now,
                                            cluster.clock.now + LEASE, "dead") is not None
    assert await cluster.tick_all() == 0
    cluster.clock.now += LEASE + 1
    assert await cluster.tick_all() == 1
    assert cluster.server.hits["/items"] == 2


async def test_paused_cron_bindings_are_not_refreshed(cluster: Cluster) -> None:
    first = cluster.replicas[0]
    binding = await first.bindings.create(T1, spec(cluster.server, policy=EVERY_5_MIN))
    await first.bindings.pause(T1, binding.id)
    cluster.clock.now = FIRST_FIRE + 1
    assert await cluster.tick_all() == 0
    cluster.clock.now = FIRST_FIRE + 400
    resumed = await first.bindings.resume(T1, binding.id)
    assert resumed.next_refresh_at == FIRST_FIRE + 600  # from now, not the missed fire
    assert await cluster.tick_all() == 0
    cluster.clock.now = FIRST_FIRE + 600
    assert await cluster.tick_all() == 1
    assert cluster.server.hits["/items"] == 2


async def test_a_failing_cron_fetch_is_recorded_and_the_schedule_goes_on(
        cluster: Cluster) -> None:
    first = cluster.replicas[0]
    binding = await first.bindings.create(T1, spec(cluster.server, policy=EVERY_5_MIN))
    cluster.server.status = 500
    cluster.clock.now = FIRST_FIRE + 1
    assert await cluster.tick_all() == 1
    stored = await first.bindings.get(T1, binding.id)
    assert stored.status == "error" and stored.last_error == "the source answered 500"
    assert stored.next_refresh_at == FIRST_FIRE + 300
    failures = [e for r in cluster.replicas for e in r.events.failures]
    assert len(failures) == 1


async def test_a_busy_tenant_defers_its_fire_and_keeps_it_due(cluster: Cluster) -> None:
    # One fetch per tenant at a time: while the first fire's fetch hangs, the
    # second binding's fire waits at most SCHEDULED_FETCH_WAIT for its turn,
    # then stays due (no error, no event) instead of holding the round.
    first = cluster.replicas[0]
    first.bindings._fetcher._slots = FetchSlots(per_tenant=1)
    first.bindings._fetcher._timeout = 10.0  # the held fetch outlasts the wait
    a = await first.bindings.create(T1, spec(cluster.server, policy=EVERY_5_MIN))
    b = await first.bindings.create(T1, spec(cluster.server, policy=EVERY_5_MIN))
    cluster.clock.now = FIRST_FIRE + 1
    cluster.server.gate.clear()
    tick = asyncio.create_task(first.scheduler.tick())
    await asyncio.wait_for(cluster.server.waiting.wait(), 5)
    await asyncio.sleep(SCHEDULED_FETCH_WAIT + 0.3)  # the second fire gave up its wait
    cluster.server.gate.set()
    assert await tick == 2
    done = {x.id: await first.bindings.get(T1, x.id) for x in (a, b)}
    moved = [i for i, d in done.items() if d.next_refresh_at == FIRST_FIRE + 300]
    kept = [i for i, d in done.items() if d.next_refresh_at == FIRST_FIRE]
    assert len(moved) == 1 and len(kept) == 1, done
    assert all(d.status == "active" and not d.last_error for d in done.values())
    assert await first.scheduler.tick() == 1  # the deferred fire, taken again
    assert (await first.bindings.get(T1, kept[0])).next_refresh_at == FIRST_FIRE + 300
