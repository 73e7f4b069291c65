"""``experiment.winner_ready``: after flushes that counted for a running
experiment (at most once per experiment per ``every`` seconds), its
statistics are computed; the first time they recommend a winner the event
is published, once per experiment even with several replicas.

Once: a replica first takes the experiment's ``winnerReadyLease`` (one
atomic update, only while ``winnerReadyAt`` is unset), publishes with the
message id ``winner-ready:<experimentId>`` (a second publish inside the
stream's duplicate window is dropped), then sets ``winnerReadyAt``. A
publish that fails releases the lease for the next check; a replica that
dies between the publish and the mark leaves the lease to run out, and the
next publish is a duplicate the stream drops.

The statistics are CPU work, so a check bounds it: no Monte Carlo at all
until every variant has the minimum sample (no recommendation can exist
before), at most one computation at a time per process (a busy counter
touching many experiments queues its checks rather than filling the
threads), and the results kept by their inputs
(:class:`services.experiment._summaries.Summaries`, shared with
``GetExperimentStats``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Final

from litho.logs import get_logger
from services.experiment._experiments import arms_of
from services.experiment._model import RUNNING, Clock
from services.experiment._ports import EventSink, WinnerReady
from services.experiment._store import ExperimentStore
from services.experiment._summaries import Summaries

log = get_logger(__name__)

#: Seconds a replica holds the right to publish one experiment's event.
LEASE_SECONDS: Final = 60.0
LEASE_FIELD: Final = "winnerReadyLease"
#: Experiments remembered for the rate limit, at most.
_REMEMBERED_MAX: Final = 100_000


class WinnerWatch:
    def __init__(self, store: ExperimentStore, events: EventSink, *, every: float,
                 draws: int, summaries: Summaries | None = None,
                 clock: Clock = time.time) -> None:
        self._store = store
        self._events = events
        self._every = every
        self._draws = draws
        self._summaries = summaries if summaries is not None else Summaries()
        #: One statistics computation at a time for winner checks.
        self._computing = asyncio.Semaphore(1)
        self._clock = clock
        self._checked: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[bool]] = {}

    def touched(self, experiment_ids: Iterable[str]) -> None:
        """Counts were stored for these: check each in the background, unless
        checked within ``every`` seconds or being checked now."""
        now = self._clock()
        for experiment_id in experiment_ids:
            last = self._checked.get(experiment_id)
            if experiment_id in self._tasks or (last is not None and now - last < self._every):
                continue
            if len(self._checked) >= _REMEMBERED_MAX:
                self._checked = {k: t for k, t in self._checked.items()
                                 if now - t < self._every}
            self._checked[experiment_id] = now
            task = asyncio.create_task(self._check_logged(experiment_id))
            self._tasks[experiment_id] = task
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bool]) -> None:
        for key, held in list(self._tasks.items()):
            if held is task:
                del self._tasks[key]

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Until no check runs (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _check_logged(self, experiment_id: str) -> bool:
        try:
            return await self.check(experiment_id)
        except Exception as exc:
            log.warning("winner check failed", experiment=experiment_id,
                        error=str(exc)[:200] or type(exc).__name__)
            return False

    async def check(self, experiment_id: str) -> bool:
        """Publish ``winner_ready`` if the running experiment now has a
        recommended winner and nobody published it; True when this call did."""
        doc = await self._store.by_id(experiment_id)
        if doc is None or doc.get("status") != RUNNING or doc.get("winnerReadyAt") is not None:
            return False
        counters = await self._store.counters(doc["tenantId"], experiment_id)
        arms = arms_of(doc, counters)
        minimum = int(doc["minimumSampleSize"])
        if any(a.impressions < minimum for a in arms):
            return False  # no recommendation before every variant has the minimum sample
        async with self._computing:
            summary = await self._summaries.summarise(
                arms, minimum_sample_size=minimum,
                confidence_threshold=float(doc["confidenceThreshold"]), draws=self._draws)
        if not summary.recommended:
            return False
        now = self._clock()
        claimed = await self._store.claim(experiment_id, LEASE_FIELD, now=now,
                                          until=now + LEASE_SECONDS,
                                          where={"winnerReadyAt": None, "status": RUNNING})
        if claimed is None:
            return False
        best = next(a for a in summary.arms if a.variant_id == summary.recommended)
        event = WinnerReady(
            experiment_id=experiment_id, tenant_id=doc["tenantId"], slug=str(doc["slug"]),
            variant_id=summary.recommended, probability_to_be_best=best.probability_to_be_best,
            impressions=sum(a.impressions for a in arms), at=now)
        try:
            await self._events.winner_ready(event)
        except Exception:
            await self._store.set_fields(experiment_id, {LEASE_FIELD: None})
            raise
        await self._store.set_fields(experiment_id, {"winnerReadyAt": now})
        log.info("experiment winner ready", tenant=doc["tenantId"], experiment=experiment_id,
                 variant=summary.recommended)
        return True
