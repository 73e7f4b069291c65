"""The data sources templates declare, fetched for a render through the
guard and cached per (tenant, method, url, headers, body) in the collection
``data_source_cache``.

An entry answers a call from the store while it is younger than the call's
own ``ttlSeconds``; past it the source is asked again with ``If-None-Match``
/ ``If-Modified-Since``, and a 304 renews the entry. An answer to a call with
``ttlSeconds`` 0 is stored only when it came with an ETag or Last-Modified
(else no later call could use it). Entries are swept once they are
``LITHO_BINDING_SOURCE_CACHE_RETENTION`` past their ``ttlSeconds``; a tenant
keeps at most ``LITHO_BINDING_MAX_CACHE_ENTRIES_PER_TENANT`` (past it, answers
are served but not stored). Identical calls at the same moment share one
fetch (in this process). An answer is held to ``LITHO_BINDING_MAX_SOURCE_BYTES``,
and to one level less than ``LITHO_BINDING_JSON_MAX_DEPTH``: a template reads
a source one level down, as ``data.<name>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from litho import jsonlimits
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


#: The setting that bounds a template source's answer.
MAX_SOURCE_SETTING: Final = "LITHO_BINDING_MAX_SOURCE_BYTES"


@dataclass(frozen=True)
class _Got:
    """One fetch's outcome, shared by the identical calls that waited for it."""

    data_json: str
    fetched_at: float
    from_cache: bool


class DataSources:
    def __init__(self, store: DocumentStore, fetcher: Fetcher, *, allow: AllowList,
                 max_sources: int = 5, retention: float = 3600.0,
                 max_bytes: int = 256 * 1024, max_entries_per_tenant: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._docs: Collection = store.collection(COLLECTION)
        self._fetcher = fetcher
        self._allow = allow
        self._max_sources = max_sources
        self._retention = retention
        self._max_bytes = max_bytes
        self._max_entries = max_entries_per_tenant
        self._clock = clock
        #: Fetches under way, by cache key: identical calls wait for the same one.
        self._inflight: dict[str, asyncio.Task[_Got]] = {}
        #: Tenants told (in the log) that their cache is full, since the last sweep.
        self._full: set[str] = set()

    async def prepare(self) -> None:
        await self._docs.ensure_index(["expiresAt"])
        await self._docs.ensure_index(["tenantId"])

    async def fetch(self, tenant_id: str, calls: Sequence[SourceCall], *,
                    wait: float | None = None) -> list[SourceResult]:
        """Every source's data, fetched at once; any failure is a 422 naming
        ``dataSources.<name>`` (all failures are named, not only the first).
        ``wait`` bounds the wait for a fetch's turn, in seconds (the caller's
        deadline); the tenant's queue full or the wait over is a 429
        (:class:`litho.errors.ResourceExhausted`)."""
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
        outcomes = await asyncio.gather(*(self._one(tenant_id, c, wait) for c in calls),
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

    async def _one(self, tenant_id: str, call: SourceCall,
                   wait: float | None) -> SourceResult | FieldError:
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
        cached = _usable(await self._docs.get(key))
        ttl = max(0, call.ttl_seconds)
        if cached is not None and self._clock() < float(cached["fetchedAt"]) + ttl:
            return SourceResult(call.name, cached["data"], float(cached["fetchedAt"]), True)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._refresh(tenant_id, key, source, cached, ttl, wait))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        try:
            # Shielded: one caller giving up (its deadline) leaves the others'
            # fetch running.
            got = await asyncio.shield(task)
        except FetchFailed as exc:
            return FieldError(where, exc.message)
        return SourceResult(call.name, got.data_json, got.fetched_at, got.from_cache)

    def _settled(self, key: str, task: asyncio.Task[_Got]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _refresh(self, tenant_id: str, key: str, source: Mapping[str, Any],
                       cached: Mapping[str, Any] | None, ttl: int,
                       wait: float | None) -> _Got:
        request = SourceRequest(url=source["url"], method=source["method"],
                                headers=source["headers"], body=source["body"])
        fetched = await self._fetcher.fetch(
            request, etag=str(cached.get("etag") or "") if cached else "",
            last_modified=str(cached.get("lastModified") or "") if cached else "",
            tenant=tenant_id, max_bytes=self._max_bytes, max_bytes_setting=MAX_SOURCE_SETTING,
            wait=wait)
        now = self._clock()
        if fetched.not_modified and cached is not None:
            await self._docs.update({"_id": key}, {"$set": {
                "fetchedAt": now, "expiresAt": now + ttl,
                "etag": fetched.etag or cached.get("etag", ""),
                "lastModified": fetched.last_modified or cached.get("lastModified", "")}})
            return _Got(cached["data"], now, True)
        depth = self._fetcher.limits.max_depth - 1
        if not jsonlimits.depth_within(fetched.data, depth):
            raise FetchFailed(
                f"the source's JSON is nested more than {depth} levels deep: a template "
                "reads a source one level down (data.<name>), so it may nest at most "
                f"LITHO_BINDING_JSON_MAX_DEPTH - 1 = {depth} levels")
        if ttl or fetched.etag or fetched.last_modified:
            await self._store(tenant_id, key, fetched.data_json, fetched.etag,
                              fetched.last_modified, now, ttl, new=cached is None)
        return _Got(fetched.data_json, now, False)

    async def _store(self, tenant_id: str, key: str, data_json: str, etag: str,
                     last_modified: str, now: float, ttl: int, *, new: bool) -> None:
        if new and await self._docs.count({"tenantId": tenant_id}) >= self._max_entries:
            if tenant_id not in self._full:
                self._full.add(tenant_id)
                log.warning("data source cache full for a tenant: new answers are not stored "
                            "(LITHO_BINDING_MAX_CACHE_ENTRIES_PER_TENANT)",
                            tenant=tenant_id, entries=self._max_entries)
            return
        doc: dict[str, Any] = {
            "_id": key, "tenantId": tenant_id, "data": data_json, "etag": etag,
            "lastModified": last_modified, "fetchedAt": now, "expiresAt": now + ttl}
        await self._docs.replace({"_id": key}, doc, upsert=True)

    async def sweep(self) -> int:
        """Drop entries past their ``ttlSeconds`` by more than the retention."""
        self._full.clear()
        return await self._docs.delete({"expiresAt": {"$lt": self._clock() - self._retention}})


def _usable(doc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A cache entry with the fields an answer needs, else None (fetched anew)."""
    if doc is None or not isinstance(doc.get("data"), str):
        return None
    if isinstance(doc.get("fetchedAt"), bool) or not isinstance(doc.get("fetchedAt"),
                                                                 int | float):
        return None
    return doc
