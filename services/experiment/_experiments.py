"""Experiments: variants of a template and their weights, moved through
draft -> running <-> paused -> completed -> archived, and their statistics.

No grpc or nats here: the template service is behind
:mod:`services.experiment._ports`, the documents behind
:class:`services.experiment._store.ExperimentStore`.

Every write is conditional on the revision it read: of two writes that read
the same revision one lands and the other is a 409 ("changed meanwhile;
retry"), so a pause never undoes a completion that landed first, nor an
update one that came between its read and its write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from litho.errors import Conflict, FailedPrecondition, FieldError, ResourceExhausted
from litho.logs import get_logger
from services.experiment import _validate
from services.experiment._epochs import first_epochs, own_weights
from services.experiment._model import (
    ARCHIVED,
    CLICK_THROUGH,
    COMPLETED,
    DEFAULT_PAGE_SIZE,
    DRAFT,
    MAX_PAGE_SIZE,
    PAUSED,
    RUNNING,
    STATUSES,
    Clock,
    Experiment,
    ExperimentSpec,
    ExperimentStats,
    Limits,
    VariantStats,
    experiment_from_doc,
    invalid,
    new_experiment_id,
    tenant_handle,
)
from services.experiment._ports import EventSink, NoEvents, TemplateCatalog
from services.experiment._stats import Arm, Summary
from services.experiment._store import ExperimentStore, slug_taken
from services.experiment._summaries import Summaries

log = get_logger(__name__)

#: Verb -> (the statuses it moves from, the status it moves to).
TRANSITIONS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "start": ((DRAFT, PAUSED), RUNNING),
    "pause": ((RUNNING,), PAUSED),
    "complete": ((RUNNING, PAUSED), COMPLETED),
    "archive": ((DRAFT, COMPLETED), ARCHIVED),
}
#: What an update may change, by status (a draft: everything).
_LIVE_FIELDS = ("name", "confidenceThreshold", "goal")
_EDITABLE: Mapping[str, tuple[str, ...]] = {
    RUNNING: _LIVE_FIELDS, PAUSED: _LIVE_FIELDS, COMPLETED: ("name",), ARCHIVED: ("name",)}
_EDITABLE_SAID: Mapping[str, str] = {
    RUNNING: "name, confidenceThreshold and goal.destinationUrl",
    PAUSED: "name, confidenceThreshold and goal.destinationUrl",
    COMPLETED: "name", ARCHIVED: "name"}


class Experiments:
    def __init__(self, store: ExperimentStore, templates: TemplateCatalog, *,
                 limits: Limits | None = None, clock: Clock = time.time,
                 events: EventSink | None = None, summaries: Summaries | None = None,
                 handle_key: bytes = b"") -> None:
        self.store = store
        self._handle_key = handle_key
        #: The statistics, kept by their inputs (shared with the winner checks).
        self.summaries = summaries if summaries is not None else Summaries()
        self._templates = templates
        self.events: EventSink = events or NoEvents()
        self._limits = limits or Limits()
        self.clock = clock

    # ---------------------------------------------------------------- CRUD ----

    async def create(self, tenant_id: str, spec: ExperimentSpec) -> Experiment:
        """A new draft; every rule is checked and nothing is stored unless all hold."""
        _check_tenant(tenant_id)
        config = await self._checked(tenant_id, spec, None)
        limit = self._limits.max_per_tenant
        count = await self.store.count(tenant_id)
        if count >= limit:
            raise _cap_reached(count, limit)
        if await self.store.has_slug(tenant_id, config["slug"]):
            raise slug_taken(config["slug"])
        now = self.clock()
        doc: dict[str, Any] = {
            "_id": new_experiment_id(), "tenantId": tenant_id,
            "tenantHandle": tenant_handle(tenant_id, self._handle_key), **config, "status": DRAFT,
            "winnerVariantId": None, "servingWeights": own_weights(config["variants"]),
            "epochs": first_epochs(now, config["variants"]),
            "createdAt": now, "updatedAt": now, "startedAt": None, "endedAt": None,
            "revision": 0, "banditLeaseUntil": None, "winnerReadyAt": None,
        }
        # The count above spares the work when the cap is reached; the slot
        # taken here holds it against creates racing this one.
        refused = await self.store.insert_within(doc, limit)
        if refused:
            raise _cap_reached(refused, limit)
        log.info("experiment created", tenant=tenant_id, experiment=doc["_id"],
                 variants=len(config["variants"]))
        # A resolve may have been refused (and the refusal kept) before it existed.
        await self.events.changed(doc["tenantHandle"], doc["slug"])
        return experiment_from_doc(doc)

    async def get(self, tenant_id: str, experiment_id: str) -> Experiment:
        _check_tenant(tenant_id)
        return experiment_from_doc(await self.store.get(tenant_id, experiment_id))

    async def list_experiments(self, tenant_id: str, *, page_size: int = 0,
                               page_token: str = "", status: str = ""
                               ) -> tuple[list[Experiment], str]:
        """Newest first; ``page_size`` 0 is the default (20), more than 100 is 100."""
        _check_tenant(tenant_id)
        if page_size < 0:
            raise invalid("pageSize", f"must be between 1 and {MAX_PAGE_SIZE}")
        if status and status not in STATUSES:
            raise invalid("status", "must be one of " + ", ".join(STATUSES))
        docs, token = await self.store.page(
            tenant_id, page_size=min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            page_token=page_token, status=status)
        return [experiment_from_doc(d) for d in docs], token

    async def update(self, tenant_id: str, experiment_id: str,
                     spec: ExperimentSpec) -> Experiment:
        """The experiment after ``spec``: a draft may change anything; a
        running or paused one its name, confidence threshold and goal's
        destination; a completed or archived one its name."""
        _check_tenant(tenant_id)
        current = await self.store.get(tenant_id, experiment_id)
        status = current["status"]
        given = spec.given()
        if not given:
            return experiment_from_doc(current)
        if status != DRAFT:
            _check_editable(current, spec, given)
        config = await self._checked(tenant_id, spec, current)
        if "slug" in config and await self.store.has_slug(tenant_id, config["slug"],
                                                          other_than=current["_id"]):
            raise slug_taken(config["slug"])
        fields: dict[str, Any] = {**config, "updatedAt": self.clock()}
        if "variants" in config:
            fields["servingWeights"] = own_weights(config["variants"])
            fields["epochs"] = first_epochs(float(current["createdAt"]), config["variants"])
        updated = await self._write(current, fields)
        log.info("experiment updated", tenant=tenant_id, experiment=experiment_id,
                 fields=",".join(given))
        await self._noted(current, updated)
        return experiment_from_doc(updated)

    async def delete(self, tenant_id: str, experiment_id: str) -> None:
        """Not while running (pause it first); its counters go with it."""
        _check_tenant(tenant_id)
        current = await self.store.get(tenant_id, experiment_id)
        if current["status"] == RUNNING:
            raise Conflict(f"experiment {experiment_id!r} is running; pause it first, "
                           "then delete it")
        if not await self.store.delete(current):
            await self.store.get(tenant_id, experiment_id)  # gone meanwhile: 404
            raise _changed(experiment_id)
        log.info("experiment deleted", tenant=tenant_id, experiment=experiment_id)
        await self._noted(current)

    # ------------------------------------------------------------- states ----

    async def start(self, tenant_id: str, experiment_id: str) -> Experiment:
        current = await self._for("start", tenant_id, experiment_id)
        now = self.clock()
        fields: dict[str, Any] = {"status": RUNNING, "updatedAt": now}
        if current.get("startedAt") is None:
            fields["startedAt"] = now
        return await self._moved("start", current, fields)

    async def pause(self, tenant_id: str, experiment_id: str) -> Experiment:
        current = await self._for("pause", tenant_id, experiment_id)
        return await self._moved("pause", current,
                                 {"status": PAUSED, "updatedAt": self.clock()})

    async def complete(self, tenant_id: str, experiment_id: str,
                       winner_variant_id: str = "") -> Experiment:
        """Completed with ``winner_variant_id``, or (empty) the statistics'
        recommended winner; everyone is then served the winner."""
        current = await self._for("complete", tenant_id, experiment_id)
        ids = [str(v["id"]) for v in current["variants"]]
        winner = winner_variant_id
        if winner and winner not in ids:
            raise invalid("winnerVariantId", (
                f"{winner[:100]!r} is not a variant of this experiment: one of "
                + ", ".join(ids)))
        if not winner:
            summary = await self._summary(current, await self.store.counters(
                tenant_id, experiment_id))
            if not summary.recommended:
                raise _no_recommendation(current, summary)
            winner = summary.recommended
        now = self.clock()
        return await self._moved("complete", current, {
            "status": COMPLETED, "winnerVariantId": winner, "endedAt": now, "updatedAt": now,
            "servingWeights": {i: (10_000 if i == winner else 0) for i in ids}})

    async def archive(self, tenant_id: str, experiment_id: str) -> Experiment:
        current = await self._for("archive", tenant_id, experiment_id)
        return await self._moved("archive", current,
                                 {"status": ARCHIVED, "updatedAt": self.clock()})

    async def _for(self, verb: str, tenant_id: str, experiment_id: str) -> dict[str, Any]:
        """The experiment, if ``verb`` may move it from its status (else 409)."""
        _check_tenant(tenant_id)
        current = await self.store.get(tenant_id, experiment_id)
        sources, _ = TRANSITIONS[verb]
        if current["status"] not in sources:
            raise Conflict(f"experiment {experiment_id!r} is {current['status']}; {verb} "
                           f"needs it {' or '.join(sources)}")
        return current

    async def _moved(self, verb: str, current: Mapping[str, Any],
                     fields: Mapping[str, Any]) -> Experiment:
        updated = await self._write(current, fields)
        log.info("experiment " + fields["status"], tenant=current["tenantId"],
                 experiment=current["_id"], verb=verb)
        await self._noted(current)
        return experiment_from_doc(updated)

    async def _noted(self, *docs: Mapping[str, Any]) -> None:
        """Change notes for every ``{handle}/{slug}`` of ``docs`` (a slug
        change: the old and the new)."""
        keys = dict.fromkeys((str(d.get("tenantHandle") or ""),
                              str(d["slug"])) for d in docs)
        for handle, slug in keys:
            await self.events.changed(handle, slug)

    async def _write(self, current: Mapping[str, Any],
                     fields: Mapping[str, Any]) -> dict[str, Any]:
        updated = await self.store.write(current, fields)
        if updated is None:
            await self.store.get(current["tenantId"], current["_id"])  # gone meanwhile: 404
            raise _changed(current["_id"])
        return updated

    # --------------------------------------------------------- statistics ----

    async def stats(self, tenant_id: str, experiment_id: str) -> ExperimentStats:
        _check_tenant(tenant_id)
        doc = await self.store.get(tenant_id, experiment_id)
        counters = await self.store.counters(tenant_id, experiment_id)
        summary = await self._summary(doc, counters)
        weights = doc.get("servingWeights") or {}
        out: list[VariantStats] = []
        for variant, arm in zip(doc["variants"], summary.arms, strict=True):
            c = counters.get(str(variant["id"])) or {}
            out.append(VariantStats(
                variant_id=arm.variant_id, name=str(variant.get("name") or variant["id"]),
                control=bool(variant.get("control")), impressions=_count(c, "impressions"),
                clicks=_count(c, "clicks"), conversions=_count(c, "conversions"),
                bot_impressions=_count(c, "botImpressions"), conversion_rate=arm.rate,
                interval_low=arm.interval_low, interval_high=arm.interval_high,
                probability_to_beat_control=arm.probability_to_beat_control,
                probability_to_be_best=arm.probability_to_be_best,
                expected_loss=arm.expected_loss,
                serving_weight=int(weights.get(str(variant["id"])) or 0)))
        return ExperimentStats(
            experiment_id=doc["_id"], status=doc["status"], variants=tuple(out),
            minimum_sample_size=int(doc["minimumSampleSize"]),
            confidence_threshold=float(doc["confidenceThreshold"]),
            minimum_sample_reached=summary.minimum_sample_reached,
            confidence_reached=summary.confidence_reached,
            recommended_winner_variant_id=summary.recommended, draws=summary.draws)

    async def _summary(self, doc: Mapping[str, Any],
                       counters: Mapping[str, Mapping[str, Any]]) -> Summary:
        """The statistics of the counters (CPU work: on a thread, once per
        distinct counts)."""
        return await self.summaries.summarise(
            arms_of(doc, counters), minimum_sample_size=int(doc["minimumSampleSize"]),
            confidence_threshold=float(doc["confidenceThreshold"]),
            draws=self._limits.stats_draws)

    # ---------------------------------------------------------- validation ----

    async def _checked(self, tenant_id: str, spec: ExperimentSpec,
                       current: Mapping[str, Any] | None) -> dict[str, Any]:
        """The stored fields ``spec`` comes to, every rule checked (templates
        included), all problems in one 422."""
        checked = _validate.check_spec(spec, current=current, limits=self._limits)
        errors = list(checked.errors)
        known: dict[str, bool] = {}
        for path, template_id in checked.templates:
            if template_id not in known:
                known[template_id] = await self._templates.exists(tenant_id, template_id)
            if not known[template_id]:
                errors.append(FieldError(path, (
                    f"{template_id[:100]!r} is not a template of this tenant")))
        if errors:
            raise _validate.fail(errors)
        return checked.fields


# ------------------------------------------------------------------ helpers ----

def _check_editable(current: Mapping[str, Any], spec: ExperimentSpec,
                    given: Sequence[str]) -> None:
    """409 naming each field ``spec`` gives that the experiment's status keeps."""
    status = current["status"]
    allowed = _EDITABLE[status]
    refused = [name for name in given if name not in allowed]
    stored_type = str((current.get("goal") or {}).get("type") or "")
    if "goal" in allowed and spec.goal is not None and spec.goal.type not in ("", stored_type):
        refused.append("goal.type")
    if refused:
        message = (f"cannot change while the experiment is {status}; only "
                   f"{_EDITABLE_SAID[status]} can")
        raise Conflict(f"{', '.join(refused)} {message}",
                       errors=[FieldError(name, message) for name in refused])


