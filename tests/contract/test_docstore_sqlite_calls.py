"""How the SQLite adapter's calls behave around each other on one store:
cancellation, reads during a write, and a long write's effect on the loop.

These use a real SQLite file. Each test is bound by counts and steps (loop
iterations, reads answered), not by how long anything takes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from litho.docstore import DuplicateKey, open_document_store
from litho.docstore._sqlite import SqliteDocumentStore


async def _open(path: Path) -> SqliteDocumentStore:
    store = await open_document_store(f"sqlite://{path}", "unused")
    assert isinstance(store, SqliteDocumentStore)
    return store


def _seed(path: Path, table: str, docs: list[dict[str, Any]]) -> None:
    """Write many documents around the adapter, in one transaction (fast)."""
    with sqlite3.connect(path) as db:
        db.executemany(f'INSERT INTO "{table}" (_id, doc) VALUES (?, ?)',
                       [(d["_id"], json.dumps(d)) for d in docs])
    db.close()


async def _zero() -> int:
    return 0


async def test_cancelled_calls_leave_every_later_call_working_and_lose_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    """A call cancelled at any point (queued behind a slow read and a slow
    write, or running) must not leave a transaction open: every later call
    works, and every write that was acknowledged is there after reopening."""
    path = tmp_path / "docs.db"
    store = await _open(path)
    jobs = store.collection("jobs")
    await jobs.insert({"_id": "counter", "n": 0, "m": 0})
    # Slow to scan (every condition walks 30 array elements per document).
    _seed(path, "jobs", [{"_id": f"d{i:04}", "tags": [f"t{j}" for j in range(30)], "bulk": 0}
                         for i in range(1500)])
    victims: list[Callable[[int], Coroutine[Any, Any, object]]] = [
        lambda k: jobs.update({"_id": "counter"}, {"$inc": {"n": 1, "m": 1}}),
        lambda k: jobs.find_one_and_update({"_id": "counter"}, {"$inc": {"n": 1, "m": 1}}),
        lambda k: jobs.update({"_id": f"up{k}"}, {"$inc": {"n": 1}}, upsert=True),
        lambda k: jobs.replace({"_id": f"r{k}"}, {"_id": f"r{k}", "v": k}, upsert=True),
        lambda k: jobs.insert({"_id": f"i{k}"}),
        lambda k: jobs.delete({"_id": f"i{k - 1}"}),
    ]
    acknowledged: dict[str, Any] = {}
    bulk_done = 0
    cancelled = 0
    plan = [(j, victim, with_write) for j in range(4) for victim in victims
            for with_write in (False, True)]
    for k, (steps, victim_call, with_write) in enumerate(plan):
        slow_read = asyncio.create_task(jobs.count({"tags": "nope"}))
        slow_write = asyncio.create_task(
            jobs.update({"tags": "t29"}, {"$inc": {"bulk": 1}}) if with_write else _zero())
        await asyncio.sleep(0)
        victim = asyncio.create_task(victim_call(k))
        for _ in range(steps):  # cancel after 0..3 loop iterations
            await asyncio.sleep(0)
        cancelled += victim.cancel()
        await asyncio.gather(victim, return_exceptions=True)
        assert await slow_read == 0
        assert await slow_write == (1500 if with_write else 0)
        bulk_done += with_write
        # Every kind of call still works after it, and each write counts.
        assert await jobs.update({"_id": "counter"}, {"$inc": {"n": 1, "m": 1}}) == 1
        claimed = await jobs.find_one_and_update(
            {"_id": "counter"}, {"$set": {"last": k}}, return_document="after")
        assert claimed is not None and claimed["last"] == k
        await jobs.insert({"_id": f"ack{k}", "k": k})
        assert await jobs.replace({"_id": f"ack{k}"}, {"_id": f"ack{k}", "k": k, "r": True})
        acknowledged[f"ack{k}"] = {"_id": f"ack{k}", "k": k, "r": True}
        await jobs.insert({"_id": f"gone{k}"})
        assert await jobs.delete({"_id": f"gone{k}"}) == 1
    assert cancelled > 0  # some victims were cancelled before they finished
    final = await jobs.get("counter")
    await store.close()

    store = await _open(path)
    try:
        jobs = store.collection("jobs")
        for doc_id, doc in acknowledged.items():
            assert await jobs.get(doc_id) == doc
        assert await jobs.count({"_id": {"$gte": "gone", "$lt": "gonf"}}) == 0
        assert await jobs.count({"bulk": bulk_done}) == 1500
        counter = await jobs.get("counter")
        # The cancelled increments ran whole or not at all.
        assert counter == final and counter is not None and counter["n"] == counter["m"]
        assert len(plan) <= counter["n"] <= len(plan) + 16
        # The file's write lock is free: another connection can write.
        other = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        await store.close()


async def test_reads_never_see_an_update_that_rolls_back(tmp_path: Path) -> None:
    """An update that fails on its last match is rolled back; a read issued
    while it runs sees the documents as they were, never its values."""
    path = tmp_path / "docs.db"
    store = await _open(path)
    try:
        coll = store.collection("q")
        await coll.ensure_index(["u"], unique=True)
        n = 3000
        # Row order: largest u first, u=10 last, so the clash with "trap"
        # comes after every other match has been rewritten.
        _seed(path, "q", [{"_id": f"d{i}", "g": 1, "u": 10 * (i + 1), "pad": "x" * 200}
                          for i in reversed(range(n))])
        await coll.insert({"_id": "trap", "g": 2, "u": 11})
        update = asyncio.create_task(coll.update({"g": 1}, {"$inc": {"u": 1}}))
        seen: list[int] = []
        while not update.done():
            # The first match's new value, and a value only the old state has.
            seen.append(await coll.count({"u": 10 * n + 1}))
            seen.append(1 - await coll.count({"u": 10 * n}))
        with pytest.raises(DuplicateKey):
            await update
        assert seen and not any(seen), f"{sum(seen)} of {len(seen)} reads saw the update"
        assert await coll.count({"u": 10 * n}) == 1
    finally:
        await store.close()


async def test_a_large_update_leaves_the_event_loop_and_reads_free(tmp_path: Path) -> None:
    """Rewriting many documents runs on the database thread, not the event
    loop: other tasks run and reads are answered while it works."""
    path = tmp_path / "docs.db"
    store = await _open(path)
    try:
        coll = store.collection("jobs")
        await coll.insert({"_id": "seed", "t": "b"})
        n = 20_000
        _seed(path, "jobs", [{"_id": f"d{i}", "t": "a", "state": "queued", "pad": "x" * 500}
                             for i in range(n)])
        update = asyncio.create_task(coll.update({"t": "a"}, {"$set": {"state": "cancelled"}}))
        answered = 0
        while not update.done():
            assert await coll.get("seed") == {"_id": "seed", "t": "b"}
            answered += 1
        assert await update == n
        # Before, the rewrite ran on the loop between two database calls, so
        # only the reads queued at those calls were answered (2 or 3).
        assert answered >= 20, answered
        assert await coll.count({"state": "cancelled"}) == n
    finally:
        await store.close()


async def test_a_write_never_joins_a_transaction_left_open(tmp_path: Path) -> None:
    """Should a transaction ever be left open on the writer (none can be
    now: each opens and ends within one call), the next write does not land
    inside it and vanish; it rolls the stray one back and commits alone."""
    path = tmp_path / "docs.db"
    store = await _open(path)
    coll = store.collection("jobs")
    await coll.insert({"_id": "a"})
    await store._conn.execute("BEGIN IMMEDIATE")
    await store._conn.execute("""INSERT INTO jobs (_id, doc) VALUES ('stray', '{"_id":"stray"}')""")
    await coll.insert({"_id": "b"})
    assert await coll.delete({"_id": "a"}) == 1
    await store.close()
    store = await _open(path)
    try:
        coll = store.collection("jobs")
        assert await coll.find({}) == [{"_id": "b"}]
    finally:
        await store.close()


async def test_a_call_cancelled_while_queued_is_skipped_not_run_later(tmp_path: Path) -> None:
    """Abandoned calls must not pile up ahead of everyone else's: one whose
    caller was cancelled before its turn never runs."""
    import threading

    from litho.docstore._sqlite import _call

    store = await _open(tmp_path / "docs.db")
    release = threading.Event()
    ran: list[int] = []

    def blocker(db: sqlite3.Connection) -> None:
        release.wait(30)

    def record(k: int, db: sqlite3.Connection) -> int:
        ran.append(k)
        return k

    busy = asyncio.ensure_future(_call(store._reader, blocker))
    queued = [asyncio.ensure_future(_call(store._reader, partial(record, k)))
              for k in range(20)]
    await asyncio.sleep(0)
    for task in queued[:19]:
        task.cancel()
    # Their callers are gone (the cancellations delivered) before the thread frees up.
    await asyncio.gather(*queued[:19], return_exceptions=True)
    release.set()
    await busy
    assert await queued[19] == 19
    assert ran == [19]
    await store.close()


async def test_a_first_read_takes_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "docs.db"
    first = await _open(path)
    await first.collection("jobs").insert({"_id": "a"})
    await first.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        store = await open_document_store(f"sqlite://{path}", "unused")
        # A fresh store reads a collection it has not touched yet.
        assert await store.collection("jobs").get("a") == {"_id": "a"}
        await store.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_cancelled_close_still_stops_both_threads(tmp_path: Path) -> None:
    import threading

    before = set(threading.enumerate())
    store = await _open(tmp_path / "docs.db")
    started = {t for t in set(threading.enumerate()) - before
               if "_connection_worker_thread" in t.name}
    assert len(started) == 2  # the writer's and the reader's (aiosqlite's workers)
    await store.collection("jobs").insert({"_id": "a"})
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await store.close()
    for thread in started:
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive()


async def test_an_integer_past_64_bits_in_a_filter_is_invalid_not_a_crash(
    tmp_path: Path,
) -> None:
    from litho.errors import InvalidArgument

    store = await _open(tmp_path / "docs.db")
    with pytest.raises(InvalidArgument, match="out of range"):
        await store.collection("jobs").count({"n": 2**70})
    await store.close()
