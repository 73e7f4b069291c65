"""Run one service: one event loop, signals to a shutdown event, ordered cleanup.

A service's composition root is ``async def main(stop: asyncio.Event) -> None``:
it acquires resources on an ``AsyncExitStack`` (so they close in reverse
order), starts serving, then awaits ``stop``. SIGTERM and SIGINT set ``stop``;
the stack then unwinds: health NOT_SERVING, ``server.stop(grace)``, NATS
drained, clients closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from litho.logs import get_logger

log = get_logger(__name__)

Main = Callable[[asyncio.Event], Awaitable[None]]


def run(main: Main) -> None:
    """Run ``main`` until it returns; exit non-zero if it raised."""
    asyncio.run(_supervise(main))


async def _supervise(main: Main) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    try:
        await main(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():
        return
    log.info("shutdown requested", signal=sig.name)
    stop.set()


@contextlib.asynccontextmanager
async def periodic(work: Callable[[], Awaitable[object]], interval: float, *,
                   name: str) -> AsyncIterator[None]:
    """Run ``work`` now and then every ``interval`` seconds in a background
    task until the block exits (for a service's exit stack). A round that
    fails is logged; the next one tries again."""

    async def loop() -> None:
        while True:
            try:
                await work()
            except Exception as exc:
                log.warning("periodic work failed", work=name,
                            error=str(exc) or type(exc).__name__)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
