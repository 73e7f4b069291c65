"""The blob-store port: put, get, head and delete opaque bytes by key.

Keys are relative, slash-separated paths such as ``renders/ab/abcdef.png``.
Every adapter validates them with :func:`validate_key` so that one key means
the same thing everywhere and can never name a file outside the store:
segments are ``[A-Za-z0-9_-][A-Za-z0-9._-]*`` (no empty, ``.`` or ``..``
segment, no leading dot), no leading or trailing slash, at most
:data:`MAX_KEY_LENGTH` characters. A bad key is a programming error and raises
``ValueError``.

:func:`open_blob_store` picks the adapter from ``LITHO_BLOBSTORE_URL``:

- ``file:///abs/dir``: :class:`litho.blobstore._local.LocalBlobStore`, the
  embedded default;
- ``s3://bucket[/prefix]``: :class:`litho.blobstore._s3.S3BlobStore`, configured
  by :class:`litho.config.S3Settings`.

Adapters raise :class:`litho.errors.Unavailable` when the backing store cannot
serve a request (unreachable, rejected credentials, missing bucket).

A caller may give ``put`` a ``cache_control``: the S3 adapter stores it with
the object, so that whoever serves the bucket directly (its public endpoint,
a CDN in front of it) answers it; the local adapter keeps none, because only
the gateway serves its files and sets its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from litho.errors import ConfigError

if TYPE_CHECKING:
    from litho.config import S3Settings

__all__ = [
    "MAX_KEY_LENGTH",
    "Blob",
    "BlobInfo",
    "BlobStore",
    "open_blob_store",
    "validate_cache_control",
    "validate_content_type",
    "validate_key",
]

#: Longest key accepted, in characters (all ASCII, so also bytes).
MAX_KEY_LENGTH = 512
#: Longest path segment: leaves room under the usual 255-byte file-name limit
#: for the local adapter's temporary-file decoration.
MAX_SEGMENT_LENGTH = 200
MAX_CONTENT_TYPE_LENGTH = 255
MAX_CACHE_CONTROL_LENGTH = 255

_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
# type/subtype with optional parameters; printable ASCII only, so it is safe
# in an HTTP header and in the local adapter's JSON header.
_CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(?: *;[\x20-\x7e]*)?")
# Directives and their values: printable ASCII, so it is safe as a header.
_CACHE_CONTROL_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL_VAR = "LITHO_BLOBSTORE_URL"


@dataclass(frozen=True)
class BlobInfo:
    """What is known about a stored blob without reading it.

    ``etag`` is a quoted strong HTTP ETag (``'"<hex>"'``) derived from the
    content: equal bytes give an equal ETag within one adapter.
    """

    key: str
    size: int
    content_type: str
    etag: str


@dataclass(frozen=True)
class Blob:
    info: BlobInfo
    data: bytes


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str, *,
                  cache_control: str = "") -> BlobInfo:
        """Store ``data`` under ``key``, replacing any blob already there;
        ``cache_control``, if given, is the object's ``Cache-Control`` where
        the store serves objects itself (S3)."""

    async def get(self, key: str) -> Blob | None:
        """The blob under ``key``, or None if there is none."""

    async def head(self, key: str) -> BlobInfo | None:
        """The blob's size, content type and ETag without its data, or None."""

    async def delete(self, key: str) -> bool:
        """Remove the blob under ``key``; True if there was one."""

    async def ping(self) -> None:
        """Return if the store can serve requests; raise ``Unavailable`` if not."""

    async def close(self) -> None: ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative blob key; raise ``ValueError`` if not."""
    if not isinstance(key, str):
        raise ValueError(f"blob key must be a string, not {type(key).__name__}")
    if not key:
        raise ValueError("blob key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"blob key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}")
    if _KEY_RE.fullmatch(key) is None:
        raise ValueError(
            f"invalid blob key {key[:80]!r}: use slash-separated segments of "
            "A-Z a-z 0-9 . _ - that do not start with a dot, with no leading, "
            "trailing or doubled slash"
        )
    if any(len(seg) > MAX_SEGMENT_LENGTH for seg in key.split("/")):
        raise ValueError(f"blob key segment longer than {MAX_SEGMENT_LENGTH} characters")
    return key


def validate_content_type(content_type: str) -> str:
    """Return ``content_type`` if it looks like a media type; raise ``ValueError`` if not."""
    if (
        not isinstance(content_type, str)
        or len(content_type) > MAX_CONTENT_TYPE_LENGTH
        or _CONTENT_TYPE_RE.fullmatch(content_type) is None
    ):
        raise ValueError(
            f"invalid content type {str(content_type)[:80]!r}: expected 'type/subtype', "
            f"printable ASCII, at most {MAX_CONTENT_TYPE_LENGTH} characters"
        )
    return content_type


def validate_cache_control(cache_control: str) -> str:
    """Return ``cache_control`` if it can be a ``Cache-Control`` header (or is
    empty: none); raise ``ValueError`` if not."""
    if cache_control == "":
        return cache_control
    if (
        not isinstance(cache_control, str)
        or len(cache_control) > MAX_CACHE_CONTROL_LENGTH
        or _CACHE_CONTROL_RE.fullmatch(cache_control) is None
    ):
        raise ValueError(
            f"invalid Cache-Control {str(cache_control)[:80]!r}: expected printable ASCII "
            f"directives, at most {MAX_CACHE_CONTROL_LENGTH} characters"
        )
    return cache_control


async def open_blob_store(url: str, s3: S3Settings) -> BlobStore:
    """Open the adapter ``url`` names (see the module docstring).

    Raises :class:`ConfigError` naming ``LITHO_BLOBSTORE_URL`` for a URL it
    cannot use. The caller owns the store and must ``close()`` it.
    """
    if not url:
        raise ConfigError(f"{_URL_VAR} is empty; set file:///absolute/dir or s3://bucket[/prefix]")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(f"{_URL_VAR}: query strings and fragments are not supported")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{_URL_VAR}: file URLs need an absolute path, like file:///var/lib/litho/blobs"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"{_URL_VAR}: file URLs need an absolute path")
        from litho.blobstore._local import LocalBlobStore

        return await LocalBlobStore.open(path)
    if parts.scheme == "s3":
        bucket = parts.netloc
        if _BUCKET_RE.fullmatch(bucket) is None:
            raise ConfigError(
                f"{_URL_VAR}: {bucket!r} is not a valid S3 bucket name "
                "(3-63 characters: a-z 0-9 . -); use s3://bucket[/prefix]"
            )
        prefix = unquote(parts.path).strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except ValueError as exc:
                raise ConfigError(f"{_URL_VAR}: invalid key prefix: {exc}") from exc
        from litho.blobstore._s3 import S3BlobStore

        return await S3BlobStore.open(s3, bucket=bucket, prefix=prefix)
    raise ConfigError(
        f"{_URL_VAR}: unsupported URL scheme {parts.scheme!r}; "
        "use file:///absolute/dir or s3://bucket[/prefix]"
    )
