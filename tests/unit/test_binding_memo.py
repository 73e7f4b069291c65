"""The renderer's memo of resolved bindings: kept while fresh and within its
time to live, dropped by change notes (and by a dropped connection), never
kept from a resolve a note overtook. The resolver behind it is a fake of
the port; the notes travel through a real ``nats-server``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats

from litho import messaging
from litho.errors import FailedPrecondition
from litho.notes import NatsLink, following, send_note
from services.binding._adapters import NatsBindingEvents
from services.renderer._binding_memo import ENTRY_OVERHEAD, BindingMemo, following_changes
from services.renderer._bindings import ResolvedBinding
from tests.support.nats_server import NatsServer, start_nats

NOW = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeResolver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.answers: dict[str, ResolvedBinding] = {}
        self.failing: set[str] = set()
        #: Set: resolves wait for it (one under way while a note comes).
        self.gate: asyncio.Event | None = None

    async def resolve(self, binding_id: str, *, refresh: bool = True) -> ResolvedBinding:
        self.calls.append((binding_id, refresh))
        if self.gate is not None:
            await self.gate.wait()
        if binding_id in self.failing:
            raise FailedPrecondition("serves its error")
        return self.answers[binding_id]


class FakeLink:
    def __init__(self) -> None:
        self.value: int | None = 0

    def generation(self) -> int | None:
        return self.value


def resolved(binding_id: str, *, fresh_until: float | None = None,
             variables: str = '{"price": 1}') -> ResolvedBinding:
    return ResolvedBinding(binding_id=binding_id, tenant_id="t1", template_id="tpl",
                           variables_json=variables, fresh_until=fresh_until)


Parts = tuple[FakeResolver, FakeLink, Clock]


@pytest.fixture
def parts() -> Parts:
    resolver = FakeResolver()
    for name in ("a", "b", "c"):
        resolver.answers[name] = resolved(name)
    return resolver, FakeLink(), Clock()


def memo_of(parts: Parts, *, max_age: float = 30.0,
            max_bytes: int = 2**20) -> BindingMemo:
    resolver, link, clock = parts
    return BindingMemo(resolver, link, max_age=max_age, max_bytes=max_bytes, clock=clock)


async def test_a_resolved_binding_is_kept_for_the_time_to_live(parts: Parts) -> None:
    resolver, _, clock = parts
    memo = memo_of(parts)
    first = await memo.resolve("a")
    assert await memo.resolve("a") == first
    assert resolver.calls == [("a", True)]
    clock.now += 30.1
    await memo.resolve("a")
    assert len(resolver.calls) == 2


async def test_never_past_the_datas_freshness(parts: Parts) -> None:
    resolver, _, clock = parts
    resolver.answers["a"] = resolved("a", fresh_until=NOW + 5)
    resolver.answers["b"] = resolved("b", fresh_until=NOW)  # stale: refreshed by each ask
    memo = memo_of(parts)
    await memo.resolve("a")
    await memo.resolve("b")
    clock.now += 4.9
    await memo.resolve("a")
    await memo.resolve("b")
    assert [c[0] for c in resolver.calls] == ["a", "b", "b"]
    clock.now += 0.2
    await memo.resolve("a")  # the next GET asks the binding service, which refreshes
    assert [c[0] for c in resolver.calls] == ["a", "b", "b", "a"]


async def test_off_and_pre_renders_always_ask(parts: Parts) -> None:
    resolver, _, _ = parts
    off = memo_of(parts, max_age=0)
    await off.resolve("a")
    await off.resolve("a")
    assert len(resolver.calls) == 2 and len(off) == 0
    memo = memo_of(parts)
    await memo.resolve("b", refresh=False)
    await memo.resolve("b")
    await memo.resolve("b", refresh=False)  # the data as it is, never the memo's
    assert resolver.calls[2:] == [("b", False), ("b", True), ("b", False)]


async def test_errors_are_never_kept(parts: Parts) -> None:
    resolver, _, _ = parts
    resolver.failing.add("a")
    memo = memo_of(parts)
    for _ in range(2):
        with pytest.raises(FailedPrecondition):
            await memo.resolve("a")
    assert len(resolver.calls) == 2 and len(memo) == 0


async def test_a_change_note_drops_the_binding(parts: Parts) -> None:
    resolver, _, _ = parts
    memo = memo_of(parts)
    await memo.resolve("a")
    await memo.resolve("b")
    resolver.answers["a"] = resolved("a", variables='{"price": 2}')
    memo.changed("a")
    assert (await memo.resolve("a")).variables_json == '{"price": 2}'
    await memo.resolve("b")
    assert [c[0] for c in resolver.calls] == ["a", "b", "a"]


async def test_a_resolve_a_note_overtook_is_not_kept(parts: Parts) -> None:
    resolver, _, _ = parts
    memo = memo_of(parts)
    resolver.gate = asyncio.Event()
    under_way = asyncio.create_task(memo.resolve("a"))
    second = asyncio.create_task(memo.resolve("a"))
    await asyncio.sleep(0)  # both up to the gate: concurrent misses share one resolve
    assert len(resolver.calls) == 1
    memo.changed("a")  # the write landed after that resolve read the document
    after = asyncio.create_task(memo.resolve("a"))  # asks anew, sharing nothing
    await asyncio.sleep(0)
    assert len(resolver.calls) == 2
    resolver.gate.set()
    await asyncio.gather(under_way, second, after)
    assert len(memo) == 0  # both loads were under way when the note came
    resolver.gate = None
    await memo.resolve("a")
    await memo.resolve("a")
    assert len(resolver.calls) == 3 and len(memo) == 1


async def test_a_cancelled_first_caller_leaves_the_others_their_answer(parts: Parts) -> None:
    resolver, _, _ = parts
    memo = memo_of(parts)
    resolver.gate = asyncio.Event()
    first = asyncio.create_task(memo.resolve("a"))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(memo.resolve("a"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    resolver.gate.set()
    assert (await waiter).binding_id == "a"  # loaded again, never a CancelledError
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_dropped_connection_forgets_everything(parts: Parts) -> None:
    resolver, link, _ = parts
    memo = memo_of(parts)
    await memo.resolve("a")
    link.value = None  # disconnected: notes may be missed, so nothing is kept or used
    await memo.resolve("a")
    await memo.resolve("a")
    assert len(resolver.calls) == 3 and len(memo) == 0
    link.value = 1  # reconnected: a new connection, notes from now on
    await memo.resolve("a")
    await memo.resolve("a")
    assert len(resolver.calls) == 4
    await memo.resolve("b")
    link.value = 2  # dropped and back between two GETs
    await memo.resolve("b")
    assert [c[0] for c in resolver.calls][-2:] == ["b", "b"]


async def test_bounded_by_bytes_least_recently_used_first(parts: Parts) -> None:
    resolver, _, _ = parts
    big = '{"text": "' + "x" * 1000 + '"}'
    for name in ("a", "b", "c"):
        resolver.answers[name] = resolved(name, variables=big)
    memo = memo_of(parts, max_bytes=2 * (sys.getsizeof(big) + ENTRY_OVERHEAD))
    await memo.resolve("a")
    await memo.resolve("b")
    await memo.resolve("a")  # a is the most recently used
    await memo.resolve("c")  # b goes
    assert len(memo) == 2
    calls = len(resolver.calls)
    await memo.resolve("a")
    await memo.resolve("c")
    assert len(resolver.calls) == calls
    await memo.resolve("b")
    assert len(resolver.calls) == calls + 1
    tiny = memo_of(parts, max_bytes=100)  # an entry larger than the memo is not kept
    await tiny.resolve("a")
    assert len(tiny) == 0


# ------------------------------------------------------ through NATS ----

@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    started = start_nats(tmp_path_factory.mktemp("nats-binding-memo"))
    try:
        yield started
    finally:
        started.stop()


@pytest_asyncio.fixture
async def linked(nats_server: NatsServer) -> AsyncIterator[tuple[Nats, Nats]]:
    async with contextlib.AsyncExitStack() as stack:
        renderer_nc = await messaging.connect(stack, nats_server.url, name="memo-renderer")
        binding_nc = await messaging.connect(stack, nats_server.url, name="memo-binding")
        yield renderer_nc, binding_nc


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


async def test_the_binding_services_notes_reach_every_replica(linked: tuple[Nats, Nats]) -> None:
    renderer_nc, binding_nc = linked
    resolver = FakeResolver()
    resolver.answers["a"] = resolved("a")
    link = NatsLink(renderer_nc)
    replicas = [BindingMemo(resolver, link, max_age=30, max_bytes=2**20) for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        for memo in replicas:
            await stack.enter_async_context(following_changes(renderer_nc, memo))
            await memo.resolve("a")
        await messaging.delivered(renderer_nc)
        assert all(len(m) == 1 for m in replicas)
        events = NatsBindingEvents(messaging.Publisher(binding_nc.jetstream()),
                                   binding_nc)
        await events.changed("a")
        await eventually(lambda: all(len(m) == 0 for m in replicas))


async def test_a_note_sent_once_following_is_entered_always_arrives(
        linked: tuple[Nats, Nats]) -> None:
    # nats-py writes a flush's PING ahead of a SUB still waiting for its
    # flusher, so one flush did not prove the subscription live: a note
    # sent right after could overtake it (a CI run lost one that way).
    renderer_nc, binding_nc = linked
    for n in range(100):
        subject = f"litho.test.notes.{n}"
        got: asyncio.Queue[str] = asyncio.Queue()
        async with following(renderer_nc, subject, got.put_nowait):
            await send_note(binding_nc, subject, f"key-{n}")
            assert await asyncio.wait_for(got.get(), 5) == f"key-{n}"


async def test_a_note_that_cannot_be_sent_never_fails_the_write(nats_server: NatsServer) -> None:
    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, nats_server.url, name="memo-closed")
        events = NatsBindingEvents(messaging.Publisher(nc.jetstream()), nc)
        await nc.close()
        await events.changed("a")  # logged, not raised


async def test_the_link_moves_on_after_a_reconnect(nats_server: NatsServer) -> None:
    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, nats_server.url, name="memo-link")
        link = NatsLink(nc)
        before = link.generation()
        assert before is not None
        nats_server.restart()
        await eventually(lambda: link.generation() not in (None, before), timeout=20)

