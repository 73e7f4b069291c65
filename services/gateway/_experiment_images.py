"""``GET|HEAD /s/{tenantHandle}/{slug}.{ext}`` and ``GET /s/{tenantHandle}/{slug}/click``:
an experiment's image for this visitor, counted, and its click-through.

No API key: the tenant's public handle and the experiment's slug name the
image, so slugs of different tenants never clash. When warm, a view makes no
gRPC call: the experiment comes from this replica's memo
(:class:`litho.notes.NotedMemo`, dropped by the experiment service's change
notes), the variant from :mod:`litho.assignment`, the image from a memo of
each variant's last render (``LITHO_GATEWAY_EXPERIMENT_RENDER_SECONDS``) and
an in-memory cache of image bytes by render id. The one remote call is the
count's publish to JetStream, awaited: a view answered is a view counted,
unless NATS refused it (logged, and said by ``Litho-Counted: false``).

Who sees what: a running experiment assigns each visitor (``?vid=`` or the
``litho_vid`` cookie, set when absent) and counts an impression; known
crawlers and link-preview bots (``LITHO_GATEWAY_BOT_USER_AGENTS``) get the
control and count as ``bot_impression``, without a cookie; a draft or paused
experiment serves the control and counts nothing; a completed (or archived)
one serves its winner to everyone and counts nothing. Answers are
``private, no-cache`` (never kept by shared caches, revalidated by
browsers: a revalidation is a view too) and ``Vary: Cookie``.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from litho import assignment, formats
from litho.blobstore import BlobStore
from litho.errors import (
    DeadlineExceeded,
    FieldError,
    InvalidArgument,
    LithoError,
    NotFound,
    Unavailable,
)
from litho.events.v1 import events_pb2
from litho.experiment.v1 import experiment_pb2 as pb
from litho.logs import get_logger
from litho.messaging import Publisher
from litho.notes import Link, NotedMemo
from litho.renderer.v1 import renderer_pb2
from litho.streams import EXPERIMENT_COUNT_SUBJECT
from services.gateway._formats import stored_output_only
from services.gateway._images import etag_matches
from services.gateway._ratelimit import public_render
from services.gateway._validation import query as query_of

if TYPE_CHECKING:
    from litho.experiment.v1.experiment_pb2_grpc import ExperimentServiceAsyncStub
    from litho.renderer.v1.renderer_pb2_grpc import RendererServiceAsyncStub

log = get_logger(__name__)

VID_COOKIE = "litho_vid"
#: 400 days, the longest a browser keeps a cookie.
VID_COOKIE_SECONDS = 400 * 86_400
CACHE_CONTROL = "private, no-cache"
_HANDLE = re.compile(r"[a-z2-7]{16}", re.ASCII)
_SLUG = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
_IMAGE_FILE = re.compile(rf"({_SLUG})\.(png|jpg|jpeg|webp|pdf|gif)", re.ASCII)
_CLICK = re.compile(_SLUG, re.ASCII)
_NO_EXPERIMENT = "no such experiment image"
#: Seconds a handle and slug that named nothing are a 404 without a call.
MISSING_SECONDS = 5.0
#: What a remembered "nothing here" is charged.
MISSING_COST = 256
#: Seconds a view waits for the experiment service to resolve an experiment
#: (past it, an experiment known before is served stale).
RESOLVE_TIMEOUT = 2.0
#: Seconds past its time a known experiment is served while the experiment
#: service cannot be reached (a change note still ends it at once).
MAX_STALE = 300.0
#: What one memoised experiment is charged beyond its variables' text.
EXPERIMENT_OVERHEAD = 4096

#: Counted kinds (``ExperimentCount.kind``).
IMPRESSION, CLICK, BOT_IMPRESSION = "impression", "click", "bot_impression"
RUNNING, COMPLETED, ARCHIVED = "running", "completed", "archived"


@dataclass(frozen=True)
class ServedVariant:
    id: str
    template_id: str
    variables_json: str


@dataclass(frozen=True)
class Served:
    """What a public URL serves: an experiment as ``ResolveExperiment`` gave it."""

    experiment_id: str
    tenant_id: str
    status: str
    control: str
    winner: str
    variants: dict[str, ServedVariant]
    epochs: tuple[assignment.Epoch, ...]
    goal_type: str
    destination_url: str
    format: formats.Format
    options: renderer_pb2.RenderOptions
    #: The experiment's last update (seconds): renders of an older one are not reused.
    updated: float
    cost: int = 0

    def pick(self, vid: str, *, bot: bool) -> tuple[str, str]:
        """The variant to show and the kind to count ("" for none)."""
        if self.status == RUNNING:
            if bot:
                return self.control, BOT_IMPRESSION
            return assignment.assign(self.experiment_id, vid, self.epochs), IMPRESSION
        if self.status in (COMPLETED, ARCHIVED) and self.winner in self.variants:
            return self.winner, ""
        return self.control, ""


def served_from_proto(response: pb.ResolveExperimentResponse) -> Served:
    e = response.experiment
    order = [v.id for v in e.variants]
    variants = {v.id: ServedVariant(v.id, v.template_id or e.template_id, v.variables_json or "{}")
                for v in e.variants}
    control = next((v.id for v in e.variants if v.control), order[0] if order else "")
    epochs = tuple(
        assignment.Epoch(since=ep.since.ToNanoseconds() / 1e9,
                         weights=tuple((vid, int(ep.weights.get(vid, 0))) for vid in order))
        for ep in response.epochs)
    if not epochs:
        epochs = (assignment.Epoch(0.0, tuple((v.id, v.weight) for v in e.variants)),)
    fmt = formats.by_enum(e.output.format) or formats.DEFAULT
    cost = EXPERIMENT_OVERHEAD + sum(sys.getsizeof(v.variables_json) for v in variants.values())
    return Served(
        experiment_id=e.id, tenant_id=e.tenant_id, status=e.status, control=control,
        winner=e.winner_variant_id, variants=variants, epochs=epochs, goal_type=e.goal.type,
        destination_url=e.goal.destination_url, format=fmt, options=e.output.options,
        updated=e.update_time.ToNanoseconds() / 1e9, cost=cost)


@dataclass(frozen=True)
class _Render:
    render_id: str
    blob_key: str
    content_type: str
    #: An asset did not load: the render is not reused.
    warned: bool = False


class _Always:
    """The link of a memo no notes end (only its time)."""

    def generation(self) -> int | None:
        return 0


#: What one remembered render is charged (its ids and the key).
RENDER_COST = 512
MAX_RENDERS = 10_000


def render_memo(seconds: float, clock: Callable[[], float] = time.time) -> NotedMemo[_Render]:
    """Each variant's last render, for ``seconds``; concurrent first views
    of a variant share one render."""
    return NotedMemo(_Always(), name="experiment renders", max_age=seconds,
                     max_bytes=MAX_RENDERS * RENDER_COST, cost=lambda _: RENDER_COST,
                     until=lambda r: 0.0 if r.warned else None, clock=clock)


#: Runs a call of the renderer for a tenant, counting it in the tenant's month.
#: Wraps a call of the renderer (``call(stored_only)``) for the tenant's render quota.
Counted = Callable[
    [str, Callable[[bool], Awaitable[renderer_pb2.RenderTemplateResponse]]],
    Awaitable[renderer_pb2.RenderTemplateResponse]]


@dataclass
class ExperimentImages:
    """The gateway's state for ``/s/``: built once by the composition root."""

    experiments: ExperimentServiceAsyncStub
    renderer: RendererServiceAsyncStub
    blobs: BlobStore
    counts: Publisher | None
    #: Experiments by ``<handle>/<slug>``; None for a name that named nothing.
    memo: NotedMemo[Served | None]
    bots: re.Pattern[str]
    max_image_bytes: int = 64 * 2**20
    secure_cookie: bool = False
    #: Whether NATS is connected now (a count is not even tried when not).
    connected: Callable[[], bool] = lambda: True
    clock: Callable[[], float] = time.time
    renders: NotedMemo[_Render] = field(default_factory=lambda: render_memo(10.0))
    _bytes: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    _bytes_total: int = 0

    async def served(self, handle: str, slug: str) -> Served:
        """The experiment at ``handle/slug``: from the memo, else resolved. A
        name that resolves to nothing is remembered as such for
        MISSING_SECONDS (made-up slugs cost one call each, not one per GET;
        a create's change note ends it at once)."""
        async def load() -> Served | None:
            try:
                return served_from_proto(await self.experiments.ResolveExperiment(
                    pb.ResolveExperimentRequest(tenant_handle=handle, slug=slug),
                    timeout=RESOLVE_TIMEOUT))
            except NotFound:
                return None

        found = await self.memo.get(f"{handle}/{slug}", load)
        if found is None:
            raise NotFound(_NO_EXPERIMENT)
        return found

    def changed(self, key: str) -> None:
        """A change note from the experiment service (``<handle>/<slug>``)."""
        self.memo.changed(key)

    async def render(self, served: Served, variant_id: str, fmt: formats.Format, *,
                     counted: Counted | None = None) -> _Render:
        """The variant's image: its last render while recent, else rendered
        (a warm hit of the render cache, unless the template changed);
        ``counted`` wraps a call of the renderer (the tenant's render quota)."""
        async def load() -> _Render:
            variant = served.variants[variant_id]
            request = renderer_pb2.RenderTemplateRequest(
                tenant_id=served.tenant_id, template_id=variant.template_id,
                variables_json=variant.variables_json, format=fmt.enum,
                options=served.options)

            async def call(stored_only: bool) -> renderer_pb2.RenderTemplateResponse:
                return await self.renderer.RenderTemplate(
                    stored_output_only(request) if stored_only else request)

            response = await (call(False) if counted is None
                              else counted(served.tenant_id, call))
            return _Render(response.render_id, response.blob_key, response.content_type,
                           warned=bool(response.warnings))

        key = f"{served.experiment_id}/{variant_id}/{fmt.enum}/{served.updated}"
        return await self.renders.get(key, load)

    async def image(self, render: _Render) -> bytes | None:
        """The image's bytes, kept in memory by render id (content-addressed,
        so never stale), least recently used out past ``max_image_bytes``."""
        data = self._bytes.get(render.render_id)
        if data is not None:
            self._bytes.move_to_end(render.render_id)
            return data
        blob = await self.blobs.get(render.blob_key)
        if blob is None:
            return None
        if len(blob.data) <= self.max_image_bytes // 4:
            self._bytes[render.render_id] = blob.data
            self._bytes_total += len(blob.data)
            while self._bytes_total > self.max_image_bytes:
                _, old = self._bytes.popitem(last=False)
                self._bytes_total -= len(old)
        return blob.data

    async def count(self, served: Served, variant_id: str, kind: str, vid: str = "") -> bool:
        """Publish one count; False (logged) when NATS did not store it. A
        click's message id names the visitor, so that JetStream keeps one
        click per visitor and variant in its two-minute duplicate window."""
        if self.counts is None or not self.connected():
            return False
        now = Timestamp()
        now.FromNanoseconds(int(self.clock() * 1e9))
        msg_id = (f"click:{served.experiment_id}:{_digest(vid)}" if kind == CLICK and vid
                  else f"count:{uuid.uuid4().hex}")
        try:
            await self.counts.publish(EXPERIMENT_COUNT_SUBJECT, events_pb2.ExperimentCount(
                tenant_id=served.tenant_id, experiment_id=served.experiment_id,
                variant_id=variant_id, kind=kind, time=now), msg_id=msg_id)
        except LithoError as exc:
            log.warning("an experiment event was not counted", experiment=served.experiment_id,
                        kind=kind, error=exc.message[:200])
            return False
        return True


