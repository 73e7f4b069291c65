"""The page pool's supervision rules, with a fake engine behind its port."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from litho.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.renderer._pool import BrowserLike, PageLike, PagePool


class Crash(Exception):
    pass


class FakePage:
    def __init__(self, browser: FakeBrowser) -> None:
        self.browser = browser
        self.closed = False
        #: What a render or a document did to it (a Chromium page: its URL,
        #: frames and navigations), and whether a reset can undo that.
        self.blank = True
        self.reset_works = True
        self.resets = 0

    def is_closed(self) -> bool:
        return self.closed or not self.browser.connected

    async def close(self) -> None:
        self.closed = True

    def is_blank(self) -> bool:
        return self.blank

    async def reset(self) -> None:
        self.resets += 1
        await asyncio.sleep(0)
        if self.reset_works:
            self.blank = True


class FakeBrowser:
    def __init__(self, number: int) -> None:
        self.number = number
        self.connected = True

    def is_connected(self) -> bool:
        return self.connected

    async def close(self) -> None:
        self.connected = False


class FakeEngine:
    def __init__(self) -> None:
        self.browsers: list[FakeBrowser] = []
        self.pages = 0

    async def launch(self) -> BrowserLike:
        browser = FakeBrowser(len(self.browsers) + 1)
        self.browsers.append(browser)
        return browser

    async def new_page(self, browser: BrowserLike) -> PageLike:
        assert isinstance(browser, FakeBrowser)
        self.pages += 1
        return FakePage(browser)

    def is_crash(self, exc: BaseException) -> bool:
        return isinstance(exc, Crash)


def gated(result: str) -> tuple[asyncio.Event, Callable[[PageLike], Awaitable[str]]]:
    """A render that holds its page until the gate is set, then answers ``result``."""
    gate = asyncio.Event()

    async def held(page: PageLike) -> str:
        await gate.wait()
        return result

    return gate, held


def gated_jobs(started: list[str], gates: dict[str, asyncio.Event]
               ) -> Callable[[str], Callable[[PageLike], Awaitable[str]]]:
    """Jobs by name: each notes that it started, holds its page until its
    gate is set, then answers its name."""
    def job(name: str) -> Callable[[PageLike], Awaitable[str]]:
        async def run(page: PageLike) -> str:
            started.append(name)
            await gates[name].wait()
            return name
        return run
    return job


def make_pool(engine: FakeEngine, **overrides: float) -> PagePool:
    options: dict[str, float] = {"size": 2, "max_queue": 2, "restart_after": 100, "timeout": 1.0}
    options.update(overrides)
    return PagePool(engine, size=int(options["size"]), max_queue=int(options["max_queue"]),
                    restart_after=int(options["restart_after"]), timeout=options["timeout"])


async def browser_number(page: PageLike) -> int:
    assert isinstance(page, FakePage)
    return page.browser.number


async def test_runs_jobs_and_bounds_concurrency() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=2, max_queue=10)
    await pool.start()
    running = 0
    peak = 0

    async def job(page: PageLike) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return 1

    results = await asyncio.gather(*(pool.run(job) for _ in range(8)))
    assert sum(results) == 8 and peak == 2
    await pool.close()


async def test_full_queue_is_resource_exhausted() -> None:
    pool = make_pool(FakeEngine(), size=1, max_queue=1)
    await pool.start()
    release = asyncio.Event()

    async def slow(page: PageLike) -> None:
        await release.wait()

    first = asyncio.create_task(pool.run(slow))
    second = asyncio.create_task(pool.run(slow))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted):
        await pool.run(slow)
    release.set()
    await asyncio.gather(first, second)
    await pool.close()


async def test_restarts_after_n_renders() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1, restart_after=3)
    await pool.start()
    numbers = [await pool.run(browser_number) for _ in range(7)]
    assert numbers == [1, 1, 1, 2, 2, 2, 3]
    assert engine.browsers[0].connected is False
    await pool.close()


async def test_crash_restarts_chromium_and_retries_once() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1)
    await pool.start()
    attempts = 0

    async def crashes_once(page: PageLike) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            assert isinstance(page, FakePage)
            page.browser.connected = False
            raise Crash("Target crashed")
        return await browser_number(page)

    assert await pool.run(crashes_once) == 2
    assert attempts == 2 and pool.restarts == 1
    await pool.close()


async def test_second_crash_is_unavailable() -> None:
    pool = make_pool(FakeEngine(), size=1)
    await pool.start()

    async def always_crashes(page: PageLike) -> None:
        raise Crash("Target crashed")

    with pytest.raises(Unavailable, match="crashed twice"):
        await pool.run(always_crashes)
    assert await pool.run(browser_number) == 3
    await pool.close()


async def test_timeout_is_invalid_argument_and_restarts_chromium() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1, timeout=0.05)
    await pool.start()

    async def hangs(page: PageLike) -> None:
        await asyncio.sleep(10)

    # Not retryable: the document asked for more than the deadline allows.
    with pytest.raises(InvalidArgument, match="LITHO_RENDERER_TIMEOUT") as overran:
        await pool.run(hangs)
    assert [e.field for e in overran.value.errors] == ["template"]
    # The compositor of the overrunning page would hold up every other page:
    # the browser itself is replaced, at once.
    assert await pool.run(browser_number) == 2
    assert not engine.browsers[0].connected
    await pool.close()


async def test_input_errors_keep_the_page_other_errors_replace_it() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1)
    await pool.start()

    async def bad_input(page: PageLike) -> None:
        raise InvalidArgument("selector matched nothing")

    async def glitch(page: PageLike) -> None:
        raise ValueError("protocol error")

    with pytest.raises(InvalidArgument):
        await pool.run(bad_input)
    assert engine.pages == 1
    with pytest.raises(Unavailable, match="failed to render"):
        await pool.run(glitch)
    assert await pool.run(browser_number) == 1
    assert engine.pages == 2 and pool.restarts == 0
    await pool.close()


async def test_cancelled_renders_give_their_pages_back() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=2, timeout=5)
    await pool.start()
    started = asyncio.Event()

    async def slow(page: PageLike) -> None:
        started.set()
        await asyncio.sleep(10)

    for _ in range(2):
        started.clear()
        task = asyncio.create_task(pool.run(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    results = await asyncio.wait_for(
        asyncio.gather(*(pool.run(browser_number) for _ in range(4))), 2)
    assert results == [1, 1, 1, 1]
    await pool.close()


async def test_cancelling_the_request_that_met_a_crash_still_restarts() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=2, timeout=5)
    await pool.start()
    hold = asyncio.Event()

    async def slow(page: PageLike) -> int:
        await hold.wait()
        return await browser_number(page)

    async def crash(page: PageLike) -> int:
        assert isinstance(page, FakePage)
        page.browser.connected = False
        raise Crash("Target crashed")

    slow_task = asyncio.create_task(pool.run(slow))
    crash_task = asyncio.create_task(pool.run(crash))
    await asyncio.sleep(0.01)
    crash_task.cancel()
    hold.set()
    await asyncio.gather(slow_task, crash_task, return_exceptions=True)
    assert await asyncio.wait_for(pool.run(browser_number), 2) == 2
    await pool.close()


async def test_chromium_dying_while_idle_is_restarted() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=2)
    await pool.start()
    engine.browsers[0].connected = False  # the OOM killer, between renders
    assert await asyncio.wait_for(pool.run(browser_number), 2) == 2
    assert pool.restarts == 1
    await pool.close()


async def test_a_page_that_cannot_be_replaced_restarts_chromium() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1)
    await pool.start()
    real_new_page = engine.new_page
    failures = 1

    async def flaky_new_page(browser: BrowserLike) -> PageLike:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("Target.createTarget failed")
        return await real_new_page(browser)

    engine.new_page = flaky_new_page  # type: ignore[method-assign]

    async def glitch(page: PageLike) -> None:
        raise ValueError("protocol error")

    with pytest.raises(Unavailable):
        await pool.run(glitch)
    assert await asyncio.wait_for(pool.run(browser_number), 2) == 2
    await pool.close()


async def test_waiting_longer_than_the_deadline_for_a_page_is_resource_exhausted() -> None:
    pool = make_pool(FakeEngine(), size=1, max_queue=5, timeout=0.1)
    await pool.start()
    hold = asyncio.Event()

    async def hog(page: PageLike) -> None:
        await hold.wait()

    hogs = []
    for _ in range(2):
        hogs.append(asyncio.create_task(pool.run(hog)))
        await asyncio.sleep(0.02)
    # The first hog holds the page until its deadline, then the second (queued
    # earlier) takes it: this request never gets one within its deadline.
    with pytest.raises(ResourceExhausted, match="no browser page became free"):
        await pool.run(browser_number)
    hold.set()
    first, _ = await asyncio.gather(*hogs, return_exceptions=True)
    assert isinstance(first, InvalidArgument)
    await pool.close()


async def test_pages_are_recycled_after_n_renders_in_the_background() -> None:
    engine = FakeEngine()
    pool = PagePool(engine, size=1, max_queue=2, restart_after=100, timeout=1.0,
                    recycle_after=3)
    await pool.start()
    seen = []
    for _ in range(7):
        async def which(page: PageLike) -> int:
            return id(page)
        seen.append(await pool.run(which))
    assert len(set(seen[:3])) == 1 and seen[3] != seen[0]
    assert engine.pages == 3 and pool.restarts == 0
    await pool.close()


async def spoil(page: PageLike) -> int:
    """A render that leaves the page off its blank state."""
    assert isinstance(page, FakePage)
    page.blank = False
    return id(page)


async def is_blank(page: PageLike) -> bool:
    assert isinstance(page, FakePage)
    return page.blank


async def test_every_page_is_reset_after_a_render_and_reused_when_blank() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1)
    await pool.start()
    ids = [await pool.run(spoil) for _ in range(3)]
    assert await pool.run(is_blank) is True
    assert len(set(ids)) == 1 and engine.pages == 1 and pool.unclean_pages == 0
    await pool.close()


async def test_a_page_a_reset_cannot_clean_is_replaced_not_reused() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1)
    await pool.start()

    async def spoil_for_good(page: PageLike) -> int:
        assert isinstance(page, FakePage)
        page.reset_works = False
        return await spoil(page)

    spoiled = await pool.run(spoil_for_good)
    # Whatever the page was left with, the next render never sees it.
    for _ in range(3):
        assert await pool.run(is_blank) is True
    assert await pool.run(spoil) != spoiled
    assert engine.pages == 2 and pool.unclean_pages == 1
    await pool.close()


async def test_a_page_that_changes_while_idle_is_replaced_when_taken() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1)
    await pool.start()

    async def the_page(page: PageLike) -> FakePage:
        assert isinstance(page, FakePage)
        return page

    page = await pool.run(the_page)
    await asyncio.sleep(0.01)  # the reset has run: the page is idle and blank
    assert page.blank and page.resets == 1
    page.blank = False  # a late meta refresh, say
    assert await pool.run(is_blank) is True
    assert await pool.run(spoil) != id(page)
    assert page.closed and pool.unclean_pages == 1
    await pool.close()


async def test_a_failing_reset_replaces_the_page() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1)
    await pool.start()

    async def poison_reset(page: PageLike) -> int:
        assert isinstance(page, FakePage)

        async def broken() -> None:
            raise RuntimeError("navigation failed")

        page.reset = broken  # type: ignore[method-assign]
        return await spoil(page)

    first = await pool.run(poison_reset)
    assert await pool.run(spoil) != first
    assert engine.pages == 2 and pool.restarts == 0
    await pool.close()


async def test_a_free_page_goes_to_the_tenant_with_the_fewest_renders() -> None:
    # One page; tenant "a" has one render running and three waiting when
    # tenant "b" asks: b's render is next, not fourth.
    pool = make_pool(FakeEngine(), size=1, max_queue=10, timeout=5.0)
    await pool.start()
    order: list[str] = []
    gates = {name: asyncio.Event() for name in ("a1", "a2", "a3", "a4", "b1")}

    job = gated_jobs(order, gates)

    tasks = [asyncio.create_task(pool.run(job("a1"), tenant="a"))]
    await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(pool.run(job(n), tenant="a")) for n in ("a2", "a3", "a4")]
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(pool.run(job("b1"), tenant="b")))
    await asyncio.sleep(0.01)
    for gate in gates.values():
        gate.set()
    assert sorted(await asyncio.gather(*tasks)) == ["a1", "a2", "a3", "a4", "b1"]
    assert order == ["a1", "b1", "a2", "a3", "a4"]
    await pool.close()


async def test_within_a_tenant_renders_take_turns_in_order() -> None:
    pool = make_pool(FakeEngine(), size=1, max_queue=10, timeout=5.0)
    await pool.start()
    order: list[int] = []

    def job(number: int):  # type: ignore[no-untyped-def]
        async def run(page: PageLike) -> None:
            order.append(number)
            await asyncio.sleep(0)
        return run

    await asyncio.gather(*(pool.run(job(n), tenant="a") for n in range(5)))
    assert order == [0, 1, 2, 3, 4]
    await pool.close()


async def test_a_render_that_gives_up_waiting_leaks_no_page() -> None:
    engine = FakeEngine()
    pool = make_pool(engine, size=1, max_queue=10, timeout=5.0)
    await pool.start()
    gate, held = gated("held")

    holder = asyncio.create_task(pool.run(held, tenant="a"))
    await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(pool.run(browser_number, tenant=t)) for t in "bcd"]
    await asyncio.sleep(0.01)
    for waiter in waiters:
        waiter.cancel()
    gate.set()
    assert await holder == "held"
    await asyncio.gather(*waiters, return_exceptions=True)
    # The one page is still there for everyone, and nobody counts as running.
    assert await asyncio.gather(*(pool.run(browser_number, tenant="e") for _ in range(3))) == [
        1, 1, 1]
    assert engine.pages == 1
    await pool.close()


async def test_a_full_queue_is_shared_between_tenants() -> None:
    # One page, room for three waiting. Tenant "a" fills the queue; tenant
    # "b" still gets in (a's newest waiting render is refused in its place),
    # and a cannot push b out again.
    pool = make_pool(FakeEngine(), size=1, max_queue=3, timeout=5.0)
    await pool.start()
    gate, held = gated("done")

    running = asyncio.create_task(pool.run(held, tenant="a"))
    await asyncio.sleep(0.01)
    a_waiting = [asyncio.create_task(pool.run(held, tenant="a")) for _ in range(3)]
    await asyncio.sleep(0.01)
    b = asyncio.create_task(pool.run(held, tenant="b"))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted):
        await a_waiting[2]  # the newest of a's, refused to make room for b
    with pytest.raises(ResourceExhausted):
        await pool.run(held, tenant="a")  # a has the most waiting: refused
    gate.set()
    assert await asyncio.gather(running, b, *a_waiting[:2]) == ["done"] * 4
    await pool.close()


async def test_no_queue_at_all_refuses_cleanly() -> None:
    pool = make_pool(FakeEngine(), size=1, max_queue=0, timeout=5.0)
    await pool.start()
    gate, held = gated("done")

    running = asyncio.create_task(pool.run(held, tenant="a"))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted):
        await pool.run(held, tenant="b")
    gate.set()
    assert await running == "done"
    await pool.close()


async def test_the_queue_stays_bounded_while_a_restart_is_pending() -> None:
    # Free pages of a browser that is being restarted are no room: renders
    # arriving then wait in the bounded queue like any others.
    engine = FakeEngine()
    pool = make_pool(engine, size=2, max_queue=2, timeout=5.0)
    await pool.start()
    gate, held = gated("held")

    async def crashes(page: PageLike) -> int:
        if isinstance(page, FakePage) and page.browser.number == 1:
            raise Crash("Target crashed")
        return 2

    holder = asyncio.create_task(pool.run(held))
    await asyncio.sleep(0.01)
    # The crash asks for a restart, which waits for the held render; the
    # crashed render's retry waits for the new browser.
    crashed = asyncio.create_task(pool.run(crashes))
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(pool.run(browser_number)) for _ in range(4)]
    await asyncio.sleep(0.01)
    refused = [t for t in waiting if t.done() and isinstance(t.exception(), ResourceExhausted)]
    assert len(refused) == 3  # the queue held two: the retry and one more
    gate.set()
    assert await holder == "held" and await crashed == 2
    await asyncio.gather(*waiting, return_exceptions=True)
    await pool.close()


async def test_interactive_renders_go_before_background_ones_and_fill_no_queue() -> None:
    # One page, a queue of one. Three batch items wait (the queue bound does
    # not count them); an interactive render that arrives after them is next.
    pool = make_pool(FakeEngine(), size=1, max_queue=1, timeout=5.0)
    await pool.start()
    order: list[str] = []
    gates = {name: asyncio.Event() for name in ("first", "b1", "b2", "b3", "live")}

    job = gated_jobs(order, gates)

    tasks = [asyncio.create_task(pool.run(job("first"), tenant="a", background=True))]
    await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(pool.run(job(n), tenant="a", background=True))
              for n in ("b1", "b2", "b3")]
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(pool.run(job("live"), tenant="a")))
    await asyncio.sleep(0.01)
    for gate in gates.values():
        gate.set()
    assert sorted(await asyncio.gather(*tasks)) == ["b1", "b2", "b3", "first", "live"]
    assert order == ["first", "live", "b1", "b2", "b3"]
    await pool.close()


async def test_while_interactive_renders_come_batch_items_leave_one_page_free() -> None:
    pool = PagePool(FakeEngine(), size=2, max_queue=4, restart_after=100, timeout=5.0,
                    interactive_reserve=0.3)
    await pool.start()
    running: list[str] = []
    gates = {name: asyncio.Event() for name in ("live", "b1", "b2", "b3")}

    job = gated_jobs(running, gates)

    live = asyncio.create_task(pool.run(job("live"), tenant="a"))
    await asyncio.sleep(0.01)
    gates["live"].set()
    assert await live == "live"
    # Just after an interactive render: one page for batch items, one kept free.
    batch = [asyncio.create_task(pool.run(job(n), tenant="a", background=True))
             for n in ("b1", "b2", "b3")]
    await asyncio.sleep(0.05)
    assert running == ["live", "b1"]
    # With no interactive render for the reserve period, they take both pages.
    await asyncio.sleep(0.4)
    assert running == ["live", "b1", "b2"]
    for gate in gates.values():
        gate.set()
    assert sorted(await asyncio.gather(*batch)) == ["b1", "b2", "b3"]
    await pool.close()
