"""Run one service: one event loop, signals to a shutdown event, ordered cleanup.

A service's composition root is ``async def main(stop: asyncio.Event) -> None``:
it acquires resources on an ``AsyncExitStack`` (so they close in reverse
order), starts serving, then awaits ``stop``. SIGTERM and SIGINT set ``stop``;
the stack then unwinds: health NOT_SERVING, ``server.stop(grace)``, NATS
drained, clients closed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

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
