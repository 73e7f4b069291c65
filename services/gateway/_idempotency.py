"""``Idempotency-Key`` on the POSTs that create or render.

A client that sends ``Idempotency-Key: <1–255 printable ASCII characters>``
may retry a request safely: every gateway replica agrees, through the shared
document store, that it runs once per tenant and key.

- The first request claims the key by inserting a record with a unique
  ``_id`` (SHA-256 of tenant and key): atomic on SQLite and MongoDB alike, so
  of two concurrent requests on two replicas exactly one runs the handler.
- Its response (status, ``Content-Type``, ``Location`` and a few more
  headers, and the body; never ``Set-Cookie``) is kept for ``seconds``
  (24 h). A request with the same key and the same fingerprint (SHA-256 of
  method, path with query, and body bytes) gets that response again, with
  ``Idempotent-Replayed: true``; another fingerprint (other body, other
  route) is a 422 naming the header.
- A duplicate that arrives while the first still runs polls the store for
  up to ``wait_seconds`` and then answers the first's response, or a 409
  with ``Retry-After`` when it is still running.
- A 5xx, a 429 (the request was not served: try again later), an exception
  that is not a Litho error, or a cancellation releases the key, so a retry
  runs again. Other 4xx are kept, as Stripe does: the same request would
  fail the same way. Requests refused before the handler (auth, validation,
  a bad key) claim nothing.
- A response over ``max_response_bytes`` is not kept, but its key stays
  claimed: a replay is a 409 that says so, rather than a second execution.
- A claim is a lease (``lock_seconds``), renewed while the handler runs, so
  the key of a replica that died mid-request is free again soon after.
- Records past their time are ignored and taken over in place, and
  :meth:`IdempotencyKeys.sweep` deletes them (run it periodically). One
  whose slot is at or above the cap (the cap was lowered since) is deleted
  and claimed anew instead, so that it counts against the cap.
- A tenant holds at most ``max_keys_per_tenant`` records, however many
  replicas share the store: each record holds a numbered slot below the cap
  (:mod:`litho.docstore.slots`, whose unique index lets one of two requests
  racing for the last slot win). A new key past it is a 429 naming the
  setting, with ``Retry-After`` until the tenant's oldest record expires;
  the tenant's expired records are deleted first, so expiry frees slots
  without waiting for the sweep. Replays, and requests without the header,
  need no slot. Records kept before slots (an older gateway's) are deleted
  at start-up, before the unique index is built: they are copies kept for
  ``seconds`` at most, and losing one means only that a retry, within that
  window, of a request made before the upgrade runs again. A gateway from
  before slots must not run beside this one: the unique index refuses its
  second record of a tenant, and it retries that insert until its wait ends
  (a 409).
- Secrets a route answers once (a webhook subscription's signing secret, a
  push binding's secret: :data:`SECRET_FIELDS`) are not kept: the stored copy
  lacks them, and a replay answers it with ``Idempotent-Redacted`` naming
  the fields left out (a subscription's secret can be rotated; a push
  secret only comes with a new binding).

Routes are opted in by :data:`ROUTES` (POST routes by canonical path). The
middleware must sit after authentication (the key is scoped by the caller's
tenant) and after the validation middleware (JSON bodies are then already
read, within ``LITHO_GATEWAY_MAX_BODY_BYTES``, and a request refused there
claims nothing). Bodies that handlers stream themselves (a CSV batch, a
font) are read here up to ``max_request_bytes`` and handed back to the
handler as a fresh stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler, Middleware

from litho.docstore import Document, DocumentStore, DuplicateKey, slots
from litho.errors import FieldError, InvalidArgument, LithoError, ResourceExhausted
from litho.logs import get_logger
from services.gateway._problems import from_error, problem
from services.gateway._requests import TooLarge, read_limited
from services.gateway._state import API_KEY

log = get_logger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
#: On a replay whose stored copy lacks secrets: the JSON fields left out.
REDACTED = "Idempotent-Redacted"
MAX_KEYS_SETTING = "LITHO_GATEWAY_IDEMPOTENCY_MAX_KEYS_PER_TENANT"
MAX_KEY_CHARS = 255
_COLLECTION = "idempotency_keys"
#: Response headers kept with the body; others (Set-Cookie, tracing ids,
#: rate-limit counters) belong to each response of their own.
KEPT_HEADERS = ("Content-Type", "Location", "Content-Disposition", "Cache-Control", "ETag")
#: Bodies up to this size are hashed on the event loop; larger in a thread.
_INLINE_HASH_BYTES = 64 * 1024
#: First and longest pause between two looks at a key another request holds.
_FIRST_POLL, _MAX_POLL = 0.02, 0.5

#: Every POST route, by canonical path: True where a retry must not run the
#: request twice (it creates something, renders, or spends money), False
#: where a repeat is harmless or the route has no tenant caller. A test
#: fails for a POST route missing here, so new ones are classified.
ROUTES: Mapping[str, bool] = {
    "/v1/templates": True,
    "/v1/templates/{templateId}/copilot": True,
    "/v1/templates/{templateId}/copilot/preview": True,
    "/v1/templates/{templateId}/copilot/apply": True,
    "/v1/templates/{templateId}/render": True,
    "/template/{templateId}/render": True,
    "/v1/templates/{templateId}/pdf": True,
    "/v1/render": True,
    "/v1/templates/{templateId}/batch-render": True,
    "/v1/webhook-subscriptions": True,
    "/v1/webhook-subscriptions/{subscriptionId}/deliveries/{deliveryId}/redeliver": True,
    "/v1/bindings": True,
    "/v1/bindings/preview": True,
    "/v1/bindings/{bindingId}/refresh": True,
    "/v1/experiments": True,
    "/v1/events": True,
    "/v1/fonts": True,
    # A state change that repeats as a no-op (or a 409).
    "/v1/batches/{batchId}/cancel": False,
    "/v1/bindings/{bindingId}/pause": False,
    "/v1/bindings/{bindingId}/resume": False,
    "/v1/experiments/{experimentId}/start": False,
    "/v1/experiments/{experimentId}/pause": False,
    "/v1/experiments/{experimentId}/complete": False,
    "/v1/experiments/{experimentId}/archive": False,
    # The newest secret wins; keeping a copy of it for a day gains nothing.
    "/v1/webhook-subscriptions/{subscriptionId}/rotate-secret": False,
    # Its answer shows the new API key once; a copy must not be kept. A retry
    # makes a second key, which the caller can list and delete.
    "/v1/keys": False,
    # No state: a retry computes an equivalent answer.
    "/v1/signed-urls": False,
    "/v1/data-sources/test": False,
    "/v1/expressions/validate": False,
    "/v1/expressions/test": False,
    # Public (the binding's push secret is the credential): no tenant caller.
    "/b/{bindingId}/push": False,
}

#: Top-level JSON fields of a route's answer that are secrets shown once: the
#: kept copy goes without them (a second collection holding every new secret
#: for a day would be a second place to steal them from). Routes marked True
#: above only; a test fails for a secret in such a route's documented answer
#: that is missing here.
SECRET_FIELDS: Mapping[str, tuple[str, ...]] = {
    "/v1/webhook-subscriptions": ("secret",),
    "/v1/bindings": ("pushSecret",),
}


@dataclass(frozen=True)
class _Claim:
    doc_id: str
    token: str


@dataclass(frozen=True)
class _Stored:
    response: dict[str, Any]


class IdempotencyKeys:
    """The shared record of keys: claims, stored responses, expiry.

    ``seconds`` (LITHO_GATEWAY_IDEMPOTENCY_SECONDS): how long a response is
    replayed. ``max_response_bytes`` (…_MAX_RESPONSE_BYTES): the largest body
    kept. ``max_request_bytes`` (…_MAX_REQUEST_BYTES): the largest streamed
    body read to fingerprint it; at least every handler's own limit.
    ``wait_seconds`` (…_WAIT_SECONDS): how long a duplicate waits for the
    first. ``lock_seconds`` (…_LOCK_SECONDS): the lease of a running claim.
    ``max_keys_per_tenant`` (…_MAX_KEYS_PER_TENANT): the most records one
    tenant holds.
    """

    def __init__(
        self,
        store: DocumentStore,
        *,
        seconds: float = 24 * 3600,
        max_response_bytes: int = 1024 * 1024,
        max_request_bytes: int = 64 * 1024 * 1024,
        wait_seconds: float = 10.0,
        lock_seconds: float = 30.0,
        max_keys_per_tenant: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min(seconds, max_response_bytes, max_request_bytes, lock_seconds,
               max_keys_per_tenant) <= 0 or wait_seconds < 0:
            raise ValueError("idempotency limits must be positive")
        self._records = store.collection(_COLLECTION)
        self.seconds = seconds
        self.max_response_bytes = max_response_bytes
        self.max_request_bytes = max_request_bytes
        self.wait_seconds = wait_seconds
        self.lock_seconds = lock_seconds
        self.max_keys_per_tenant = max_keys_per_tenant
        self._clock = clock

    async def prepare(self) -> None:
        await self._records.ensure_index(["expiresAt"])
        await self._records.ensure_index(["tenantId", "expiresAt"])
        # Records kept before slots have none, and the unique index cannot
        # be built over them (nor would they count against the cap): they
        # are replay copies of at most ``seconds``, so they go, in one
        # delete the store runs by itself (no document is read here).
        dropped = await self._records.delete({"slot": None})
        if dropped:
            log.warning("idempotency records kept before the per-tenant cap deleted; "
                        "a retry of a request made before the upgrade runs again",
                        records=dropped)
        await self._records.ensure_index(["tenantId", "slot"], unique=True)

    async def sweep(self) -> int:
        """Delete the records past their time; how many."""
        return await self._records.delete({"expiresAt": {"$lte": self._clock()}})

    async def begin(self, tenant_id: str, key: str, fingerprint: str) -> _Claim | _Stored:
        """Claim ``key`` for this request, or the response of the request that
        did. Raises :class:`InvalidArgument` when the key was used for another
        request, :class:`_InProgress` when its first request outlasts the wait,
        :class:`ResourceExhausted` (a 429) when the key is new and the tenant
        holds ``max_keys_per_tenant`` records."""
        doc_id = hashlib.sha256(f"{tenant_id}\n{key}".encode()).hexdigest()
        deadline = time.monotonic() + self.wait_seconds
        pause = _FIRST_POLL
        while True:
            claimed = await self._try_claim(doc_id, tenant_id, fingerprint)
            if isinstance(claimed, _Claim | _Stored):
                return claimed
            left = deadline - time.monotonic()
            if left <= 0:
                raise _InProgress()
            if claimed:  # held by a running request: wait, then look again
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, _MAX_POLL)

    async def _try_claim(self, doc_id: str, tenant_id: str,
                         fingerprint: str) -> _Claim | _Stored | bool:
        """One attempt: the claim, the stored response, True while another
        request holds the key, False when it changed under us (look again now).
        Raises :class:`ResourceExhausted` when the key is new and the tenant
        holds ``max_keys_per_tenant`` records."""
        token = secrets.token_hex(16)
        fresh = self._pending(tenant_id, fingerprint, token)
        record = {"_id": doc_id, **fresh}
        inserted = await self._insert(record)
        if inserted is None and await self._purge_expired(tenant_id):
            inserted = await self._insert(record)  # expired records freed slots
        if inserted is True:
            return _Claim(doc_id, token)
        doc = await self._records.get(doc_id)
        if doc is None:
            if inserted is None:
                raise await self._full(tenant_id)
            return False  # released between the insert and the read
        now = self._clock()
        if doc["expiresAt"] <= now or (doc["state"] == "pending" and doc["lockedUntil"] <= now):
            if doc.get("slot", self.max_keys_per_tenant) >= self.max_keys_per_tenant:
                # Its slot counts against no cap (the cap was lowered): taken
                # over in place, it would stay uncounted. Deleted, the key is
                # claimed anew in a slot below the cap (or is a 429).
                await self._records.delete({"_id": doc_id, "claim": doc["claim"]})
                return False
            # Past its time, or its holder died: exactly one taker wins, the
            # one whose filter still names the old claim.
            taken = await self._records.find_one_and_update(
                {"_id": doc_id, "claim": doc["claim"]}, {"$set": fresh})
            return _Claim(doc_id, token) if taken is not None else False
        if doc["fingerprint"] != fingerprint:
            raise InvalidArgument(
                f"this {HEADER} was already used for another request (a different "
                "method, path or body); send a new key for a new request",
                errors=[FieldError(HEADER, "was used for a different request")])
        if doc["state"] == "done":
            return _Stored(doc["response"])
        return True

    async def _insert(self, doc: Document) -> bool | None:
        """Insert ``doc`` in a free slot of its tenant: True when inserted,
        False when its key is stored already, None when the tenant is full.
        A random slot first: below the cap it is most often free, and then
        one insert is all; else the lowest free one (a few counts)."""
        limit = self.max_keys_per_tenant

        async def key_exists() -> None:
            if await self._records.get(doc["_id"]) is not None:
                raise _Exists()

        try:
            try:
                await self._records.insert({**doc, "slot": secrets.randbelow(limit)})
                return True
            except DuplicateKey:
                await key_exists()
            return await slots.insert_within(self._records, doc, limit,
                                             on_clash=key_exists) == 0 or None
        except _Exists:
            return False

    async def _purge_expired(self, tenant_id: str) -> int:
        """Delete the tenant's records past their time (freeing their slots)."""
        return await self._records.delete(
            {"tenantId": tenant_id, "expiresAt": {"$lte": self._clock()}})

    async def _full(self, tenant_id: str) -> ResourceExhausted:
        oldest = await self._records.find({"tenantId": tenant_id}, sort=[("expiresAt", 1)],
                                          limit=1)
        wait = oldest[0]["expiresAt"] - self._clock() if oldest else 1.0
        return ResourceExhausted(
            f"this tenant already holds {self.max_keys_per_tenant} {HEADER} records, the "
            f"most it may ({MAX_KEYS_SETTING}); retry when older ones expire, or send "
            f"the request without an {HEADER}",
            retry_after=max(1.0, min(wait, self.seconds)))

    async def finish(self, claim: _Claim, response: dict[str, Any]) -> None:
        """Keep ``response`` for the claimed key."""
        now = self._clock()
        kept = await self._records.update(
            {"_id": claim.doc_id, "claim": claim.token},
            {"$set": {"state": "done", "response": response, "lockedUntil": now,
                      "expiresAt": now + self.seconds}})
        if not kept:
            log.warning("idempotency claim lost before its response was kept "
                        "(the request ran longer than its lease)")

    async def release(self, claim: _Claim) -> None:
        """Free the key so that a retry runs again."""
        await self._records.delete({"_id": claim.doc_id, "claim": claim.token})

    async def hold(self, claim: _Claim) -> None:
        """Renew the claim's lease until cancelled (while the handler runs)."""
        while True:
            await asyncio.sleep(self.lock_seconds / 3)
            try:
                await self._records.update(
                    {"_id": claim.doc_id, "claim": claim.token, "state": "pending"},
                    {"$set": {"lockedUntil": self._clock() + self.lock_seconds}})
            except LithoError as exc:
                log.warning("idempotency lease not renewed", error=str(exc))

    def _pending(self, tenant_id: str, fingerprint: str, token: str) -> Document:
        now = self._clock()
        return {"tenantId": tenant_id, "fingerprint": fingerprint, "claim": token,
                "state": "pending", "response": None, "createdAt": now,
                "lockedUntil": now + self.lock_seconds, "expiresAt": now + self.seconds}


