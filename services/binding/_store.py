"""The ``bindings`` collection: every query the binding service makes.

The per-tenant cap holds without a transaction as the webhook service's
subscriptions do: each binding holds a numbered ``slot`` below the cap,
unique per tenant (a unique index), so of creates racing for the last slot
one wins. Deleting a binding frees its slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litho.docstore import Collection, DocumentStore, slots
from services.binding._model import (
    ACTIVE,
    COLLECTION,
    ERROR,
    decode_token,
    encode_token,
    is_binding_id,
    not_found,
)


class BindingStore:
    """The ``bindings`` collection: every query the service makes is here."""

    def __init__(self, store: DocumentStore) -> None:
        self._docs: Collection = store.collection(COLLECTION)

    async def prepare(self) -> None:
        await self._docs.ensure_index(["tenantId"])
        await self._docs.ensure_index(["tenantId", "templateId"])
        await self._docs.ensure_index(["tenantId", "status"])
        await self._docs.ensure_index(["refreshPolicy.type", "nextRefreshAt"])
        await self._docs.ensure_index(["tenantId", "slot"], unique=True)

    async def count(self, tenant_id: str) -> int:
        return await self._docs.count({"tenantId": tenant_id})

    async def insert_within(self, doc: dict[str, Any], limit: int) -> int:
        """Insert ``doc`` unless its tenant has ``limit`` bindings; 0 when
        inserted, else the count that refused it (:mod:`litho.docstore.slots`)."""
        return await slots.insert_within(self._docs, doc, limit)

    async def find(self, binding_id: str) -> dict[str, Any] | None:
        if not is_binding_id(binding_id):
            return None
        return await self._docs.get(binding_id)

    async def get(self, tenant_id: str, binding_id: str) -> dict[str, Any]:
        """The tenant's binding; another tenant's is as missing as none."""
        doc = await self.find(binding_id)
        if doc is None or doc.get("tenantId") != tenant_id:
            raise not_found(binding_id)
        return doc

    async def page(self, tenant_id: str, *, page_size: int, page_token: str,
                   template_id: str, status: str) -> tuple[list[dict[str, Any]], str]:
        """Newest first."""
        flt: dict[str, Any] = {"tenantId": tenant_id}
        if template_id:
            flt["templateId"] = template_id
        if status:
            flt["status"] = status
        if page_token:
            flt["_id"] = {"$lt": decode_token(page_token)}
        docs = await self._docs.find(flt, sort=[("_id", -1)], limit=page_size + 1)
        token = encode_token(docs[page_size - 1]["_id"]) if len(docs) > page_size else ""
        return docs[:page_size], token

    async def replace_config(self, doc: Mapping[str, Any], fields: Mapping[str, Any], *,
                             writes_data: bool = False) -> dict[str, Any] | None:
        """Set ``fields`` and move the revision, if the binding is as ``doc``
        was read: the same revision (no update, pause or resume since) and,
        when the update ``writes_data`` (its data or status), the same data
        (no fetch or push settled since) and the same status (no failure
        since). None when it changed. An update of the name or the policy
        alone never conflicts with a push."""
        revision = int(doc.get("revision", 0))
        match: dict[str, Any] = {"_id": doc["_id"], "revision": revision}
        if writes_data:
            match.update(dataHash=doc.get("dataHash"), status=doc["status"])
        return await self._docs.find_one_and_update(
            match, {"$set": {**fields, "revision": revision + 1}}, return_document="after")

    async def set_status(self, tenant_id: str, binding_id: str, status: str,
                         now: float, extra: Mapping[str, Any] | None = None
                         ) -> dict[str, Any] | None:
        """Pause or resume: the revision moves, so an update or a refresh that
        read the binding before cannot undo it."""
        return await self._docs.find_one_and_update(
            {"_id": binding_id, "tenantId": tenant_id},
            {"$set": {"status": status, "updatedAt": now, **(extra or {})},
             "$inc": {"revision": 1}},
            return_document="after")

    async def delete(self, tenant_id: str, binding_id: str) -> bool:
        return await self._docs.delete({"_id": binding_id, "tenantId": tenant_id}) > 0

    async def settle(self, binding_id: str, revision: int, fields: Mapping[str, Any],
                     status: str | None) -> bool:
        """Store an outcome for ``revision``; the status changes unless the
        binding is paused. False when the binding changed or went meanwhile."""
        if not await self._docs.update({"_id": binding_id, "revision": revision},
                                       {"$set": dict(fields)}):
            return False
        if status is not None:
            await self._docs.update(
                {"_id": binding_id, "revision": revision, "status": {"$in": [ACTIVE, ERROR]}},
                {"$set": {"status": status}})
        return True

    async def mark_reported(self, binding_id: str, revision: int, error: str) -> None:
        await self._docs.update({"_id": binding_id, "revision": revision, "lastError": error},
                                {"$set": {"failureReported": True}})

    # ------------------------------------------------------------ leases ----

    async def claim(self, binding_id: str, now: float, until: float,
                    token: str) -> dict[str, Any] | None:
        """Take the binding's refresh lease unless someone holds it."""
        return await self._docs.find_one_and_update(
            {"_id": binding_id, "leaseUntil": {"$lt": now}},
            {"$set": {"lease": token, "leaseUntil": until}}, return_document="after")

    async def claim_fire(self, doc: Mapping[str, Any], now: float, until: float,
                         token: str) -> dict[str, Any] | None:
        """Take a due cron binding's lease, if its fire has not been taken."""
        return await self._docs.find_one_and_update(
            {"_id": doc["_id"], "nextRefreshAt": doc["nextRefreshAt"],
             "leaseUntil": {"$lt": now}, "status": {"$in": [ACTIVE, ERROR]}},
            {"$set": {"lease": token, "leaseUntil": until}}, return_document="after")

    async def due(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Cron bindings, not paused, whose next fire has come and that nobody holds."""
        return await self._docs.find(
            {"refreshPolicy.type": "cron", "status": {"$in": [ACTIVE, ERROR]},
             "nextRefreshAt": {"$lte": now}, "leaseUntil": {"$lt": now}},
            sort=[("nextRefreshAt", 1)], limit=limit)

    async def release(self, binding_id: str, token: str, *, revision: int,
                      next_refresh_at: float | None = None) -> None:
        """Give the lease back; a scheduled fire first moves ``nextRefreshAt``
        (unless an update set a new schedule meanwhile)."""
        free = {"lease": "", "leaseUntil": 0.0}
        if next_refresh_at is not None and await self._docs.update(
                {"_id": binding_id, "lease": token, "revision": revision},
                {"$set": {**free, "nextRefreshAt": next_refresh_at}}):
            return
        await self._docs.update({"_id": binding_id, "lease": token}, {"$set": free})
