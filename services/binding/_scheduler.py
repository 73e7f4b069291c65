"""Cron refreshes. Every replica runs the loop; each fire is fetched once.

A look takes the cron bindings (not paused) whose ``nextRefreshAt`` has come
and that nobody holds, and claims each with one ``find_one_and_update`` on
its unchanged ``nextRefreshAt`` and a free lease: of replicas looking at the
same time one wins. The winner fetches, then moves ``nextRefreshAt`` to the
next fire after now (missed fires are not caught up) and frees the lease. A
replica that dies mid-fetch leaves a lease that ends; the fire is then taken
again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from litho.errors import ResourceExhausted
from litho.logs import get_logger
from services.binding import _schedule
from services.binding._bindings import SCHEDULED_FETCH_WAIT, Bindings

log = get_logger(__name__)

#: Due bindings taken per look; the rest wait for the next one.
BATCH = 50


class Scheduler:
    def __init__(self, bindings: Bindings, *, lease_seconds: float, batch: int = BATCH,
                 clock: Callable[[], float] = time.time) -> None:
        self._bindings = bindings
        self._lease_seconds = lease_seconds
        self._batch = batch
        self._clock = clock

    @property
    def batch(self) -> int:
        return self._batch

    async def tick(self) -> int:
        """Fetch the cron bindings that are due (at most ``batch``, at once);
        how many this replica fetched."""
        now = self._clock()
        claimed: list[tuple[dict[str, Any], str]] = []
        for doc in await self._bindings.store.due(now, self._batch):
            token = secrets.token_hex(8)
            won = await self._bindings.store.claim_fire(doc, now, now + self._lease_seconds,
                                                        token)
            if won is not None:
                claimed.append((won, token))
        await asyncio.gather(*(self._fire(doc, token) for doc, token in claimed))
        return len(claimed)

    async def _fire(self, doc: Mapping[str, Any], token: str) -> None:
        cron = str(doc["refreshPolicy"].get("cron") or "")
        try:
            await self._bindings.run_claimed(
                doc, token, event_source="fetch",
                next_refresh_at=_schedule.next_fire(cron, self._clock()),
                wait=SCHEDULED_FETCH_WAIT)
        except ResourceExhausted:
            log.info("scheduled refresh deferred: the tenant's fetches are busy",
                     binding=doc["_id"])
        except Exception as exc:  # one binding's trouble never stops the others
            log.warning("scheduled refresh failed", binding=doc["_id"],
                                error=str(exc) or type(exc).__name__)
