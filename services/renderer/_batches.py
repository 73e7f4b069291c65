"""Batches: many renders of one template, queued as items on JetStream.

A batch is one document (``batches``); each item's outcome is one document
(``batch_results``, id ``<batchId>:<index>``), written once. Everything the
API reports — counts, progress, the final status — is read from those stored
results, never from a worker's memory, so any replica can answer and a
replica that dies loses nothing:

- an item whose result exists is never rendered again (a redelivery after a
  worker died between its result and its ack only re-runs the finishing step);
- a result is inserted with ``insert_many`` (clashes skipped), so two
  deliveries of one item can never count twice;
- cancelling writes a ``cancelled`` result for every item that has none, before
  the cancel is answered: a render still in flight then loses the insert, so
  no item becomes ``succeeded`` after the cancel is acknowledged;
- the batch finishes when it has ``totalItems`` results: one conditional
  update makes it final (exactly one caller wins), and its event is published
  with a fixed message id until it is marked sent.

Items are rendered by the normal pipeline with ``background=True``: the page
pool serves every interactive render before any batch item.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from litho import formats
from litho.docstore import DocumentStore
from litho.errors import (
    Conflict,
    DeadlineExceeded,
    FieldError,
    InvalidArgument,
    LithoError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from litho.logs import get_logger
from litho.renderer.v1 import renderer_pb2 as pb
from services.renderer._pipeline import RenderRequest, RenderResult
from services.renderer._spec import RenderOptions

log = get_logger(__name__)

BATCH_ID = re.compile(r"bat_[0-9a-f]{24}")
#: The statuses a batch can have; the last four are final.
PENDING, PROCESSING = "pending", "processing"
COMPLETED, PARTIAL, FAILED, CANCELLED = "completed", "partial", "failed", "cancelled"
STATUSES = (PENDING, PROCESSING, COMPLETED, PARTIAL, FAILED, CANCELLED)
#: The outcome of one item.
SUCCEEDED = "succeeded"
ITEM_STATUSES = (SUCCEEDED, FAILED, CANCELLED)
#: Failures a later delivery may not meet (the browser, the queue, a deadline).
_TRANSIENT = (Unavailable, ResourceExhausted, DeadlineExceeded)
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class BatchLimits:
    max_items: int = 10_000
    #: Seconds a batch and its results are kept after it was created.
    retention: float = 7 * 24 * 3600.0
    #: Longest metadata object, as JSON text.
    max_metadata_bytes: int = 16 * 1024
    #: Longest variable set of one item, as JSON text: each item is one NATS
    #: message, and NATS refuses messages over 1 MiB by default.
    max_item_bytes: int = 256 * 1024
    max_page_size: int = 1000
    #: Most bytes of results in one page, as JSON (results carry warnings).
    max_page_bytes: int = 2 * 1024 * 1024
    #: Items of one tenant's unfinished batches, in all (one tenant cannot
    #: fill the work queue every tenant shares).
    max_pending_items: int = 50_000
    #: Seconds one item's render may take, the wait for a page included;
    #: past it the item is retried (DEADLINE_EXCEEDED), then recorded failed.
    item_timeout: float = 100.0
    #: Seconds after which a batch whose items were never all queued (its
    #: creator died part-way), or whose cancel was interrupted, is cancelled
    #: by the sweep.
    stale_after: float = 300.0


class ItemQueue(Protocol):
    async def publish(self, items: Sequence[pb.BatchItem]) -> None:
        """Store every item on the work queue (idempotently by batch and index)."""


class BatchEvents(Protocol):
    async def finished(self, batch: dict[str, Any]) -> None:
        """Publish the batch's final event (idempotent by batch id)."""


class TemplateVersions(Protocol):
    async def latest_version(self, tenant_id: str, template_id: str) -> int:
        """The template's newest version; raises NotFound for an unknown template."""


Render = Callable[[RenderRequest], Awaitable[RenderResult]]


