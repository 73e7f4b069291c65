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

import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from litho import jsonlimits
from litho.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    LithoError,
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
from services.binding._model import (
    ACTIVE,
    DEFAULT_PAGE_SIZE,
    ERROR,
    FETCH,
    FETCHED_TYPES,
    MAX_PAGE_SIZE,
    PAUSED,
    PUSH,
    SERVE_DEFAULT,
    SERVE_ERROR,
    SERVE_STALE,
    STATUSES,
    Binding,
    BindingData,
    BindingSpec,
    Clock,
    Limits,
    Output,
    Resolved,
    SourceInput,
    Tested,
    binding_from_doc,
    deep_merge,
    dumps,
    invalid,
    mapping_failure,
    new_binding_id,
    not_found,
    opt_float,
)
from services.binding._ports import EventSink, TemplateMapping
from services.binding._secrets import SecretBox, new_push_secret, push_authorized
from services.binding._store import BindingStore

log = get_logger(__name__)

#: Seconds a GET of ``/b/`` waits for its tenant's turn to refetch stale
#: data before it serves the data there is (the next GET asks again).
RESOLVE_FETCH_WAIT = 2.0
#: Seconds a cron fire waits for its tenant's turn; past it the fire stays
#: due and the next look of the scheduler takes it again, so one tenant's
#: slow sources never hold a round (nor outlast the lease).
SCHEDULED_FETCH_WAIT = 1.0

#: Said for every push not accepted, whatever the reason (no such binding,
#: not a push binding, a wrong signature or secret): the answer tells nothing
#: about the id to whoever does not hold its secret.
PUSH_REFUSED = ("the push was not accepted: wrong binding id or secret (send "
                "X-Litho-Signature: sha256=<hex HMAC-SHA256 of the body with the binding's push "
                "secret>, or X-Litho-Push-Secret)")