def _count(counter: Mapping[str, Any], name: str) -> int:
    value = counter.get(name)
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def arms_of(doc: Mapping[str, Any], counters: Mapping[str, Mapping[str, Any]]) -> list[Arm]:
    """The experiment's variants as the statistics take them; successes are
    clicks (click_through) or conversions (impressions_only)."""
    success = "clicks" if (doc.get("goal") or {}).get("type") == CLICK_THROUGH \
        else "conversions"
    return [_arm(v, counters.get(str(v["id"])) or {}, success) for v in doc["variants"]]


def total_impressions(counters: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(_count(c, "impressions") for c in counters.values())


def _arm(variant: Mapping[str, Any], counter: Mapping[str, Any], success: str) -> Arm:
    """The variant's counts as the statistics take them: more successes than
    impressions (a click on an image seen from a cache) count as one each."""
    impressions = _count(counter, "impressions")
    return Arm(variant_id=str(variant["id"]), control=bool(variant.get("control")),
               impressions=impressions, successes=min(_count(counter, success), impressions))


def _no_recommendation(doc: Mapping[str, Any], summary: Summary) -> FailedPrecondition:
    missing = []
    if not summary.minimum_sample_reached:
        missing.append(f"not every variant has the minimum sample of "
                       f"{doc['minimumSampleSize']} impressions")
    if not summary.confidence_reached:
        missing.append(f"no variant is best with probability {doc['confidenceThreshold']}")
    message = ("no winner is recommended yet (" + "; ".join(missing)
               + "): name winnerVariantId to complete the experiment anyway")
    return FailedPrecondition(message, errors=[FieldError("winnerVariantId", message)])


def _changed(experiment_id: str) -> Conflict:
    return Conflict(f"experiment {experiment_id!r} changed meanwhile; retry")


def _cap_reached(count: int, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this tenant has {count} experiments; the limit is {limit} "
        "(LITHO_EXPERIMENT_MAX_PER_TENANT): delete one first", retry_after=60.0)


def _check_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise invalid("tenantId", "is required")
