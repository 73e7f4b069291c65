"""The document-store port and the factory that picks its adapter.

``open_document_store`` reads nothing from the environment: the composition
root passes ``DocumentStoreSettings.url`` and ``.database`` in. ``sqlite:///``
URLs open the embedded SQLite adapter; ``mongodb://`` and ``mongodb+srv://``
open the MongoDB adapter. Adapters are imported on demand, so a service that
runs on SQLite never imports pymongo and vice versa.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from litho.docstore._port import (
    Collection,
    Document,
    DocumentStore,
    Filter,
    ReturnDocument,
    Sort,
    UpdateDoc,
)
from litho.errors import AlreadyExists, ConfigError, InvalidArgument

#: MongoDB refuses deeper documents; Python's JSON decoder (SQLite adapter)
#: stops near 1,000 levels, less whatever the caller's stack already holds.
MAX_DOCUMENT_DEPTH = 100

__all__ = [
    "MAX_DOCUMENT_DEPTH",
    "Collection",
    "Document",
    "DocumentStore",
    "DocumentTooDeep",
    "DuplicateKey",
    "Filter",
    "ReturnDocument",
    "Sort",
    "UpdateDoc",
    "open_document_store",
]


class DuplicateKey(AlreadyExists):
    """An insert, replace, update or unique index clashed on ``_id`` or a unique index."""


class DocumentTooDeep(InvalidArgument):
    """A write nests objects and arrays deeper than every adapter can read back
    (``litho.docstore._checks.MAX_DOCUMENT_DEPTH``, MongoDB's own limit).
    Services bound their inputs far below it; this is the last line."""


async def open_document_store(url: str, database: str) -> DocumentStore:
    """Open the store that ``url`` names; ``database`` is used by MongoDB only.

    Raises :class:`ConfigError` for a URL no adapter understands.
    """
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "sqlite":
        from litho.docstore._sqlite import open_sqlite_store

        return await open_sqlite_store(_sqlite_path(url))
    if scheme in ("mongodb", "mongodb+srv"):
        from litho.docstore._mongo import open_mongo_store

        return await open_mongo_store(url, database)
    # The URL itself may carry a password, so only its scheme is echoed.
    raise ConfigError(
        "LITHO_DOCSTORE_URL must be sqlite:///<absolute path>, sqlite:///:memory:, "
        f"mongodb://... or mongodb+srv://...; got scheme {scheme or '(none)'!r}"
    )


def _sqlite_path(url: str) -> str:
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc or parts.query or parts.fragment or path in ("", "/"):
        raise ConfigError(
            "LITHO_DOCSTORE_URL: a SQLite URL is sqlite:///<absolute path> "
            "(three slashes, then the path) or sqlite:///:memory:"
        )
    return ":memory:" if path == "/:memory:" else path