class RetryLater(Exception):
    """The item met a transient failure and has deliveries left: try again."""

    def __init__(self, error: LithoError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class Item:
    """One delivery of a queued item, as the queue adapter hands it over."""

    message: pb.BatchItem
    #: This is the last delivery the queue will make: record a failure
    #: instead of asking for another.
    last_delivery: bool


def _now() -> float:
    return time.time()


def _result_id(batch_id: str, index: int) -> str:
    return f"{batch_id}:{index:06d}"


class Batches:
    def __init__(self, store: DocumentStore, *, queue: ItemQueue, events: BatchEvents,
                 templates: TemplateVersions, render: Render,
                 limits: BatchLimits | None = None,
                 options_of: Callable[[pb.RenderOptions], RenderOptions],
                 worker: str = "") -> None:
        self._batches = store.collection("batches")
        self._results = store.collection("batch_results")
        self._queue = queue
        self._events = events
        self._templates = templates
        self._render = render
        self._limits = limits or BatchLimits()
        self._options_of = options_of
        #: Which replica renders (stored with each result, for operators).
        self._worker = worker

    async def prepare(self) -> None:
        await self._batches.ensure_index(["tenantId", "_id"])
        await self._batches.ensure_index(["expiresAt"])
        await self._batches.ensure_index(["tenantId", "finished"])
        await self._batches.ensure_index(["finished", "eventSent"])
        await self._batches.ensure_index(["finished", "queued"])
        await self._results.ensure_index(["batchId", "index"])
        await self._results.ensure_index(["batchId", "status", "index"])

    # ------------------------------------------------------------ the API

    async def create(self, request: pb.CreateBatchRequest) -> dict[str, Any]:
        total = len(request.variable_sets_json)
        if not BATCH_ID.fullmatch(request.batch_id):
            raise InvalidArgument("a batch id is bat_ and 24 lowercase hex digits",
                                  errors=[FieldError("batchId", "is not a batch id")])
        if not 1 <= total <= self._limits.max_items:
            raise InvalidArgument(
                f"a batch has 1 to {self._limits.max_items} items (LITHO_BATCH_MAX_ITEMS); "
                f"got {total}", errors=[FieldError(
                    "variableSets", f"must have 1 to {self._limits.max_items} items")])
        metadata = _metadata(request.metadata_json, self._limits.max_metadata_bytes)
        limit = self._limits.max_item_bytes
        for index, variables in enumerate(request.variable_sets_json):
            if len(variables) > limit // 4 and len(variables.encode()) > limit:
                raise InvalidArgument(
                    f"item {index} is larger than {limit} bytes as JSON "
                    "(LITHO_BATCH_MAX_ITEM_BYTES)", errors=[FieldError(
                        f"/variableSets/{index}", f"must be at most {limit} bytes as JSON")])
        fmt = formats.by_enum(request.format) or formats.DEFAULT
        latest = await self._templates.latest_version(request.tenant_id, request.template_id)
        if request.version > latest:
            raise NotFound(f"template {request.template_id} has no version {request.version} "
                           f"(its latest is {latest})")
        version = request.version or latest
        pending = sum(d["totalItems"] for d in await self._batches.find(
            {"tenantId": request.tenant_id, "finished": False}))
        if pending + total > self._limits.max_pending_items:
            raise ResourceExhausted(
                f"this tenant's unfinished batches hold {pending} items; at most "
                f"{self._limits.max_pending_items} may wait "
                "(LITHO_BATCH_MAX_PENDING_ITEMS); retry when some finish", retry_after=30)
        now = _now()
        doc: dict[str, Any] = {
            "_id": request.batch_id, "tenantId": request.tenant_id,
            "templateId": request.template_id, "version": version, "format": fmt.name,
            "status": PENDING, "totalItems": total, "createdAt": now,
            "expiresAt": now + self._limits.retention, "metadata": metadata,
            "finished": False, "eventSent": False, "queued": False,
        }
        if await self._batches.insert_many([doc]) == 0:
            raise Conflict(f"batch {request.batch_id} exists already")
        items = [pb.BatchItem(
            tenant_id=request.tenant_id, batch_id=request.batch_id, index=index,
            template_id=request.template_id, version=version, format=request.format,
            options=request.options, variables_json=variables,
            variables_from_text=request.variables_from_text,
        ) for index, variables in enumerate(request.variable_sets_json)]
        try:
            await self._queue.publish(items)
        except BaseException as exc:
            # Some items may be queued: cancel them all, so none renders (also
            # when this call was cancelled; a creator that died is the sweep's).
            log.warning("queueing a batch failed; cancelling it", batch=request.batch_id,
                        error=str(exc))
            await asyncio.shield(self._cancel_unfinished(doc))
            if isinstance(exc, ResourceExhausted):
                raise ResourceExhausted("the work queue is full; nothing will be rendered, "
                                        "retry later", retry_after=exc.retry_after) from exc
            if isinstance(exc, LithoError):
                raise Unavailable("the work queue refused the batch; nothing will be "
                                  "rendered, retry shortly") from exc
            raise
        await self._batches.update({"_id": request.batch_id}, {"$set": {"queued": True}})
        return {**doc, "queued": True}

    async def get(self, tenant_id: str, batch_id: str) -> dict[str, Any]:
        return await self._counted(await self._own(tenant_id, batch_id))

    async def listing(self, tenant_id: str, *, page_size: int, page_token: str,
                   status: str) -> tuple[list[dict[str, Any]], str]:
        flt: dict[str, Any] = {"tenantId": tenant_id}
        if page_token:
            if not BATCH_ID.fullmatch(page_token):
                raise InvalidArgument("the page token is not one this API gave",
                                      errors=[FieldError("pageToken", "is not valid")])
            flt["_id"] = {"$lt": page_token}
        if status:
            flt["status"] = status
        size = max(1, min(page_size or 50, 100))
        found = await self._batches.find(flt, sort=[("_id", -1)], limit=size + 1)
        docs = [await self._counted(d) for d in found[:size]]
        return docs, (found[size - 1]["_id"] if len(found) > size else "")

    async def results(self, tenant_id: str, batch_id: str, *, status: str, page_size: int,
                      page_token: str) -> tuple[list[dict[str, Any]], str]:
        await self._own(tenant_id, batch_id)
        flt: dict[str, Any] = {"batchId": batch_id}
        if status:
            flt["status"] = status
        if page_token:
            if not re.fullmatch(r"[0-9]{1,9}", page_token):
                raise InvalidArgument("the page token is not one this API gave",
                                      errors=[FieldError("pageToken", "is not valid")])
            flt["index"] = {"$gt": int(page_token)}
        size = max(1, min(page_size or 100, self._limits.max_page_size))
        found = await self._results.find(flt, sort=[("index", 1)], limit=size + 1)
        page: list[dict[str, Any]] = []
        used = 0
        for doc in found[:size]:
            used += len(json.dumps(doc))
            if page and used > self._limits.max_page_bytes:
                break  # results with many warnings: a shorter page
            page.append(doc)
        more = len(found) > len(page)
        return page, (str(page[-1]["index"]) if more else "")

    async def cancel(self, tenant_id: str, batch_id: str) -> tuple[dict[str, Any], int]:
        batch = await self._own(tenant_id, batch_id)
        moved = await self._batches.find_one_and_update(
            {"_id": batch_id, "tenantId": tenant_id, "status": {"$in": [PENDING, PROCESSING]}},
            {"$set": {"status": CANCELLED, "cancelledAt": _now()}}, return_document="after")
        if moved is None:
            current = await self._own(tenant_id, batch_id)
            if current["status"] != CANCELLED or current["finished"]:
                raise Conflict(f"batch {batch_id} is {current['status']}; only a pending or "
                               "processing batch can be cancelled")
            moved = current  # a cancel that was interrupted: finish it
        try:
            cancelled = await self._cancel_unfinished(moved)
        except Unavailable as exc:
            # The results are written; only the event is late (the sweep sends it).
            log.warning("a cancelled batch's event was not published", batch=batch_id,
                        error=str(exc))
            cancelled = await self._results.count({"batchId": batch_id, "status": CANCELLED})
        log.info("batch cancelled", batch=batch_id, cancelled_items=cancelled,
                 total=batch["totalItems"])
        return await self._counted(await self._own(tenant_id, batch_id)), cancelled

    async def sweep(self) -> int:
        """Delete batches (and their results) past their retention, and send
        the events of finished batches whose publish failed; returns how many
        batches were deleted."""
        for doc in await self._batches.find({"finished": True, "eventSent": False}, limit=100):
            await self._finish_if_done(doc["_id"])
        stale = _now() - self._limits.stale_after
        for flt in ({"finished": False, "queued": False, "createdAt": {"$lt": stale}},
                    {"finished": False, "status": CANCELLED, "cancelledAt": {"$lt": stale}}):
            for doc in await self._batches.find(flt, limit=100):
                log.warning("cancelling a stuck batch", batch=doc["_id"], status=doc["status"])
                await self._cancel_unfinished(doc)
        expired = await self._batches.find({"expiresAt": {"$lt": _now()}}, limit=100)
        for doc in expired:
            await self._results.delete({"batchId": doc["_id"]})
            await self._batches.delete({"_id": doc["_id"]})
        return len(expired)

    # ------------------------------------------------------------ workers

    async def handle(self, item: Item) -> None:
        """Render one item and store its result once; raises :class:`RetryLater`
        for a transient failure while deliveries are left."""
        m = item.message
        batch = await self._batches.find_one({"_id": m.batch_id, "tenantId": m.tenant_id})
        if batch is None:
            return  # expired or never stored: nothing to report to
        if await self._results.get(_result_id(m.batch_id, m.index)) is None:
            if batch["status"] == PENDING:
                await self._batches.update({"_id": m.batch_id, "status": PENDING},
                                           {"$set": {"status": PROCESSING, "startedAt": _now()}})
            if batch["status"] in (PENDING, PROCESSING):
                result = await self._outcome(m, item.last_delivery)
            else:  # cancelled (a cancel may have been cut short): record it
                result = self._result(m, status=CANCELLED)
            await self._results.insert_many([result])
        await self._finish_if_done(m.batch_id, batch["totalItems"])

    async def give_up(self, m: pb.BatchItem, reason: str) -> None:
        """The queue's last delivery of an item that never got a result (its
        handler failed each time, or a replica died rendering it): record it
        failed, so the batch still finishes."""
        log.warning("giving up on a batch item", batch=m.batch_id, index=m.index, reason=reason)
        await self._results.insert_many([self._result(
            m, status=FAILED, errorCode="UNAVAILABLE",
            errorMessage=f"the item could not be rendered: {reason}"[:_MAX_ERROR_CHARS])])
        await self._finish_if_done(m.batch_id)

    def _result(self, m: pb.BatchItem, **fields: Any) -> dict[str, Any]:
        return {"_id": _result_id(m.batch_id, m.index), "batchId": m.batch_id,
                "tenantId": m.tenant_id, "index": m.index, "at": _now(),
                "worker": self._worker, **fields}

    async def _outcome(self, m: pb.BatchItem, last_delivery: bool) -> dict[str, Any]:
        base = self._result(m)
        fmt = formats.by_enum(m.format) or formats.DEFAULT
        try:
            rendered = await self._timed_render(RenderRequest(
                tenant_id=m.tenant_id, template_id=m.template_id, version=m.version,
                variable_sets=(m.variables_json,), format=fmt.name,
                options=self._options_of(m.options),
                strict_assets=m.options.assets == pb.ASSET_POLICY_STRICT,
                refresh=m.options.cache == pb.CACHE_POLICY_REFRESH,
                coerce_strings=m.variables_from_text, background=True), m)
        except LithoError as exc:
            if isinstance(exc, _TRANSIENT) and not last_delivery:
                raise RetryLater(exc) from exc
            message = exc.message if exc.public else "internal error"
            return {**base, "status": FAILED, "errorCode": exc.status,
                    "errorMessage": message[:_MAX_ERROR_CHARS]}
        return {**base, "status": SUCCEEDED, "renderId": rendered.render_id,
                "format": rendered.format, "width": rendered.width, "height": rendered.height,
                "cached": rendered.cached, "size": rendered.size_bytes,
                "warnings": [{"url": w.url, "outcome": w.outcome.value, "reason": w.reason,
                              "hint": w.hint} for w in rendered.warnings[:20]]}

    async def _timed_render(self, request: RenderRequest, m: pb.BatchItem) -> RenderResult:
        try:
            async with asyncio.timeout(self._limits.item_timeout):
                return await self._render(request)
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"item {m.index} took longer than {self._limits.item_timeout:g} s, waiting "
                "for a page included") from exc

    # ------------------------------------------------------------ internals

    async def _own(self, tenant_id: str, batch_id: str) -> dict[str, Any]:
        found = (await self._batches.find_one({"_id": batch_id, "tenantId": tenant_id})
                 if BATCH_ID.fullmatch(batch_id) else None)
        if found is None:
            raise NotFound(f"batch {batch_id[:40]} not found")
        return found

    async def _counts(self, batch_id: str) -> dict[str, int]:
        counts = await asyncio.gather(*(
            self._results.count({"batchId": batch_id, "status": s}) for s in ITEM_STATUSES))
        return dict(zip(ITEM_STATUSES, counts, strict=True))

    async def _counted(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with its counts: stored once it is final, else counted now."""
        if not batch.get("finished"):
            batch = {**batch, "counts": await self._counts(batch["_id"])}
        return batch

    async def _cancel_unfinished(self, batch: dict[str, Any]) -> int:
        # Every index, a chunk at a time: insert_many skips those with a result,
        # so nothing is read and memory does not grow with the batch.
        now = _now()
        cancelled = 0
        for start in range(0, batch["totalItems"], 1000):
            cancelled += await self._results.insert_many([
                {"_id": _result_id(batch["_id"], i), "batchId": batch["_id"],
                 "tenantId": batch["tenantId"], "index": i, "at": now, "status": CANCELLED}
                for i in range(start, min(start + 1000, batch["totalItems"]))])
        if batch["status"] != CANCELLED:
            await self._batches.update({"_id": batch["_id"], "finished": False},
                                       {"$set": {"status": CANCELLED, "cancelledAt": now}})
        await self._finish_if_done(batch["_id"])
        return cancelled

    async def _finish_if_done(self, batch_id: str, total: int | None = None) -> None:
        """Finish the batch if every item has its result. ``total`` (its
        ``totalItems``, which never changes) saves reading the batch again on
        the way that is taken after nearly every item: not done yet."""
        if total is not None and await self._results.count({"batchId": batch_id}) < total:
            return
        batch = await self._batches.get(batch_id)
        if batch is None:
            return
        if not batch["finished"]:
            if await self._results.count({"batchId": batch_id}) < batch["totalItems"]:
                return
            counts = await self._counts(batch_id)
            status = _final_status(batch["status"], counts)
            won = await self._batches.find_one_and_update(
                # Only from the status it was computed from: a cancel that
                # lands meanwhile makes this miss, and the next try sees it.
                {"_id": batch_id, "finished": False, "status": batch["status"]},
                {"$set": {"finished": True, "status": status, "completedAt": _now(),
                          "counts": counts}},
                return_document="after")
            if won is None:
                current = await self._batches.get(batch_id)
                if current is not None and not current["finished"]:
                    await self._finish_if_done(batch_id)  # the status moved: again
                return  # else another worker finished it, and publishes
            batch = won
            log.info("batch finished", batch=batch_id, status=status, **counts)
        if not batch.get("eventSent"):
            await self._events.finished(batch)
            await self._batches.update({"_id": batch_id}, {"$set": {"eventSent": True}})


def _final_status(status: str, counts: dict[str, int]) -> str:
    if status == CANCELLED or counts[CANCELLED]:
        return CANCELLED
    if counts[FAILED] == 0:
        return COMPLETED
    return FAILED if counts[SUCCEEDED] == 0 else PARTIAL


def _metadata(text: str, max_bytes: int) -> dict[str, Any]:
    if not text:
        return {}
    if len(text.encode()) > max_bytes:
        raise InvalidArgument(
            f"metadata is larger than {max_bytes} bytes as JSON",
            errors=[FieldError("metadata", f"must be at most {max_bytes} bytes as JSON")])
    value = json.loads(text)
    if not isinstance(value, dict):
        raise InvalidArgument("metadata must be an object",
                              errors=[FieldError("metadata", "must be an object")])
    return value


def timestamp(seconds: float | None) -> Timestamp | None:
    """A stored time (seconds since the epoch) as a protobuf Timestamp; None stays None."""
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return ts
