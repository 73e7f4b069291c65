"""A supervised pool of Chromium pages, in the manner of gotenberg's supervisor.

- at most ``size`` renders run at once, one per pooled page;
- at most ``max_queue`` renders wait for a page; one more is ResourceExhausted;
- Chromium is restarted after ``restart_after`` renders (once in-flight ones end)
  and whenever it crashes, and a render that met the crash is retried once;
- every render has a deadline; a page that overran it, or failed in a way
  that is not the input's fault, or whose request was cancelled, is replaced;
- a page is replaced by a fresh one after ``recycle_after`` renders, so
  Chromium's per-page caches cannot grow without bound;
- a render waits at most the render deadline for a page, then is refused.

Restarts and page replacements run in background tasks, never in the task of
a request, so a cancelled request cannot leave the pool half-restarted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from litho.errors import DeadlineExceeded, LithoError, ResourceExhausted, Unavailable
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
        self._restart_pending = False
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
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_browser()

    async def run(self, job: Callable[[PageLike], Awaitable[T]]) -> T:
        """Run ``job`` on a pooled page; retry once on a browser crash."""
        for attempt in (1, 2):
            slot = await self._acquire()
            outcome = "broken"  # unless proven otherwise, even on cancellation
            try:
                async with asyncio.timeout(self._timeout):
                    result = await job(slot.page)
                outcome = "ok"
                return result
            except TimeoutError as exc:
                raise DeadlineExceeded(
                    f"the render took longer than {self._timeout:g} s; simplify the template "
                    "or raise LITHO_RENDERER_TIMEOUT"
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
                if attempt == 2:
                    raise Unavailable("the browser crashed twice rendering this request") from exc
            finally:
                self._release(slot, broken=outcome != "ok")
                if outcome == "crashed":
                    self._request_restart(slot.generation)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ internals

    def _crashed(self, exc: Exception, slot: _Slot) -> bool:
        browser_alive = self._browser is not None and self._browser.is_connected()
        return self._engine.is_crash(exc) or slot.page.is_closed() or not browser_alive

    async def _acquire(self) -> _Slot:
        if self._idle.empty() and self._waiting >= self._max_queue:
            raise ResourceExhausted("the renderer is at capacity; retry shortly", retry_after=1)
        self._waiting += 1
        try:
            async with asyncio.timeout(self._timeout):
                slot = await self._next_live_slot()
        except TimeoutError as exc:
            raise ResourceExhausted(
                f"no browser page became free within {self._timeout:g} s; retry shortly",
                retry_after=1,
            ) from exc
        finally:
            self._waiting -= 1
        self._busy += 1
        self._all_idle.clear()
        return slot

    async def _next_live_slot(self) -> _Slot:
        while True:
            await self._ready.wait()
            slot = await self._idle.get()
            if slot.generation != self._generation:
                continue  # from a browser that is gone
            if not slot.page.is_closed():
                return slot
            if self._browser is None or not self._browser.is_connected():
                # Chromium died while idle (the OOM killer, say): start over.
                self._request_restart(slot.generation)
            else:
                self._spawn(self._replace_page(slot))

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
            self._idle.put_nowait(slot)
        if self._renders_this_generation >= self._restart_after:
            self._request_restart(self._generation)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _request_restart(self, generation: int) -> None:
        """Restart Chromium in the background, once per generation; new renders
        wait for the fresh browser."""
        if generation != self._generation or self._restart_pending:
            return
        self._restart_pending = True
        self._ready.clear()
        self._spawn(self._restart())

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
        self._idle.put_nowait(_Slot(page, slot.generation))

    async def _restart(self) -> None:
        try:
            if self._busy:
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