class _InProgress(Exception):
    """The key's first request is still running after the wait."""


class _Exists(Exception):
    """An insert clashed with a stored record of the same key."""


def check_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, None without one; a 422 naming the
    header for more than one, or one that is not 1–255 printable ASCII
    characters (aiohttp reads bytes that are not UTF-8 as lone surrogates,
    which are not ASCII)."""
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument(f"send one {HEADER} header, not {len(values)}",
                              errors=[FieldError(HEADER, "must be sent once")])
    key = values[0]
    if not (1 <= len(key) <= MAX_KEY_CHARS and key.isascii() and key.isprintable()):
        problem_text = (f"is {len(key)} characters long" if len(key) > MAX_KEY_CHARS
                        else "is empty" if not key else "has characters outside printable ASCII")
        raise InvalidArgument(
            f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters; "
            f"it {problem_text}",
            errors=[FieldError(HEADER, f"must be 1 to {MAX_KEY_CHARS} printable ASCII "
                                       "characters")])
    return key


def idempotency_middleware(
    keys: IdempotencyKeys, *, routes: Mapping[str, bool] = ROUTES,
    secret_fields: Mapping[str, tuple[str, ...]] = SECRET_FIELDS,
) -> Middleware:
    """The middleware for ``keys``; POSTs to ``routes`` marked True honour
    ``Idempotency-Key``, other requests ignore it. ``secret_fields`` (by
    route) are left out of the kept copies."""

    @web.middleware
    async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if (request.method != "POST" or resource is None or API_KEY not in request
                or not routes.get(resource.canonical, False)):
            return await handler(request)
        key = check_key(request)
        if key is None:
            return await handler(request)
        try:
            body = await _body(request, keys.max_request_bytes)
        except TooLarge:
            return problem(413, f"a request with an {HEADER} is at most "
                                f"{keys.max_request_bytes} bytes "
                                "(LITHO_GATEWAY_IDEMPOTENCY_MAX_REQUEST_BYTES)")
        fingerprint = await _fingerprint(request.method, request.raw_path, body)
        try:
            outcome = await keys.begin(request[API_KEY].tenant_id, key, fingerprint)
        except _InProgress:
            return problem(409, f"a request with this {HEADER} is in progress; retry "
                                "when it has finished", headers={"Retry-After": "1"})
        if isinstance(outcome, _Stored):
            return _replay(outcome.response, keys.max_response_bytes)
        return await _run(keys, outcome, request, handler,
                          secret_fields.get(resource.canonical, ()))

    return idempotency


async def _run(keys: IdempotencyKeys, claim: _Claim, request: web.Request,
               handler: Handler, secret_fields: tuple[str, ...]) -> web.StreamResponse:
    lease = asyncio.create_task(keys.hold(claim))
    try:
        try:
            response = await handler(request)
        except LithoError as exc:
            # Mapped here as errors_middleware would, so that a 4xx is kept.
            response = from_error(exc)
    except BaseException:
        # A bug (a 500 outside), an aiohttp HTTPException or a cancellation:
        # the outcome is unknown, so the key is freed for a retry.
        await _release(keys, claim)
        raise
    finally:
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease
    if response.status >= 500 or response.status == 429:
        await _release(keys, claim)
        return response
    try:
        await _shielded(keys.finish(
            claim, _record(response, keys.max_response_bytes, secret_fields)))
    except LithoError as exc:
        # The request ran; its answer still goes out. The key stays claimed
        # until its lease ends (a retry meanwhile gets a 409).
        log.warning("idempotent response not kept", error=str(exc))
    return response


def _record(response: web.StreamResponse, max_bytes: int,
            secret_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a replay needs of ``response``, without ``secret_fields``; only
    the status when its body is too large or was streamed."""
    out: dict[str, Any] = {"status": response.status}
    body = response.body if isinstance(response, web.Response) else None
    if response.prepared or not isinstance(body, bytes | bytearray) or len(body) > max_bytes:
        out["tooLarge"] = True
        log.warning("idempotent response too large to keep", status=response.status,
                    size=len(body) if isinstance(body, bytes | bytearray) else None,
                    limit=max_bytes)
        return out
    if secret_fields:
        kept = _without_secrets(bytes(body), secret_fields)
        if kept is None:
            out["withheld"] = True
            return out
        body, redacted = kept
        if redacted:
            out["redacted"] = redacted
    out["headers"] = {name: response.headers[name] for name in KEPT_HEADERS
                      if name in response.headers}
    out["body"] = base64.b64encode(body).decode("ascii")
    return out


