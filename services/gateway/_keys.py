"""API keys: ``lk_`` + 32 random bytes, stored only as their SHA-256, one tenant each.

Each key also has a public id (``kid``) and a signing secret used for signed
render URLs; the secret must be kept to verify signatures, so it is stored as
is. It grants nothing but rendering that tenant's templates by signed URL.

A key has scopes (:data:`SCOPES`): ``full`` grants everything, key
management included; ``render`` only renders and reads (``_scopes.py``
classifies every operation). A key stored before scopes existed has none
and is ``full``.

Verified keys are kept per replica for ``cache_ttl`` seconds (a
:class:`~litho.notes.NotedMemo`): deleting a key publishes a note with its
id, every replica drops it at once, and the time to live bounds what a lost
note can leave behind. Unknown keys are never kept.

Two guards hold without a transaction by writing first and checking after:
a create past the per-tenant cap is inserted, counted and taken back; a
delete of a ``full`` key marks it ``revoking`` first and is refused when no
other unmarked ``full`` key remains, so two deletes racing for a tenant's
last two ``full`` keys refuse one another rather than lock the tenant out.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from litho.docstore import DocumentStore
from litho.errors import (
    FailedPrecondition,
    FieldError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    clip,
)
from litho.lru import Lru
from litho.notes import Link, NotedMemo
from services.gateway._key_usage import KeyUsage

_COLLECTION = "api_keys"
PREFIX = "lk_"
KEY_ID_PREFIX = "kid_"
_CACHE_LIMIT = 10_000

FULL = "full"
RENDER = "render"
#: Every scope a key may hold; ``full`` implies every other.
SCOPES = (FULL, RENDER)


@dataclass(frozen=True)
class ApiKey:
    tenant_id: str
    name: str
    key_id: str
    signing_secret: str
    scopes: frozenset[str] = field(default=frozenset({FULL}))

    def allows(self, scope: str) -> bool:
        return FULL in self.scopes or scope in self.scopes


@dataclass(frozen=True)
class KeyInfo:
    """What the API shows of a key: never the key, its digest or its secret."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime | None
    last_used_at: datetime | None


class _Unknown(Exception):
    """A lookup found no key (never kept by the memo)."""


class SteadyLink:
    """The :class:`~litho.notes.Link` of a key store that gets no notes
    (the CLI, tests): always connected, so the time to live alone bounds."""

    def generation(self) -> int | None:
        return 0


def _printable_ascii(text: str) -> bool:
    """Whether ``text`` could be a key or key id at all. aiohttp decodes header
    bytes that are not UTF-8 to lone surrogates (``\\xff`` → ``\\udcff``),
    which cannot be encoded to hash or to query the store: such a token is
    just another invalid key."""
    return text.isascii() and text.isprintable()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    # One format (microseconds, +00:00), so stored times sort as text.
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _scopes_of(doc: dict[str, Any]) -> tuple[str, ...]:
    stored = doc.get("scopes")
    if not isinstance(stored, list):
        return (FULL,)  # a key made before scopes existed
    return tuple(s for s in stored if isinstance(s, str))


def _api_key(doc: dict[str, Any]) -> ApiKey:
    return ApiKey(tenant_id=str(doc["tenantId"]), name=str(doc["name"]),
                  key_id=str(doc["keyId"]), signing_secret=str(doc["signingSecret"]),
                  scopes=frozenset(_scopes_of(doc)))


