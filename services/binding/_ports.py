"""What the binding domain needs from elsewhere, as small protocols: the
template service's mapping evaluation and the events it publishes. The
adapters (gRPC, NATS) are in :mod:`services.binding._adapters`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class TemplateMapping(Protocol):
    async def evaluate(self, mapping: Mapping[str, str], data_json: str, *,
                       check_only: bool) -> str:
        """The variables (JSON object text) that ``mapping`` makes of the data.

        Raises :class:`litho.errors.InvalidArgument` naming ``mapping.<var>``
        ("line L, column C: …") for an expression that does not parse or
        fails on this data. ``check_only`` checks the syntax alone (the data
        is ignored) and answers ``"{}"``."""
        ...

    async def template_exists(self, tenant_id: str, template_id: str) -> bool:
        """Whether the tenant has this template."""
        ...


class EventSink(Protocol):
    """``litho.events.v1.binding.updated`` and ``binding.failed``, and the
    core-NATS note that a binding's document changed."""

    async def changed(self, binding_id: str) -> None:
        """The binding's configuration, status or data changed: renderer
        replicas drop what they memoised of it. Never raises (a note that is
        lost costs at most the memo's time to live)."""
        ...

    async def updated(self, *, binding_id: str, tenant_id: str, template_id: str,
                      data_hash: str, format: str, source: str, fetched_at: float,
                      at: float) -> None:
        """The binding's data changed (``source``: fetch, push or refresh)."""
        ...

    async def failed(self, *, binding_id: str, tenant_id: str, template_id: str,
                     error: str, status: str, at: float) -> None:
        """A refresh failed with an error not reported before."""
        ...