def _without_secrets(body: bytes, fields: tuple[str, ...]) -> tuple[bytes, list[str]] | None:
    """``body`` without the top-level JSON ``fields`` and the names of those it
    had; None when it is not JSON (so it is not kept: it might hold one)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return body, []
    redacted = [name for name in fields if name in doc]
    if not redacted:
        return body, []
    for name in redacted:
        del doc[name]
    return json.dumps(doc).encode(), redacted


def _replay(stored: dict[str, Any], max_bytes: int) -> web.Response:
    if stored.get("tooLarge"):
        return problem(409, f"the first request with this {HEADER} finished "
                            f"(status {stored['status']}) but its response was larger "
                            f"than {max_bytes} bytes and was not kept; send a new "
                            f"{HEADER} to run the request again")
    if stored.get("withheld"):
        return problem(409, f"the first request with this {HEADER} finished "
                            f"(status {stored['status']}) but its response may hold a "
                            f"secret and was not kept; send a new {HEADER} to run the "
                            "request again")
    headers = {**stored["headers"], REPLAYED: "true"}
    if stored.get("redacted"):
        # Shown once, and not kept: the replay says what it leaves out.
        headers[REDACTED] = ", ".join(stored["redacted"])
    return web.Response(status=stored["status"], body=base64.b64decode(stored["body"]),
                        headers=headers)


async def _body(request: web.Request, limit: int) -> bytes:
    """The request's body bytes. A JSON body the validation middleware read
    is cached by aiohttp; a body the handler streams itself is read here and
    handed back as a new stream, so the handler reads it as if untouched."""
    if not request.can_read_body:
        return await request.read()
    if (request.content_length or 0) > limit:
        raise TooLarge()
    data = await read_limited(request.content, limit)
    _replace_payload(request, data)
    return data


def _replace_payload(request: web.Request, data: bytes) -> None:
    """Make ``request.content`` (and ``read``, ``multipart``) a new stream of
    ``data``. aiohttp has no public way to: the payload is ``_payload``, and
    ``content`` is cached once read (tests fail if either changes)."""
    loop = asyncio.get_running_loop()
    # A protocol of its own: the connection's must not be paused or resumed
    # for a buffer it does not feed. High water above the data: never paused.
    stream = StreamReader(BaseProtocol(loop), max(len(data), 2**16), loop=loop)
    stream.feed_data(data)
    stream.feed_eof()
    request._payload = stream
    request._cache.pop("content", None)


async def _fingerprint(method: str, raw_path: str, body: bytes) -> str:
    head = f"{method}\n{raw_path}\n".encode()
    if len(body) <= _INLINE_HASH_BYTES:
        return hashlib.sha256(head + body).hexdigest()

    def digest() -> str:
        h = hashlib.sha256(head)
        h.update(body)
        return h.hexdigest()

    return await asyncio.to_thread(digest)


async def _release(keys: IdempotencyKeys, claim: _Claim) -> None:
    """Free the key; a failure is logged (the claim's lease ends it anyway),
    so that it never hides the request's own outcome."""
    try:
        await _shielded(keys.release(claim))
    except LithoError as exc:
        log.warning("idempotency key not released", error=str(exc))


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even when the caller is being cancelled: a key
    left claimed would hold retries off for a whole lease."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # The caller was cancelled; the task goes on under the shield.
        with contextlib.suppress(Exception):
            await asyncio.shield(task)
        raise
