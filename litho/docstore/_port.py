"""The document-store port: a deliberately small, Mongo-shaped surface.

Documents are JSON-compatible dicts with a string ``_id``. Filters are equality
matches on top-level or dotted fields (``{"tenantId": "t1", "meta.kind": "x"}``)
plus the ``$in`` operator (``{"_id": {"$in": [...]}}``) and range operators
``$gt``/``$gte``/``$lt``/``$lte`` on numbers and strings. Anything else is a
programming error and raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Document = dict[str, Any]
Filter = Mapping[str, Any]
#: ``[("field", 1), ("other", -1)]``: ascending 1, descending -1.
Sort = Sequence[tuple[str, int]]


class Collection(Protocol):
    async def insert(self, doc: Document) -> None:
        """Insert ``doc`` (which must carry ``_id``); raise
        :class:`litho.docstore.DuplicateKey` if ``_id`` or a unique index clashes."""

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

    async def update(self, flt: Filter, changes: Mapping[str, Any]) -> int:
        """``$set`` the given (possibly dotted) fields on every match; count matched."""

    async def delete(self, flt: Filter) -> int:
        """Delete every match; return how many."""

    async def ensure_index(self, fields: Sequence[str], *, unique: bool = False) -> None: ...


class DocumentStore(Protocol):
    def collection(self, name: str) -> Collection: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
