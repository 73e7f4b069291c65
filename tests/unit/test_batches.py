"""The batch rules (services/renderer/_batches.py) on a real SQLite store,
with the queue, events, template versions and renders behind their ports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from litho.docstore import DocumentStore, open_document_store
from litho.errors import Conflict, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from litho.renderer.v1 import renderer_pb2 as pb
from services.renderer._batches import Batches, BatchLimits, Item, RetryLater
from services.renderer._pipeline import RenderRequest, RenderResult
from services.renderer._servicer import options_from_proto

BATCH = "bat_" + "0" * 11 + "1" + "a" * 12


class Queue:
    def __init__(self) -> None:
        self.items: list[pb.BatchItem] = []
        self.fail = False

    async def publish(self, items: Sequence[pb.BatchItem]) -> None:
        self.items += list(items[:1])
        if self.fail:
            raise Unavailable("the queue is away")
        self.items += list(items[1:])


class Events:
    def __init__(self) -> None:
        self.finished_batches: list[dict[str, Any]] = []
        self.fail = False

    async def finished(self, batch: dict[str, Any]) -> None:
        if self.fail:
            raise Unavailable("nats is away")
        self.finished_batches.append(batch)


class Templates:
    async def latest_version(self, tenant_id: str, template_id: str) -> int:
        if template_id != "tpl_known":
            raise NotFound("no such template")
        return 3


class Renders:
    def __init__(self) -> None:
        self.requests: list[RenderRequest] = []
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None
        self.started = asyncio.Event()

    async def __call__(self, request: RenderRequest) -> RenderResult:
        self.requests.append(request)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        variables = json.loads(request.variable_sets[0])
        if variables.get("broken"):
            raise InvalidArgument("the template cannot render this")
        return RenderResult(render_id="ab" * 32, blob_key="k", format=request.format,
                            content_type="image/png", width=10, height=5, cached=False,
                            template_version=request.version, size_bytes=100)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[DocumentStore]:
    docs = await open_document_store(f"sqlite:///{tmp_path / 'renderer.db'}", "litho")
    yield docs
    await docs.close()


def make(store: DocumentStore, **limits: Any) -> tuple[Batches, Queue, Events, Renders]:
    queue, events, renders = Queue(), Events(), Renders()
    batches = Batches(store, queue=queue, events=events, templates=Templates(), render=renders,
                      limits=BatchLimits(**limits), options_of=options_from_proto, worker="w1")
    return batches, queue, events, renders


def request(n: int, **fields: Any) -> pb.CreateBatchRequest:
    return pb.CreateBatchRequest(**{
        "tenant_id": "t1", "batch_id": BATCH, "template_id": "tpl_known",
        "format": pb.IMAGE_FORMAT_PNG, "metadata_json": '{"run": 7}',
        "variable_sets_json": [json.dumps({"n": i}) for i in range(n)], **fields})


async def drain(batches: Batches, queue: Queue) -> None:
    for item in queue.items:
        await batches.handle(Item(item, last_delivery=False))


async def test_a_batch_is_pinned_queued_rendered_and_finished_once(
        store: DocumentStore) -> None:
    batches, queue, events, renders = make(store)
    await batches.prepare()
    doc = await batches.create(request(4))
    assert (doc["status"], doc["version"], doc["metadata"]) == ("pending", 3, {"run": 7})
    assert [i.index for i in queue.items] == [0, 1, 2, 3]
    assert all(i.version == 3 for i in queue.items)
    await drain(batches, queue)
    # Every item delivered again (a worker died before its ack): nothing renders twice.
    await drain(batches, queue)
    assert len(renders.requests) == 4 and all(r.background for r in renders.requests)
    got = await batches.get("t1", BATCH)
    assert got["status"] == "completed" and got["counts"] == {
        "succeeded": 4, "failed": 0, "cancelled": 0}
    assert got["startedAt"] <= got["completedAt"]
    assert len(events.finished_batches) == 1
    results, token = await batches.results("t1", BATCH, status="", page_size=3, page_token="")
    assert [r["index"] for r in results] == [0, 1, 2] and token == "2"
    results, token = await batches.results("t1", BATCH, status="", page_size=3,
                                           page_token=token)
    assert [r["index"] for r in results] == [3] and token == ""
    assert results[0]["worker"] == "w1"


async def test_failures_make_it_partial_and_transient_ones_retry_until_the_last_delivery(
        store: DocumentStore) -> None:
    batches, queue, _, renders = make(store)
    await batches.create(request(3, variable_sets_json=[
        '{"n": 0}', '{"broken": true}', '{"n": 2}']))
    await batches.handle(Item(queue.items[0], last_delivery=False))
    await batches.handle(Item(queue.items[1], last_delivery=False))
    renders.error = Unavailable("the browser crashed twice")
    with pytest.raises(RetryLater):
        await batches.handle(Item(queue.items[2], last_delivery=False))
    assert (await batches.get("t1", BATCH))["status"] == "processing"
    await batches.handle(Item(queue.items[2], last_delivery=True))
    got = await batches.get("t1", BATCH)
    assert got["status"] == "partial" and got["counts"]["failed"] == 2
    failed, _ = await batches.results("t1", BATCH, status="failed", page_size=10, page_token="")
    assert [(r["index"], r["errorCode"]) for r in failed] == [
        (1, "INVALID_ARGUMENT"), (2, "UNAVAILABLE")]


async def test_cancel_writes_every_missing_result_before_it_answers(
        store: DocumentStore) -> None:
    batches, queue, events, renders = make(store)
    await batches.create(request(5))
    await batches.handle(Item(queue.items[0], last_delivery=False))
    # Item 1 is rendering when the cancel comes.
    renders.gate = asyncio.Event()
    renders.started.clear()
    in_flight = asyncio.create_task(batches.handle(Item(queue.items[1], last_delivery=False)))
    await renders.started.wait()
    doc, cancelled = await batches.cancel("t1", BATCH)
    assert cancelled == 4 and doc["status"] == "cancelled"
    assert doc["counts"] == {"succeeded": 1, "failed": 0, "cancelled": 4}
    renders.gate.set()
    await in_flight  # its render finished after the cancel: its result is not stored
    for item in queue.items[2:]:
        await batches.handle(Item(item, last_delivery=False))
    assert len(renders.requests) == 2
    got = await batches.get("t1", BATCH)
    assert got["counts"] == {"succeeded": 1, "failed": 0, "cancelled": 4}
    assert [b["status"] for b in events.finished_batches] == ["cancelled"]
    with pytest.raises(Conflict, match="cancelled"):
        await batches.cancel("t1", BATCH)


async def test_tenants_limits_and_a_refused_queue(store: DocumentStore) -> None:
    batches, queue, _, _ = make(store, max_items=3, max_item_bytes=2048)
    with pytest.raises(InvalidArgument, match="LITHO_BATCH_MAX_ITEMS"):
        await batches.create(request(4))
    with pytest.raises(NotFound):
        await batches.create(request(1, template_id="tpl_other"))
    with pytest.raises(NotFound, match="no version 9"):
        await batches.create(request(1, version=9))
    with pytest.raises(InvalidArgument, match="metadata"):
        await batches.create(request(1, metadata_json="[1]"))
    with pytest.raises(InvalidArgument, match="LITHO_BATCH_MAX_ITEM_BYTES") as big:
        await batches.create(request(2, variable_sets_json=[
            "{}", json.dumps({"x": "é" * 1500})]))
    assert big.value.errors[0].field == "/variableSets/1"
    assert queue.items == []
    await batches.create(request(2))
    with pytest.raises(Conflict):
        await batches.create(request(2))
    for other_tenant_call in (batches.get("t2", BATCH), batches.cancel("t2", BATCH),
                              batches.results("t2", BATCH, status="", page_size=1,
                                              page_token="")):
        with pytest.raises(NotFound):
            await other_tenant_call
    # The queue took one item and then failed: the batch is cancelled, nothing renders.
    other = "bat_" + "0" * 11 + "2" + "b" * 12
    queue.fail = True
    with pytest.raises(Unavailable):
        await batches.create(request(2, batch_id=other))
    got = await batches.get("t1", other)
    assert got["status"] == "cancelled" and got["counts"]["cancelled"] == 2


async def test_an_unsent_event_is_sent_by_the_sweep_and_old_batches_expire(
        store: DocumentStore) -> None:
    batches, queue, events, _ = make(store, retention=0.05)
    await batches.create(request(1))
    events.fail = True
    with pytest.raises(Unavailable):
        await batches.handle(Item(queue.items[0], last_delivery=False))
    assert (await batches.get("t1", BATCH))["status"] == "completed"
    events.fail = False
    await asyncio.sleep(0.1)
    assert await batches.sweep() == 1
    assert len(events.finished_batches) == 1
    with pytest.raises(NotFound):
        await batches.get("t1", BATCH)



async def test_a_creator_cancelled_mid_publish_leaves_no_batch_running(
        store: DocumentStore) -> None:
    batches, queue, _events, renders = make(store)
    started, forever = asyncio.Event(), asyncio.Event()

    async def stalls(items: Sequence[pb.BatchItem]) -> None:
        queue.items += list(items[:1])
        started.set()
        await forever.wait()

    queue.publish = stalls  # type: ignore[method-assign]
    creating = asyncio.create_task(batches.create(request(3)))
    await started.wait()
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    got = await batches.get("t1", BATCH)
    assert got["status"] == "cancelled" and got["counts"]["cancelled"] == 3
    await batches.handle(Item(queue.items[0], last_delivery=False))
    assert renders.requests == []


async def test_an_interrupted_cancel_is_finished_by_the_next_cancel_or_item(
        store: DocumentStore) -> None:
    batches, queue, events, renders = make(store)
    await batches.create(request(3))
    # The cancel moved the status and then died before writing any result.
    await store.collection("batches").update({"_id": BATCH}, {"$set": {"status": "cancelled"}})
    await batches.handle(Item(queue.items[0], last_delivery=False))
    assert renders.requests == []
    doc, cancelled = await batches.cancel("t1", BATCH)
    assert cancelled == 2 and doc["finished"] and doc["counts"]["cancelled"] == 3
    assert [b["status"] for b in events.finished_batches] == ["cancelled"]


async def test_an_item_given_up_on_is_failed_and_the_batch_finishes(
        store: DocumentStore) -> None:
    batches, queue, _events, _ = make(store)
    await batches.create(request(2))
    await batches.handle(Item(queue.items[0], last_delivery=False))
    await batches.give_up(queue.items[1], "the renderer died on every try")
    got = await batches.get("t1", BATCH)
    assert got["status"] == "partial" and got["counts"]["failed"] == 1
    failed, _ = await batches.results("t1", BATCH, status="failed", page_size=5, page_token="")
    assert "died on every try" in failed[0]["errorMessage"]


async def test_page_tokens_pending_items_and_page_bytes_are_bounded(
        store: DocumentStore) -> None:
    batches, queue, _, _ = make(store, max_pending_items=5, max_page_bytes=600)
    await batches.create(request(4))
    for token in ("\u00b2", "\u0661\u0662", "-1", "1" * 10):
        with pytest.raises(InvalidArgument):
            await batches.results("t1", BATCH, status="", page_size=5, page_token=token)
    other = "bat_" + "0" * 11 + "3" + "c" * 12
    with pytest.raises(ResourceExhausted, match="LITHO_BATCH_MAX_PENDING_ITEMS"):
        await batches.create(request(2, batch_id=other))
    await drain(batches, queue)
    page, token = await batches.results("t1", BATCH, status="", page_size=4, page_token="")
    assert 1 <= len(page) < 4 and token == str(page[-1]["index"])
    await batches.create(request(2, batch_id=other))  # the first one finished: room again


async def test_the_queue_adapter_raises_the_first_refusal_not_a_group() -> None:
    from services.renderer._batch_queue import NatsItemQueue

    class Refusing:
        calls = 0

        async def publish(self, subject: str, message: Any, *, msg_id: str) -> None:
            Refusing.calls += 1
            if Refusing.calls == 3:
                raise Unavailable("jetstream is away")

    items = [pb.BatchItem(batch_id=BATCH, index=i) for i in range(5)]
    with pytest.raises(Unavailable, match="jetstream is away"):
        await NatsItemQueue(Refusing()).publish(items)  # type: ignore[arg-type]


async def test_the_sweep_cancels_a_batch_whose_creator_died_or_whose_cancel_was_cut_short(
        store: DocumentStore) -> None:
    batches, _, events, renders = make(store, stale_after=0.5)
    await batches.create(request(2))
    other = "bat_" + "0" * 11 + "4" + "d" * 12
    await batches.create(request(3, batch_id=other))
    coll = store.collection("batches")
    # A creator that died before marking its items queued, and a cancel that
    # died after moving the status.
    await coll.update({"_id": BATCH}, {"$set": {"queued": False}})
    await coll.update({"_id": other}, {"$set": {"status": "cancelled", "cancelledAt": 0.0}})
    assert await batches.sweep() == 0
    assert (await batches.get("t1", BATCH))["status"] == "pending"  # not stale yet
    await asyncio.sleep(0.6)
    await batches.sweep()
    for batch_id, total in ((BATCH, 2), (other, 3)):
        got = await batches.get("t1", batch_id)
        assert got["finished"] and got["status"] == "cancelled"
        assert got["counts"]["cancelled"] == total
    assert sorted(b["_id"] for b in events.finished_batches) == sorted([BATCH, other])
    assert renders.requests == []


async def test_the_consumer_retries_then_records_a_failure_on_the_last_try_and_after(
        store: DocumentStore) -> None:
    from litho.consumers import ConsumerOptions, Delivery, Retry
    from services.renderer._batch_queue import consumer

    class Nc:
        def jetstream(self, **_: Any) -> object:
            return object()

    batches, queue, _, renders = make(store)
    await batches.create(request(3))
    options = ConsumerOptions(max_deliver=3)
    worker = consumer(Nc(), batches, options, publisher=None)  # type: ignore[arg-type]
    assert worker.options.max_deliver == 4  # one more: a try that killed its replica

    def delivery(index: int, n: int) -> Delivery[pb.BatchItem]:
        return Delivery(subject="s", payload=queue.items[index], headers={}, msg_id=None,
                        stream="LITHO_JOBS", consumer="renderer-batch", stream_sequence=1,
                        deliveries=n)

    renders.error = Unavailable("the template service is away")
    with pytest.raises(Retry):
        await worker._handler(delivery(0, 1))
    await worker._handler(delivery(0, 3))  # the last try: recorded, not retried
    await worker._handler(delivery(1, 4))  # past the tries: recorded without a render
    renders.error = RuntimeError("a bug")
    with pytest.raises(RuntimeError):
        await worker._handler(delivery(2, 2))
    await worker._handler(delivery(2, 3))
    assert len(renders.requests) == 4
    got = await batches.get("t1", BATCH)
    assert got["status"] == "failed" and got["counts"]["failed"] == 3
