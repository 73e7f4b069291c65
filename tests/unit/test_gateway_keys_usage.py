"""``lastUsedTime`` is written off the request path, at most once per
interval per key, with a bounded number of writes under way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.gateway._key_usage import KeyUsage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.writes: list[str] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, key_id: str, when: datetime) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("the store is away")
        self.writes.append(key_id)


async def settle(usage: KeyUsage) -> None:
    await usage.close()


async def test_one_write_per_key_per_interval() -> None:
    clock, recorder = Clock(), Recorder()
    usage = KeyUsage(recorder, interval=60, clock=clock)
    for _ in range(100):
        usage.seen("kid_a")
    usage.seen("kid_b")
    await settle(usage)
    assert recorder.writes == ["kid_a", "kid_b"]
    clock.now += 59
    usage.seen("kid_a")
    await settle(usage)
    assert recorder.writes == ["kid_a", "kid_b"]
    clock.now += 2
    usage.seen("kid_a")
    usage.seen("kid_a")
    await settle(usage)
    assert recorder.writes == ["kid_a", "kid_b", "kid_a"]


async def test_seen_never_waits_for_the_write() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    usage = KeyUsage(recorder, interval=60)
    usage.seen("kid_a")  # returns with the write still blocked
    assert recorder.writes == []
    recorder.gate.set()
    await settle(usage)
    assert recorder.writes == ["kid_a"]


async def test_a_failed_write_is_tried_again_with_the_next_use() -> None:
    clock, recorder = Clock(), Recorder()
    usage = KeyUsage(recorder, interval=60, clock=clock)
    recorder.fail = True
    usage.seen("kid_a")
    await settle(usage)
    recorder.fail = False
    usage.seen("kid_a")
    await settle(usage)
    assert recorder.writes == ["kid_a"]


async def test_writes_under_way_are_bounded() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    usage = KeyUsage(recorder, interval=60, max_pending=3)
    for n in range(10):
        usage.seen(f"kid_{n}")
    recorder.gate.set()
    await settle(usage)
    assert recorder.writes == ["kid_0", "kid_1", "kid_2"]
    # The skipped ones are written with their next use.
    usage.seen("kid_7")
    await settle(usage)
    assert recorder.writes[-1] == "kid_7"


async def test_the_time_written_is_the_use() -> None:
    seen: list[datetime] = []

    async def record(key_id: str, when: datetime) -> None:
        seen.append(when)

    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    usage = KeyUsage(record, interval=60, now=lambda: at)
    usage.seen("kid_a")
    await settle(usage)
    assert seen == [at]
