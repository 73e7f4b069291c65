"""litho.notes.NotedMemo past its entries' time: a reload that fails because
the owner is away answers the stale entry for a while; any other failure,
a note or a dropped connection does not."""

from __future__ import annotations

import pytest

from litho.errors import NotFound, Unavailable
from litho.notes import STALE_RETRY, NotedMemo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Link:
    def __init__(self) -> None:
        self.value: int | None = 0

    def generation(self) -> int | None:
        return self.value


def memo(clock: Clock, link: Link, *, stale: bool = True) -> NotedMemo[str]:
    return NotedMemo(link, name="test", max_age=30, max_bytes=2**20, cost=len,
                     stale_on=(Unavailable,) if stale else (), max_stale=300, clock=clock)


async def answer(value: str) -> str:
    return value


async def away() -> str:
    raise Unavailable("the owner is away")


async def gone() -> str:
    raise NotFound("gone")


async def test_an_owner_away_gets_the_stale_entry_for_a_while() -> None:
    clock, link = Clock(), Link()
    m = memo(clock, link)
    assert await m.get("k", lambda: answer("v1")) == "v1"
    clock.now += 31  # past its time: asked again, and the owner is away
    assert await m.get("k", away) == "v1"
    clock.now += 200
    assert await m.get("k", away) == "v1"
    clock.now += 100  # past max_stale
    with pytest.raises(Unavailable):
        await m.get("k", away)
    # Back: a fresh answer replaces it.
    assert await m.get("k", lambda: answer("v2")) == "v2"


async def test_without_stale_on_or_after_a_note_or_a_reconnect_the_failure_shows() -> None:
    clock, link = Clock(), Link()
    plain = memo(clock, link, stale=False)
    await plain.get("k", lambda: answer("v1"))
    clock.now += 31
    with pytest.raises(Unavailable):
        await plain.get("k", away)
    m = memo(clock, link)
    await m.get("k", lambda: answer("v1"))
    m.changed("k")  # a write: the entry is forgotten, never answered stale
    with pytest.raises(Unavailable):
        await m.get("k", away)
    await m.get("j", lambda: answer("v1"))
    clock.now += 31
    link.value = 1  # the notes' connection dropped: everything forgotten
    with pytest.raises(Unavailable):
        await m.get("j", away)


async def test_another_failure_is_raised_and_drops_the_stale_entry() -> None:
    clock, link = Clock(), Link()
    m = memo(clock, link)
    await m.get("k", lambda: answer("v1"))
    clock.now += 31
    with pytest.raises(NotFound):
        await m.get("k", gone)
    with pytest.raises(Unavailable):
        await m.get("k", away)  # nothing left to answer


async def test_a_stale_entry_is_asked_again_only_every_few_seconds() -> None:
    clock, link = Clock(), Link()
    m = memo(clock, link)
    await m.get("k", lambda: answer("v1"))
    clock.now += 31
    calls = 0

    async def counted_away() -> str:
        nonlocal calls
        calls += 1
        raise Unavailable("away")

    for _ in range(5):
        assert await m.get("k", counted_away) == "v1"
    assert calls == 1  # the others answered stale at once
    clock.now += STALE_RETRY
    assert await m.get("k", counted_away) == "v1" and calls == 2
    # max_stale counts from when the entry first ended, not from the retries.
    clock.now = 1000.0 + 30 + 300
    with pytest.raises(Unavailable):
        await m.get("k", counted_away)
