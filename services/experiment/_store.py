"""The ``experiments`` and ``experiment_counters`` collections: every query the
experiment service makes.

The per-tenant cap holds without a transaction as bindings hold theirs: each
experiment holds a numbered ``slot`` below the cap, unique per tenant (a
unique index), so of creates racing for the last slot one wins. Deleting an
experiment frees its slot. A slug is unique per tenant by its own unique
index, so of creates (or updates) racing for one slug one wins too.

Every write after the insert is conditional on the ``revision`` the caller
read, and moves it: None from a write says the experiment changed (or went)
meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litho.docstore import Collection, DocumentStore, DuplicateKey, slots
from litho.errors import AlreadyExists, FieldError
from services.experiment._model import (
    COLLECTION,
    COUNTERS,
    RUNNING,
    decode_token,
    encode_token,
    is_experiment_id,
    not_found,
)

NEWEST_FIRST = [("createdAt", -1), ("_id", -1)]


def slug_taken(slug: str) -> AlreadyExists:
    message = f"another experiment of this tenant has the slug {slug!r}"
    return AlreadyExists(f"slug: {message}", errors=[FieldError("slug", message)])


class ExperimentStore:
    def __init__(self, store: DocumentStore) -> None:
        self._docs: Collection = store.collection(COLLECTION)
        self._counters: Collection = store.collection(COUNTERS)

    async def prepare(self) -> None:
        await self._docs.ensure_index(["tenantId", "slug"], unique=True)
        await self._docs.ensure_index(["tenantId", "slot"], unique=True)
        await self._docs.ensure_index(["tenantHandle", "slug"])
        await self._docs.ensure_index(["tenantId", "status"])
        await self._docs.ensure_index(["tenantId", "createdAt"])
        await self._docs.ensure_index(["status", "_id"])
        await self._docs.ensure_index(["status", "bandit.enabled", "_id"])
        await self._counters.ensure_index(["experimentId"])

    async def count(self, tenant_id: str) -> int:
        return await self._docs.count({"tenantId": tenant_id})

    async def has_slug(self, tenant_id: str, slug: str, *, other_than: str = "") -> bool:
        doc = await self._docs.find_one({"tenantId": tenant_id, "slug": slug})
        return doc is not None and doc["_id"] != other_than

    async def insert_within(self, doc: dict[str, Any], limit: int) -> int:
        """Insert ``doc`` unless its tenant has ``limit`` experiments; 0 when
        inserted, else the count that refused it (:mod:`litho.docstore.slots`).
        A slug taken by another experiment of the tenant raises
        :class:`AlreadyExists` naming ``slug``."""
        async def slug_clash() -> None:
            if await self.has_slug(doc["tenantId"], doc["slug"]):
                raise slug_taken(doc["slug"])

        return await slots.insert_within(self._docs, doc, limit, on_clash=slug_clash)

    async def get(self, tenant_id: str, experiment_id: str) -> dict[str, Any]:
        """The tenant's experiment; another tenant's is as missing as none."""
        doc = await self._docs.get(experiment_id) if is_experiment_id(experiment_id) else None
        if doc is None or doc.get("tenantId") != tenant_id:
            raise not_found(experiment_id)
        return doc

    async def page(self, tenant_id: str, *, page_size: int, page_token: str,
                   status: str) -> tuple[list[dict[str, Any]], str]:
        """Newest first (creation time, then id); the token names the last
        experiment answered, so a page never repeats nor skips one."""
        flt: dict[str, Any] = {"tenantId": tenant_id}
        if status:
            flt["status"] = status
        want = page_size + 1
        if page_token:
            created_at, last_id = decode_token(page_token)
            docs = await self._docs.find({**flt, "createdAt": created_at,
                                          "_id": {"$lt": last_id}},
                                         sort=[("_id", -1)], limit=want)
            if len(docs) < want:
                docs += await self._docs.find({**flt, "createdAt": {"$lt": created_at}},
                                              sort=NEWEST_FIRST, limit=want - len(docs))
        else:
            docs = await self._docs.find(flt, sort=NEWEST_FIRST, limit=want)
        token = ""
        if len(docs) > page_size:
            last = docs[page_size - 1]
            token = encode_token(float(last["createdAt"]), last["_id"])
        return docs[:page_size], token

    async def write(self, doc: Mapping[str, Any], fields: Mapping[str, Any]
                    ) -> dict[str, Any] | None:
        """Set ``fields`` and move the revision if the experiment is still at
        the revision ``doc`` was read at; None when it changed or went. A slug
        another experiment of the tenant took raises :class:`AlreadyExists`."""
        revision = int(doc.get("revision") or 0)
        try:
            return await self._docs.find_one_and_update(
                {"_id": doc["_id"], "tenantId": doc["tenantId"], "revision": revision},
                {"$set": {**fields, "revision": revision + 1}}, return_document="after")
        except DuplicateKey:
            raise slug_taken(str(fields.get("slug") or doc["slug"])) from None

    async def delete(self, doc: Mapping[str, Any]) -> bool:
        """Delete the experiment if it is still at the revision ``doc`` was read
        at, then its counters; False when it changed or went."""
        deleted = await self._docs.delete({"_id": doc["_id"], "tenantId": doc["tenantId"],
                                           "revision": int(doc.get("revision") or 0)})
        if deleted:
            await self._counters.delete({"experimentId": doc["_id"]})
        return deleted > 0

    async def counters(self, tenant_id: str, experiment_id: str
                       ) -> dict[str, dict[str, Any]]:
        """The experiment's counters by variant id."""
        docs = await self._counters.find({"experimentId": experiment_id, "tenantId": tenant_id})
        return {str(d.get("variantId")): d for d in docs}

    # ----------------------------------------------------- the public side ----

    async def by_handle(self, handle: str, slug: str) -> dict[str, Any] | None:
        """The experiment served at ``/s/{handle}/{slug}`` (indexed)."""
        return await self._docs.find_one({"tenantHandle": handle, "slug": slug})

    async def by_slug(self, tenant_id: str, slug: str) -> dict[str, Any] | None:
        return await self._docs.find_one({"tenantId": tenant_id, "slug": slug})

    async def by_id(self, experiment_id: str) -> dict[str, Any] | None:
        """Any tenant's experiment (the counter checks the tenant itself)."""
        return await self._docs.get(experiment_id) if is_experiment_id(experiment_id) else None

    async def running(self, *, after: str, limit: int,
                      bandit: bool = False) -> list[dict[str, Any]]:
        """Running experiments by id, from just after ``after`` (with
        ``bandit``, only those whose bandit is on)."""
        flt: dict[str, Any] = {"status": RUNNING, "_id": {"$gt": after}}
        if bandit:
            flt["bandit.enabled"] = True
        return await self._docs.find(flt, sort=[("_id", 1)], limit=limit)

    async def claim(self, experiment_id: str, lease_field: str, *, now: float,
                    until: float, where: Mapping[str, Any]) -> dict[str, Any] | None:
        """Take the lease ``lease_field`` of the experiment until ``until`` if
        nobody holds it at ``now`` and it matches ``where``; the document
        after, or None. Of replicas racing for it one wins (one atomic
        update); the revision does not move (users' writes are not refused)."""
        for free in (None, {"$lt": now}):  # never taken (or released), or run out
            doc = await self._docs.find_one_and_update(
                {**where, "_id": experiment_id, lease_field: free},
                {"$set": {lease_field: until}}, return_document="after")
            if doc is not None:
                return doc
        return None

    async def set_fields(self, experiment_id: str, fields: Mapping[str, Any]) -> None:
        """Set bookkeeping ``fields`` (leases, winnerReadyAt) without moving the revision."""
        await self._docs.update({"_id": experiment_id}, {"$set": dict(fields)})