EXPERIMENT_IMAGES = web.AppKey("experiment_images", ExperimentImages)


def _visitor(request: web.Request, state: ExperimentImages, *, bot: bool) -> tuple[str, bool]:
    """The visitor id and whether it is new (a cookie to set)."""
    given = query_of(request).get("vid")
    if given is not None:
        problem = assignment.vid_problem(given)
        if problem:
            raise InvalidArgument(f"vid {problem}", errors=[FieldError("vid", problem)])
        return given, False
    if bot:
        return "", False
    cookie = request.cookies.get(VID_COOKIE, "")
    if assignment.is_cookie_vid(cookie):
        return cookie, False
    return assignment.new_cookie_vid(state.clock()), True


def _state(request: web.Request) -> ExperimentImages:
    state = request.app.get(EXPERIMENT_IMAGES)
    if state is None:
        raise Unavailable("the experiment service is not configured")
    return state


async def get_experiment_image(request: web.Request) -> web.StreamResponse:
    handle = request.match_info["tenantHandle"]
    found = _IMAGE_FILE.fullmatch(request.match_info["experimentFile"])
    if not _HANDLE.fullmatch(handle) or found is None:
        raise NotFound(_NO_EXPERIMENT)  # no name of ours: no call
    state = _state(request)
    slug, ext = found.groups()
    fmt = formats.parse(ext)
    assert fmt is not None  # the pattern lists only known spellings
    bot = bool(state.bots.search(request.headers.get("User-Agent", "")))
    vid, new = _visitor(request, state, bot=bot)
    served = await state.served(handle, slug)
    variant_id, kind = served.pick(vid, bot=bot)

    async def quota(tenant_id: str,
                    call: Callable[[bool], Awaitable[renderer_pb2.RenderTemplateResponse]]
                    ) -> renderer_pb2.RenderTemplateResponse:
        # Only a render this view made counts in the owner's month; views
        # (served from memory when warm) take none of its request rate.
        return await public_render(request, tenant_id, call, new=lambda r: r.rendered)

    render = await state.render(served, variant_id, fmt, counted=quota)
    etag = f'"{render.render_id}"'
    not_modified = etag_matches(request.headers.get("If-None-Match", ""), etag)
    data = b""
    if not not_modified:
        # The bytes first: a view that cannot be served is not counted.
        image = await state.image(render)
        if image is None:
            raise NotFound("the rendered image disappeared; retry")
        data = image
    # HEAD (link checkers, unfurlers before their GET) is never a view.
    counted = (await state.count(served, variant_id, kind)
               if kind and request.method != "HEAD" else False)
    headers = {"Cache-Control": CACHE_CONTROL, "Vary": "Cookie", "ETag": etag,
               "Litho-Variant": variant_id, "Litho-Counted": "true" if counted else "false"}
    if not_modified:
        response = web.Response(status=304, headers=headers)
    elif request.method == "HEAD":
        response = web.Response(status=200, headers={
            **headers, "Content-Type": render.content_type, "Content-Length": str(len(data))})
    else:
        response = web.Response(body=data, content_type=render.content_type, headers=headers)
    if new:
        _set_vid(response, vid, state)
    return response


