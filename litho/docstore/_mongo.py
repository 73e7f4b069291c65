"""The production document store: MongoDB through PyMongo's async API.

Filters pass through to MongoDB after a check that they stay inside the port
(equality on scalars, ``$in``, ``$gt``/``$gte``/``$lt``/``$lte``); anything
else raises ``ValueError`` here, as it does in the SQLite adapter, instead of
working in production and failing in tests. PyMongo's exceptions are
translated at this boundary: duplicate keys to :class:`DuplicateKey`, an
unreachable server to :class:`Unavailable`, an operation that ran out of time
to :class:`DeadlineExceeded`, and a value BSON cannot encode (an integer
outside int64, a NUL in a key, a document over 16 MiB) to
:class:`InvalidArgument`: it is the input, not the store, that is wrong, so
callers answer 422 rather than 500. Services refuse such values at their
edge (``litho.jsonlimits``); this is the last line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from bson.codec_options import TypeDecoder, TypeRegistry
from bson.errors import InvalidDocument
from bson.int64 import Int64
from pymongo import ASCENDING, AsyncMongoClient
from pymongo import ReturnDocument as MongoReturn
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidName,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteError,
)

from litho.docstore import DuplicateKey
from litho.docstore._checks import NAME, OPERATORS, check_depth, check_field, is_scalar
from litho.docstore._port import Document, Filter, ReturnDocument, Sort, UpdateDoc
from litho.docstore._update import check_return, check_update, upsert_seed
from litho.errors import (
    ConfigError,
    DeadlineExceeded,
    InvalidArgument,
    LithoError,
    Unavailable,
    clip,
)

_RANGE = frozenset({"$gt", "$gte", "$lt", "$lte"})
_DUPLICATE_KEY = 11000
_IMMUTABLE_FIELD = 66
#: Server codes for a document MongoDB will not store (DollarPrefixedFieldName,
#: EmptyFieldName, DottedFieldName, BSONObjectTooLarge, and a document grown
#: past 16 MiB by an update): like bson's own refusals, the input is at fault.
_UNSTORABLE = frozenset({52, 56, 57, 10334, 17419})
#: Server codes for an update that cannot apply to the stored document:
#: BadValue ($inc past int64), TypeMismatch ($inc of a non-number) and
#: PathNotViable (a dotted path through a string or an array).
_INAPPLICABLE = frozenset({2, 14, 28})


async def open_mongo_store(
    url: str,
    database: str,
    *,
    server_selection_timeout_ms: int = 5000,
    socket_timeout_ms: int = 30000,
) -> MongoDocumentStore:
    """Build a client for ``url`` (it connects lazily, on first use) and wrap
    ``database``. Finding a server gives up after ``server_selection_timeout_ms``;
    a server that stops answering mid-operation, after ``socket_timeout_ms``."""
    try:
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=server_selection_timeout_ms,
            # Not timeoutMS: once set, server selection waits for it instead of
            # serverSelectionTimeoutMS, so an unreachable server would hang longer.
            socketTimeoutMS=socket_timeout_ms,
            type_registry=TypeRegistry([_Int64AsInt()]),
        )
    except ConfigurationError as exc:
        # Not echoing the URL: it may carry a password.
        raise ConfigError(f"LITHO_DOCSTORE_URL is not a usable MongoDB URL: {exc}") from exc
    try:
        db = client[database]
    except InvalidName as exc:
        await client.close()
        raise ConfigError(f"LITHO_DOCSTORE_DATABASE {database!r} is invalid: {exc}") from exc
    return MongoDocumentStore(client, db)


class _Int64AsInt(TypeDecoder):
    """Decode 64-bit integers as plain ``int``: PyMongo's default ``Int64`` is an
    ``int`` subclass, but the port promises plain JSON-compatible values."""

    bson_type = Int64

    def transform_bson(self, value: Any) -> int:
        return int(value)


class MongoDocumentStore:
    def __init__(self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document]) -> None:
        self._client = client
        self._db = db

    def collection(self, name: str) -> MongoCollection:
        if not NAME.fullmatch(name):
            raise ValueError(
                f"invalid collection name {name!r}: use letters, digits and _, "
                "not starting with a digit"
            )
        return MongoCollection(self._db[name])

    async def ping(self) -> None:
        with _translated("ping"):
            await self._db.command("ping")

    async def close(self) -> None:
        await self._client.close()


class MongoCollection:
    def __init__(self, coll: AsyncCollection[Document]) -> None:
        self._coll = coll

    async def insert(self, doc: Document) -> None:
        checked = _checked_document(doc, self._coll.name)
        with _translated(self._coll.name):
            await self._coll.insert_one(checked)

    async def insert_many(self, docs: Sequence[Document]) -> int:
        checked = [_checked_document(doc, self._coll.name) for doc in docs]
        if not checked:
            return 0
        try:
            with _translated(self._coll.name):
                result = await self._coll.insert_many(checked, ordered=False)
        except LithoError as exc:
            bulk = exc.__cause__
            if not isinstance(bulk, BulkWriteError):
                raise
            details = bulk.details or {}
            codes = {e.get("code") for e in details.get("writeErrors", [])}
            if codes & _UNSTORABLE:
                raise InvalidArgument(
                    f"a document cannot be stored in {self._coll.name}") from bulk
            if codes - {_DUPLICATE_KEY}:
                raise
            return int(details.get("nInserted", 0))
        return len(result.inserted_ids)

    async def get(self, doc_id: str) -> Document | None:
        return await self.find_one({"_id": doc_id})

    async def find_one(self, flt: Filter) -> Document | None:
        query = _checked_filter(flt)
        with _translated(self._coll.name):
            return await self._coll.find_one(query)

    async def find(
        self,
        flt: Filter,
        *,
        sort: Sort | None = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> list[Document]:
        query = _checked_filter(flt)
        keys = _checked_sort(sort or ())
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValueError(f"skip must be a non-negative int, got {skip!r}")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ValueError(f"limit must be None or a non-negative int, got {limit!r}")
        if limit == 0:
            return []  # MongoDB reads limit 0 as "no limit"; the port means none.
        with _translated(self._coll.name):
            cursor = self._coll.find(query, sort=keys or None, skip=skip, limit=limit or 0)
            return await cursor.to_list()

    async def count(self, flt: Filter) -> int:
        query = _checked_filter(flt)
        # What count_documents runs, but with $count: nx-27017 answers the
        # $match + $group pair with other null semantics than its find.
        with _translated(self._coll.name):
            cursor = await self._coll.aggregate([{"$match": query}, {"$count": "n"}])
            counted = await cursor.to_list()
        return int(counted[0]["n"]) if counted else 0

    async def replace(self, flt: Filter, doc: Document, *, upsert: bool = False) -> bool:
        query = _checked_filter(flt)
        checked = _checked_document(doc, self._coll.name)
        with _translated(self._coll.name):
            result = await self._coll.replace_one(query, checked, upsert=upsert)
        return result.matched_count > 0 or result.upserted_id is not None

    async def update(self, flt: Filter, update: UpdateDoc, *, upsert: bool = False) -> int:
        query = _checked_filter(flt)
        checked = check_update(update, self._coll.name)
        if upsert:
            upsert_seed(flt, checked)  # the port's rules; MongoDB builds the document
        with _translated(self._coll.name):
            result = await self._coll.update_many(query, checked.as_mongo(), upsert=upsert)
        return result.matched_count + (0 if result.upserted_id is None else 1)

    async def find_one_and_update(
        self,
        flt: Filter,
        update: UpdateDoc,
        *,
        sort: Sort | None = None,
        upsert: bool = False,
        return_document: ReturnDocument = "before",
    ) -> Document | None:
        query = _checked_filter(flt)
        checked = check_update(update, self._coll.name)
        keys = _checked_sort(sort or ())
        check_return(return_document)
        if upsert:
            upsert_seed(flt, checked)
        with _translated(self._coll.name):
            found: Document | None = await self._coll.find_one_and_update(
                query,
                checked.as_mongo(),
                sort=keys or None,
                upsert=upsert,
                return_document=(
                    MongoReturn.AFTER if return_document == "after" else MongoReturn.BEFORE),
            )
        return found

    async def delete(self, flt: Filter) -> int:
        query = _checked_filter(flt)
        with _translated(self._coll.name):
            result = await self._coll.delete_many(query)
        return result.deleted_count

    async def ensure_index(self, fields: Sequence[str], *, unique: bool = False) -> None:
        if isinstance(fields, str) or not fields or len(set(fields)) != len(fields):
            raise ValueError(f"ensure_index needs distinct field names, got {fields!r}")
        for field in fields:
            check_field(field)
        if list(fields) == ["_id"]:
            return  # Every collection has it, and it is always unique.
        keys = [(field, ASCENDING) for field in fields]
        with _translated(self._coll.name):
            try:
                await self._coll.create_index(keys, unique=unique)
            except OperationFailure as exc:
                # nx-27017 reports existing duplicates as SQLite's message with no
                # code; MongoDB sends code 11000, which PyMongo already raises as
                # DuplicateKeyError, and never this text.
                if exc.code is None and "UNIQUE constraint failed" in str(exc):
                    raise DuplicateKeyError(str(exc), 11000) from exc
                raise


@contextmanager
def _translated(collection: str) -> Iterator[None]:
    try:
        yield
    except DuplicateKeyError as exc:
        raise DuplicateKey(f"a document with the same key already exists in {collection}") from exc
    except BulkWriteError as exc:
        raise LithoError(f"MongoDB bulk write failed in {collection}") from exc
    except WriteError as exc:
        if exc.code == _IMMUTABLE_FIELD:
            raise ValueError(f"replace cannot change a document's _id ({collection})") from exc
        if exc.code in _UNSTORABLE:
            raise InvalidArgument(
                f"a document cannot be stored in {collection}: "
                f"{clip(str(exc.details.get('errmsg') if exc.details else exc), 200)}"
            ) from exc
        if exc.code in _INAPPLICABLE or _nx_inc_refusal(exc):
            raise _inapplicable(collection, exc) from exc
        raise LithoError(f"MongoDB write failed in {collection}: {exc}") from exc
    except ServerSelectionTimeoutError as exc:
        raise Unavailable(f"MongoDB is unreachable ({collection}): {exc}") from exc
    except PyMongoError as exc:
        # findAndModify reports as a command error what update_many reports
        # as a WriteError.
        if isinstance(exc, OperationFailure) and (
                exc.code in _INAPPLICABLE or _nx_inc_refusal(exc)):
            raise _inapplicable(collection, exc) from exc
        if exc.timeout:
            raise DeadlineExceeded(f"MongoDB operation timed out ({collection})") from exc
        if isinstance(exc, ConnectionFailure):
            raise Unavailable(f"MongoDB connection failed ({collection}): {exc}") from exc
        raise LithoError(f"MongoDB operation failed in {collection}: {exc}") from exc
    except InvalidDocument as exc:
        # Also DocumentTooLarge, a subclass. bson's message names the problem
        # ("Key names must not contain the NULL byte"), not the data.
        raise InvalidArgument(
            f"a document cannot be stored in {collection}: {clip(str(exc), 200)}") from exc
    except OverflowError as exc:
        # bson's C encoder raises it for an int outside the signed 64-bit range.
        raise InvalidArgument(
            f"a document cannot be stored in {collection}: an integer is outside the "
            "signed 64-bit range that MongoDB stores") from exc


def _inapplicable(collection: str, exc: OperationFailure) -> InvalidArgument:
    errmsg = exc.details.get("errmsg") if exc.details else None
    return InvalidArgument(
        f"an update cannot apply in {collection}: {clip(str(errmsg or exc), 200)}")


def _nx_inc_refusal(exc: OperationFailure) -> bool:
    """nx-27017 refuses ``$inc`` of a non-number with code 8 (UnknownError)."""
    return exc.code == 8 and "Cannot apply $inc" in str(exc)


def _checked_document(doc: Document, collection: str) -> Document:
    if not isinstance(doc, Mapping):
        raise ValueError(f"a document must be a dict, got {type(doc).__name__}")
    if not isinstance(doc.get("_id"), str):
        raise ValueError(f"a document needs a string _id, got {doc.get('_id')!r}")
    check_depth(doc, collection)
    return dict(doc)


def _checked_filter(flt: Filter) -> dict[str, Any]:
    if not isinstance(flt, Mapping):
        raise ValueError(f"a filter must be a mapping, got {type(flt).__name__}")
    query: dict[str, Any] = {}
    for field, cond in flt.items():
        check_field(field)
        if not isinstance(cond, Mapping):
            if not is_scalar(cond):
                raise ValueError(
                    f"filter value for {field!r} must be a string, number, bool or None, "
                    f"got {cond!r}"
                )
            query[field] = cond
            continue
        if not cond:
            raise ValueError(f"empty operator document for {field!r}")
        ops: dict[str, Any] = {}
        for op, operand in cond.items():
            if op == "$in":
                if not isinstance(operand, list | tuple) or not all(map(is_scalar, operand)):
                    raise ValueError(f"$in on {field!r} needs a list of scalars, got {operand!r}")
                ops[op] = list(operand)
            elif op in _RANGE:
                if isinstance(operand, bool) or not isinstance(operand, str | int | float):
                    raise ValueError(
                        f"range operand for {field!r} must be a number or string, got {operand!r}"
                    )
                ops[op] = operand
            else:
                raise ValueError(
                    f"unsupported operator {op!r} on {field!r}; the port supports {OPERATORS}"
                )
        query[field] = ops
    return query


def _checked_sort(sort: Sort) -> list[tuple[str, int]]:
    keys: list[tuple[str, int]] = []
    for key in sort:
        if not isinstance(key, tuple | list) or len(key) != 2:
            raise ValueError(f"sort keys are (field, 1 | -1) pairs, got {key!r}")
        field, direction = key
        check_field(field)
        if isinstance(direction, bool) or direction not in (1, -1):
            raise ValueError(f"sort direction for {field!r} must be 1 or -1, got {direction!r}")
        keys.append((field, direction))
    return keys
