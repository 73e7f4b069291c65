"""The public side of experiments: what ``/s/{handle}/{slug}`` serves
(:meth:`Serving.resolve`) and the events a tenant's backend reports
(:meth:`Serving.record`, ``POST /v1/events``).

Recording checks every event first (a 422 naming ``events[i].<field>``, or a
409 for an experiment that is not running) and publishes only when all of
them hold, so a bad request counts nothing. A ``vid`` is assigned with
:func:`litho.assignment.assign`, the gateway's own function, so an event
names the variant the visitor was shown.

The answer is all or nothing: every event published, or UNAVAILABLE saying
how many were (those are counted). An event with an ``eventId`` is
published with a message id of it, which the stream de-duplicates for two
minutes, so the request retried whole with the same ids counts each event
once; an event without one published before the failure counts again when
retried.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from litho import assignment
from litho.assignment import Epoch
from litho.errors import Conflict, FieldError, NotFound, Unavailable
from litho.logs import get_logger
from services.experiment import _validate
from services.experiment._epochs import assignment_epochs
from services.experiment._model import (
    RUNNING,
    Clock,
    Experiment,
    experiment_from_doc,
    invalid,
    is_experiment_id,
)
from services.experiment._ports import Count, EventSink
from services.experiment._store import ExperimentStore

log = get_logger(__name__)

#: Most events one request may report.
MAX_EVENTS: Final = 100
EVENT_TYPES: Final = ("impression", "click", "conversion")
#: A caller's id of an event.
EVENT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_HANDLE: Final = re.compile(r"[a-z2-7]{16}", re.ASCII)
#: Shown of a value that is not what it should be.
_SHOWN: Final = 60


@dataclass(frozen=True)
class EventInput:
    type: str
    #: The experiment's id or slug.
    experiment: str
    #: Exactly one of the two.
    variant_id: str = ""
    vid: str = ""
    #: Optional: the caller's id of the event (``[A-Za-z0-9_-]{1,64}``,
    #: unique in the request); a retry with the same id counts it once.
    event_id: str = ""


@dataclass(frozen=True)
class Resolved:
    experiment: Experiment
    epochs: tuple[Epoch, ...]


class Serving:
    def __init__(self, store: ExperimentStore, events: EventSink, *,
                 clock: Clock = time.time) -> None:
        self._store = store
        self._events = events
        self._clock = clock

    async def resolve(self, tenant_handle: str, slug: str) -> Resolved:
        """The experiment at ``/s/{tenant_handle}/{slug}`` and its epochs;
        NOT_FOUND otherwise (a handle or slug of the wrong shape without a
        query)."""
        doc = None
        if _HANDLE.fullmatch(tenant_handle) and _validate.SLUG.fullmatch(slug):
            doc = await self._store.by_handle(tenant_handle, slug)
        if doc is None:
            raise NotFound("no such experiment")
        return Resolved(experiment_from_doc(doc), assignment_epochs(doc))

    async def record(self, tenant_id: str, events: Sequence[EventInput]) -> int:
        """Check every event, then publish each for counting; the number
        published."""
        if not tenant_id:
            raise invalid("tenantId", "is required")
        if not 1 <= len(events) <= MAX_EVENTS:
            raise invalid("events", f"must hold 1 to {MAX_EVENTS} events, got {len(events)}")
        docs: dict[str, dict[str, Any] | None] = {}
        epochs: dict[str, tuple[Epoch, ...]] = {}
        errors: list[FieldError] = []
        conflicts: list[FieldError] = []
        counts: list[Count] = []
        event_ids: dict[str, int] = {}
        now = self._clock()
        for i, event in enumerate(events):
            path = f"events[{i}]"
            before = len(errors)
            if event.type not in EVENT_TYPES:
                errors.append(FieldError(f"{path}.type", (
                    f"must be impression, click or conversion, not {event.type[:_SHOWN]!r}")))
            if event.event_id:
                _check_event_id(event.event_id, i, event_ids, errors)
            doc = await self._experiment(tenant_id, event.experiment, docs)
            if doc is None:
                errors.append(FieldError(f"{path}.experiment", (
                    f"{event.experiment[:_SHOWN]!r} is not the id or slug of one of this "
                    "tenant's experiments")))
                continue
            variant_id = _variant(doc, event, path, errors, epochs)
            if len(errors) > before:
                continue
            if doc["status"] != RUNNING:
                conflicts.append(FieldError(f"{path}.experiment", (
                    f"experiment {doc['slug']!r} is {doc['status']}: only a running "
                    "experiment counts events")))
                continue
            counts.append(Count(tenant_id=tenant_id, experiment_id=doc["_id"],
                                variant_id=variant_id, kind=event.type, at=now,
                                event_id=event.event_id))
        if errors:
            raise _validate.fail(errors)
        if conflicts:
            first = conflicts[0]
            raise Conflict(f"{first.field}: {first.message}", errors=conflicts)
        return await self._publish(tenant_id, counts)

    async def _experiment(self, tenant_id: str, ref: str,
                          docs: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
        """The tenant's experiment by id or slug (another tenant's is none)."""
        if ref in docs:
            return docs[ref]
        doc = None
        if is_experiment_id(ref):
            doc = await self._store.by_id(ref)
            if doc is not None and doc.get("tenantId") != tenant_id:
                doc = None
        elif _validate.SLUG.fullmatch(ref):
            doc = await self._store.by_slug(tenant_id, ref)
        if len(docs) < MAX_EVENTS:
            docs[ref] = doc
        return doc

    async def _publish(self, tenant_id: str, counts: Sequence[Count]) -> int:
        """Publish every count at once; the number published, all of them.
        When any publish failed: :class:`Unavailable`, saying how many were
        published (and so will be counted) and how to retry."""
        results = await asyncio.gather(*(self._events.count(c) for c in counts),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            return len(counts)
        published = [c for c, r in zip(counts, results, strict=True)
                     if not isinstance(r, BaseException)]
        unnamed = sum(1 for c in published if not c.event_id)
        log.warning("events not all published for counting", tenant=tenant_id,
                    published=len(published), failed=len(failed),
                    error=str(failed[0])[:200] or type(failed[0]).__name__)
        message = (f"published {len(published)} of {len(counts)} events for counting (those "
                   "are counted); retry the request whole with the same eventIds to count "
                   "each event once")
        if unnamed:
            message += (f": {unnamed} of the published events have no eventId, and a retry "
                        "counts them twice")
        raise Unavailable(message) from failed[0]


def _check_event_id(event_id: str, i: int, seen: dict[str, int],
                    errors: list[FieldError]) -> None:
    """An event id of the right shape, not given by an earlier event of the
    request (its index recorded in ``seen``)."""
    path = f"events[{i}].eventId"
    if not EVENT_ID.fullmatch(event_id):
        errors.append(FieldError(path, (
            f"{event_id[:_SHOWN]!r} is not an event id: 1 to 64 letters, digits, "
            "'_' and '-'")))
    elif event_id in seen:
        errors.append(FieldError(path, (
            f"{event_id!r} is also the eventId of events[{seen[event_id]}]: each event of a "
            "request needs its own")))
    else:
        seen[event_id] = i


def _variant(doc: Mapping[str, Any], event: EventInput, path: str,
             errors: list[FieldError], epochs: dict[str, tuple[Epoch, ...]]) -> str:
    """The variant the event names, or assigns by its ``vid`` ("" and an
    error recorded when it can do neither)."""
    ids = [str(v["id"]) for v in doc.get("variants") or ()]
    if bool(event.variant_id) == bool(event.vid):
        errors.append(FieldError(f"{path}.variantId", (
            "give exactly one of variantId (the variant shown) and vid (the visitor id "
            "it was assigned by)")))
        return ""
    if event.variant_id:
        if event.variant_id not in ids:
            errors.append(FieldError(f"{path}.variantId", (
                f"{event.variant_id[:_SHOWN]!r} is not a variant of this experiment: one of "
                + ", ".join(ids))))
            return ""
        return event.variant_id
    problem = assignment.vid_problem(event.vid)
    if problem:
        errors.append(FieldError(f"{path}.vid", problem))
        return ""
    experiment_id = str(doc["_id"])
    if experiment_id not in epochs:
        epochs[experiment_id] = assignment_epochs(doc)
    return assignment.assign(experiment_id, event.vid, epochs[experiment_id])

