"""API keys: ``lk_`` + 32 random bytes, stored only as their SHA-256, one tenant each."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from litho.docstore import DocumentStore

_COLLECTION = "api_keys"
PREFIX = "lk_"


@dataclass(frozen=True)
class ApiKey:
    tenant_id: str
    name: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, store: DocumentStore, *, cache_ttl: float) -> None:
        self._keys = store.collection(_COLLECTION)
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, ApiKey]] = {}

    async def create(self, tenant_id: str, name: str = "default") -> str:
        """Create a key and return it; only its hash is stored."""
        key = PREFIX + secrets.token_urlsafe(32)
        await self._keys.insert({
            "_id": _digest(key), "tenantId": tenant_id, "name": name,
            "createdAt": datetime.now(UTC).isoformat(),
        })
        return key

    async def verify(self, key: str) -> ApiKey | None:
        if not key.startswith(PREFIX) or len(key) > 128:
            return None
        digest = _digest(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        doc = await self._keys.get(digest)
        if doc is None:
            return None
        found = ApiKey(tenant_id=doc["tenantId"], name=doc["name"])
        if self._ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, found)
        return found

    async def count(self) -> int:
        return await self._keys.count({})