#: What a viewer of the public image learns of a failing source (the detail
#: is the owner's, in GET /v1/bindings/{id}).
SOURCE_FAILED = ("the binding's data source failed; its owner can see why in "
                 "GET /v1/bindings/{id}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
                 limits: Limits | None = None, clock: Clock = time.time) -> None:
        self.store = store
        self._fetcher = fetcher
        self._templates = templates
        self._events = events
        self._box = box
        self._allow = allow
        self._limits = limits or Limits()
        self.clock = clock

    # ---------------------------------------------------------- validation ----

    async def _configure(self, tenant_id: str, spec: BindingSpec,
                         current: Mapping[str, Any] | None) -> dict[str, Any]:
        """The binding's configuration fields after ``spec`` (over ``current``
        on update), every rule checked; nothing is stored here."""
        cur = current or {}
        name = spec.name if spec.name is not None else cur.get("name")
        if name is None:
            raise invalid("name", "is required")
        _validate.check_name(name)
        template_id = spec.template_id if spec.template_id is not None else cur.get("templateId")
        if not template_id:
            raise invalid("templateId", "is required")
        if spec.data_source is not None:
            source = _validate.check_data_source(spec.data_source.as_dict(),
                                                 path="dataSource", allow=self._allow)
        elif "dataSource" in cur:
            source = dict(cur["dataSource"])
        else:
            raise invalid("dataSource", "is required")
        credentials, credentials_type = self._credentials(spec, source, cur)
        mapping = dict(spec.mapping) if spec.mapping is not None else cur.get("mapping")
        if mapping is None:
            raise invalid("mapping", "is required")
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
            raise invalid("refreshPolicy", "must be given when the source changes to or from push")
        else:
            policy_in = {}
        policy = _validate.check_refresh_policy(
            policy_in, source_type=source["type"], min_ttl=self._limits.min_ttl_seconds,
            min_cron_interval=self._limits.min_cron_interval)
        output = spec.output or Output(**_stored_output(cur))
        if not await self._templates.template_exists(tenant_id, template_id):
            raise invalid("templateId", f"{template_id[:100]!r} is not a template of this tenant")
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
                raise invalid("dataSource.credentials", "is for http and static sources only")
            checked = _validate.check_credentials(given, path="dataSource.credentials")
            return self._box.seal(dumps(checked)), checked["type"]
        if spec.clear_credentials or source["type"] == PUSH:
            return None, ""
        stored = cur.get("credentials")
        if stored and _origin(source) != _origin(cur["dataSource"]):
            # Kept credentials go only where they were given for: otherwise
            # whoever may edit the binding could send them to a host of theirs.
            raise invalid("dataSource.credentials",
                          "must be given again when the source's origin (scheme, host, "
                          "port) or type changes; the stored ones are not sent elsewhere")
        return stored, str(cur.get("credentialsType") or "")

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
            raise _cap_reached(count, self._limits.max_per_tenant)
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
        # The count above spares a fetch when the cap is reached; the slot
        # taken here holds the cap against creates racing this one.
        refused = await self.store.insert_within(doc, self._limits.max_per_tenant)
        if refused:
            raise _cap_reached(refused, self._limits.max_per_tenant)
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
            raise invalid("pageSize", f"must be between 1 and {MAX_PAGE_SIZE}")
        if status and status not in STATUSES:
            raise invalid("status", "must be active, paused or error")
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
        # Only over what was read: data pushed or fetched meanwhile, a failure
        # or a pause meanwhile is never overwritten; the caller retries.
        updated = await self.store.replace_config(current, fields,
                                                  writes_data=outcome is not None)
        if updated is None:
            raise Conflict(f"binding {binding_id!r} changed while it was updated "
                           "(new data, a failure, a pause or another update); retry")
        await self._events.changed(binding_id)
        if outcome is not None:
            await self._publish(updated, outcome, FETCH, now)
        return binding_from_doc(updated, push_secret=push_secret)

    async def delete(self, tenant_id: str, binding_id: str) -> None:
        _check_tenant(tenant_id)
        if not await self.store.delete(tenant_id, binding_id):
            raise not_found(binding_id)
        await self._events.changed(binding_id)
        log.info("binding deleted", tenant=tenant_id, binding=binding_id)

    async def pause(self, tenant_id: str, binding_id: str) -> Binding:
        """No refresh of any kind until resumed; the last data is served."""
        _check_tenant(tenant_id)
        await self.store.get(tenant_id, binding_id)
        doc = await self.store.set_status(tenant_id, binding_id, PAUSED, self.clock())
        if doc is None:
            raise not_found(binding_id)
        await self._events.changed(binding_id)
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
            raise not_found(binding_id)
        await self._events.changed(binding_id)
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
        # No more often than the shortest TTL: a manual refresh is no way
        # around LITHO_BINDING_MIN_TTL_SECONDS for the source's sake.
        last = max(float(doc.get("fetchedAt") or 0.0), float(doc.get("lastErrorAt") or 0.0))
        floor = float(self._limits.min_ttl_seconds)
        if now < last + floor:
            wait = float(math.ceil(last + floor - now))
            raise ResourceExhausted(
                f"binding {binding_id!r} was fetched {now - last:.0f} s ago; it may be "
                f"refreshed once every {floor:g} s (LITHO_BINDING_MIN_TTL_SECONDS): retry in "
                f"{wait:.0f} s", retry_after=wait)
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
            data_json=str(doc.get("data") or ""), fetched_at=opt_float(doc.get("fetchedAt")),
            etag=str(doc.get("etag") or ""), last_modified=str(doc.get("lastModified") or ""),
            status=doc["status"], last_error=str(doc.get("lastError") or ""),
            last_error_at=opt_float(doc.get("lastErrorAt")),
            data_hash=str(doc.get("dataHash") or ""), source=str(doc.get("source") or "none"),
            variables_json=str(doc.get("variables") or "") or self._defaults_text(doc))

    async def push(self, binding_id: str, body: bytes, *, signature: str,
                   secret: str) -> tuple[bool, str]:
        """Store pushed data (changed, data hash). Nothing is stored unless the
        signature or the secret is the binding's; an unknown id, a binding that
        takes no pushes and a wrong secret are the same 401, so that nothing
        about the id shows before the secret is right."""
        if len(body) > self._limits.max_push_bytes:  # the same for every binding
            raise InvalidArgument(
                f"the pushed body is {len(body)} bytes; the limit is "
                f"{self._limits.max_push_bytes} (LITHO_BINDING_MAX_PUSH_BYTES)")
        doc = await self.store.find(binding_id)
        takes_pushes = (doc is not None and doc["dataSource"]["type"] == PUSH
                        and bool(doc.get("pushSecret")))
        push_secret = self._push_secret(doc) if doc is not None and takes_pushes else ""
        if doc is None or not push_secret or not (signature or secret) or not push_authorized(
                push_secret, body, signature=signature, presented=secret):
            raise Unauthenticated(PUSH_REFUSED)
        if doc["status"] == PAUSED:
            raise FailedPrecondition(f"binding {binding_id!r} is paused; resume it first")
        value = _parse_json(body, "body", self._limits.json_limits)
        text, digest = canonical_json(value), data_hash(value)
        now = self.clock()
        outcome = await self._data_outcome(doc, text, digest, source=PUSH, now=now, extra={})
        if not await self._settle(doc, outcome, PUSH, now):
            raise Conflict(f"binding {binding_id!r} changed while the push was stored "
                           "(an update, a pause or a delete); nothing was stored: push again")
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

    async def resolve(self, binding_id: str, *, refresh: bool = True) -> Resolved:
        """The binding's variables to render, refreshed first when its TTL has
        passed (under the lease: who loses it serves the data there is) and
        ``refresh`` allows it."""
        doc = await self.store.find(binding_id)
        if doc is None:
            raise not_found(binding_id)
        now = self.clock()
        if refresh and self._stale(doc, now):
            token = secrets.token_hex(8)
            claimed = await self.store.claim(binding_id, now, now + self._limits.lease_seconds,
                                             token)
            if claimed is not None:
                if self._stale(claimed, now):
                    try:
                        await self.run_claimed(claimed, token, event_source=FETCH,
                                               wait=RESOLVE_FETCH_WAIT)
                    except ResourceExhausted:
                        # The tenant's fetches are all busy: serve the data
                        # there is now; the next GET asks again.
                        log.info("refresh deferred: the tenant's fetches are busy",
                                 binding=binding_id)
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
                # Public (/b/{id}.{ext} serves it): the detail stays the owner's.
                raise FailedPrecondition(SOURCE_FAILED)
            if on_error == SERVE_DEFAULT:
                variables = defaults
        fresh_until: float | None = None
        if doc["status"] != PAUSED:
            if policy.get("type") == "ttl":
                fetched = doc.get("fetchedAt")
                fresh_until = (now if doc["status"] == ERROR or fetched is None
                               else float(fetched) + float(policy.get("ttlSeconds") or 0))
            elif policy.get("type") == "cron":
                fresh_until = opt_float(doc.get("nextRefreshAt"))
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
            raise invalid("templateId", "is required")
        if (data_source is None) == (not sample_data_json):
            raise invalid("dataSource", "or sampleData is required (one of them, not both)")
        _validate.check_mapping_names(dict(mapping))
        defaults = _validate.check_defaults(defaults_json or "", limits=self._limits.json_limits)
        if data_source is not None:
            request = self._checked_request(data_source)
            if not await self._templates.template_exists(tenant_id, template_id):
                raise invalid("templateId",
                               f"{template_id[:100]!r} is not a template of this tenant")
            try:
                fetched = await self._fetcher.fetch(request, tenant=tenant_id)
            except FetchFailed as exc:
                where = "dataSource.url" if exc.denied else "dataSource"
                raise invalid(where, exc.message) from exc
            data_text = fetched.data_json
        else:
            if len(sample_data_json.encode()) > self._limits.max_data_bytes:
                raise invalid("sampleData", f"is larger than {self._limits.max_data_bytes} "
                               "bytes (LITHO_BINDING_MAX_DATA_BYTES)")
            data_text = canonical_json(
                _parse_json(sample_data_json, "sampleData", self._limits.json_limits))
            if not await self._templates.template_exists(tenant_id, template_id):
                raise invalid("templateId",
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
            fetched = await self._fetcher.fetch(request, tenant=tenant_id)
        except FetchFailed as exc:
            return Tested(success=False, status=exc.status or 0, data_json="",
                          duration_ms=(time.monotonic() - started) * 1000, error=exc.message)
        return Tested(success=True, status=fetched.status, data_json=fetched.data_json,
                      duration_ms=fetched.duration_ms, error="")

    def _checked_request(self, data_source: SourceInput) -> SourceRequest:
        source = _validate.check_data_source(data_source.as_dict(), path="dataSource",
                                             allow=self._allow)
        if source["type"] not in FETCHED_TYPES:
            raise invalid("dataSource.type",
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
                          next_refresh_at: float | None = None,
                          wait: float | None = None) -> bool:
        """Fetch a binding whose lease ``token`` holds, store what came, give
        the lease back; True when the data changed. ``wait`` bounds the wait
        for the tenant's turn to fetch: past it, ResourceExhausted, and a
        scheduled fire stays due (the next look takes it again)."""
        moved = next_refresh_at
        try:
            now = self.clock()
            outcome = await self._fetch_outcome(doc, now, wait=wait)
            return await self._settle(doc, outcome, event_source, now) and outcome.changed
        except ResourceExhausted:
            moved = None
            raise
        finally:
            await self.store.release(doc["_id"], token, revision=int(doc.get("revision", 0)),
                                     next_refresh_at=moved)

    async def _settle(self, doc: Mapping[str, Any], outcome: _Outcome, event_source: str,
                      now: float) -> bool:
        """Store and publish ``outcome``; False (nothing stored) when the
        binding changed or went since ``doc`` was read."""
        stored = await self.store.settle(doc["_id"], int(doc.get("revision", 0)),
                                         outcome.fields, outcome.status)
        if not stored:
            log.info("binding changed during a refresh; its outcome is dropped",
                     binding=doc["_id"])
            return False
        await self._events.changed(str(doc["_id"]))
        status = doc["status"] if doc["status"] == PAUSED else (outcome.status or doc["status"])
        await self._publish({**doc, **outcome.fields, "status": status}, outcome,
                            event_source, now)
        return True

    def _request(self, doc: Mapping[str, Any]) -> SourceRequest:
        source = doc["dataSource"]
        creds = json.loads(self._box.open(doc["credentials"])) if doc.get("credentials") else {}
        return SourceRequest(url=source["url"], method=source.get("method") or "GET",
                             headers=dict(source.get("headers") or {}),
                             body=source.get("body") or "", credentials=creds)

    async def _fetch_outcome(self, doc: Mapping[str, Any], now: float, *,
                             denied_is_invalid: bool = False,
                             force_map: bool = False,
                             wait: float | None = None) -> _Outcome:
        try:
            request = self._request(doc)
        except ValueError:
            return self._failure(doc, "the stored credentials cannot be opened: a key was "
                                 "dropped from LITHO_BINDING_SECRET_KEY; set them again", now)
        try:
            fetched: Fetched = await self._fetcher.fetch(
                request, etag=str(doc.get("etag") or ""),
                last_modified=str(doc.get("lastModified") or ""), tenant=str(doc["tenantId"]),
                wait=wait)
        except FetchFailed as exc:
            if exc.denied and denied_is_invalid:
                raise invalid("dataSource.url", exc.message) from exc
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


def _origin(source: Mapping[str, Any]) -> tuple[str, str, str, int | None]:
    """Where a source's requests go: its type, scheme, host and port."""
    url = str(source.get("url") or "")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # checked at validation; a stored oddity is just unequal
        return str(source.get("type") or ""), url, "", None
    scheme = parts.scheme.lower()
    return (str(source.get("type") or ""), scheme, (parts.hostname or "").lower(),
            port if port is not None else _DEFAULT_PORTS.get(scheme))


def _cap_reached(count: int, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this tenant has {count} bindings; the limit is {limit} "
        "(LITHO_BINDING_MAX_PER_TENANT): delete one first", retry_after=60.0)


def _check_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise invalid("tenantId", "is required")


def _parse_json(text: str | bytes, field_name: str, limits: jsonlimits.JsonLimits) -> Any:
    try:
        return jsonlimits.loads(text, limits)
    except jsonlimits.JsonLimitError as exc:
        raise invalid(field_name, f"is not JSON Litho accepts: {exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(field_name, f"is not valid JSON: {exc}") from exc
