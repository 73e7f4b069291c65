"""``lastUsedTime`` of API keys, written off the request path and at most
once per ``interval`` per key and replica: a write per request would put a
document-store round trip (and, on SQLite, the write lock) on every call.

:meth:`KeyUsage.seen` never waits: it starts a background write when the
key's last one on this replica is older than the interval. Writes under way
are bounded; past the bound a use is skipped and written with a later one.
A failed write is logged and tried again on a later use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from litho.logs import get_logger
from litho.lru import Lru

log = get_logger(__name__)

#: Keys whose last write time a replica remembers; one forgotten is written again sooner.
_REMEMBERED = 100_000


class KeyUsage:
    def __init__(self, record: Callable[[str, datetime], Awaitable[None]], *,
                 interval: float, max_pending: int = 64,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._record = record
        self._interval = interval
        self._max_pending = max_pending
        self._clock = clock
        self._now = now
        self._written: Lru[str, float] = Lru(_REMEMBERED)
        self._pending: set[asyncio.Task[None]] = set()

    def seen(self, key_id: str) -> None:
        """A request was authenticated with ``key_id``."""
        at = self._clock()
        last = self._written.get(key_id)
        if last is not None and at - last < self._interval:
            return
        if len(self._pending) >= self._max_pending:
            return
        self._written.put(key_id, at)
        task = asyncio.get_running_loop().create_task(self._write(key_id, self._now()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, key_id: str, when: datetime) -> None:
        try:
            await self._record(key_id, when)
        except Exception as exc:
            self._written.pop(key_id)  # try again with the next use
            log.warning("lastUsedTime of an API key not written", key_id=key_id,
                        error=str(exc)[:200])

    async def close(self) -> None:
        """Let the writes under way finish (before the store closes)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
