"""A binding's image: the binding service's current variables for it,
rendered through the normal pipeline (and so the same cache).

``GET /b/{id}.{ext}`` asks for it at interactive priority; the pre-render
that follows ``binding.updated`` asks for it at background priority (behind
every interactive render, like batch items), so the next GET is a warm hit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from litho import formats
from litho.errors import (
    DeadlineExceeded,
    LithoError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from litho.logs import get_logger
from services.renderer._pipeline import RenderRequest, RenderResult
from services.renderer._spec import RenderOptions

log = get_logger(__name__)

#: Failures a later try may not meet (the browser, a peer, a deadline).
TRANSIENT = (Unavailable, ResourceExhausted, DeadlineExceeded)


@dataclass(frozen=True)
class ResolvedBinding:
    """What the binding service says to render for a binding, now."""

    binding_id: str
    tenant_id: str
    template_id: str
    #: JSON object text of the variables.
    variables_json: str
    #: The binding's output format (a format name), empty when it has none.
    format: str = ""
    options: RenderOptions = field(default_factory=RenderOptions)
    #: The binding's options ask for strict assets.
    strict_assets: bool = False
    data_hash: str = ""
    #: Until when the data is fresh (seconds since the epoch); None without a TTL.
    fresh_until: float | None = None


class BindingResolver(Protocol):
    async def resolve(self, binding_id: str, *, refresh: bool = True) -> ResolvedBinding:
        """The binding's current variables and output (refreshed first when
        stale, unless ``refresh`` is off); NotFound for an unknown binding,
        FailedPrecondition when it serves its errors."""


@dataclass(frozen=True)
class BindingRender:
    result: RenderResult
    tenant_id: str
    fresh_until: float | None
    data_hash: str


Render = Callable[[RenderRequest], Awaitable[RenderResult]]


class BindingRenders:
    def __init__(self, resolver: BindingResolver, render: Render) -> None:
        self._resolver = resolver
        self._render = render

    async def render(self, binding_id: str, format: str = "") -> BindingRender:
        """The binding's image in ``format`` (a format name; empty: the
        binding's own). Errors of the binding service pass through."""
        return await self._rendered(await self._resolver.resolve(binding_id), format,
                                    background=False)

    async def _rendered(self, binding: ResolvedBinding, format: str, *,
                        background: bool) -> BindingRender:
        name = format or binding.format or formats.DEFAULT.name
        result = await self._render(RenderRequest(
            tenant_id=binding.tenant_id, template_id=binding.template_id, version=0,
            variable_sets=(binding.variables_json,), format=name, options=binding.options,
            strict_assets=binding.strict_assets,
            # Anonymous GETs, like signed URLs: a render whose assets failed
            # is reused for a few seconds rather than rendered on every GET.
            reuse_warned=not background, background=background))
        return BindingRender(result=result, tenant_id=binding.tenant_id,
                             fresh_until=binding.fresh_until, data_hash=binding.data_hash)

    async def prerender(self, binding_id: str, format: str = "", data_hash: str = "") -> bool:
        """Render the binding's image at background priority, so that the
        next GET is a hit. False when there is nothing to render and trying
        again cannot change that (the binding is gone, serves its error, or
        its template does not render); transient failures raise."""
        try:
            # The data as it is, never refreshed from a queued event; and
            # nothing when it moved on since the event: a later one renders it.
            binding = await self._resolver.resolve(binding_id, refresh=False)
            if data_hash and binding.data_hash != data_hash:
                log.info("pre-render skipped: the binding's data changed again",
                         binding=binding_id)
                return False
            done = await self._rendered(binding, format, background=True)
        except TRANSIENT:
            raise
        except NotFound:
            log.info("pre-render skipped: the binding no longer exists", binding=binding_id)
            return False
        except LithoError as exc:
            if exc.status == LithoError.status:
                raise  # an internal failure (ours or a peer's): try again
            log.info("pre-render skipped: the binding does not render", binding=binding_id,
                     status=exc.status, error=exc.message[:300])
            return False
        log.info("binding pre-rendered", binding=binding_id, render_id=done.result.render_id,
                 cached=done.result.cached, data_hash=done.data_hash)
        return True