def _info(doc: dict[str, Any]) -> KeyInfo:
    return KeyInfo(key_id=str(doc["keyId"]), name=str(doc.get("name", "")),
                   scopes=_scopes_of(doc), created_at=_time(doc.get("createdAt")),
                   last_used_at=_time(doc.get("lastUsedAt")))


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` in a fixed order, or a 422 naming the first unknown one."""
    given = list(scopes)
    if not given:
        raise InvalidArgument("a key needs a scope", errors=[
            FieldError("scopes", f"must name at least one of {', '.join(SCOPES)}")])
    for index, scope in enumerate(given):
        if scope not in SCOPES:
            raise InvalidArgument("unknown scope", errors=[FieldError(
                f"scopes[{index}]", f"{clip(repr(scope), 60)} is not a scope; the scopes "
                f"are {', '.join(SCOPES)}")])
    return tuple(s for s in SCOPES if s in given)


def _page_token(created: str, key_id: str) -> str:
    raw = f"{created}|{key_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str) -> tuple[str, str]:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        text = ""
    created, _, key_id = text.partition("|")
    if (not key_id.startswith(KEY_ID_PREFIX) or len(text) > 200
            or _time(created) is None or not _printable_ascii(text)):
        raise InvalidArgument("pageToken is not a token this API issued")
    return created, key_id


class KeyStore:
    def __init__(self, store: DocumentStore, *, cache_ttl: float,
                 link: Link | None = None,
                 announce: Callable[[str], Awaitable[None]] | None = None,
                 max_per_tenant: int = 100, last_used_interval: float = 60.0) -> None:
        self._keys = store.collection(_COLLECTION)
        self._usage = KeyUsage(self.touch, interval=last_used_interval)
        self._max_per_tenant = max_per_tenant
        self._announce = announce
        link = link or SteadyLink()
        self._by_digest: NotedMemo[ApiKey] = NotedMemo(
            link, name="api keys", max_age=cache_ttl, max_bytes=_CACHE_LIMIT, cost=lambda _: 1)
        self._by_id: NotedMemo[ApiKey] = NotedMemo(
            link, name="signing keys", max_age=cache_ttl, max_bytes=_CACHE_LIMIT,
            cost=lambda _: 1)
        #: The digest each memoised key id was verified under, so that a note
        #: (which names the public id only) drops that entry too.
        self._digest_of: Lru[str, str] = Lru(2 * _CACHE_LIMIT)
        #: Notes received so far: a lookup that saw one arrive while it read
        #: the store keeps nothing (it may have read a key being deleted).
        self._notes = 0

    async def prepare(self) -> None:
        await self._keys.ensure_index(["keyId"], unique=True)
        await self._keys.ensure_index(["tenantId", "createdAt"])

    async def create(self, tenant_id: str, name: str = "default",
                     scopes: Iterable[str] = (FULL,)) -> str:
        """Create a key and return it; only its hash is stored."""
        _, key = await self.issue(tenant_id, name, scopes)
        return key

    async def issue(self, tenant_id: str, name: str,
                    scopes: Iterable[str]) -> tuple[KeyInfo, str]:
        """Create a key: what the API shows of it, and the key itself (shown
        once). A tenant holding ``max_per_tenant`` keys is refused."""
        key = PREFIX + secrets.token_urlsafe(32)
        doc: dict[str, Any] = {
            "_id": _digest(key), "tenantId": tenant_id, "name": name,
            "keyId": KEY_ID_PREFIX + secrets.token_hex(8),
            "signingSecret": "lss_" + secrets.token_urlsafe(32),
            "createdAt": _stamp(_now()), "scopes": list(check_scopes(scopes)),
        }
        if await self._keys.count({"tenantId": tenant_id}) >= self._max_per_tenant:
            raise self._cap_reached()
        await self._keys.insert(doc)
        # Checked again after the insert: of creates racing for the last
        # place, none passes the cap (all may be refused; a retry succeeds).
        if await self._keys.count({"tenantId": tenant_id}) > self._max_per_tenant:
            await self._keys.delete({"_id": doc["_id"]})
            raise self._cap_reached()
        return _info(doc), key

    def _cap_reached(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"this tenant has {self._max_per_tenant} API keys, the limit "
            "(LITHO_GATEWAY_MAX_KEYS_PER_TENANT): delete one first", retry_after=60.0)

    async def page(self, tenant_id: str, *, page_size: int,
                   page_token: str = "") -> tuple[list[KeyInfo], str]:
        """The tenant's keys, oldest first, and the next page's token ("" at the end)."""
        flt: dict[str, Any] = {"tenantId": tenant_id}
        skip = 0
        if page_token:
            created, key_id = _read_token(page_token)
            flt["createdAt"] = {"$gte": created}
            # Keys made in the same microsecond come in key id order.
            skip = await self._keys.count(
                {"tenantId": tenant_id, "createdAt": created, "keyId": {"$lte": key_id}})
        docs = await self._keys.find(flt, sort=[("createdAt", 1), ("keyId", 1)], skip=skip,
                                     limit=page_size + 1)
        items = docs[:page_size]
        token = ""
        if len(docs) > page_size:
            last = items[-1]
            token = _page_token(str(last.get("createdAt", "")), str(last["keyId"]))
        return [_info(d) for d in items], token

    async def revoke(self, tenant_id: str, key_id: str) -> None:
        """Delete the tenant's key ``key_id`` (404 for an unknown id or
        another tenant's), unless it is the tenant's last ``full`` key (409),
        and tell every replica."""
        flt = {"tenantId": tenant_id, "keyId": key_id}
        doc = await self._keys.find_one(flt)
        if doc is None:
            raise NotFound(f"no API key {key_id} in this tenant")
        if FULL in _scopes_of(doc):
            await self._keys.update(flt, {"$set": {"revoking": True}})
            try:
                others = await self._keys.count({"tenantId": tenant_id, "revoking": None,
                                                 "scopes": {"$in": [FULL, None]}})
                if others == 0:
                    raise FailedPrecondition(
                        f"{key_id} is this tenant's last key with the 'full' scope: without "
                        "it no key could manage keys. Create another 'full' key first")
            except BaseException:
                await self._keys.update(flt, {"$set": {"revoking": None}})
                raise
        await self._keys.delete(flt)
        self.revoked(key_id)
        if self._announce is not None:
            await self._announce(key_id)

    def revoked(self, key_id: str) -> None:
        """A note (or this replica's own delete): forget the key at once."""
        self._notes += 1
        self._by_id.changed(key_id)
        digest = self._digest_of.pop(key_id)
        if digest is not None:
            self._by_digest.changed(digest)

    def used(self, key: ApiKey) -> None:
        """A request was authenticated with ``key``: its ``lastUsedTime`` is
        written in the background, at most once per interval."""
        self._usage.seen(key.key_id)

    async def close(self) -> None:
        await self._usage.close()

    async def touch(self, key_id: str, when: datetime) -> None:
        """Record that the key was used (``lastUsedTime``)."""
        await self._keys.update({"keyId": key_id}, {"$set": {"lastUsedAt": _stamp(when)}})

    async def verify(self, key: str) -> ApiKey | None:
        if not key.startswith(PREFIX) or len(key) > 128 or not _printable_ascii(key):
            return None
        digest = _digest(key)

        async def load() -> ApiKey:
            notes = self._notes
            found = await self._load(await self._keys.get(digest))
            self._digest_of.put(found.key_id, digest)
            if self._notes != notes:
                self._by_digest.changed(digest)  # this load is not kept
            return found

        return await self._lookup(self._by_digest, digest, load)

    async def by_key_id(self, key_id: str) -> ApiKey | None:
        """The key a signed URL names; None for an unknown id."""
        if (not key_id.startswith(KEY_ID_PREFIX) or len(key_id) > 64
                or not _printable_ascii(key_id)):
            return None

        async def load() -> ApiKey:
            notes = self._notes
            found = await self._load(await self._keys.find_one({"keyId": key_id}))
            if self._notes != notes:
                self._by_id.changed(key_id)
            return found

        return await self._lookup(self._by_id, key_id, load)

    @staticmethod
    async def _load(doc: dict[str, Any] | None) -> ApiKey:
        if doc is None:
            raise _Unknown
        return _api_key(doc)

    @staticmethod
    async def _lookup(memo: NotedMemo[ApiKey], name: str,
                      load: Callable[[], Awaitable[ApiKey]]) -> ApiKey | None:
        try:
            return await memo.get(name, load)
        except _Unknown:
            return None
