"""A replica's memo of templates' data sources while their data is fresh, so
that a render within a source's TTL costs one template expansion and no hop
to the binding service, as a render without sources does.

Data is kept by tenant and request key (:func:`litho.datasources.source_key`:
the expanded URL, method, headers, body and TTL) until ``fetch_time +
ttlSeconds``, the freshness the template asked for; the binding service's
cache would answer the same data until then. For each template and set of
variables the memo also remembers the requests the last such expansion
needed, and offers their data with the next expansion of the same
variables (``known_data_sources``): the template service takes it when the
sources expand to the same requests (a new version may not) and answers the
document at once. Variables it has not seen offer nothing and go the long
way (memo, then the binding service); an expansion that needed none of the
offered data forgets the requests.

Bounded in bytes (the data's text as Python holds it, plus each entry's
keys), least recently used first out; the request lists are bounded in
number. Keys carry the tenant, so one tenant's renders never see another's
data; one tenant's many sources can only push others' entries out (a
slower render, never a wrong one).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from litho.datasources import source_key
from litho.lru import Lru
from services.renderer._pipeline import FetchedSource, KnownSource, PendingSource

#: What one entry is charged beyond its data's text (key tuple, name, times).
ENTRY_OVERHEAD = 640
#: (Template, variables) pairs whose last requests are remembered.
MAX_REQUEST_SETS = 10_000
#: The most data (UTF-8 bytes) offered with one expansion:
#: LITHO_TEMPLATE_MAX_DATA_BYTES' default, which the long way's data is held to.
MAX_KNOWN_BYTES = 2**20


def key_of(source: PendingSource) -> str:
    return source_key(source.url, source.method, source.headers, source.body,
                      source.ttl_seconds)


@dataclass(frozen=True)
class _Entry:
    name: str
    data_json: str
    fetch_time: float
    until: float
    cost: int
    utf8_bytes: int


def _variables_key(tenant_id: str, template_id: str, variables_json: str
                   ) -> tuple[str, str, str]:
    digest = hashlib.sha256(variables_json.encode("utf-8", "surrogatepass")).hexdigest()
    return tenant_id, template_id, digest


class SourceMemo:
    """The renderer pipeline's ``SourceCache``; ``max_bytes`` 0 turns it off."""

    def __init__(self, *, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._bytes = 0
        self._requests: Lru[tuple[str, str, str], tuple[tuple[str, str], ...]] = Lru(
            MAX_REQUEST_SETS)
        #: Templates with any remembered requests: the others (most renders)
        #: are answered without hashing their variables.
        self._templates: Lru[tuple[str, str], bool] = Lru(MAX_REQUEST_SETS)

    def __len__(self) -> int:
        return len(self._entries)

    def known(self, tenant_id: str, template_id: str,
              variables_json: str) -> tuple[KnownSource, ...]:
        """The data of every request the template's last expansion of these
        variables needed, when all of it is still fresh (otherwise none: the
        template service would answer them pending anyway)."""
        if (not template_id or self._max_bytes <= 0
                or self._templates.get((tenant_id, template_id)) is None):
            return ()
        requests = self._requests.get(_variables_key(tenant_id, template_id, variables_json))
        if not requests:
            return ()
        known = []
        size = 0
        for name, key in requests:
            entry = self._fresh((tenant_id, key))
            size += entry.utf8_bytes if entry is not None else 0
            if entry is None or size > MAX_KNOWN_BYTES:
                return ()
            known.append(KnownSource(name=name, key=key, data_json=entry.data_json,
                                     fetch_time=entry.fetch_time))
        return tuple(known)

    def lookup(self, tenant_id: str, source: PendingSource) -> FetchedSource | None:
        entry = self._fresh((tenant_id, key_of(source)))
        if entry is None:
            return None
        return FetchedSource(name=source.name, data_json=entry.data_json,
                             fetch_time=entry.fetch_time, from_cache=True)

    def keep(self, tenant_id: str, template_id: str, variables_json: str,
             pending: Sequence[PendingSource], fetched: dict[str, FetchedSource]) -> None:
        """Keep each source's data until its TTL runs out, and remember the
        requests as those of the template with these variables (a one-shot
        template, without an id, has none to remember)."""
        if self._max_bytes <= 0:
            return
        requests = []
        for source in pending:
            key = key_of(source)
            requests.append((source.name, key))
            got = fetched.get(source.name)
            if got is not None:
                self._put((tenant_id, key), source, got)
        if template_id:
            self._templates.put((tenant_id, template_id), True)
            self._requests.put(_variables_key(tenant_id, template_id, variables_json),
                               tuple(requests))

    def forget(self, tenant_id: str, template_id: str, variables_json: str) -> None:
        """The expansion needed none of what was offered (the variables gave
        the data, or the version declares other sources): offer it no more."""
        self._requests.pop(_variables_key(tenant_id, template_id, variables_json))

    def _put(self, key: tuple[str, str], source: PendingSource, got: FetchedSource) -> None:
        until = got.fetch_time + source.ttl_seconds
        cost = sys.getsizeof(got.data_json) + ENTRY_OVERHEAD
        if until <= self._clock() or cost > self._max_bytes:
            return
        self._drop(key)
        self._entries[key] = _Entry(source.name, got.data_json, got.fetch_time, until, cost,
                                    len(got.data_json.encode("utf-8", "surrogatepass")))
        self._bytes += cost
        while self._bytes > self._max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.cost

    def _fresh(self, key: tuple[str, str]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.until:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.cost
