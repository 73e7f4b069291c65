"""What the experiment domain needs from elsewhere, as small protocols: the
template service's templates, and what it publishes (change notes, events
to count, winner_ready). The adapters (gRPC, NATS) are in
:mod:`services.experiment._adapters` and :mod:`services.experiment._events`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class TemplateCatalog(Protocol):
    async def exists(self, tenant_id: str, template_id: str) -> bool:
        """Whether the tenant has this template (another tenant's is missing)."""
        ...


@dataclass(frozen=True)
class Count:
    """One event to count (``litho.events.v1.ExperimentCount``)."""

    tenant_id: str
    experiment_id: str
    variant_id: str
    #: impression, click, conversion or bot_impression.
    kind: str
    #: Seconds since the epoch.
    at: float
    #: The caller's id of the event ("" when none): its publish is then
    #: de-duplicated by (tenant, experiment, event id) within the stream's
    #: duplicate window, so a request retried whole counts it once.
    event_id: str = ""


@dataclass(frozen=True)
class WinnerReady:
    """``litho.events.v1.ExperimentWinnerReady``."""

    experiment_id: str
    tenant_id: str
    slug: str
    variant_id: str
    probability_to_be_best: float
    impressions: int
    at: float


class EventSink(Protocol):
    async def changed(self, tenant_handle: str, slug: str) -> None:
        """What ``ResolveExperiment(tenant_handle, slug)`` answers changed:
        gateway replicas drop what they kept of ``"{handle}/{slug}"``. Never
        raises (a lost note costs at most the memo's time to live)."""
        ...

    async def count(self, count: Count) -> None:
        """Publish one event for the counter (de-duplicated by its event id
        when it has one); raises when it was not stored."""
        ...

    async def winner_ready(self, event: WinnerReady) -> None:
        """Publish ``experiment.winner_ready`` (de-duplicated by experiment);
        raises when it was not stored."""
        ...


class NoEvents:
    """An :class:`EventSink` that publishes nothing (tests of the domain alone)."""

    async def changed(self, tenant_handle: str, slug: str) -> None:
        return None

    async def count(self, count: Count) -> None:
        return None

    async def winner_ready(self, event: WinnerReady) -> None:
        return None