async def click_experiment(request: web.Request) -> web.StreamResponse:
    handle, slug = request.match_info["tenantHandle"], request.match_info["slug"]
    if not _HANDLE.fullmatch(handle) or not _CLICK.fullmatch(slug):
        raise NotFound(_NO_EXPERIMENT)
    state = _state(request)
    bot = bool(state.bots.search(request.headers.get("User-Agent", "")))
    vid, new = _visitor(request, state, bot=bot)
    served = await state.served(handle, slug)
    if served.goal_type != "click_through" or not served.destination_url:
        raise NotFound("this experiment has no click-through goal")
    variant_id, kind = served.pick(vid, bot=bot)
    counted = kind == IMPRESSION and await state.count(served, variant_id, CLICK, vid)
    response = web.Response(status=302, headers={
        "Location": served.destination_url, "Cache-Control": "private, no-store",
        "Litho-Variant": variant_id, "Litho-Counted": "true" if counted else "false"})
    if new:
        _set_vid(response, vid, state)
    return response


def _set_vid(response: web.StreamResponse, vid: str, state: ExperimentImages) -> None:
    # Behind https the cookie may come with an image embedded in another site
    # (SameSite=None, which needs Secure); browsers that block third-party
    # cookies drop it all the same, so pages on other sites pass ?vid=.
    response.set_cookie(VID_COOKIE, vid, max_age=VID_COOKIE_SECONDS, path="/s/",
                        httponly=True, samesite="None" if state.secure_cookie else "Lax",
                        secure=state.secure_cookie)


def _digest(vid: str) -> str:
    return hashlib.sha256(vid.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def experiment_memo(link: Link, *, seconds: float, max_bytes: int,
                    clock: Callable[[], float] = time.time) -> NotedMemo[Served | None]:
    """The gateway's memo of experiments: each until a change note or
    ``seconds``; a name that named nothing for MISSING_SECONDS; while the
    experiment service cannot be reached, one known before is served for up
    to MAX_STALE seconds past its time."""
    return NotedMemo(
        link, name="experiments", max_age=seconds, max_bytes=max_bytes,
        cost=lambda s: MISSING_COST if s is None else s.cost,
        until=lambda s: clock() + MISSING_SECONDS if s is None else None,
        stale_on=(Unavailable, DeadlineExceeded), max_stale=MAX_STALE, clock=clock)
