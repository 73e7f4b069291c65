"""Template heads and immutable versions in the document store.

``templates`` holds one head document per template (the latest version's
fields); ``template_versions`` holds every version under ``<id>:<n>``. A new
version is inserted before the head moves, and its ``_id`` is unique, so two
concurrent updates cannot both write version ``n``: the loser gets Conflict.

A stored document that cannot be read back (written before inputs were
bounded, or by hand) must not take its neighbours down: listings skip it
(and log its id), reading it is a FailedPrecondition that says to delete it,
and delete works by id and tenant without decoding it.

A listing page is bounded in bytes as well as in items: one template may
take up to ~2.6 MiB in a gRPC message (html, sample variables, variable
definitions and discovered variables at their limits), and gRPC refuses a
message over 4 MiB, so a page stops before it would pass ``max_page_bytes``
(always holding at least one template) and its token continues right after
the last template returned.

A tenant holds at most ``LITHO_TEMPLATE_MAX_PER_TENANT`` templates, a cap
concurrent creates on any replica cannot pass (:mod:`litho.docstore.slots`):
each head holds a numbered ``slot`` below the cap, unique per tenant, and a
delete frees it. A tenant may also hold slots at or above the cap (it was over
it at upgrade, or the cap was lowered), so a create counts the tenant once in
and takes itself back past the cap. Heads stored before slots existed get one
at start-up (:meth:`TemplateRepository.prepare`, linear in the heads), so they
count against the cap; a template service from before slots must not run
beside this one (it writes heads without a slot and drops slots on update).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from litho.docstore import MAX_DOCUMENT_DEPTH, Collection, DocumentStore, DuplicateKey, slots
from litho.errors import (
    Conflict,
    FailedPrecondition,
    FieldError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from litho.jsonlimits import depth_within
from litho.logs import get_logger
from services.template._model import Spec, Template

log = get_logger(__name__)

_HEADS = "templates"
_VERSIONS = "template_versions"

#: Default byte budget of one listing page, half of gRPC's default 4 MiB
#: message limit: a page of several templates stays under it, and a page of
#: one is that template alone (at most ~2.6 MiB, which still fits).
MAX_PAGE_BYTES: Final = 2 * 1024 * 1024
#: Stored documents read per query while filling a page: a page of large
#: templates stops after a few, so reading page_size + 1 of them at once
#: would decode up to ~100 MiB for nothing.
_FETCH_BATCH: Final = 25
#: Seconds after which a version whose head was never moved to it counts as
#: left behind by an interrupted update (a live update moves it at once).
_HEAD_REPAIR_AFTER: Final = 10.0
#: Protobuf framing of a text field (tag, length varint) and of one
#: discovered variable (a name is shorter than html, so its length takes at
#: most 3 bytes), and the fixed fields (numbers, timestamps, the message's
#: own framing in the response).
_FIELD_BYTES: Final = 8
_NAME_BYTES: Final = 4
_FIXED_BYTES: Final = 128
#: Heads read per query while numbering those without a slot at start-up
#: (whole documents: a batch of large templates is tens of MiB).
_NUMBER_BATCH: Final = 25
#: The cap of a repository created without one (tests, tools): every head
#: still takes a slot, since the unique index holds one head per slot.
_NO_CAP: Final = 2**31 - 1


def new_template_id() -> str:
    # Time-ordered, so listing by id lists by creation.
    return f"tpl_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def _to_doc(t: Template) -> dict[str, Any]:
    return {
        "tenantId": t.tenant_id,
        "templateId": t.id,
        "name": t.name,
        "html": t.html,
        "width": t.width,
        "height": t.height,
        "sampleVariables": t.sample_variables,
        "variableDefinitions": t.variable_definitions,
        "discoveredVariables": t.discovered_variables,
        "tags": t.tags,
        # As text: header names may hold "$" and ".", which a store's field
        # names may not; absent when there are none (as before they existed).
        **({"dataSources": json.dumps(t.data_sources)} if t.data_sources else {}),
        "version": t.version,
        "createTime": t.create_time.isoformat(),
        "updateTime": t.update_time.isoformat(),
    }


def _from_doc(doc: dict[str, Any]) -> Template:
    return Template(
        id=doc["templateId"],
        tenant_id=doc["tenantId"],
        name=doc["name"],
        html=doc["html"],
        width=int(doc["width"]),
        height=int(doc["height"]),
        sample_variables=dict(doc.get("sampleVariables") or {}),
        variable_definitions=list(doc.get("variableDefinitions") or []),
        discovered_variables=list(doc.get("discoveredVariables") or []),
        tags=[str(tag) for tag in doc.get("tags") or []],
        data_sources=_data_sources(doc.get("dataSources")),
        version=int(doc["version"]),
        create_time=datetime.fromisoformat(doc["createTime"]),
        update_time=datetime.fromisoformat(doc["updateTime"]),
    )


def _data_sources(stored: Any) -> list[dict[str, Any]]:
    if not stored:
        return []
    value = json.loads(stored)
    if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
        raise ValueError("dataSources is not an array of objects")
    return value


def wire_size(t: Template) -> int:
    """An upper bound on the bytes ``t`` takes in a gRPC response. The JSON
    fields are measured as the servicer writes them (``json.dumps`` escapes
    non-ASCII, which is never shorter than UTF-8), so a raw emoji counts 12."""
    text = (len(t.id) + len(t.tenant_id) + len(t.name.encode()) + len(t.html.encode())
            + len(json.dumps(t.sample_variables)) + len(json.dumps(t.variable_definitions))
            + len(json.dumps(t.data_sources)))
    names = sum(len(v.encode()) + _NAME_BYTES for v in [*t.discovered_variables, *t.tags])
    return _FIXED_BYTES + 7 * _FIELD_BYTES + text + names


def _readable(doc: dict[str, Any]) -> Template | None:
    """The template in ``doc``, or None if it cannot be read back whole
    (including nesting that a later layer could not encode or decode)."""
    try:
        if not depth_within(doc, MAX_DOCUMENT_DEPTH):
            raise ValueError("nested too deeply")
        return _from_doc(doc)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        log.error("stored template cannot be read", id=str(doc.get("_id")),
                  error=type(exc).__name__)
        return None


def _read(doc: dict[str, Any], template_id: str) -> Template:
    template = _readable(doc)
    if template is None:
        raise FailedPrecondition(
            f"template {template_id!r} is stored in a form that can no longer be read; "
            "delete it and create it again")
    return template


def cap_reached(count: int, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this tenant has {count} templates; the limit is {limit} "
        "(LITHO_TEMPLATE_MAX_PER_TENANT): delete one first", retry_after=60.0)


def _encode_token(template_id: str) -> str:
    return base64.urlsafe_b64encode(template_id.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError as exc:
        raise InvalidArgument("pageToken is not a token this API issued") from exc


class _Slots:
    """The slots a tenant's heads hold, as numbering learns them, and the
    lowest that may be free."""

    def __init__(self, held: list[Any]) -> None:
        self._held: set[int] = set()
        self._low = 0  # every slot below it is held
        for slot in held:
            self.hold(slot)

    def hold(self, slot: Any) -> None:
        # Slots are integers; a number stored as 3.0 clashes with 3 in the
        # unique index. Anything else holds no slot numbering could give.
        if isinstance(slot, int | float) and not isinstance(slot, bool) and slot == slot // 1:
            self._held.add(int(slot))

    def lowest_free(self) -> int:
        while self._low in self._held:
            self._low += 1
        return self._low


class TemplateRepository:
    def __init__(
        self, store: DocumentStore, *, version_cache_size: int,
        max_page_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self._heads = store.collection(_HEADS)
        self._versions = store.collection(_VERSIONS)
        self._cache: OrderedDict[tuple[str, str, int], Template] = OrderedDict()
        self._cache_size = version_cache_size
        self._max_page_bytes = max_page_bytes

    async def prepare(self) -> None:
        await self._heads.ensure_index(["tenantId"])
        await self._versions.ensure_index(["templateId"])
        # A tenant's heads in _id order: listing, and numbering them below.
        await self._heads.ensure_index(["tenantId", "_id"])
        await self._number_slots()
        await self._heads.ensure_index(["tenantId", "slot"], unique=True)

    async def _number_slots(self) -> None:
        """Give each head stored before the cap existed the lowest slot its
        tenant has free, in ``_id`` order, a tenant at a time (linear in its
        heads: its held slots are read once and free ones handed out in
        memory, where a binary search of counts per head was quadratic).

        Replicas starting together agree: each hands out, to the ``i``-th
        unnumbered head of a tenant, the lowest slot not held before numbering
        began nor by the heads before it, and writes it only while the head
        has none. A replica that finds a head numbered meanwhile (by another,
        under the same rule) reads its slot; a replica whose slot a create
        took (the unique index is there from an earlier start) tries the next.
        """
        done: set[str] = set()
        after = ""
        while True:
            heads = await self._heads.find({"slot": None, "_id": {"$gt": after}},
                                           sort=[("_id", 1)], limit=_NUMBER_BATCH)
            for head in heads:
                tenant_id = head.get("tenantId")
                if isinstance(tenant_id, str) and tenant_id not in done:
                    done.add(tenant_id)
                    await self._number_tenant(tenant_id, str(head["_id"]))
            if len(heads) < _NUMBER_BATCH:
                return
            after = heads[-1]["_id"]

    async def _number_tenant(self, tenant_id: str, first: str) -> None:
        """Number the tenant's heads without a slot, from ``first`` (its
        first such head) on. Its held slots are read before its heads are, so
        a head still without a slot was not numbered when they were read, nor
        was any after it (every replica numbers in ``_id`` order); heads that
        were are read with their slots."""
        held = _Slots(await self._held_slots(tenant_id))
        after: dict[str, Any] = {"$gte": first}
        while True:
            heads = await self._heads.find({"tenantId": tenant_id, "_id": after},
                                           sort=[("_id", 1)], limit=_NUMBER_BATCH)
            for head in heads:
                if head.get("slot") is None:
                    await self._give_slot(head["_id"], held)
                else:
                    held.hold(head["slot"])
            if len(heads) < _NUMBER_BATCH:
                return
            after = {"$gt": heads[-1]["_id"]}

    async def _held_slots(self, tenant_id: str) -> list[Any]:
        """The slots the tenant's heads hold, read only when some hold one
        (the usual upgrade has none). The port reads whole documents, so
        they are read a batch at a time."""
        numbered: dict[str, Any] = {"tenantId": tenant_id, "slot": {"$gte": 0}}
        if not await self._heads.count(numbered):
            return []
        held: list[Any] = []
        after = ""
        while True:
            heads = await self._heads.find({**numbered, "_id": {"$gt": after}},
                                           sort=[("_id", 1)], limit=_NUMBER_BATCH)
            held += [head["slot"] for head in heads]
            if len(heads) < _NUMBER_BATCH:
                return held
            after = heads[-1]["_id"]

    async def _give_slot(self, head_id: str, held: _Slots) -> None:
        """Give the head the tenant's lowest free slot, if it still has none."""
        while True:
            slot = held.lowest_free()
            try:
                if await self._heads.update({"_id": head_id, "slot": None},
                                            {"$set": {"slot": slot}}):
                    held.hold(slot)
                    return
            except DuplicateKey:
                # A create took it (the unique index is there from an earlier
                # start): the next one.
                held.hold(slot)
                continue
            # Numbered meanwhile by another replica (then by the same rule),
            # or deleted.
            doc = await self._heads.get(head_id)
            if doc is not None and doc.get("slot") is not None:
                held.hold(doc["slot"])
            return

    async def count(self, tenant_id: str) -> int:
        return await self._heads.count({"tenantId": tenant_id})

    async def create(self, tenant_id: str, spec: Spec, *, limit: int = _NO_CAP) -> Template:
        """A new template (version 1), unless the tenant already has ``limit``:
        a ResourceExhausted (429) naming LITHO_TEMPLATE_MAX_PER_TENANT, decided
        as the head takes its slot, so that creates racing on any replica never
        pass it."""
        now = datetime.now(UTC)
        assert spec.name is not None and spec.html is not None
        assert spec.width is not None and spec.height is not None
        template = Template(
            id=new_template_id(), tenant_id=tenant_id, name=spec.name, html=spec.html,
            width=spec.width, height=spec.height,
            sample_variables=spec.sample_variables or {}, version=1,
            create_time=now, update_time=now,
            variable_definitions=spec.variable_definitions or [],
            discovered_variables=spec.discovered_variables or [],
            tags=spec.tags or [],
            data_sources=spec.data_sources or [],
        )
        await self._write_version(template)
        head = {"_id": template.id, **_to_doc(template)}
        refused = await slots.insert_within(self._heads, head, limit)
        if not refused:
            # A slot below the cap was free, but a tenant may hold slots at or
            # above it (over the cap at upgrade, or the cap lowered), and then
            # creates racing for its free low slots would all pass: counted
            # after the insert, each one past the cap takes itself back (the
            # last one in always sees all the others).
            count = await self._heads.count({"tenantId": tenant_id})
            if count <= limit:
                return template
            await self._heads.delete({"_id": template.id, "tenantId": tenant_id})
            refused = count - 1
        await self._versions.delete({"_id": f"{template.id}:1", "tenantId": tenant_id})
        self._cache.pop((tenant_id, template.id, 1), None)
        raise cap_reached(refused, limit)

    async def latest(self, tenant_id: str, template_id: str) -> Template:
        return _read(await self._head(tenant_id, template_id), template_id)

    async def _head(self, tenant_id: str, template_id: str) -> dict[str, Any]:
        doc = await self._heads.get(template_id)
        # Another tenant's template is indistinguishable from a missing one.
        if doc is None or doc.get("tenantId") != tenant_id:
            raise NotFound(f"template {template_id!r} not found")
        return doc

    async def version(self, tenant_id: str, template_id: str, version: int) -> Template:
        key = (tenant_id, template_id, version)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        doc = await self._versions.get(f"{template_id}:{version}")
        if doc is None or doc.get("tenantId") != tenant_id:
            await self.latest(tenant_id, template_id)
            raise NotFound(f"template {template_id!r} has no version {version}")
        template = _read(doc, template_id)
        self._remember(key, template)
        return template

    async def update(
        self, tenant_id: str, template_id: str, spec: Spec,
        *, check: Callable[[Template], None] | None = None,
        expected_version: int | None = None,
    ) -> Template:
        """Write version n+1, then move the head to it. The version's unique
        ``_id`` makes exactly one of concurrent updates win (the others are a
        Conflict). A head left behind by an update that failed between the two
        writes is repaired here, so it cannot answer Conflict forever.
        ``check`` sees the new version before it is written (rules across
        fields the spec may leave out) and raises to refuse it. With
        ``expected_version``, a template at any other version is a Conflict."""
        for attempt in (1, 2):
            head = await self._head(tenant_id, template_id)
            current = _read(head, template_id)
            # A head is replaced whole: it keeps its slot (the tenant's cap).
            slot = {"slot": head["slot"]} if head.get("slot") is not None else {}
            if expected_version is not None and current.version != expected_version:
                raise Conflict(f"template {template_id!r} is at version {current.version}, "
                               f"not {expected_version}")
            updated = replace(current.with_spec(spec), version=current.version + 1,
                              update_time=datetime.now(UTC))
            if check is not None:
                check(updated)
            try:
                await self._write_version(updated)
            except DuplicateKey as exc:
                if attempt == 1 and await self._repair_head(current, slot):
                    continue
                raise Conflict(
                    f"template {template_id!r} was updated concurrently; retry the update"
                ) from exc
            # Only from where this update found it: if the head has moved on
            # (a repair took it to this version after a long stall, and later
            # updates went on from there), it must not be moved back.
            await self._heads.replace({"_id": template_id, "version": current.version},
                                      {"_id": template_id, **_to_doc(updated), **slot})
            return updated
        raise AssertionError("unreachable")

    async def _repair_head(self, head: Template, slot: dict[str, Any]) -> bool:
        """Move a head that an interrupted update left behind to the version
        that update wrote; True if it did. A version written within the last
        ``_HEAD_REPAIR_AFTER`` seconds belongs to an update still under way
        (its own head move is coming): that is a real conflict."""
        doc = await self._versions.get(f"{head.id}:{head.version + 1}")
        written = None if doc is None else _readable(doc)
        if written is None or written.tenant_id != head.tenant_id:
            return False
        if (datetime.now(UTC) - written.update_time).total_seconds() < _HEAD_REPAIR_AFTER:
            return False
        # Only if the head is still where we found it: never move it backwards.
        moved = await self._heads.replace(
            {"_id": head.id, "version": head.version},
            {"_id": head.id, **_to_doc(written), **slot})
        if moved:
            log.warning("repaired a template head left behind by an interrupted update",
                        template=head.id, version=written.version)
        return True

    async def _page(
        self, coll: Collection, flt: dict[str, Any], after: Callable[[Any], dict[str, Any]],
        key: str, direction: int, *, page_size: int,
    ) -> tuple[list[Template], str]:
        """Up to ``page_size`` readable templates in ``key`` order, within the
        page's byte budget, and the token of the next page ("" at the end).

        ``after(k)`` is the filter for what follows key ``k``. The token is
        the key of the last document consumed (returned or skipped as
        unreadable), taken from the stored document, which may be unreadable.
        """
        found: list[Template] = []
        size = consumed = 0
        last: Any = None
        while True:
            want = min(page_size - consumed + 1, _FETCH_BATCH)
            docs = await coll.find(flt, sort=[(key, direction)], limit=want)
            for doc in docs:
                if consumed == page_size:
                    return found, _encode_token(str(last))
                template = _readable(doc)
                if template is not None:
                    cost = wire_size(template)
                    if found and size + cost > self._max_page_bytes:
                        return found, _encode_token(str(last))
                    found.append(template)
                    size += cost
                consumed += 1
                last = doc.get(key)
            if len(docs) < want:
                return found, ""
            flt = after(last)

    async def versions(
        self, tenant_id: str, template_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[Template], str]:
        """Every version, newest first, a page at a time."""
        latest = await self.latest(tenant_id, template_id)
        below = latest.version + 1
        if page_token:
            try:
                below = int(_decode_token(page_token))
            except ValueError:
                below = 0
            if not 1 < below <= latest.version:
                raise InvalidArgument("pageToken is not a token this API issued",
                                      errors=[FieldError("pageToken", "not issued by this API")])

        def after(version: Any) -> dict[str, Any]:
            return {"templateId": template_id, "tenantId": tenant_id,
                    "version": {"$lt": version}}

        return await self._page(self._versions, after(below), after, "version", -1,
                                page_size=page_size)

    async def delete(self, tenant_id: str, template_id: str) -> None:
        # Counted, not read: a template that can no longer be decoded can
        # still be deleted by its owner.
        if not await self._heads.count({"_id": template_id, "tenantId": tenant_id}):
            raise NotFound(f"template {template_id!r} not found")
        await self._heads.delete({"_id": template_id, "tenantId": tenant_id})
        await self._versions.delete({"templateId": template_id, "tenantId": tenant_id})
        for key in [k for k in self._cache if k[1] == template_id]:
            del self._cache[key]

    async def list(
        self, tenant_id: str, *, page_size: int, page_token: str, name_prefix: str = "",
        tag: str = "",
    ) -> tuple[list[Template], str]:
        """A page of the tenant's templates in id order; with ``name_prefix``,
        only names that start with it (case-sensitive), with ``tag`` only
        templates that carry it."""
        narrow: dict[str, Any] = {"tenantId": tenant_id}
        if name_prefix:
            # Strings compare by code point in both stores: every name that
            # starts with the prefix sorts between it and prefix + U+10FFFF.
            narrow["name"] = {"$gte": name_prefix, "$lt": name_prefix + "\U0010ffff"}
        if tag:
            narrow["tags"] = tag  # matches an element of the array

        def after(template_id: Any) -> dict[str, Any]:
            return {**narrow, "_id": {"$gt": template_id}}

        first = after(_decode_token(page_token)) if page_token else narrow
        return await self._page(self._heads, first, after, "_id", 1, page_size=page_size)

    async def _write_version(self, t: Template) -> None:
        await self._versions.insert({"_id": f"{t.id}:{t.version}", **_to_doc(t)})
        self._remember((t.tenant_id, t.id, t.version), t)

    def _remember(self, key: tuple[str, str, int], template: Template) -> None:
        if self._cache_size == 0:
            return
        self._cache[key] = template
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
