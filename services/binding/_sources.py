"""The data sources templates declare, fetched for a render through the
guard and cached per (tenant, method, url, headers, body) in the collection
``data_source_cache``.

An entry answers from the store within its ``ttlSeconds``; past it the
source is asked again with ``If-None-Match`` / ``If-Modified-Since``, and a
304 renews the entry. Entries are swept once they are
``LITHO_BINDING_SOURCE_CACHE_RETENTION`` past their expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from litho.docstore import Collection, DocumentStore
from litho.errors import FieldError, InvalidArgument
from litho.logs import get_logger
from litho.outbound import AllowList
from services.binding import _validate
from services.binding._fetch import Fetcher, FetchFailed, SourceRequest

log = get_logger(__name__)

COLLECTION = "data_source_cache"


@dataclass(frozen=True)
class SourceCall:
    """One declared source, its URL already expanded with the render's variables."""

    name: str
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    ttl_seconds: int = 60


@dataclass(frozen=True)
class SourceResult:
    name: str
    data_json: str
    fetched_at: float
    #: Answered from the cache, or revalidated by a 304.
    from_cache: bool


def cache_key(tenant_id: str, method: str, url: str, headers: Mapping[str, str],
              body: str) -> str:
    """SHA-256 hex of what makes two calls the same request, for one tenant."""
    parts = [tenant_id, method.upper(), url, sorted((k.lower(), v) for k, v in headers.items()),
             body]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


class DataSources:
    def __init__(self, store: DocumentStore, fetcher: Fetcher, *, allow: AllowList,
                 max_sources: int = 5, retention: float = 86400.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._docs: Collection = store.collection(COLLECTION)
        self._fetcher = fetcher
        self._allow = allow
        self._max_sources = max_sources
        self._retention = retention
        self._clock = clock

    async def prepare(self) -> None:
        await self._docs.ensure_index(["expiresAt"])

    async def fetch(self, tenant_id: str, calls: Sequence[SourceCall]) -> list[SourceResult]:
        """Every source's data, fetched at once; any failure is a 422 naming
        ``dataSources.<name>`` (all failures are named, not only the first)."""
        if not tenant_id:
            raise InvalidArgument("tenantId is required",
                                  errors=[FieldError("tenantId", "is required")])
        if len(calls) > self._max_sources:
            raise InvalidArgument(
                f"a render may fetch at most {self._max_sources} data sources "
                "(LITHO_BINDING_MAX_TEMPLATE_SOURCES)",
                errors=[FieldError("dataSources", f"at most {self._max_sources}")])
        names = [c.name for c in calls]
        if len(set(names)) != len(names):
            raise InvalidArgument("data source names must be unique",
                                  errors=[FieldError("dataSources", "names must be unique")])
        outcomes = await asyncio.gather(*(self._one(tenant_id, c) for c in calls),
                                        return_exceptions=True)
        problems: list[FieldError] = []
        results: list[SourceResult] = []
        for outcome in outcomes:
            if isinstance(outcome, FieldError):
                problems.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(outcome)
        if problems:
            raise InvalidArgument(
                "data source " + "; ".join(f"{p.field}: {p.message}" for p in problems),
                errors=problems)
        return results

    async def _one(self, tenant_id: str, call: SourceCall) -> SourceResult | FieldError:
        where = f"dataSources.{call.name}"
        try:
            source = _validate.check_data_source(
                {"type": "http", "url": call.url, "method": call.method or "GET",
                 "headers": dict(call.headers), "body": call.body},
                path=where, allow=self._allow)
        except InvalidArgument as exc:
            first = exc.errors[0] if exc.errors else FieldError(where, exc.message)
            return first
        key = cache_key(tenant_id, source["method"], source["url"], source["headers"],
                        source["body"])
        now = self._clock()
        cached = await self._docs.get(key)
        if cached is not None and now < float(cached.get("expiresAt") or 0):
            return SourceResult(call.name, cached["data"], float(cached["fetchedAt"]), True)
        request = SourceRequest(url=source["url"], method=source["method"],
                                headers=source["headers"], body=source["body"])
        try:
            fetched = await self._fetcher.fetch(
                request, etag=str(cached.get("etag") or "") if cached else "",
                last_modified=str(cached.get("lastModified") or "") if cached else "")
        except FetchFailed as exc:
            return FieldError(where, exc.message)
        expires = now + max(0, call.ttl_seconds)
        if fetched.not_modified and cached is not None:
            await self._docs.update({"_id": key}, {"$set": {
                "fetchedAt": now, "expiresAt": expires,
                "etag": fetched.etag or cached.get("etag", ""),
                "lastModified": fetched.last_modified or cached.get("lastModified", "")}})
            return SourceResult(call.name, cached["data"], now, True)
        doc: dict[str, Any] = {
            "_id": key, "tenantId": tenant_id, "data": fetched.data_json, "etag": fetched.etag,
            "lastModified": fetched.last_modified, "fetchedAt": now, "expiresAt": expires}
        await self._docs.replace({"_id": key}, doc, upsert=True)
        return SourceResult(call.name, fetched.data_json, now, False)

    async def sweep(self) -> int:
        """Drop entries past their expiry by more than the retention."""
        return await self._docs.delete({"expiresAt": {"$lt": self._clock() - self._retention}})
