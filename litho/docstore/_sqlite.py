"""The embedded document store: one SQLite table per collection, one JSON text
per document, filters compiled to ``json_extract``/``json_type`` SQL.

Matching follows MongoDB so that code tested here behaves the same in
production: values of different JSON types never compare equal or ordered
(``true`` is not ``1``, a range on numbers skips strings), ``1`` equals
``1.0``, ``None`` matches null and missing fields, and a condition on an
array field holds when it holds for any element. Sorting ranks types as
MongoDB does (missing/null, numbers, strings, objects, arrays, booleans).
Not emulated: dotted paths that pass through arrays, and sorting arrays by
their smallest or largest element.

Lookups by ``_id`` use the primary key. ``ensure_index`` builds an expression
index over ``json_type(doc, path), json_extract(doc, path)`` per field, the
very expressions the filter compiler emits, so an equality or range condition
on an indexed field is an index search (one for the scalar value, one for
documents whose field is an array), not a table scan. Unique indexes add a
second index that treats a missing field as null, as MongoDB does, so two
documents without the field clash.

Every operation is one function run on a connection's aiosqlite thread, and
every write is one ``BEGIN IMMEDIATE`` transaction inside that function
(which also holds off other connections to the file), so a read-modify-write
is atomic, a failed call writes nothing, and a cancelled coroutine cannot
leave a transaction open or another call's statements inside it. Updates
(``$set``, ``$inc``, ``$setOnInsert``) are applied in Python on that thread,
never on the event loop, a batch of matches at a time. Reads run on a second
connection with its own thread: under WAL they see the last commit, never a
write in progress, and are answered while a long write runs.

Only names that match a strict pattern reach SQL text; every value is bound.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from litho.docstore import DuplicateKey
from litho.docstore._checks import NAME, OPERATORS, check_depth, check_field
from litho.docstore._port import Document, Filter, ReturnDocument, Sort, UpdateDoc
from litho.docstore._update import (
    Update,
    apply_update,
    check_return,
    check_update,
    upsert_seed,
)
from litho.errors import InvalidArgument, LithoError, Unavailable
from litho.logs import get_logger

log = get_logger(__name__)

_RANGE_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# MongoDB's cross-type sort order; both booleans share a rank and sort by 0/1.
_TYPE_RANK = (
    "CASE {t} WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2 "
    "WHEN 'object' THEN 3 WHEN 'array' THEN 4 WHEN 'false' THEN 5 WHEN 'true' THEN 5 "
    "ELSE 0 END"
)
_TABLE_COLUMNS = "(_id TEXT PRIMARY KEY, doc TEXT NOT NULL)"
#: Matches a multi-document update decodes and rewrites at a time, so its
#: memory is bounded by this, not by how many documents match.
_UPDATE_BATCH = 500
_T = TypeVar("_T")
Params = list[Any]
#: Builds SQL for one condition from the SQL of a JSON value's type and value.
_Match = Callable[[str, str], tuple[str, Params]]


async def open_sqlite_store(path: str, *, busy_timeout_ms: int = 5000) -> SqliteDocumentStore:
    """Open (creating it and its directory if needed) the database at ``path``,
    or a private in-memory database for ``":memory:"``."""
    conns: list[aiosqlite.Connection] = []
    try:
        if path != ":memory:":
            await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so a statement outside the
        # adapter's explicit transactions commits alone.
        for _ in range(1 if path == ":memory:" else 2):
            conn = await aiosqlite.connect(path, isolation_level=None)
            conns.append(conn)
            await _run(conn, f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await _run(conns[0], "PRAGMA journal_mode = WAL")
        await _run(conns[0], "PRAGMA synchronous = NORMAL")
    except BaseException as exc:
        # Cancelled or failed half-way: stop the threads already started
        # (they are not daemon threads: a leaked one keeps the process alive).
        await asyncio.shield(_close_all(conns))
        if isinstance(exc, OSError | sqlite3.Error):
            raise Unavailable(f"cannot open the SQLite document store at {path}: {exc}") from exc
        raise
    # A private in-memory database cannot be shared with a second connection;
    # it reads on its writer, which still never shows uncommitted data because
    # a transaction never spans two calls on the thread.
    return SqliteDocumentStore(conns[0], conns[-1])


class SqliteDocumentStore:
    """Two connections, each with its own aiosqlite thread: writes go to
    ``_conn``, reads to ``_reader``. Every operation is one function run on
    its connection's thread (:func:`_call`); a write transaction opens and
    ends inside that function, so it cannot be left open by a cancelled
    coroutine, no other statement can run inside it, and under WAL a read
    sees the last commit, never a write in progress, and is not held up by it."""

    def __init__(self, conn: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._conn = conn
        self._reader = reader
        self._tables: set[str] = set()

    def collection(self, name: str) -> SqliteCollection:
        if not NAME.fullmatch(name) or name.lower().startswith("sqlite_"):
            raise ValueError(
                f"invalid collection name {name!r}: use letters, digits and _, "
                "not starting with a digit or sqlite_"
            )
        return SqliteCollection(self, name)

    async def ping(self) -> None:
        with _translated("ping"):
            await self._reader.execute_fetchall("SELECT 1")

    async def close(self) -> None:
        # Shielded: a cancelled close still stops both threads.
        conns = [self._conn] if self._reader is self._conn else [self._conn, self._reader]
        await asyncio.shield(_close_all(conns))

    async def _write(self, collection: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` in one write transaction on the writer's thread."""
        with _translated(collection):
            return await _call(self._conn, partial(
                _transaction, body, ensure=partial(self._ensure_table, collection)))

    async def _read(self, collection: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` on one snapshot on the reader's thread."""
        with _translated(collection):
            return await _call(self._reader, partial(
                _snapshot, body, ensure=partial(self._ensure_table, collection)))

    def _ensure_table(self, name: str, db: sqlite3.Connection) -> None:
        """Create the collection's table once, on the calling connection's
        thread, in autocommit before the call's transaction (so a rolled-back
        write cannot take the table with it, and ``IF NOT EXISTS`` takes no
        write lock when the table exists: a first read never waits for one)."""
        if name in self._tables:
            return
        db.execute(f'CREATE TABLE IF NOT EXISTS "{name}" {_TABLE_COLUMNS}')
        self._tables.add(name)


class SqliteCollection:
    def __init__(self, store: SqliteDocumentStore, name: str) -> None:
        self._store = store
        self._name = name
        self._table = f'"{name}"'

    async def insert(self, doc: Document) -> None:
        doc_id, text = _encode(doc, self._name)
        sql = f"INSERT INTO {self._table} (_id, doc) VALUES (?, ?)"
        def insert(db: sqlite3.Connection) -> None:
            db.execute(sql, (doc_id, text))

        await self._store._write(self._name, insert)

    async def insert_many(self, docs: Sequence[Document]) -> int:
        rows = [_encode(doc, self._name) for doc in docs]
        sql = f"INSERT OR IGNORE INTO {self._table} (_id, doc) VALUES (?, ?)"

        def insert(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(sql, rows)
            return db.total_changes - before

        return await self._store._write(self._name, insert) if rows else 0

    async def get(self, doc_id: str) -> Document | None:
        return await self.find_one({"_id": doc_id})

    async def find_one(self, flt: Filter) -> Document | None:
        found = await self.find(flt, limit=1)
        return found[0] if found else None

    async def find(
        self,
        flt: Filter,
        *,
        sort: Sort | None = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> list[Document]:
        where, params = _compile_filter(flt)
        order = _compile_sort(sort or ())
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValueError(f"skip must be a non-negative int, got {skip!r}")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ValueError(f"limit must be None or a non-negative int, got {limit!r}")
        found = await self._store._read(
            self._name, lambda db: self._select(db, where, params, order, skip, limit))
        return [doc for _, doc in found]

    def _select(
        self, db: sqlite3.Connection, where: str, params: Params, order: str, skip: int,
        limit: int | None,
    ) -> list[tuple[str, Document]]:
        """``(_id, decoded)`` of the matches that decode (on a database thread)."""
        sql = f"SELECT _id, doc FROM {self._table} WHERE {where}"
        if order:
            sql += f" ORDER BY {order}"
        sql += " LIMIT ? OFFSET ?"
        found: list[tuple[str, Document]] = []
        offset = skip
        # A document that cannot be decoded is left out; the limit still
        # counts documents returned, so read on past it (rarely needed).
        while True:
            wanted = -1 if limit is None else limit - len(found)
            rows = db.execute(sql, (*params, wanted, offset)).fetchall()
            found += [(doc_id, doc) for doc_id, text in rows
                      if (doc := self._decode(doc_id, text)) is not None]
            offset += len(rows)
            if limit is None or len(found) >= limit or len(rows) < wanted:
                return found

    def _decode(self, doc_id: str, text: str) -> Document | None:
        """A stored document, or None (logged) for one that cannot be read:
        one such document must not break every listing it falls into, and
        count and delete, which do not decode, still reach it."""
        try:
            doc: Document = json.loads(text)
        except (RecursionError, ValueError) as exc:
            log.error("skipping a stored document that cannot be decoded",
                      collection=self._name, id=doc_id, error=type(exc).__name__)
            return None
        return doc

    async def count(self, flt: Filter) -> int:
        where, params = _compile_filter(flt)
        sql = f"SELECT COUNT(*) FROM {self._table} WHERE {where}"
        return await self._store._read(
            self._name, lambda db: int(db.execute(sql, params).fetchone()[0]))

    async def replace(self, flt: Filter, doc: Document, *, upsert: bool = False) -> bool:
        where, params = _compile_filter(flt)
        doc_id, text = _encode(doc, self._name)

        def replace(db: sqlite3.Connection) -> bool:
            found = db.execute(
                f"SELECT _id FROM {self._table} WHERE {where} LIMIT 1", params).fetchone()
            if found:
                if found[0] != doc_id:
                    raise ValueError(
                        f"replace: the replacement's _id {doc_id!r} differs from the "
                        f"matched document's {found[0]!r}; _id cannot change"
                    )
                db.execute(f"UPDATE {self._table} SET doc = ? WHERE _id = ?", (text, doc_id))
                return True
            if not upsert:
                return False
            db.execute(f"INSERT INTO {self._table} (_id, doc) VALUES (?, ?)", (doc_id, text))
            return True

        return await self._store._write(self._name, replace)

    async def update(self, flt: Filter, update: UpdateDoc, *, upsert: bool = False) -> int:
        checked = check_update(update, self._name)
        where, params = _compile_filter(flt)
        seed = upsert_seed(flt, checked) if upsert else None

        def update_matches(db: sqlite3.Connection) -> int:
            # The matches are fixed first (only their row numbers are held),
            # then rewritten a batch at a time, so memory stays bounded however
            # many match; all in one transaction, so a failure writes nothing.
            rowids = [r for (r,) in db.execute(
                f"SELECT rowid FROM {self._table} WHERE {where}", params)]
            changed = 0
            for start in range(0, len(rowids), _UPDATE_BATCH):
                batch = rowids[start:start + _UPDATE_BATCH]
                rows = db.execute(
                    f"SELECT _id, doc FROM {self._table} WHERE rowid IN "
                    f"({', '.join('?' * len(batch))})", batch).fetchall()
                new: list[tuple[str, str]] = []
                for doc_id, text in rows:
                    if (doc := self._decode(doc_id, text)) is not None:
                        apply_update(doc, checked, self._name, inserting=False)
                        new.append((_encode(doc, self._name)[1], doc_id))
                db.executemany(f"UPDATE {self._table} SET doc = ? WHERE _id = ?", new)
                changed += len(new)
            if rowids or seed is None:
                return changed
            self._insert_seed(db, seed, checked)
            return 1

        return await self._store._write(self._name, update_matches)

    async def find_one_and_update(
        self,
        flt: Filter,
        update: UpdateDoc,
        *,
        sort: Sort | None = None,
        upsert: bool = False,
        return_document: ReturnDocument = "before",
    ) -> Document | None:
        checked = check_update(update, self._name)
        check_return(return_document)
        where, params = _compile_filter(flt)
        order = _compile_sort(sort or ())
        seed = upsert_seed(flt, checked) if upsert else None

        def claim(db: sqlite3.Connection) -> Document | None:
            found = self._select(db, where, params, order, 0, 1)
            if found:
                doc_id, before = found[0]
                after = copy.deepcopy(before)
                apply_update(after, checked, self._name, inserting=False)
                db.execute(f"UPDATE {self._table} SET doc = ? WHERE _id = ?",
                           (_encode(after, self._name)[1], doc_id))
                return before if return_document == "before" else after
            if seed is None:
                return None
            inserted = self._insert_seed(db, seed, checked)
            return None if return_document == "before" else inserted

        return await self._store._write(self._name, claim)

    def _insert_seed(self, db: sqlite3.Connection, seed: Document, update: Update) -> Document:
        """Insert an upsert's document; a clash on ``_id`` means it exists but
        the rest of the filter did not match, which MongoDB reports the same way."""
        apply_update(seed, update, self._name, inserting=True)
        doc_id, text = _encode(seed, self._name)
        db.execute(f"INSERT INTO {self._table} (_id, doc) VALUES (?, ?)", (doc_id, text))
        return seed

    async def delete(self, flt: Filter) -> int:
        where, params = _compile_filter(flt)
        sql = f"DELETE FROM {self._table} WHERE {where}"
        return await self._store._write(self._name, lambda db: db.execute(sql, params).rowcount)

    async def ensure_index(self, fields: Sequence[str], *, unique: bool = False) -> None:
        if isinstance(fields, str) or not fields or len(set(fields)) != len(fields):
            raise ValueError(f"ensure_index needs distinct field names, got {fields!r}")
        for field in fields:
            check_field(field)
        if list(fields) == ["_id"]:
            await self._store._write(self._name, lambda db: None)  # the table, if new
            return  # the primary key
        digest = hashlib.sha256("\0".join(fields).encode()).hexdigest()[:16]
        # The filter compiler's own expressions, so SQLite can match them; the
        # index also holds documents whose field is an array (type 'array'),
        # which the compiled filter finds through a second index search.
        lookup = ", ".join(
            "_id" if f == "_id" else f"json_type(doc, {_path(f)}), json_extract(doc, {_path(f)})"
            for f in fields
        )
        statements = [f'CREATE INDEX IF NOT EXISTS "ix_{self._name}_{digest}" '
                      f"ON {self._table} ({lookup})"]
        if unique:
            # Per field, a type class and a value: numbers share a class so 1
            # clashes with 1.0 but not with true, and missing and null both
            # become (null, 0). Created first: existing duplicates then leave
            # no index behind.
            key = ", ".join(
                f"CASE json_type(doc, {_path(f)}) WHEN 'real' THEN 'integer' "
                f"ELSE IFNULL(json_type(doc, {_path(f)}), 'null') END, "
                f"IFNULL(json_extract(doc, {_path(f)}), 0)"
                for f in fields
            )
            statements.insert(0, f'CREATE UNIQUE INDEX IF NOT EXISTS "ux_{self._name}_{digest}" '
                                 f"ON {self._table} ({key})")

        def create(db: sqlite3.Connection) -> None:
            for sql in statements:
                db.execute(sql)

        await self._store._write(self._name, create)


async def _call(conn: aiosqlite.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``body(connection)`` as one call on ``conn``'s thread.

    aiosqlite runs every call as a function on its one thread, in order, and
    would run a queued function even if the coroutine awaiting it is
    cancelled; ``_execute`` is how it queues one (private, so aiosqlite is
    pinned, and the contract tests exercise it). A cancelled caller never
    leaves a half-done transaction behind: ``body`` is skipped if it has not
    started, and otherwise runs whole or, if it fails, rolls back.
    """
    execute = cast(Callable[[Callable[[], _T]], Awaitable[_T]], conn._execute)
    abandoned = threading.Event()

    def run() -> _T:
        # A caller that was cancelled while this waited in the queue is gone:
        # its work is skipped, so abandoned scans cannot pile up ahead of
        # everyone else's calls. One already running runs whole.
        if abandoned.is_set():
            raise asyncio.CancelledError
        return body(conn._conn)

    try:
        return await execute(run)
    except asyncio.CancelledError:
        abandoned.set()
        raise


def _transaction(body: Callable[[sqlite3.Connection], _T], db: sqlite3.Connection, *,
                 ensure: Callable[[sqlite3.Connection], None] | None = None) -> _T:
    """``body`` in one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's
    write lock up front, so no other connection changes a match between
    reading and writing it; ``ensure`` runs first, in autocommit. Runs on the
    connection's thread."""
    _end_stray_transaction(db)
    if ensure is not None:
        ensure(db)
    db.execute("BEGIN IMMEDIATE")
    try:
        result = body(db)
        db.execute("COMMIT")
        return result
    finally:
        if db.in_transaction:  # body or COMMIT failed
            db.execute("ROLLBACK")


def _snapshot(body: Callable[[sqlite3.Connection], _T], db: sqlite3.Connection, *,
              ensure: Callable[[sqlite3.Connection], None] | None = None) -> _T:
    """``body``'s reads on one snapshot (a deferred read transaction);
    ``ensure`` runs first, in autocommit."""
    _end_stray_transaction(db)
    if ensure is not None:
        ensure(db)
    db.execute("BEGIN")
    try:
        return body(db)
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def _end_stray_transaction(db: sqlite3.Connection) -> None:
    """Every transaction opens and ends within one call, so none can be open
    here; if one ever were, joining it would lose this write with it."""
    if db.in_transaction:
        log.error("rolling back a SQLite transaction left open by an earlier call")
        db.execute("ROLLBACK")


async def _close_all(conns: Sequence[aiosqlite.Connection]) -> None:
    errors = [e for e in await asyncio.gather(*(c.close() for c in conns),
                                              return_exceptions=True) if e is not None]
    if errors:
        raise errors[0]


async def _run(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Execute one statement, close its cursor, and return how many rows it changed."""
    cursor = await conn.execute(sql, params)
    try:
        return cursor.rowcount
    finally:
        await cursor.close()


@contextmanager
def _translated(collection: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise DuplicateKey(
                f"a document with the same key already exists in {collection}"
            ) from exc
        raise LithoError(f"document store integrity error in {collection}") from exc
    except sqlite3.OperationalError as exc:
        raise Unavailable(f"SQLite document store unavailable ({collection}): {exc}") from exc
    except OverflowError as exc:
        # An integer outside SQLite's (and BSON's) 64 bits in a filter.
        raise InvalidArgument(f"a number in the query is out of range ({collection})") from exc
    except sqlite3.Error as exc:
        raise LithoError(f"SQLite document store error in {collection}") from exc


def _encode(doc: Document, collection: str) -> tuple[str, str]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"a document must be a dict, got {type(doc).__name__}")
    doc_id = doc.get("_id")
    if not isinstance(doc_id, str):
        raise ValueError(f"a document needs a string _id, got {doc_id!r}")
    check_depth(doc, collection)
    return doc_id, _dumps(doc)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"documents must be JSON-compatible: {exc}") from exc


def _path(field: str) -> str:
    # Safe to inline: _check_field admitted only [A-Za-z0-9_.].
    return f"'$.{field}'"


def _compile_filter(flt: Filter) -> tuple[str, Params]:
    if not isinstance(flt, Mapping):
        raise ValueError(f"a filter must be a mapping, got {type(flt).__name__}")
    clauses: list[str] = []
    params: Params = []
    for field, cond in flt.items():
        check_field(field)
        if isinstance(cond, Mapping):
            if not cond:
                raise ValueError(f"empty operator document for {field!r}")
            for op, operand in cond.items():
                sql, ps = _compile_operator(field, op, operand)
                clauses.append(sql)
                params += ps
        else:
            sql, ps = _equal(field, cond)
            clauses.append(sql)
            params += ps
    return (" AND ".join(clauses) or "1"), params


def _compile_operator(field: str, op: object, operand: object) -> tuple[str, Params]:
    if op == "$in":
        if not isinstance(operand, list | tuple):
            raise ValueError(f"$in on {field!r} needs a list, got {operand!r}")
        alternatives = [_equal(field, value) for value in operand]
        if not alternatives:
            return "0", []
        return (
            "(" + " OR ".join(sql for sql, _ in alternatives) + ")",
            [p for _, ps in alternatives for p in ps],
        )
    if isinstance(op, str) and op in _RANGE_SQL:
        return _range(field, _RANGE_SQL[op], operand)
    raise ValueError(f"unsupported operator {op!r} on {field!r}; the port supports {OPERATORS}")


def _equal(field: str, value: object) -> tuple[str, Params]:
    if field == "_id":
        # _id is always a string, held in its own primary-key column.
        if isinstance(value, str):
            return "_id = ?", [value]
        if value is None or isinstance(value, int | float):
            return "0", []
    if value is None:
        return _on_field(field, lambda t, _: (f"({t} IS NULL OR {t} = 'null')", []))
    if isinstance(value, bool):
        literal = "'true'" if value else "'false'"
        return _on_field(field, lambda t, _: (f"{t} = {literal}", []))
    if isinstance(value, int | float):
        return _on_field(field, lambda t, v: (f"({t} IN ('integer', 'real') AND {v} = ?)", [value]))
    if isinstance(value, str):
        return _on_field(field, lambda t, v: (f"({t} = 'text' AND {v} = ?)", [value]))
    raise ValueError(
        f"filter value for {field!r} must be a string, number, bool or None, got {value!r}"
    )


def _range(field: str, sql_op: str, operand: object) -> tuple[str, Params]:
    if isinstance(operand, str):
        if field == "_id":
            return f"_id {sql_op} ?", [operand]
        types = "= 'text'"
    elif isinstance(operand, int | float) and not isinstance(operand, bool):
        if field == "_id":
            return "0", []
        types = "IN ('integer', 'real')"
    else:
        raise ValueError(f"range operand for {field!r} must be a number or string, got {operand!r}")
    return _on_field(field, lambda t, v: (f"({t} {types} AND {v} {sql_op} ?)", [operand]))


def _on_field(field: str, match: _Match) -> tuple[str, Params]:
    """``match(type_sql, value_sql)`` on the field itself, or on any element when
    the field holds an array, as MongoDB does."""
    path = _path(field)
    scalar_sql, scalar_params = match(f"json_type(doc, {path})", f"json_extract(doc, {path})")
    each_sql, each_params = match("je.type", "je.value")
    sql = (
        f"({scalar_sql} OR (json_type(doc, {path}) = 'array' AND EXISTS "
        f"(SELECT 1 FROM json_each(doc, {path}) AS je WHERE {each_sql})))"
    )
    return sql, [*scalar_params, *each_params]


def _compile_sort(sort: Sort) -> str:
    terms: list[str] = []
    for key in sort:
        if not isinstance(key, tuple | list) or len(key) != 2:
            raise ValueError(f"sort keys are (field, 1 | -1) pairs, got {key!r}")
        field, direction = key
        check_field(field)
        if isinstance(direction, bool) or direction not in (1, -1):
            raise ValueError(f"sort direction for {field!r} must be 1 or -1, got {direction!r}")
        order = "ASC" if direction == 1 else "DESC"
        if field == "_id":
            terms.append(f"_id {order}")
            continue
        path = _path(field)
        rank = _TYPE_RANK.format(t=f"json_type(doc, {path})")
        terms.append(f"{rank} {order}, json_extract(doc, {path}) {order}")
    return ", ".join(terms)
