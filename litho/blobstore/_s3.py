"""The S3 blob store, over ``aioboto3``.

One client is created by :meth:`S3BlobStore.open` and released by
:meth:`S3BlobStore.close`. Keys are stored as ``<prefix>/<key>`` when the URL
carries a prefix (``s3://bucket/prefix``). ETags are the server's (the MD5 of
the bytes for a single-part put), so equal bytes give equal ETags.

Errors are translated here: a missing object is ``None``; a rejected
signature or access key, a missing bucket, a 5xx, or a network failure is
:class:`litho.errors.Unavailable`, because each means the store cannot serve
anyone until an operator or the network fixes it; any other S3 error is a
plain :class:`litho.errors.LithoError` (a bug on our side).

S3 has no conditional delete, so :meth:`S3BlobStore.delete` asks ``HEAD``
first to learn whether the object existed; two racing deletes may both
return True.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import aiohttp
from aiobotocore.session import AioSession  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)

from litho.blobstore import (
    Blob,
    BlobInfo,
    validate_cache_control,
    validate_content_type,
    validate_key,
)
from litho.config import S3Settings
from litho.errors import LithoError, Unavailable

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_CREDENTIALS = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "RequestTimeTooSkewed",
        "403",
    }
)
_RETRYABLE = frozenset({"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"})
#: What a broken connection or a timeout can raise between aiohttp and botocore.
_TRANSPORT = (BotoCoreError, aiohttp.ClientError, OSError)
_DEFAULT_CONTENT_TYPE = "application/octet-stream"


class S3BlobStore:
    """Blobs as objects in one bucket. Build with :meth:`open`."""

    def __init__(
        self,
        client: Any,
        *,
        bucket: str,
        prefix: str = "",
        region: str = "us-east-1",
        endpoint: str | None = None,
        stack: contextlib.AsyncExitStack | None = None,
    ) -> None:
        """Wrap an open aiobotocore S3 ``client``; ``stack``, if given, is
        closed by :meth:`close` and should own the client."""
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._region = region
        self._where = f"s3://{bucket} at {endpoint or 'the AWS default endpoint'}"
        self._stack = stack

    @classmethod
    async def open(
        cls,
        settings: S3Settings,
        *,
        bucket: str,
        prefix: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> S3BlobStore:
        """Create the client. No request is sent; call :meth:`ping` to check
        the bucket is reachable. Credentials left ``None`` in ``settings`` come
        from the standard AWS chain (environment, profile, instance role)."""
        session = await asyncio.to_thread(_session, settings)
        config = Config(
            region_name=settings.region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if settings.path_style else "auto"},
        )
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=settings.endpoint_url, config=config)
            )
        except BaseException:
            await stack.aclose()
            raise
        return cls(
            client,
            bucket=bucket,
            prefix=prefix,
            region=settings.region,
            endpoint=settings.endpoint_url,
            stack=stack,
        )

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self._prefix}/{key}" if self._prefix else key

    async def put(
        self, key: str, data: bytes, content_type: str, *, cache_control: str = ""
    ) -> BlobInfo:
        name = self._object_key(key)
        validate_content_type(content_type)
        # Stored with the object, so the bucket (or a CDN in front of it)
        # answers the same headers as the gateway does.
        extra = {"CacheControl": validate_cache_control(cache_control)} if cache_control else {}
        try:
            resp = await self._client.put_object(
                Bucket=self._bucket, Key=name, Body=bytes(data), ContentType=content_type, **extra
            )
        except (ClientError, *_TRANSPORT) as exc:
            raise self._error(exc, "put", key) from exc
        return BlobInfo(
            key=key, size=len(data), content_type=content_type, etag=_quoted(resp["ETag"])
        )

    async def get(self, key: str) -> Blob | None:
        name = self._object_key(key)
        try:
            resp = await self._client.get_object(Bucket=self._bucket, Key=name)
            async with resp["Body"] as body:
                data: bytes = await body.read()
        except (ClientError, *_TRANSPORT) as exc:
            if _is_not_found(exc):
                return None
            raise self._error(exc, "get", key) from exc
        return Blob(info=_info(key, resp, size=len(data)), data=data)

    async def head(self, key: str) -> BlobInfo | None:
        name = self._object_key(key)
        try:
            resp = await self._client.head_object(Bucket=self._bucket, Key=name)
        except (ClientError, *_TRANSPORT) as exc:
            if _is_not_found(exc):
                return None
            raise self._error(exc, "head", key) from exc
        return _info(key, resp, size=int(resp["ContentLength"]))

    async def delete(self, key: str) -> bool:
        if await self.head(key) is None:
            return False
        try:
            await self._client.delete_object(Bucket=self._bucket, Key=self._object_key(key))
        except (ClientError, *_TRANSPORT) as exc:
            raise self._error(exc, "delete", key) from exc
        return True

    async def ping(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self._bucket)
        except (ClientError, *_TRANSPORT) as exc:
            if _is_not_found(exc):
                raise Unavailable(f"{self._where}: the bucket does not exist") from exc
            raise self._error(exc, "ping", None) from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing. For tests and the dev launcher:
        in production the bucket is provisioned by whoever runs S3."""
        kwargs: dict[str, Any] = {"Bucket": self._bucket}
        if self._region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self._client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            raise self._error(exc, "create bucket", None) from exc
        except _TRANSPORT as exc:
            raise self._error(exc, "create bucket", None) from exc

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _error(self, exc: BaseException, op: str, key: str | None) -> LithoError:
        what = f"{op} {key!r}" if key is not None else op
        if isinstance(exc, NoCredentialsError):
            return Unavailable(
                f"{self._where}: no S3 credentials found; set LITHO_S3_ACCESS_KEY_ID and "
                "LITHO_S3_SECRET_ACCESS_KEY or configure the AWS credential chain"
            )
        if not isinstance(exc, ClientError):
            return Unavailable(f"{self._where}: cannot reach S3 to {what}: {exc}")
        code = _code(exc)
        status = _status(exc)
        if code in _CREDENTIALS or status == 403:
            return Unavailable(
                f"{self._where}: S3 rejected our credentials ({code}) on {what}; check "
                "LITHO_S3_ACCESS_KEY_ID, LITHO_S3_SECRET_ACCESS_KEY and the bucket policy"
            )
        if code == "NoSuchBucket":
            return Unavailable(f"{self._where}: the bucket does not exist ({what})")
        if code in _RETRYABLE or status is None or status >= 500:
            return Unavailable(f"{self._where}: S3 failed to {what}: {code} (HTTP {status})")
        return LithoError(f"{self._where}: S3 refused to {what}: {code} (HTTP {status})")


def _session(settings: S3Settings) -> Any:
    """Build the session and load the S3 model files it reads, so that creating
    the client on the event loop does no file I/O. Runs in a worker thread."""
    core = AioSession()
    session = aioboto3.Session(
        botocore_session=core,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
    )
    loader = core.get_component("data_loader")
    for kind in ("service-2", "endpoint-rule-set-1"):
        loader.load_service_model("s3", kind)
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        loader.load_data(name)
    core.get_scoped_config()
    return session


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and _code(exc) in _NOT_FOUND


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _info(key: str, resp: dict[str, Any], *, size: int) -> BlobInfo:
    return BlobInfo(
        key=key,
        size=size,
        content_type=str(resp.get("ContentType") or _DEFAULT_CONTENT_TYPE),
        etag=_quoted(str(resp["ETag"])),
    )
