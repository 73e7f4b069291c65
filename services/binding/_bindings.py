"""Bindings: a template, a data source, a mapping and a refresh policy, and
the data they last fetched or were pushed (collection ``bindings``).

No grpc, nats or aiohttp here: the template service and the events are
behind :mod:`services.binding._ports`, every fetch goes through
:class:`services.binding._fetch.Fetcher` (the outbound guard).

Each binding document carries a ``revision``, moved by every update of its
configuration: a fetch settles its outcome only on the revision it fetched
for, so data fetched from a source that was replaced meanwhile is dropped.
Refreshes hold a lease (``lease``, ``leaseUntil``) taken with one atomic
``find_one_and_update``, so of several resolvers, schedulers and replicas one
fetches and the others serve the data they have.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from litho import jsonlimits
from litho.docstore import Collection, DocumentStore
from litho.errors import (
    Conflict,
    FailedPrecondition,
    FieldError,
    InvalidArgument,
    LithoError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from litho.logs import get_logger
from litho.outbound import AllowList
from services.binding import _schedule, _validate
from services.binding._fetch import (
    Fetched,
    Fetcher,
    FetchFailed,
    SourceRequest,
    canonical_json,
    data_hash,
)
from services.binding._ports import EventSink, TemplateMapping
from services.binding._secrets import SecretBox, new_push_secret, push_authorized
from services.binding._settings import DEFAULT_JSON_LIMITS

log = get_logger(__name__)

COLLECTION = "bindings"
ID_PREFIX = "bnd_"
ID_PATTERN = re.compile(r"^bnd_[0-9a-f]{36}$")

ACTIVE, PAUSED, ERROR = "active", "paused", "error"
STATUSES = (ACTIVE, PAUSED, ERROR)
#: Where the current data came from.
FETCH, PUSH = "fetch", "push"
FETCHED_TYPES = ("http", "static")
SERVE_STALE, SERVE_ERROR, SERVE_DEFAULT = "serve_stale", "serve_error", "serve_default"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100

Clock = Callable[[], float]


def new_binding_id(now: float) -> str:
    """``bnd_`` + 12 hex of the time in ms (ids list in creation order) + 24
    random hex: the id is the only credential of ``/b/{id}.{ext}``."""
    return f"{ID_PREFIX}{int(now * 1000) % 16**12:012x}{secrets.token_hex(12)}"


def _not_found(binding_id: str) -> NotFound:
    return NotFound(f"binding {binding_id[:100]!r} not found")


def _invalid(field_name: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field_name} {message}",
                           errors=[FieldError(field_name, message)])


def deep_merge(defaults: Any, mapped: Any) -> Any:
    """``mapped`` where it gives a value, ``defaults`` where it gives null or
    nothing; objects merge key by key."""
    if mapped is None:
        return defaults
    if isinstance(defaults, dict) and isinstance(mapped, dict):
        merged = dict(defaults)
        for key, value in mapped.items():
            merged[key] = deep_merge(defaults.get(key), value)
        return merged
    return mapped


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        value = ""
    if not ID_PATTERN.match(value):
        raise _invalid("pageToken", "is not a token this API issued")
    return value


def mapping_failure(exc: InvalidArgument) -> str:
    """One line for a mapping that failed over data: each field and its problem."""
    if exc.errors:
        return "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return exc.message


# ------------------------------------------------------------------ model ----

@dataclass(frozen=True)
class Output:
    #: A format name of :mod:`litho.formats` (png, jpeg, webp, pdf, gif).
    format: str = "png"
    #: JSON text of the RenderOptions (``json_format.MessageToJson``).
    options_json: str = "{}"


@dataclass(frozen=True)
class SourceInput:
    """A data source as received; ``credentials`` is None when none came."""

    type: str = ""
    url: str = ""
    method: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    credentials: Mapping[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "url": self.url, "method": self.method,
                "headers": dict(self.headers), "body": self.body}


@dataclass(frozen=True)
class PolicyInput:
    type: str = ""
    ttl_seconds: int = 0
    cron: str = ""
    on_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ttlSeconds": self.ttl_seconds, "cron": self.cron,
                "onError": self.on_error}


@dataclass(frozen=True)
class BindingSpec:
    """The editable fields; None keeps the stored value on update."""

    name: str | None = None
    template_id: str | None = None
    data_source: SourceInput | None = None
    clear_credentials: bool = False
    mapping: Mapping[str, str] | None = None
    defaults_json: str | None = None
    refresh_policy: PolicyInput | None = None
    output: Output | None = None


@dataclass(frozen=True)
class Binding:
    """A binding as answered: never its credentials nor (but once) its push secret."""

    id: str
    tenant_id: str
    name: str
    template_id: str
    #: type, url, method, headers, body.
    data_source: Mapping[str, Any]
    credentials_type: str
    mapping: Mapping[str, str]
    defaults_json: str
    #: type, ttlSeconds, cron, onError.
    refresh_policy: Mapping[str, Any]
    output: Output
    status: str
    last_error: str
    last_error_at: float | None
    fetched_at: float | None
    next_refresh_at: float | None
    data_hash: str
    created_at: float
    updated_at: float
    push_secret: str = ""


@dataclass(frozen=True)
class BindingData:
    data_json: str
    fetched_at: float | None
    etag: str
    last_modified: str
    status: str
    last_error: str
    last_error_at: float | None
    data_hash: str
    #: fetch, push or none.
    source: str
    variables_json: str


@dataclass(frozen=True)
class Resolved:
    binding_id: str
    tenant_id: str
    template_id: str
    variables_json: str
    output: Output
    status: str
    data_hash: str
    #: Until when the data is fresh; None for push and manual bindings.
    fresh_until: float | None


@dataclass(frozen=True)
class Tested:
    success: bool
    status: int
    data_json: str
    duration_ms: float
    error: str


@dataclass(frozen=True)
class Limits:
    max_per_tenant: int = 1000
    min_ttl_seconds: int = 10
    min_cron_interval: float = 300.0
    max_push_bytes: int = 1024 * 1024
    max_data_bytes: int = 1024 * 1024
    #: Seconds a refresh holds its binding: the fetch's timeout and room to settle.
    lease_seconds: float = 40.0
    #: Limits of pushed and sample JSON (the fetcher holds fetched data to its own).
    json_limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value else None


def binding_from_doc(doc: Mapping[str, Any], *, push_secret: str = "") -> Binding:
    policy = dict(doc.get("refreshPolicy") or {})
    output = doc.get("output") or {}
    next_refresh = _opt_float(doc.get("nextRefreshAt"))
    fetched_at = _opt_float(doc.get("fetchedAt"))
    if policy.get("type") == "ttl" and fetched_at is not None:
        next_refresh = fetched_at + float(policy.get("ttlSeconds") or 0)
    return Binding(
        id=doc["_id"], tenant_id=doc["tenantId"], name=doc["name"],
        template_id=doc["templateId"], data_source=dict(doc.get("dataSource") or {}),
        credentials_type=str(doc.get("credentialsType") or ""),
        mapping=dict(doc.get("mapping") or {}), defaults_json=doc.get("defaults") or "{}",
        refresh_policy=policy,
        output=Output(format=str(output.get("format") or "png"),
                      options_json=str(output.get("options") or "{}")),
        status=doc["status"], last_error=str(doc.get("lastError") or ""),
        last_error_at=_opt_float(doc.get("lastErrorAt")), fetched_at=fetched_at,
        next_refresh_at=next_refresh, data_hash=str(doc.get("dataHash") or ""),
        created_at=float(doc["createdAt"]), updated_at=float(doc["updatedAt"]),
        push_secret=push_secret)


# ------------------------------------------------------------------ store ----

class BindingStore:
    """The ``bindings`` collection: every query the service makes is here."""

    def __init__(self, store: DocumentStore) -> None:
        self._docs: Collection = store.collection(COLLECTION)

    async def prepare(self) -> None:
        await self._docs.ensure_index(["tenantId"])
        await self._docs.ensure_index(["tenantId", "templateId"])
        await self._docs.ensure_index(["tenantId", "status"])
        await self._docs.ensure_index(["refreshPolicy.type", "nextRefreshAt"])

    async def count(self, tenant_id: str) -> int:
        return await self._docs.count({"tenantId": tenant_id})

    async def insert(self, doc: dict[str, Any]) -> None:
        await self._docs.insert(doc)

    async def find(self, binding_id: str) -> dict[str, Any] | None:
        if not ID_PATTERN.match(binding_id):
            return None
        return await self._docs.get(binding_id)

    async def get(self, tenant_id: str, binding_id: str) -> dict[str, Any]:
        """The tenant's binding; another tenant's is as missing as none."""
        doc = await self.find(binding_id)
        if doc is None or doc.get("tenantId") != tenant_id:
            raise _not_found(binding_id)
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

    async def replace_config(self, doc: dict[str, Any], revision: int,
                             fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """Set ``fields`` and move the revision, if nobody changed it meanwhile."""
        return await self._docs.find_one_and_update(
            {"_id": doc["_id"], "revision": revision},
            {"$set": {**fields, "revision": revision + 1}}, return_document="after")

    async def set_status(self, tenant_id: str, binding_id: str, status: str,
                         now: float, extra: Mapping[str, Any] | None = None
                         ) -> dict[str, Any] | None:
        return await self._docs.find_one_and_update(
            {"_id": binding_id, "tenantId": tenant_id},
            {"$set": {"status": status, "updatedAt": now, **(extra or {})}},
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


# ---------------------------------------------------------------- outcome ----

@dataclass(frozen=True)
class _Outcome:
    """What a fetch or a push comes to, before it is stored."""

    fields: dict[str, Any]
    status: str | None
    #: The data changed: binding.updated.
    changed: bool = False
    #: A failure not reported before: binding.failed.
    report: str = ""


# ----------------------------------------------------------------- domain ----

class Bindings:
    def __init__(self, store: BindingStore, fetcher: Fetcher, templates: TemplateMapping,
                 events: EventSink, box: SecretBox, *, allow: AllowList,
                 limits: Limits = Limits(), clock: Clock = time.time) -> None:
        self.store = store
        self._fetcher = fetcher
        self._templates = templates
        self._events = events
        self._box = box
        self._allow = allow
        self._limits = limits
        self.clock = clock

    # ---------------------------------------------------------- validation ----

    async def _configure(self, tenant_id: str, spec: BindingSpec,
                         current: Mapping[str, Any] | None) -> dict[str, Any]:
        """The binding's configuration fields after ``spec`` (over ``current``
        on update), every rule checked; nothing is stored here."""
        cur = current or {}
        name = spec.name if spec.name is not None else cur.get("name")
        if name is None:
            raise _invalid("name", "is required")
        _validate.check_name(name)
        template_id = spec.template_id if spec.template_id is not None else cur.get("templateId")
        if not template_id:
            raise _invalid("templateId", "is required")
        if spec.data_source is not None:
            source = _validate.check_data_source(spec.data_source.as_dict(),
                                                 path="dataSource", allow=self._allow)
        elif "dataSource" in cur:
            source = dict(cur["dataSource"])
        else:
            raise _invalid("dataSource", "is required")
        credentials, credentials_type = self._credentials(spec, source, cur)
        mapping = dict(spec.mapping) if spec.mapping is not None else cur.get("mapping")
        if mapping is None:
            raise _invalid("mapping", "is required")
        _validate.check_mapping_names(mapping)
        defaults_text = (spec.defaults_json if spec.defaults_json is not None
                         else cur.get("defaults", ""))
        defaults = _validate.check_defaults(defaults_text or "", limits=self._limits.json_limits)
        if spec.refresh_policy is not None:
            policy_in: dict[str, Any] = spec.refresh_policy.as_dict()
        elif current is not None and (source["type"] == PUSH) == (
                cur["dataSource"]["type"] == PUSH):
            policy_in = dict(cur["refreshPolicy"])
        elif current is not None:
            raise _invalid("refreshPolicy", "must be given when the source changes to or from push")
        else:
            policy_in = {}
        policy = _validate.check_refresh_policy(
            policy_in, source_type=source["type"], min_ttl=self._limits.min_ttl_seconds,
            min_cron_interval=self._limits.min_cron_interval)
        output = spec.output or Output(**_stored_output(cur))
        if not await self._templates.template_exists(tenant_id, template_id):
            raise _invalid("templateId", f"{template_id[:100]!r} is not a template of this tenant")
        await self._templates.evaluate(mapping, "", check_only=True)
        return {
            "name": name, "templateId": template_id, "dataSource": source,
            "credentials": credentials, "credentialsType": credentials_type,
            "mapping": mapping, "defaults": dumps(defaults), "refreshPolicy": policy,
            "output": {"format": output.format or "png",
                       "options": output.options_json or "{}"},
        }

    def _credentials(self, spec: BindingSpec, source: Mapping[str, Any],
                     cur: Mapping[str, Any]) -> tuple[str | None, str]:
        """The sealed credentials and their type, after ``spec``."""
        given = spec.data_source.credentials if spec.data_source is not None else None
        if given is not None:
            if source["type"] == PUSH:
                raise _invalid("dataSource.credentials", "is for http and static sources only")
            checked = _validate.check_credentials(given, path="dataSource.credentials")
            return self._box.seal(dumps(checked)), checked["type"]
        if spec.clear_credentials or source["type"] == PUSH:
            return None, ""
        return cur.get("credentials"), str(cur.get("credentialsType") or "")

    # ---------------------------------------------------------------- CRUD ----

    async def create(self, tenant_id: str, spec: BindingSpec) -> Binding:
        """The new binding; for a push source, with its push secret (shown once).

        An http or static source is fetched at once: a destination the guard
        refuses is a 422 and nothing is stored; any other failure stores the
        binding in status ``error``."""
        _check_tenant(tenant_id)
        config = await self._configure(tenant_id, spec, None)
        count = await self.store.count(tenant_id)
        if count >= self._limits.max_per_tenant:
            raise ResourceExhausted(
                f"this tenant has {count} bindings; the limit is {self._limits.max_per_tenant} "
                "(LITHO_BINDING_MAX_PER_TENANT): delete one first", retry_after=60.0)
        now = self.clock()
        push_secret = new_push_secret() if config["dataSource"]["type"] == PUSH else ""
        doc: dict[str, Any] = {
            "_id": new_binding_id(now), "tenantId": tenant_id, **config,
            "status": ACTIVE, "pushSecret": self._box.seal(push_secret) if push_secret else None,
            "data": "", "dataHash": "", "variables": "", "source": "", "fetchedAt": None,
            "etag": "", "lastModified": "", "lastError": "", "lastErrorAt": None,
            "failing": False, "failureReported": False,
            "nextRefreshAt": self._next_fire(config["refreshPolicy"], now),
            "lease": "", "leaseUntil": 0.0, "revision": 0, "createdAt": now, "updatedAt": now,
        }
        outcome = None
        if config["dataSource"]["type"] in FETCHED_TYPES:
            outcome = await self._fetch_outcome(doc, now, denied_is_invalid=True)
            doc.update(outcome.fields)
            if outcome.status:
                doc["status"] = outcome.status
        await self.store.insert(doc)
        log.info("binding created", tenant=tenant_id, binding=doc["_id"],
                 source_type=config["dataSource"]["type"], status=doc["status"])
        if outcome is not None:
            await self._publish(doc, outcome, FETCH, now)
        return binding_from_doc(doc, push_secret=push_secret)

    async def get(self, tenant_id: str, binding_id: str) -> Binding:
        _check_tenant(tenant_id)
        return binding_from_doc(await self.store.get(tenant_id, binding_id))

    async def list_bindings(self, tenant_id: str, *, page_size: int, page_token: str,
                            template_id: str = "", status: str = ""
                            ) -> tuple[list[Binding], str]:
        _check_tenant(tenant_id)
        if page_size < 0:
            raise _invalid("pageSize", f"must be between 1 and {MAX_PAGE_SIZE}")
        if status and status not in STATUSES:
            raise _invalid("status", "must be active, paused or error")
        docs, token = await self.store.page(
            tenant_id, page_size=min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            page_token=page_token, template_id=template_id, status=status)
        return [binding_from_doc(d) for d in docs], token

    async def update(self, tenant_id: str, binding_id: str, spec: BindingSpec) -> Binding:
        """The binding after ``spec``. A new http or static source (or new
        credentials) is fetched at once, as at create; a new mapping or
        defaults map the stored data again. A source that becomes push gets a
        new push secret, answered this once."""
        _check_tenant(tenant_id)
        current = await self.store.get(tenant_id, binding_id)
        config = await self._configure(tenant_id, spec, current)
        now = self.clock()
        fields: dict[str, Any] = {**config, "updatedAt": now}
        source_type = config["dataSource"]["type"]
        was_push = current["dataSource"]["type"] == PUSH
        push_secret = ""
        if source_type == PUSH and not was_push:
            push_secret = new_push_secret()
            fields["pushSecret"] = self._box.seal(push_secret)
        elif source_type != PUSH:
            fields["pushSecret"] = None
        policy = config["refreshPolicy"]
        if policy != current.get("refreshPolicy"):
            fields["nextRefreshAt"] = self._next_fire(policy, now)
        source_changed = (config["dataSource"] != current["dataSource"]
                          or config["credentials"] != current.get("credentials"))
        remap = (config["mapping"] != current.get("mapping")
                 or config["defaults"] != current.get("defaults"))
        merged = {**current, **fields}
        outcome: _Outcome | None = None
        if source_type in FETCHED_TYPES and source_changed:
            merged.update(etag="", lastModified="")
            fields.update(etag="", lastModified="")
            outcome = await self._fetch_outcome(merged, now, denied_is_invalid=True,
                                                force_map=True)
        elif remap and current.get("data"):
            outcome = await self._data_outcome(
                merged, current["data"], str(current.get("dataHash") or ""),
                source=str(current.get("source") or FETCH), now=now, extra={}, force_map=True,
                touch=False)
        if outcome is not None:
            fields.update(outcome.fields)
            if outcome.status and current["status"] != PAUSED:
                fields["status"] = outcome.status
        updated = await self.store.replace_config(current, int(current.get("revision", 0)),
                                                  fields)
        if updated is None:
            raise Conflict(f"binding {binding_id!r} changed meanwhile; read it and try again")
        if outcome is not None:
            await self._publish(updated, outcome, FETCH, now)
        return binding_from_doc(updated, push_secret=push_secret)

    async def delete(self, tenant_id: str, binding_id: str) -> None:
        _check_tenant(tenant_id)
        if not await self.store.delete(tenant_id, binding_id):
            raise _not_found(binding_id)
        log.info("binding deleted", tenant=tenant_id, binding=binding_id)

    async def pause(self, tenant_id: str, binding_id: str) -> Binding:
        """No refresh of any kind until resumed; the last data is served."""
        _check_tenant(tenant_id)
        await self.store.get(tenant_id, binding_id)
        doc = await self.store.set_status(tenant_id, binding_id, PAUSED, self.clock())
        if doc is None:
            raise _not_found(binding_id)
        return binding_from_doc(doc)

    async def resume(self, tenant_id: str, binding_id: str) -> Binding:
        """Active again (``error`` if its last refresh failed); a cron schedule
        starts from now, without catching up the fires it missed."""
        _check_tenant(tenant_id)
        current = await self.store.get(tenant_id, binding_id)
        if current["status"] != PAUSED:
            return binding_from_doc(current)
        now = self.clock()
        doc = await self.store.set_status(
            tenant_id, binding_id, ERROR if current.get("failing") else ACTIVE, now,
            {"nextRefreshAt": self._next_fire(current["refreshPolicy"], now)})
        if doc is None:
            raise _not_found(binding_id)
        return binding_from_doc(doc)

    # --------------------------------------------------------------- data ----

    async def refresh(self, tenant_id: str, binding_id: str) -> tuple[Binding, bool]:
        """Fetch now, whatever the policy; a failure is stored, not raised."""
        _check_tenant(tenant_id)
        doc = await self.store.get(tenant_id, binding_id)
        if doc["status"] == PAUSED:
            raise FailedPrecondition(f"binding {binding_id!r} is paused; resume it first")
        if doc["dataSource"]["type"] not in FETCHED_TYPES:
            raise FailedPrecondition(
                f"binding {binding_id!r} gets its data by push; there is nothing to fetch")
        now = self.clock()
        token = secrets.token_hex(8)
        claimed = await self.store.claim(binding_id, now, now + self._limits.lease_seconds,
                                         token)
        if claimed is None:
            raise Conflict(f"binding {binding_id!r} is being refreshed; try again in a moment")
        changed = await self.run_claimed(claimed, token, event_source="refresh")
        return binding_from_doc(await self.store.get(tenant_id, binding_id)), changed

    async def data(self, tenant_id: str, binding_id: str) -> BindingData:
        _check_tenant(tenant_id)
        doc = await self.store.get(tenant_id, binding_id)
        return BindingData(
            data_json=str(doc.get("data") or ""), fetched_at=_opt_float(doc.get("fetchedAt")),
            etag=str(doc.get("etag") or ""), last_modified=str(doc.get("lastModified") or ""),
            status=doc["status"], last_error=str(doc.get("lastError") or ""),
            last_error_at=_opt_float(doc.get("lastErrorAt")),
            data_hash=str(doc.get("dataHash") or ""), source=str(doc.get("source") or "none"),
            variables_json=str(doc.get("variables") or "") or self._defaults_text(doc))

    async def push(self, binding_id: str, body: bytes, *, signature: str,
                   secret: str) -> tuple[bool, str]:
        """Store pushed data (changed, data hash). Nothing is stored unless the
        signature or the secret is the binding's."""
        doc = await self.store.find(binding_id)
        if doc is None:
            raise _not_found(binding_id)
        if doc["dataSource"]["type"] != PUSH or not doc.get("pushSecret"):
            raise FailedPrecondition(f"binding {binding_id!r} does not take pushed data")
        if len(body) > self._limits.max_push_bytes:
            raise InvalidArgument(
                f"the pushed body is {len(body)} bytes; the limit is "
                f"{self._limits.max_push_bytes} (LITHO_BINDING_MAX_PUSH_BYTES)")
        if not (signature or secret) or not push_authorized(
                self._push_secret(doc), body, signature=signature, presented=secret):
            raise Unauthenticated(
                "a push needs X-Litho-Signature (sha256=<hex HMAC-SHA256 of the body with the "
                "binding's push secret>) or X-Litho-Push-Secret; neither matched")
        if doc["status"] == PAUSED:
            raise FailedPrecondition(f"binding {binding_id!r} is paused; resume it first")
        value = _parse_json(body, "body", self._limits.json_limits)
        text, digest = canonical_json(value), data_hash(value)
        now = self.clock()
        outcome = await self._data_outcome(doc, text, digest, source=PUSH, now=now, extra={})
        await self._settle(doc, outcome, PUSH, now)
        if outcome.fields.get("failing"):
            # Recorded (status error, binding.failed), and the pusher is told.
            raise InvalidArgument(str(outcome.fields["lastError"]))
        return outcome.changed, digest

    def _push_secret(self, doc: Mapping[str, Any]) -> str:
        """The binding's push secret; "" (no push accepted) when no key of
        LITHO_BINDING_SECRET_KEY opens it any more."""
        try:
            return self._box.open(doc["pushSecret"])
        except ValueError:
            log.error("a push secret cannot be opened: was a key dropped from "
                      "LITHO_BINDING_SECRET_KEY?", binding=doc["_id"])
            return ""

    async def resolve(self, binding_id: str) -> Resolved:
        """The binding's variables to render, refreshed first when its TTL has
        passed (under the lease: who loses it serves the data there is)."""
        doc = await self.store.find(binding_id)
        if doc is None:
            raise _not_found(binding_id)
        now = self.clock()
        if self._stale(doc, now):
            token = secrets.token_hex(8)
            claimed = await self.store.claim(binding_id, now, now + self._limits.lease_seconds,
                                             token)
            if claimed is not None:
                if self._stale(claimed, now):
                    await self.run_claimed(claimed, token, event_source=FETCH)
                else:  # refreshed meanwhile by whoever held the lease
                    await self.store.release(binding_id, token, revision=claimed["revision"])
                doc = await self.store.find(binding_id) or doc
                now = self.clock()
        return self._resolved(doc, now)

    def _stale(self, doc: Mapping[str, Any], now: float) -> bool:
        policy = doc["refreshPolicy"]
        if (policy.get("type") != "ttl" or doc["status"] == PAUSED
                or doc["dataSource"]["type"] not in FETCHED_TYPES):
            return False
        ttl = float(policy.get("ttlSeconds") or 0)
        if doc.get("failing") and doc.get("lastErrorAt"):
            # A failing source is asked again once per TTL, not at every render.
            return bool(now > float(doc["lastErrorAt"]) + ttl)
        fetched = doc.get("fetchedAt")
        return fetched is None or now > float(fetched) + ttl

    def _resolved(self, doc: Mapping[str, Any], now: float) -> Resolved:
        policy = doc["refreshPolicy"]
        defaults = self._defaults_text(doc)
        variables = str(doc.get("variables") or "") or defaults
        if doc["status"] == ERROR:
            on_error = policy.get("onError") or SERVE_STALE
            if on_error == SERVE_ERROR:
                raise FailedPrecondition(
                    f"the binding's data source failed: {doc.get('lastError') or 'unknown error'}")
            if on_error == SERVE_DEFAULT:
                variables = defaults
        fresh_until: float | None = None
        if doc["status"] != PAUSED:
            if policy.get("type") == "ttl":
                fetched = doc.get("fetchedAt")
                fresh_until = (now if doc["status"] == ERROR or fetched is None
                               else float(fetched) + float(policy.get("ttlSeconds") or 0))
            elif policy.get("type") == "cron":
                fresh_until = _opt_float(doc.get("nextRefreshAt"))
        output = _stored_output(doc)
        return Resolved(
            binding_id=doc["_id"], tenant_id=doc["tenantId"], template_id=doc["templateId"],
            variables_json=variables, output=Output(**output), status=doc["status"],
            data_hash=str(doc.get("dataHash") or ""), fresh_until=fresh_until)

    @staticmethod
    def _defaults_text(doc: Mapping[str, Any]) -> str:
        return str(doc.get("defaults") or "{}")

    # ------------------------------------------------------ preview / test ----

    async def preview(self, tenant_id: str, *, template_id: str,
                      data_source: SourceInput | None, sample_data_json: str,
                      mapping: Mapping[str, str], defaults_json: str) -> tuple[str, str]:
        """The variables ``mapping`` makes of the source's data (fetched once)
        or of the sample data, defaults included; and that data. Nothing is saved."""
        _check_tenant(tenant_id)
        if not template_id:
            raise _invalid("templateId", "is required")
        if (data_source is None) == (not sample_data_json):
            raise _invalid("dataSource", "or sampleData is required (one of them, not both)")
        _validate.check_mapping_names(dict(mapping))
        defaults = _validate.check_defaults(defaults_json or "", limits=self._limits.json_limits)
        if data_source is not None:
            request = self._checked_request(data_source)
            if not await self._templates.template_exists(tenant_id, template_id):
                raise _invalid("templateId",
                               f"{template_id[:100]!r} is not a template of this tenant")
            try:
                fetched = await self._fetcher.fetch(request)
            except FetchFailed as exc:
                where = "dataSource.url" if exc.denied else "dataSource"
                raise _invalid(where, exc.message) from exc
            data_text = fetched.data_json
        else:
            if len(sample_data_json.encode()) > self._limits.max_data_bytes:
                raise _invalid("sampleData", f"is larger than {self._limits.max_data_bytes} "
                               "bytes (LITHO_BINDING_MAX_DATA_BYTES)")
            data_text = canonical_json(
                _parse_json(sample_data_json, "sampleData", self._limits.json_limits))
            if not await self._templates.template_exists(tenant_id, template_id):
                raise _invalid("templateId",
                               f"{template_id[:100]!r} is not a template of this tenant")
        mapped = json.loads(await self._templates.evaluate(dict(mapping), data_text,
                                                           check_only=False))
        return dumps(deep_merge(defaults, mapped)), data_text

    async def test_source(self, tenant_id: str, data_source: SourceInput) -> Tested:
        """Fetch once through the guard; the answer says how it went."""
        _check_tenant(tenant_id)
        request = self._checked_request(data_source)
        started = time.monotonic()
        try:
            fetched = await self._fetcher.fetch(request)
        except FetchFailed as exc:
            return Tested(success=False, status=exc.status or 0, data_json="",
                          duration_ms=(time.monotonic() - started) * 1000, error=exc.message)
        return Tested(success=True, status=fetched.status, data_json=fetched.data_json,
                      duration_ms=fetched.duration_ms, error="")

    def _checked_request(self, data_source: SourceInput) -> SourceRequest:
        source = _validate.check_data_source(data_source.as_dict(), path="dataSource",
                                             allow=self._allow)
        if source["type"] not in FETCHED_TYPES:
            raise _invalid("dataSource.type",
                           "must be http or static: a push source is not fetched")
        creds: dict[str, str] = {}
        if data_source.credentials is not None:
            creds = _validate.check_credentials(data_source.credentials,
                                                path="dataSource.credentials")
        return SourceRequest(url=source["url"], method=source.get("method") or "GET",
                             headers=dict(source.get("headers") or {}),
                             body=source.get("body") or "", credentials=creds)

    # ---------------------------------------------------------- refreshes ----

    async def run_claimed(self, doc: Mapping[str, Any], token: str, *, event_source: str,
                          next_refresh_at: float | None = None) -> bool:
        """Fetch a binding whose lease ``token`` holds, store what came, give
        the lease back; True when the data changed."""
        try:
            now = self.clock()
            outcome = await self._fetch_outcome(doc, now)
            return await self._settle(doc, outcome, event_source, now)
        finally:
            await self.store.release(doc["_id"], token, revision=int(doc.get("revision", 0)),
                                     next_refresh_at=next_refresh_at)

    async def _settle(self, doc: Mapping[str, Any], outcome: _Outcome, event_source: str,
                      now: float) -> bool:
        stored = await self.store.settle(doc["_id"], int(doc.get("revision", 0)),
                                         outcome.fields, outcome.status)
        if not stored:
            log.info("binding changed during a refresh; its outcome is dropped",
                     binding=doc["_id"])
            return False
        status = doc["status"] if doc["status"] == PAUSED else (outcome.status or doc["status"])
        await self._publish({**doc, **outcome.fields, "status": status}, outcome,
                            event_source, now)
        return outcome.changed

    def _request(self, doc: Mapping[str, Any]) -> SourceRequest:
        source = doc["dataSource"]
        creds = json.loads(self._box.open(doc["credentials"])) if doc.get("credentials") else {}
        return SourceRequest(url=source["url"], method=source.get("method") or "GET",
                             headers=dict(source.get("headers") or {}),
                             body=source.get("body") or "", credentials=creds)

    async def _fetch_outcome(self, doc: Mapping[str, Any], now: float, *,
                             denied_is_invalid: bool = False,
                             force_map: bool = False) -> _Outcome:
        try:
            request = self._request(doc)
        except ValueError:
            return self._failure(doc, "the stored credentials cannot be opened: a key was "
                                 "dropped from LITHO_BINDING_SECRET_KEY; set them again", now)
        try:
            fetched: Fetched = await self._fetcher.fetch(
                request, etag=str(doc.get("etag") or ""),
                last_modified=str(doc.get("lastModified") or ""))
        except FetchFailed as exc:
            if exc.denied and denied_is_invalid:
                raise _invalid("dataSource.url", exc.message) from exc
            return self._failure(doc, exc.message, now)
        validators = {"etag": fetched.etag, "lastModified": fetched.last_modified}
        if fetched.not_modified:
            # The data is as it was: only the time moves (no event, no render).
            return _Outcome({"fetchedAt": now, "failing": False, "failureReported": False,
                             **validators}, ACTIVE)
        return await self._data_outcome(doc, fetched.data_json, fetched.data_hash,
                                        source=FETCH, now=now, extra=validators,
                                        force_map=force_map)

    async def _data_outcome(self, doc: Mapping[str, Any], data_text: str, digest: str, *,
                            source: str, now: float, extra: Mapping[str, Any],
                            force_map: bool = False, touch: bool = True) -> _Outcome:
        same = digest == doc.get("dataHash")
        ok = {"failing": False, "failureReported": False, **extra}
        if touch:
            ok.update(fetchedAt=now, source=source)
        if same and not force_map:
            return _Outcome(ok, ACTIVE)
        try:
            variables = await self._variables(doc, data_text)
        except InvalidArgument as exc:
            return self._failure(doc, "the mapping failed: " + mapping_failure(exc), now)
        return _Outcome({**ok, "data": data_text, "dataHash": digest, "variables": variables},
                        ACTIVE, changed=not same)

    async def _variables(self, doc: Mapping[str, Any], data_text: str) -> str:
        mapped = json.loads(await self._templates.evaluate(doc["mapping"], data_text,
                                                           check_only=False))
        defaults = json.loads(self._defaults_text(doc))
        return dumps(deep_merge(defaults, mapped))

    @staticmethod
    def _failure(doc: Mapping[str, Any], message: str, now: float) -> _Outcome:
        repeated = (doc.get("failing") and doc.get("failureReported")
                    and doc.get("lastError") == message)
        return _Outcome({"lastError": message, "lastErrorAt": now, "failing": True},
                        ERROR, report="" if repeated else message)

    async def _publish(self, doc: Mapping[str, Any], outcome: _Outcome, event_source: str,
                       now: float) -> None:
        """Events are notifications: one that cannot be published is logged,
        and an unreported failure is reported at the next one."""
        if outcome.changed:
            try:
                await self._events.updated(
                    binding_id=doc["_id"], tenant_id=doc["tenantId"],
                    template_id=doc["templateId"], data_hash=doc["dataHash"],
                    format=doc["output"]["format"], source=event_source,
                    fetched_at=float(doc.get("fetchedAt") or now), at=now)
            except LithoError as exc:
                log.warning("binding.updated not published", binding=doc["_id"],
                            error=exc.message)
        if outcome.report:
            try:
                await self._events.failed(
                    binding_id=doc["_id"], tenant_id=doc["tenantId"],
                    template_id=doc["templateId"], error=outcome.report,
                    status=doc["status"], at=now)
            except LithoError as exc:
                log.warning("binding.failed not published", binding=doc["_id"],
                            error=exc.message)
                return
            await self.store.mark_reported(doc["_id"], int(doc.get("revision", 0)),
                                           outcome.report)

    @staticmethod
    def _next_fire(policy: Mapping[str, Any], now: float) -> float | None:
        if policy.get("type") != "cron":
            return None
        return _schedule.next_fire(policy["cron"], now)


def _stored_output(doc: Mapping[str, Any]) -> dict[str, str]:
    output = doc.get("output") or {}
    return {"format": str(output.get("format") or "png"),
            "options_json": str(output.get("options") or "{}")}


def _check_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise _invalid("tenantId", "is required")


def _parse_json(text: str | bytes, field_name: str, limits: jsonlimits.JsonLimits) -> Any:
    try:
        return jsonlimits.loads(text, limits)
    except jsonlimits.JsonLimitError as exc:
        raise _invalid(field_name, f"is not JSON Litho accepts: {exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(field_name, f"is not valid JSON: {exc}") from exc
