"""A supervised pool of Chromium pages, in the manner of gotenberg's supervisor.

- at most ``size`` renders run at once, one per pooled page;
- at most ``max_queue`` renders wait for a page; one more is ResourceExhausted;
- Chromium is restarted after ``restart_after`` renders (once in-flight ones end)
  and whenever it crashes, and a render that met the crash is retried once;
- every render has a deadline, and overrunning it is the input's fault (the
  page was the render's alone): INVALID_ARGUMENT, never a retryable status;
  Chromium is restarted at once, without waiting for in-flight renders
  (they are retried on the new browser without spending their own retry);
- a page that failed in a way that is not the input's fault, or whose
  request was cancelled, is replaced;
- a page is replaced by a fresh one after ``recycle_after`` renders, so
  Chromium's per-page caches cannot grow without bound;
- after every render the page is reset (in the background) and goes back to
  the idle queue only if it then says it is blank; a page is checked again
  when it is taken, and one that is not blank is replaced, never used, so
  no render can see what an earlier one left behind;
- a render waits at most the render deadline for a page, then is refused;
- pages are shared fairly between tenants: a page that becomes free goes to
  the waiting render whose tenant has the fewest renders running, then
  whose tenant was served least recently, then the oldest; so one tenant's
  flood of renders queues behind its own work, never in front of another
  tenant's next render.

Restarts and page replacements run in background tasks, never in the task of
a request, so a cancelled request cannot leave the pool half-restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from opentelemetry import trace

from litho.errors import (
    FieldError,
    InvalidArgument,
    LithoError,
    ResourceExhausted,
    Unavailable,
)
from litho.logs import get_logger

log = get_logger(__name__)
_tracer = trace.get_tracer("litho.renderer.pool")

T = TypeVar("T")


class PageLike(Protocol):
    def is_closed(self) -> bool: ...

    async def close(self) -> None: ...

    def is_blank(self) -> bool:
        """In the known blank state every render starts from."""
        ...

    async def reset(self) -> None:
        """Return to the blank state, dropping whatever the last render left."""
        ...


class BrowserLike(Protocol):
    def is_connected(self) -> bool: ...

    async def close(self) -> None: ...


class Engine(Protocol):
    """What the pool needs from a browser: launch it, open pages, and say
    whether an exception means the browser or page died."""

    async def launch(self) -> BrowserLike: ...

    async def new_page(self, browser: BrowserLike) -> PageLike: ...

    def is_crash(self, exc: BaseException) -> bool: ...


@dataclass
class _Slot:
    page: PageLike
    generation: int
    uses: int = 0


@dataclass
class _Waiter:
    tenant: str
    order: int
    #: A batch item: served only when no interactive render waits, and not
    #: counted against the queue bound (its consumer bounds it).
    background: bool = False
    slot: asyncio.Future[_Slot] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class PagePool:
    def __init__(
        self,
        engine: Engine,
        *,
        size: int,
        max_queue: int,
        restart_after: int,
        timeout: float,
        recycle_after: int = 0,
        overrun_cooldown: float = 0.0,
        interactive_reserve: float = 0.0,
    ) -> None:
        self._engine = engine
        self._size = size
        self._max_queue = max_queue
        self._restart_after = restart_after
        self._timeout = timeout
        self._recycle_after = recycle_after
        #: After a render of a tenant overran (and so restarted Chromium under
        #: every tenant's renders), that tenant's renders are refused for this
        #: long: one tenant cannot restart the browser more than once a period.
        self._overrun_cooldown = overrun_cooldown
        self._cooling: dict[str, float] = {}
        #: For this many seconds after an interactive render asked for a page,
        #: background jobs may hold all pages but one: a batch of slow
        #: templates cannot make the next interactive render wait a whole
        #: render for a page. With no interactive traffic they take every page.
        self._interactive_reserve = interactive_reserve
        self._last_interactive = -math.inf
        self._background_running = 0
        self._reserve_timer: asyncio.TimerHandle | None = None
        #: Pages ready for a render, and renders waiting for one.
        self._free: deque[_Slot] = deque()
        self._waiters: list[_Waiter] = []
        self._order = itertools.count()
        #: Renders running, and when each was last given a page, by tenant:
        #: the fairness keys (only tenants with renders running or waiting).
        self._running: Counter[str] = Counter()
        self._served: dict[str, int] = {}
        #: Browser generations ended by an overrun (the last few): a crash in
        #: one of them is not the crashed render's fault.
        self._overrun_generations: deque[int] = deque(maxlen=8)
        self._browser: BrowserLike | None = None
        self._generation = 0
        self._ready = asyncio.Event()
        self._restart_pending = False
        self._busy = 0
        self._all_idle = asyncio.Event()
        self._renders_this_generation = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self.renders = 0
        #: Pages thrown away because they were not blank after a reset or when taken.
        self.unclean_pages = 0

    async def start(self) -> None:
        await self._launch()

    async def close(self) -> None:
        self._ready.clear()
        if self._reserve_timer is not None:
            self._reserve_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_browser()

    async def run(self, job: Callable[[PageLike], Awaitable[T]], *, tenant: str = "",
                  background: bool = False) -> T:
        """Run ``job`` on a pooled page; retry once on a browser crash, and
        besides that up to twice when the browser was restarted because of
        another render's overrun (the render was not at fault at all).
        ``tenant`` is who asks: free pages are shared fairly between tenants.
        A ``background`` job (a batch item) gets a page only when no
        interactive render is waiting for one."""
        self._check_cooldown(tenant)
        attempt = 0
        spared = 0
        while True:
            attempt += 1
            with _tracer.start_as_current_span("pool wait", attributes={
                "litho.tenant.id": tenant, "litho.pool.attempt": attempt,
                "litho.pool.waiting": len(self._waiters),
            }):
                slot = await self._acquire(tenant, background)
            outcome = "broken"  # unless proven otherwise, even on cancellation
            try:
                async with asyncio.timeout(self._timeout):
                    result = await job(slot.page)
                outcome = "ok"
                return result
            except TimeoutError as exc:
                # The page had the render to itself for the whole deadline: what
                # the document asks Chromium to do is too much, and a retry would
                # overrun again. A 422, not a 504. Chromium is restarted at once:
                # closing the page is not enough, as the compositor (in Chromium's
                # GPU process, shared by every page) goes on drawing its last
                # frame, and every other page waits behind it (seen in CI: three
                # light renders after a 3400x3400 paint-heavy overrun each ran
                # out of the deadline too). Renders in flight beside it are
                # retried without spending their own retry.
                outcome = "overran"
                limit = f"{self._timeout:g} s (LITHO_RENDERER_TIMEOUT)"
                raise InvalidArgument(
                    f"the template took longer than {limit} to render; simplify it: fewer or "
                    "smaller blurred, shadowed or filtered layers, fewer pages or frames, "
                    "a smaller size",
                    errors=[FieldError("template", f"took longer than {limit} to render")],
                ) from exc
            except LithoError:
                outcome = "ok"  # the input was at fault, not the page
                raise
            except Exception as exc:
                if not self._crashed(exc, slot):
                    log.warning("render failed; replacing the page", error=str(exc))
                    raise Unavailable("the browser failed to render this document") from exc
                log.warning("chromium crashed during a render", attempt=attempt, error=str(exc))
                outcome = "crashed"
                if slot.generation in self._overrun_generations and spared < 2:
                    spared += 1  # another render's overrun restarted the browser
                    attempt -= 1
                elif attempt >= 2:
                    raise Unavailable("the browser crashed twice rendering this request") from exc
            finally:
                if background:
                    self._background_running -= 1
                self._stop_running(tenant)
                self._release(slot, broken=outcome != "ok")
                if outcome == "crashed":
                    self._request_restart(slot.generation)
                elif outcome == "overran":
                    self._start_cooldown(tenant)
                    self._overrun_generations.append(slot.generation)
                    self._request_restart(slot.generation, at_once=True)

    # ------------------------------------------------------------ internals

    def _check_cooldown(self, tenant: str) -> None:
        until = self._cooling.get(tenant)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            del self._cooling[tenant]
            return
        raise ResourceExhausted(
            f"a render of this tenant took longer than the render deadline "
            f"{self._overrun_cooldown - left:.0f} s ago; renders resume in {left:.0f} s "
            "(LITHO_RENDERER_OVERRUN_COOLDOWN)", retry_after=max(1, math.ceil(left)))

    def _start_cooldown(self, tenant: str) -> None:
        if self._overrun_cooldown <= 0:
            return
        now = time.monotonic()
        for name in [n for n, until in self._cooling.items() if until <= now]:
            del self._cooling[name]
        self._cooling[tenant] = now + self._overrun_cooldown

    def _crashed(self, exc: Exception, slot: _Slot) -> bool:
        browser_alive = self._browser is not None and self._browser.is_connected()
        return self._engine.is_crash(exc) or slot.page.is_closed() or not browser_alive

    async def _acquire(self, tenant: str, background: bool = False) -> _Slot:
        # Free pages of a browser being restarted are no room at all.
        if (not background and self._interactive_waiting() >= self._max_queue
                and not (self._ready.is_set() and self._free)):
            self._make_room(tenant)
        if not background:
            self._last_interactive = time.monotonic()
        waiter = _Waiter(tenant, next(self._order), background=background)
        self._waiters.append(waiter)
        self._dispatch()
        try:
            async with asyncio.timeout(self._timeout):
                slot = await waiter.slot
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                if tenant not in self._running and all(w.tenant != tenant
                                                       for w in self._waiters):
                    self._served.pop(tenant, None)
            elif (waiter.slot.done() and not waiter.slot.cancelled()
                  and waiter.slot.exception() is None):
                # Handed a page just as it gave up: the page goes back.
                if background:
                    self._background_running -= 1
                self._stop_running(tenant)
                self._offer(waiter.slot.result())
            if isinstance(exc, TimeoutError):
                raise ResourceExhausted(
                    f"no browser page became free within {self._timeout:g} s; retry shortly",
                    retry_after=1,
                ) from exc
            raise
        self._busy += 1
        self._all_idle.clear()
        return slot

    def _make_room(self, tenant: str) -> None:
        """The queue is full: refuse this render if its tenant has the most
        renders waiting; else the newest waiting render of the tenant that
        has the most is refused in its place. So a full queue is shared out
        between tenants instead of going to whoever filled it first."""
        self._waiters = [w for w in self._waiters if not w.slot.done()]
        waiting = Counter(w.tenant for w in self._waiters if not w.background)
        if self._interactive_waiting() < self._max_queue:
            return  # cancelled waiters made room
        most = max(waiting.values(), default=0)
        if not waiting or waiting[tenant] + 1 >= most:
            raise ResourceExhausted("the renderer is at capacity; retry shortly", retry_after=1)
        heaviest = next(t for t, count in waiting.items() if count == most)
        victim = next(w for w in reversed(self._waiters)
                      if w.tenant == heaviest and not w.background)
        self._waiters.remove(victim)
        victim.slot.set_exception(
            ResourceExhausted("the renderer is at capacity; retry shortly", retry_after=1))

    def _background_allowed(self) -> bool:
        """Whether a free page may go to a background job now."""
        if self._size < 2 or self._background_running < self._size - 1:
            return True
        return time.monotonic() - self._last_interactive >= self._interactive_reserve

    def _dispatch_when_reserve_ends(self) -> None:
        if self._reserve_timer is not None:
            return
        delay = max(0.0, self._last_interactive + self._interactive_reserve - time.monotonic())

        def fire() -> None:
            self._reserve_timer = None
            self._dispatch()

        self._reserve_timer = asyncio.get_running_loop().call_later(delay + 0.01, fire)

    def _interactive_waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.background)

    def _offer(self, slot: _Slot) -> None:
        """A page is free: hand it to the next render, fairly."""
        self._free.append(slot)
        self._dispatch()

    def _dispatch(self) -> None:
        # A waiter whose wait was just cancelled (its task has yet to notice)
        # can take nothing.
        self._waiters = [w for w in self._waiters if not w.slot.done()]
        while self._ready.is_set() and self._free and self._waiters:
            candidates = self._waiters if self._background_allowed() else [
                w for w in self._waiters if not w.background]
            if not candidates:
                self._dispatch_when_reserve_ends()
                return
            slot = self._free.popleft()
            if not self._usable(slot):
                continue
            waiter = min(candidates, key=lambda w: (
                w.background, self._running[w.tenant], self._served.get(w.tenant, -1), w.order))
            if waiter.background:
                # Counted when handed a page (not when its task wakes): the
                # next turn of this loop must see it. run() uncounts it.
                self._background_running += 1
            self._waiters.remove(waiter)
            self._running[waiter.tenant] += 1
            self._served[waiter.tenant] = next(self._order)
            waiter.slot.set_result(slot)

    def _stop_running(self, tenant: str) -> None:
        self._running[tenant] -= 1
        if self._running[tenant] <= 0:
            del self._running[tenant]
            if not any(w.tenant == tenant for w in self._waiters):
                self._served.pop(tenant, None)

    def _usable(self, slot: _Slot) -> bool:
        """Whether a free page may be handed out; if not, its replacement is under way."""
        if slot.generation != self._generation:
            return False  # from a browser that is gone
        if not slot.page.is_closed():
            if slot.page.is_blank():
                return True
            # Something happened to it while idle (a document's late meta
            # refresh, say): never hand it out.
            log.warning("an idle page is not blank; replacing it")
            self.unclean_pages += 1
            self._spawn(self._replace_page(slot))
            return False
        if self._browser is None or not self._browser.is_connected():
            # Chromium died while idle (the OOM killer, say): start over.
            self._request_restart(slot.generation)
        else:
            self._spawn(self._replace_page(slot))
        return False

    def _release(self, slot: _Slot, *, broken: bool) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._all_idle.set()
        self.renders += 1
        if slot.generation != self._generation:
            return
        self._renders_this_generation += 1
        slot.uses += 1
        if broken or (self._recycle_after and slot.uses >= self._recycle_after):
            self._spawn(self._replace_page(slot))
        else:
            self._spawn(self._reset_page(slot))
        if self._renders_this_generation >= self._restart_after:
            self._request_restart(self._generation)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _request_restart(self, generation: int, *, at_once: bool = False) -> None:
        """Restart Chromium in the background, once per generation; new renders
        wait for the fresh browser. ``at_once`` does not wait for in-flight
        renders: they meet a closed browser and are retried on the new one."""
        if generation != self._generation or self._restart_pending:
            return
        self._restart_pending = True
        self._ready.clear()
        self._spawn(self._restart(at_once=at_once))

    async def _reset_page(self, slot: _Slot) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await slot.page.reset()
            blank = slot.page.is_blank()
        except Exception as exc:
            log.info("resetting a page failed; replacing it", error=str(exc))
            blank = False
        if slot.generation != self._generation:
            return
        if blank:
            self._offer(slot)
            return
        self.unclean_pages += 1
        await self._replace_page(slot)

    async def _replace_page(self, slot: _Slot) -> None:
        try:
            await slot.page.close()
        except Exception:  # a dead page may refuse to close; that is fine
            pass
        if slot.generation != self._generation:
            return
        if self._browser is None or not self._browser.is_connected():
            self._request_restart(slot.generation)
            return
        try:
            page = await self._engine.new_page(self._browser)
        except Exception as exc:
            log.warning("cannot open a page; restarting chromium", error=str(exc))
            self._request_restart(slot.generation)
            return
        self._offer(_Slot(page, slot.generation))

    async def _restart(self, *, at_once: bool = False) -> None:
        try:
            if self._busy and not at_once:
                await self._all_idle.wait()
            log.info("restarting chromium", generation=self._generation)
            await self._close_browser()
            await self._launch()
            self.restarts += 1
        except Exception:
            log.exception("restarting chromium failed; trying again in a second")
            await asyncio.sleep(1)
            self._restart_pending = False
            self._request_restart(self._generation)
            return
        self._restart_pending = False

    async def _launch(self) -> None:
        browser = await self._engine.launch()
        self._browser = browser
        self._generation += 1
        self._renders_this_generation = 0
        self._free.clear()
        for _ in range(self._size):
            self._free.append(_Slot(await self._engine.new_page(browser), self._generation))
        self._all_idle.set()
        self._ready.set()
        self._dispatch()

    async def _close_browser(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            try:
                await browser.close()
            except Exception as exc:  # already dead
                log.debug("closing chromium failed", error=str(exc))
