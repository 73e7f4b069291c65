"""API keys: ``lk_`` + 32 random bytes, stored only as their SHA-256, one tenant each.

Each key also has a public id (``kid``) and a signing secret used for signed
render URLs; the secret must be kept to verify signatures, so it is stored as
is. It grants nothing but rendering that tenant's templates by signed URL.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from litho.docstore import DocumentStore

_COLLECTION = "api_keys"
PREFIX = "lk_"
_CACHE_LIMIT = 10_000


@dataclass(frozen=True)
class ApiKey:
    tenant_id: str
    name: str
    key_id: str
    signing_secret: str


def _printable_ascii(text: str) -> bool:
    """Whether ``text`` could be a key or key id at all. aiohttp decodes header
    bytes that are not UTF-8 to lone surrogates (``\\xff`` → ``\\udcff``),
    which cannot be encoded to hash or to query the store: such a token is
    just another invalid key."""
    return text.isascii() and text.isprintable()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, store: DocumentStore, *, cache_ttl: float) -> None:
        self._keys = store.collection(_COLLECTION)
        self._ttl = cache_ttl
        self._by_digest: dict[str, tuple[float, ApiKey]] = {}
        self._by_id: dict[str, tuple[float, ApiKey]] = {}

    async def prepare(self) -> None:
        await self._keys.ensure_index(["keyId"], unique=True)

    async def create(self, tenant_id: str, name: str = "default") -> str:
        """Create a key and return it; only its hash is stored."""
        key = PREFIX + secrets.token_urlsafe(32)
        await self._keys.insert({
            "_id": _digest(key), "tenantId": tenant_id, "name": name,
            "keyId": "kid_" + secrets.token_hex(8),
            "signingSecret": "lss_" + secrets.token_urlsafe(32),
            "createdAt": datetime.now(UTC).isoformat(),
        })
        return key

    async def verify(self, key: str) -> ApiKey | None:
        if not key.startswith(PREFIX) or len(key) > 128 or not _printable_ascii(key):
            return None
        digest = _digest(key)
        cached = self._cached(self._by_digest, digest)
        if cached is not None:
            return cached
        return self._remember(self._by_digest, digest, await self._keys.get(digest))

    async def by_key_id(self, key_id: str) -> ApiKey | None:
        """The key a signed URL names; None for an unknown id."""
        if not key_id.startswith("kid_") or len(key_id) > 64 or not _printable_ascii(key_id):
            return None
        cached = self._cached(self._by_id, key_id)
        if cached is not None:
            return cached
        return self._remember(self._by_id, key_id, await self._keys.find_one({"keyId": key_id}))

    def _cached(self, cache: dict[str, tuple[float, ApiKey]], key: str) -> ApiKey | None:
        hit = cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def _remember(
        self, cache: dict[str, tuple[float, ApiKey]], key: str, doc: dict[str, object] | None
    ) -> ApiKey | None:
        if doc is None:
            return None
        found = ApiKey(
            tenant_id=str(doc["tenantId"]), name=str(doc["name"]),
            key_id=str(doc["keyId"]), signing_secret=str(doc["signingSecret"]),
        )
        if self._ttl > 0:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = (time.monotonic() + self._ttl, found)
        return found
