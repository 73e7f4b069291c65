"""A supervised pool of Chromium pages, in the manner of gotenberg's supervisor.

- at most ``size`` renders run at once, one per pooled page;
- at most ``max_queue`` renders wait for a page; one more is ResourceExhausted;
- Chromium is restarted after ``restart_after`` renders (once in-flight ones end)
  and whenever it crashes, and a render that met the crash is retried once;
- every render has a deadline; a page that overran it is replaced;
- a page is replaced by a fresh one after ``recycle_after`` renders, in the
  background, so Chromium's per-page caches cannot grow without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from litho.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from litho.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class PageLike(Protocol):
    def is_closed(self) -> bool: ...

    async def close(self) -> None: ...


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
    ) -> None:
        self._engine = engine
        self._size = size
        self._max_queue = max_queue
        self._restart_after = restart_after
        self._timeout = timeout
        self._recycle_after = recycle_after
        self._idle: asyncio.Queue[_Slot] = asyncio.Queue()
        self._browser: BrowserLike | None = None
        self._generation = 0
        self._ready = asyncio.Event()
        self._restart_lock = asyncio.Lock()
        self._busy = 0
        self._all_idle = asyncio.Event()
        self._waiting = 0
        self._renders_this_generation = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self.renders = 0

    async def start(self) -> None:
        await self._launch()

    async def close(self) -> None:
        self._ready.clear()
        for task in list(self._tasks):
            task.cancel()
        await self._close_browser()

    @property
    def waiting(self) -> int:
        return self._waiting

    async def run(self, job: Callable[[PageLike], Awaitable[T]]) -> T:
        """Run ``job`` on a pooled page; retry once on a browser crash."""
        for attempt in (1, 2):
            slot = await self._acquire()
            try:
                async with asyncio.timeout(self._timeout):
                    result = await job(slot.page)
            except TimeoutError as exc:
                await self._release(slot, broken=True)
                raise DeadlineExceeded(
                    f"the render took longer than {self._timeout:g} s; simplify the template "
                    "or raise LITHO_RENDERER_TIMEOUT"
                ) from exc
            except Exception as exc:
                if not self._engine.is_crash(exc) and slot.page.is_closed() is False and (
                    self._browser is not None and self._browser.is_connected()
                ):
                    await self._release(slot, broken=False)
                    raise
                log.warning("chromium crashed during a render", attempt=attempt, error=str(exc))
                await self._release(slot, broken=True)
                await self._restart(slot.generation)
                if attempt == 2:
                    raise Unavailable("the browser crashed twice rendering this request") from exc
                continue
            await self._release(slot, broken=False)
            return result
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ internals

    async def _acquire(self) -> _Slot:
        if self._idle.empty() and self._waiting >= self._max_queue:
            raise ResourceExhausted("the renderer is at capacity; retry shortly", retry_after=1)
        self._waiting += 1
        try:
            while True:
                await self._ready.wait()
                slot = await self._idle.get()
                if slot.generation == self._generation and not slot.page.is_closed():
                    break
        finally:
            self._waiting -= 1
        self._busy += 1
        self._all_idle.clear()
        return slot

    async def _release(self, slot: _Slot, *, broken: bool) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._all_idle.set()
        self.renders += 1
        if slot.generation != self._generation:
            return
        self._renders_this_generation += 1
        slot.uses += 1
        if broken:
            await self._replace_page(slot)
        elif self._recycle_after and slot.uses >= self._recycle_after:
            self._spawn(self._replace_page(slot))
        else:
            self._idle.put_nowait(slot)
        if self._renders_this_generation >= self._restart_after:
            self._renders_this_generation = 0
            self._ready.clear()  # new renders wait for the fresh browser
            self._spawn(self._restart(self._generation))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace_page(self, slot: _Slot) -> None:
        try:
            await slot.page.close()
        except Exception:  # a dead page may refuse to close; that is fine
            pass
        if self._browser is None or not self._browser.is_connected():
            return
        try:
            page = await self._engine.new_page(self._browser)
        except Exception as exc:
            log.warning("cannot open a page; restarting chromium", error=str(exc))
            return
        self._idle.put_nowait(_Slot(page, slot.generation))

    async def _restart(self, seen_generation: int) -> None:
        async with self._restart_lock:
            if seen_generation != self._generation:
                return  # somebody restarted already
            self._ready.clear()
            if self._busy:
                await self._all_idle.wait()
            log.info("restarting chromium", generation=self._generation)
            await self._close_browser()
            await self._launch()
            self.restarts += 1

    async def _launch(self) -> None:
        browser = await self._engine.launch()
        self._browser = browser
        self._generation += 1
        self._renders_this_generation = 0
        while not self._idle.empty():
            self._idle.get_nowait()
        for _ in range(self._size):
            self._idle.put_nowait(_Slot(await self._engine.new_page(browser), self._generation))
        self._all_idle.set()
        self._ready.set()

    async def _close_browser(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            try:
                await browser.close()
            except Exception as exc:  # already dead
                log.debug("closing chromium failed", error=str(exc))
