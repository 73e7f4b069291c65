"""The document-store port: a deliberately small, Mongo-shaped surface.

Documents are JSON-compatible dicts with a string ``_id``. Filters are equality
matches on top-level or dotted fields (``{"tenantId": "t1", "meta.kind": "x"}``)
plus the ``$in`` operator (``{"_id": {"$in": [...]}}``) and range operators
``$gt``/``$gte``/``$lt``/``$lte`` on numbers and strings. Anything else is a
programming error and raises ``ValueError``.

Updates are MongoDB update documents limited to ``$set`` (dotted fields),
``$inc`` (integers and floats; a missing field starts at 0) and
``$setOnInsert``; each applies atomically per document, so ``$inc`` counts
and ``find_one_and_update`` claims have exactly one winner under
concurrency. Upserts name the document by a string ``_id`` in the filter.

Atomic per document, not per call: an ``update`` of several matches that
fails part-way (``$inc`` of a string in the third match, a unique-index
clash) raises, and each match is then either fully updated or untouched.
On MongoDB the matches before the failing one may stay updated
(``update_many`` is no transaction); SQLite runs the call in one transaction
and writes none. Code must not rely on either.

``$inc`` of a float that overflows: SQLite refuses it with
:class:`litho.errors.InvalidArgument` naming the field (JSON cannot hold
infinity); MongoDB stores ``Infinity``, and the adapter cannot know the
stored value before the server applies the update. Bound float amounts at
the service's edge.

A call whose coroutine is cancelled may still complete, as with any server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

Document = dict[str, Any]
Filter = Mapping[str, Any]
#: ``[("field", 1), ("other", -1)]``: ascending 1, descending -1.
Sort = Sequence[tuple[str, int]]
#: ``{"$set": {"a.b": 1}, "$inc": {"n": 1}, "$setOnInsert": {"createdAt": ...}}``.
UpdateDoc = Mapping[str, Mapping[str, Any]]
#: Which version of the document ``find_one_and_update`` returns.
ReturnDocument = Literal["before", "after"]


class Collection(Protocol):
    async def insert(self, doc: Document) -> None:
        """Insert ``doc`` (which must carry ``_id``); raise
        :class:`litho.docstore.DuplicateKey` if ``_id`` or a unique index clashes."""

    async def insert_many(self, docs: Sequence[Document]) -> int:
        """Insert each of ``docs`` (each with ``_id``), skipping those whose
        ``_id`` or unique index clashes with a stored document; return how many
        were inserted. Not atomic as a whole on MongoDB: each document is."""

    async def get(self, doc_id: str) -> Document | None: ...

    async def find_one(self, flt: Filter) -> Document | None: ...

    async def find(
        self,
        flt: Filter,
        *,
        sort: Sort | None = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> list[Document]: ...

    async def count(self, flt: Filter) -> int: ...

    async def replace(self, flt: Filter, doc: Document, *, upsert: bool = False) -> bool:
        """Replace the first match with ``doc`` (same ``_id``); True if one was
        replaced or inserted."""

    async def update(self, flt: Filter, update: UpdateDoc, *, upsert: bool = False) -> int:
        """Apply ``update`` to every match; return how many matched, or 1 when
        ``upsert`` inserted a document (the filter's equality fields, then the
        update, ``$setOnInsert`` included)."""

    async def find_one_and_update(
        self,
        flt: Filter,
        update: UpdateDoc,
        *,
        sort: Sort | None = None,
        upsert: bool = False,
        return_document: ReturnDocument = "before",
    ) -> Document | None:
        """Atomically update the first match in ``sort`` order and return it as
        it was ``"before"`` (None if upsert inserted it) or ``"after"``; None
        when nothing matched and nothing was inserted."""

    async def delete(self, flt: Filter) -> int:
        """Delete every match; return how many."""

    async def ensure_index(self, fields: Sequence[str], *, unique: bool = False) -> None: ...


class DocumentStore(Protocol):
    def collection(self, name: str) -> Collection: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
