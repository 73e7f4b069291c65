"""The local-directory blob store, Litho's embedded default.

Each blob is one file at ``<root>/<key>``. The file starts with one header
line, ``LITHOBLOB1 {"contentType": ..., "etag": ..., "size": ...}\\n``,
followed by the raw bytes. Keeping the metadata in the same file means one
``os.replace`` swaps data, content type and ETag together: a reader never sees
new bytes with an old ETag, and a crash leaves either the old blob or the new.

Writes go to a temporary ``.<name>.<random>.tmp`` file in the blob's own
directory (keys cannot start a segment with a dot, so these never clash with
keys), are optionally fsynced, then renamed over the target. A crash can leave
such a temporary file behind; it is invisible to the store and safe to delete.

The ETag is the first 128 bits of the SHA-256 of the data, in hex and quoted.

Because blobs are files, a key cannot also be a directory of other keys:
putting ``a`` when ``a/b`` exists (or the reverse) raises
:class:`litho.errors.FailedPrecondition`. Empty directories are not pruned
after a delete, so a concurrent put into the same directory never races one.

All file I/O runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from litho.blobstore import (
    Blob,
    BlobInfo,
    validate_cache_control,
    validate_content_type,
    validate_key,
)
from litho.errors import FailedPrecondition, LithoError, Unavailable

_MAGIC = b"LITHOBLOB1 "
#: The header holds a content type of at most 255 characters plus small
#: fields, so anything longer is not one of our files.
_MAX_HEADER = 1024

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


class LocalBlobStore:
    """Blobs as files under ``root``. Build with :meth:`open`."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self._root = root
        self._fsync = fsync

    @classmethod
    async def open(cls, root: str | Path, *, fsync: bool = True) -> LocalBlobStore:
        """Create ``root`` if needed and return a store over it.

        ``fsync=False`` skips flushing each blob and its directory to disk:
        faster, but a power loss may lose recent puts.
        """

        def prepare() -> Path:
            path = Path(root)
            path.mkdir(parents=True, exist_ok=True)
            return path.resolve(strict=True)

        try:
            resolved = await asyncio.to_thread(prepare)
        except OSError as exc:
            raise Unavailable(f"cannot create blob directory {root}: {exc.strerror}") from exc
        return cls(resolved, fsync=fsync)

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        validate_key(key)
        # validate_key already rules out escapes; this keeps the guarantee local.
        path = Path(os.path.normpath(self._root.joinpath(*key.split("/"))))
        if self._root not in path.parents:
            raise ValueError(f"blob key {key!r} escapes the store")
        return path

    async def put(
        self, key: str, data: bytes, content_type: str, *, cache_control: str = ""
    ) -> BlobInfo:
        """Store a blob; ``cache_control`` is checked but not kept: only the
        gateway serves these files, with headers of its own."""
        path = self._path(key)
        validate_content_type(content_type)
        validate_cache_control(cache_control)
        return await self._run(key, self._put_sync, key, path, bytes(data), content_type)

    async def get(self, key: str) -> Blob | None:
        path = self._path(key)
        return await self._run(key, self._get_sync, key, path)

    async def head(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        return await self._run(key, self._head_sync, key, path)

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        return await self._run(key, self._delete_sync, path)

    async def ping(self) -> None:
        def check() -> bool:
            return self._root.is_dir() and os.access(self._root, os.W_OK | os.X_OK)

        if not await asyncio.to_thread(check):
            raise Unavailable(f"blob directory {self._root} is missing or not writable")

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    async def _run(
        self, key: str, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as exc:
            raise Unavailable(
                f"local blob store I/O failed for key {key!r}: {exc.strerror or exc}"
            ) from exc

    def _put_sync(self, key: str, path: Path, data: bytes, content_type: str) -> BlobInfo:
        info = BlobInfo(key=key, size=len(data), content_type=content_type, etag=_etag(data))
        header = json.dumps(
            {"contentType": info.content_type, "etag": info.etag, "size": info.size},
            separators=(",", ":"),
        ).encode("ascii")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise FailedPrecondition(
                f"cannot put blob {key!r}: a parent path is itself a blob"
            ) from exc
        if path.is_dir():
            raise FailedPrecondition(f"cannot put blob {key!r}: other blobs live under it")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + header + b"\n")
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self._fsync:
            _fsync_dir(path.parent)
        return info

    def _get_sync(self, key: str, path: Path) -> Blob | None:
        try:
            f = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        with f:
            info = _read_header(key, f)
            data = f.read()
        if len(data) != info.size:
            raise LithoError(f"blob file for key {key!r} is truncated")
        return Blob(info=info, data=data)

    def _head_sync(self, key: str, path: Path) -> BlobInfo | None:
        try:
            f = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        with f:
            return _read_header(key, f)

    @staticmethod
    def _delete_sync(path: Path) -> bool:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        return True


def _read_header(key: str, f: BinaryIO) -> BlobInfo:
    line = f.readline(_MAX_HEADER)
    if not line.startswith(_MAGIC) or not line.endswith(b"\n"):
        raise LithoError(f"blob file for key {key!r} is not a Litho blob")
    try:
        meta = json.loads(line[len(_MAGIC) :])
        return BlobInfo(
            key=key,
            size=int(meta["size"]),
            content_type=str(meta["contentType"]),
            etag=str(meta["etag"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LithoError(f"blob file for key {key!r} has a corrupt header") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
