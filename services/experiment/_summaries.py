"""The statistics of experiments, computed once per distinct input.

:func:`services.experiment._stats.summarise` is CPU work (a Monte Carlo of
``draws`` joint draws) and deterministic: the same counts, threshold,
minimum sample and draws always give the same summary. :class:`Summaries`
so keeps the latest results in a small LRU keyed by exactly those inputs,
and computes a missing one once however many callers ask for it at the same
time (on a thread, off the event loop). ``GetExperimentStats``, completion
without a named winner and the winner checks share one per process.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from services.experiment._stats import Arm, Summary, summarise

#: Summaries kept, at most (a few hundred bytes each per arm).
DEFAULT_SIZE: Final = 256

#: The inputs a summary is fully determined by.
Key = tuple[tuple[Arm, ...], int, float, int]
Compute = Callable[..., Summary]


class Summaries:
    def __init__(self, *, size: int = DEFAULT_SIZE, compute: Compute = summarise,
                 at_once: int | None = None) -> None:
        self._size = max(1, size)
        self._compute = compute
        #: Computations running at once (a tenant polling the stats of a
        #: busy experiment asks for a new one at every flush): one per core.
        self._slots = asyncio.Semaphore(at_once or os.cpu_count() or 1)
        self._done: OrderedDict[Key, Summary] = OrderedDict()
        self._running: dict[Key, asyncio.Future[Summary]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def summarise(self, arms: Sequence[Arm], *, minimum_sample_size: int,
                        confidence_threshold: float, draws: int) -> Summary:
        """:func:`services.experiment._stats.summarise` of these inputs, kept."""
        key: Key = (tuple(arms), minimum_sample_size, confidence_threshold, draws)
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
            return done
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._computed(
                key[0], minimum_sample_size=minimum_sample_size,
                confidence_threshold=confidence_threshold, draws=draws))
            self._running[key] = running
            running.add_done_callback(lambda future: self._finished(key, future))
        # A caller that is cancelled leaves the computation to the others.
        return await asyncio.shield(running)

    async def _computed(self, arms: tuple[Arm, ...], *, minimum_sample_size: int,
                        confidence_threshold: float, draws: int) -> Summary:
        async with self._slots:
            return await asyncio.to_thread(
                self._compute, arms, minimum_sample_size=minimum_sample_size,
                confidence_threshold=confidence_threshold, draws=draws)

    def _finished(self, key: Key, future: asyncio.Future[Summary]) -> None:
        self._running.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return  # the callers have the error; the next call computes again
        self._done[key] = future.result()
        self._done.move_to_end(key)
        while len(self._done) > self._size:
            self._done.popitem(last=False)
