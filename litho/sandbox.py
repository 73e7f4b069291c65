"""Worker processes that run work on untrusted input within a memory and
time limit (the template service's font checks and copilot).

A parser fed a hostile input can allocate gigabytes (a font that lies about
its sizes) or spin (an HTML parser that is quadratic in a pathological
document). Inside the service that would be an out-of-memory kill of the
whole process, or a thread that can never be stopped and that holds one of
the threads every other request needs; in a worker it is a MemoryError (its
address space is capped with ``RLIMIT_AS``) or a process that is killed when
its time is up (or when its caller gives up), and the service answers 422.

Each slot is a one-worker ``ProcessPoolExecutor`` started with ``spawn``
(the service has grpc and asyncio threads, which ``fork`` would copy in an
unknown state). One parse runs in a slot at a time, so killing a slot's
worker (on time-out, cancellation or a crash) only ever ends the parse that
caused it; the slot then gets a fresh worker. Waiting for a slot is bounded:
past ``max_waiting`` callers, it is a ResourceExhausted (429).
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final, Literal, TypeVar

from litho.errors import ResourceExhausted, Unavailable
from litho.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: Longest wait for a fresh worker to start (spawn, import fontTools): a
#: backstop for a machine so loaded that nothing would work anyway.
_START_TIMEOUT: Final = 60.0


class SandboxLimit(Exception):
    """A parse broke a limit: ``kind`` says which."""

    def __init__(self, kind: Literal["memory", "time", "crash"]) -> None:
        super().__init__(kind)
        self.kind = kind


def _limit_worker(memory_bytes: int, preload: tuple[str, ...]) -> None:
    """Worker initializer: cap the address space, no core dumps, and import
    ``preload`` once so the first piece of work is not charged for it."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _exit_with_parent()
    for module in preload:
        importlib.import_module(module)


def _exit_with_parent() -> None:
    """End the worker when the service that started it is gone (a SIGKILL or
    an out-of-memory kill would otherwise leave it to PID 1). A watcher thread
    rather than PR_SET_PDEATHSIG, which fires when the *thread* that forked
    exits, and the pool may start workers from a short-lived thread."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_baseline() -> tuple[int, int]:
    """(address space, resident set) of a started worker, in bytes."""
    with open("/proc/self/statm") as f:
        size, rss = (int(v) for v in f.read().split()[:2])
    page = resource.getpagesize()
    return size * page, rss * page


class _Slot:
    def __init__(self, memory_bytes: int, preload: tuple[str, ...]) -> None:
        self._memory = memory_bytes
        self._preload = preload
        self.pool = self._new_pool()
        self.ready = self._warm()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_worker, initargs=(self._memory, self._preload))

    def _warm(self) -> asyncio.Future[tuple[int, int]]:
        return asyncio.wrap_future(self.pool.submit(worker_baseline))

    def replace(self) -> None:
        """Kill the worker (whatever it is doing) and start a fresh one."""
        old = self.pool
        # ProcessPoolExecutor has no public way to stop a busy worker before
        # Python 3.14 (kill_workers); its process table is the only handle.
        for process in list(old._processes.values()):
            process.kill()
        old.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()
        self.ready = self._warm()
        self.ready.add_done_callback(_ignore)

    def close(self) -> None:
        if not self.ready.done():
            self.ready.cancel()  # nobody will wait for it now
        for process in list(self.pool._processes.values()):
            process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _ignore(future: asyncio.Future[tuple[int, int]]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it


class Sandbox:
    """``run(fn, *args)`` in a worker process, within ``memory_bytes`` of
    address space and ``timeout`` seconds; :class:`SandboxLimit` when not.

    ``fn``, its arguments and its result cross a process boundary: they must
    pickle (an exception with its own ``__init__`` signature may not: return
    refusals as values). ``busy`` is the 429's message when ``max_waiting``
    callers already wait; ``start_failure`` the 503's when a worker cannot
    start."""

    def __init__(self, *, workers: int, memory_bytes: int, timeout: float,
                 max_waiting: int, preload: tuple[str, ...] = (),
                 busy: str = "too much work is already waiting; retry shortly",
                 start_failure: str = "a worker process cannot start") -> None:
        self._workers = workers
        self._memory = memory_bytes
        self._timeout = timeout
        self._max_waiting = max_waiting
        self._preload = preload
        self._busy = busy
        self._start_failure = start_failure
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        self._slots: list[_Slot] = []
        self._waiting = 0

    def start(self) -> None:
        """Start the workers; they warm up in the background."""
        for _ in range(self._workers):
            slot = _Slot(self._memory, self._preload)
            slot.ready.add_done_callback(_ignore)
            self._slots.append(slot)
            self._free.put_nowait(slot)

    async def baseline(self) -> tuple[int, int]:
        """A worker's address space and resident set once started."""
        slot = await self._take()
        try:
            return await self._started(slot)
        finally:
            self._free.put_nowait(slot)

    def close(self) -> None:
        for slot in self._slots:
            slot.close()

    async def _take(self) -> _Slot:
        if self._free.empty() and self._waiting >= self._max_waiting:
            raise ResourceExhausted(self._busy, retry_after=1.0)
        self._waiting += 1
        try:
            return await self._free.get()
        finally:
            self._waiting -= 1

    async def _started(self, slot: _Slot) -> tuple[int, int]:
        for attempt in (1, 2):
            try:
                return await asyncio.wait_for(asyncio.shield(slot.ready), _START_TIMEOUT)
            except (BrokenProcessPool, TimeoutError) as exc:
                log.error("a sandbox worker failed to start", error=type(exc).__name__,
                          attempt=attempt)
                slot.replace()
        raise Unavailable(self._start_failure)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        slot = await self._take()
        try:
            await self._started(slot)
            future: Future[T] = slot.pool.submit(fn, *args)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), self._timeout)
            except TimeoutError:
                slot.replace()
                raise SandboxLimit("time") from None
            except BrokenProcessPool:
                slot.replace()
                raise SandboxLimit("crash") from None
            except MemoryError:
                # Raised inside the worker and pickled back: the worker is
                # fine, but its heap may be fragmented; start afresh.
                slot.replace()
                raise SandboxLimit("memory") from None
            except asyncio.CancelledError:
                slot.replace()  # nobody waits for it: stop a parse that may be hostile
                raise
        finally:
            self._free.put_nowait(slot)
