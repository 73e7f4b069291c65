"""The bandit: every ``interval`` seconds, each running experiment with the
bandit on whose impressions (all variants) reached its warm-up gets a new
epoch of Thompson sampling weights (:func:`services.experiment._stats.thompson_weights`,
every variant kept at ``min_weight`` basis points at least). A new epoch only
moves visitors first seen after it (:mod:`litho.assignment`).

A new epoch starts ``epoch_delay`` seconds after it is written: gateways keep
a resolved experiment for a while (a change note drops it, but a note can be
lost), and a gateway that assigned a visitor first seen after the epoch's
start with the previous weights would show that visitor one variant now and
another once it learns of the epoch. With the delay above the gateways'
memo time every gateway knows the epoch before it applies.

With several replicas each experiment is reweighted by one per interval: a
replica first takes its ``banditLeaseUntil`` (one atomic update), and the
epoch is written conditional on the revision it read (a user's write that
came between wins; the next round tries again). A change note follows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Final

from litho.logs import get_logger
from services.experiment._epochs import appended, stored_epochs
from services.experiment._experiments import arms_of, total_impressions
from services.experiment._model import RUNNING, TOTAL_WEIGHT, Clock
from services.experiment._ports import EventSink
from services.experiment._stats import thompson_weights
from services.experiment._store import ExperimentStore

log = get_logger(__name__)

LEASE_FIELD: Final = "banditLeaseUntil"
#: The lease runs out a little before the next round, whatever the jitter.
LEASE_SHARE: Final = 0.9
#: Running experiments read per query.
BATCH: Final = 100
#: Seconds from a reweighting to its epoch's start (LITHO_EXPERIMENT_EPOCH_DELAY).
DEFAULT_EPOCH_DELAY: Final = 60.0


class Bandit:
    def __init__(self, store: ExperimentStore, events: EventSink, *, interval: float,
                 min_weight: int, draws: int, max_epochs: int,
                 epoch_delay: float = DEFAULT_EPOCH_DELAY, clock: Clock = time.time) -> None:
        self._store = store
        self._events = events
        self._interval = interval
        self._min_weight = min_weight
        self._draws = draws
        self._max_epochs = max_epochs
        self._epoch_delay = epoch_delay
        self._clock = clock

    async def round(self) -> int:
        """Reweight what is due; how many experiments got a new epoch."""
        reweighted, after = 0, ""
        while True:
            docs = await self._store.running(after=after, limit=BATCH, bandit=True)
            for doc in docs:
                try:
                    reweighted += await self.reweight(doc["_id"])
                except Exception as exc:
                    log.warning("bandit reweighting failed", experiment=doc["_id"],
                                error=str(exc)[:200] or type(exc).__name__)
            if len(docs) < BATCH:
                return reweighted
            after = docs[-1]["_id"]

    async def reweight(self, experiment_id: str) -> bool:
        """A new epoch for the experiment if it is due and this replica holds
        its lease; True when one was written."""
        now = self._clock()
        doc = await self._store.claim(
            experiment_id, LEASE_FIELD, now=now, until=now + self._interval * LEASE_SHARE,
            where={"status": RUNNING, "bandit.enabled": True})
        if doc is None:
            return False
        counters = await self._store.counters(doc["tenantId"], experiment_id)
        warmup = int((doc.get("bandit") or {}).get("warmupImpressions") or 0)
        if total_impressions(counters) < warmup:
            return False
        arms = arms_of(doc, counters)
        floor = min(self._min_weight, TOTAL_WEIGHT // len(arms))
        weights = await asyncio.to_thread(thompson_weights, arms, floor_bp=floor,
                                          draws=self._draws)
        epochs = stored_epochs(doc)
        if _same(epochs[-1].get("weights") or {}, weights):
            return False
        written = await self._store.write(doc, {
            "epochs": appended(epochs, now + self._epoch_delay, weights,
                               max_epochs=self._max_epochs),
            "servingWeights": weights})
        if written is None:
            log.info("bandit epoch not written: the experiment changed meanwhile",
                     experiment=experiment_id)
            return False
        log.info("bandit reweighted", tenant=doc["tenantId"], experiment=experiment_id,
                 weights=",".join(f"{k}={v}" for k, v in weights.items()))
        await self._events.changed(str(doc.get("tenantHandle") or ""),
                                   str(doc["slug"]))
        return True


def _same(old: Mapping[str, Any], new: Mapping[str, int]) -> bool:
    return {str(k): int(v) for k, v in old.items()} == dict(new)
