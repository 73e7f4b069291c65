"""One attempt of one delivery: sign, send, log, and decide what follows
(the rules are in :mod:`._policy`). No grpc, nats or aiohttp here: the
target is reached through the :class:`Transport` port.

A job stands for one attempt. The attempt first *starts* (takes the
delivery from its ``queued`` lease with a token of its own, so a second job
for the same attempt finds it taken and is dropped), then sends, logs, and
settles: delivered, failed, or pending with its next attempt time, which
the scheduler (:class:`._service.Scheduler`) turns into a new job when it
comes. Nothing waits in the queue meanwhile."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from standardwebhooks.webhooks import Webhook

from litho.logs import get_logger
from services.webhook import _signing
from services.webhook._model import Delivery, DeliveryStatus, Subscription, SubscriptionStatus
from services.webhook._policy import (
    AttemptResult,
    Outcome,
    clip_error,
    decide,
    parse_retry_after,
    should_pause,
)
from services.webhook._service import Clock, Stores, utc_now

log = get_logger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int
    #: Lower-case names.
    headers: Mapping[str, str]


class SendFailed(Exception):
    """No answer came: refused, unreachable, timed out, or too large to read."""


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body``; the answer, or :class:`SendFailed`."""


@dataclass(frozen=True)
class _Target:
    url: str
    signers: tuple[Webhook, ...]
    subscription: Subscription | None
    hook_id: str


class Deliverer:
    def __init__(self, stores: Stores, transport: Transport, *, schedule: tuple[float, ...],
                 retry_after_max: float, pause_after: int, attempt_lease: float = 60.0,
                 max_in_flight_per_tenant: int = 4, busy_delay: float = 1.0,
                 clock: Clock = utc_now) -> None:
        self._stores = stores
        self._transport = transport
        self._schedule = schedule
        self._retry_after_max = retry_after_max
        self._pause_after = pause_after
        self._attempt_lease = attempt_lease
        self._per_tenant = max_in_flight_per_tenant
        self._busy_delay = busy_delay
        self._in_flight: Counter[str] = Counter()
        self._clock = clock

    async def attempt(self, delivery_id: str, attempt: int | None = None) -> float | None:
        """Run the attempt a job stands for (``attempt`` attempts made before
        it; None: whichever is queued). The seconds until the next attempt
        when a retry was scheduled, else None: delivered, failed, or the job
        dropped (the delivery gone, settled, or started by another job).

        A tenant with ``max_in_flight_per_tenant`` attempts running here
        gets the job given back to the scheduler, due again shortly."""
        delivery = await self._stores.deliveries.find(delivery_id)
        if delivery is None or delivery.status is not DeliveryStatus.PENDING:
            return None
        tenant = delivery.tenant_id
        if self._in_flight[tenant] >= self._per_tenant:
            await self._stores.deliveries.unclaim(
                delivery_id, due=self._clock() + timedelta(seconds=self._busy_delay))
            return None
        self._in_flight[tenant] += 1
        try:
            return await self._attempt(delivery_id, attempt)
        finally:
            self._in_flight[tenant] -= 1
            if self._in_flight[tenant] <= 0:
                del self._in_flight[tenant]

    async def _attempt(self, delivery_id: str, attempt: int | None) -> float | None:
        token = "attempt:" + secrets.token_hex(8)
        delivery = await self._stores.deliveries.start(
            delivery_id, attempt, token,
            self._clock() + timedelta(seconds=self._attempt_lease))
        if delivery is None:
            return None
        target = await self._target(delivery)
        if target is None:
            return None
        result = await self._send(delivery, target)
        logged = await self._stores.deliveries.attempted(
            delivery.id, token, status=result.status, duration_ms=result.duration_ms,
            error="" if result.ok else result.failure())
        if logged is None:  # deleted with its subscription meanwhile
            return None
        return await self._settle(logged, target, result)

    async def _target(self, delivery: Delivery) -> _Target | None:
        """Where and how to send it now (the subscription's current URL and
        secret); None, with the delivery failed, when there is nowhere."""
        if delivery.subscription_id:
            subscription = await self._stores.subscriptions.find(delivery.subscription_id)
            if subscription is None or subscription.tenant_id != delivery.tenant_id:
                await self._give_up(delivery, "the subscription was deleted")
                return None
            if subscription.status is not SubscriptionStatus.ACTIVE:
                await self._give_up(delivery, f"the subscription is {subscription.status.value}")
                return None
            signers = _signing.subscription_signers(subscription.secrets_at(self._clock()))
            return _Target(subscription.target_url, signers, subscription, "")
        hook = await self._stores.batch_webhooks.find(delivery.batch_webhook_id, self._clock())
        if hook is None or hook.tenant_id != delivery.tenant_id:
            await self._give_up(delivery, "the batch webhook expired")
            return None
        try:
            signer = _signing.batch_signer(hook.secret)
        except ValueError:  # registered before batch secrets were whsec_ ones
            await self._give_up(delivery, "the batch webhook's secret is not a whsec_ secret")
            return None
        return _Target(hook.target_url, (signer,), None, hook.id)

    async def _send(self, delivery: Delivery, target: _Target) -> AttemptResult:
        now = self._clock()
        headers = _signing.headers(target.signers, delivery.message_id, delivery.body, now)
        started = time.perf_counter()
        try:
            answer = await self._transport.post(target.url, delivery.body.encode(), headers)
        except SendFailed as exc:
            return AttemptResult(status=0, duration_ms=_ms_since(started),
                                 error=clip_error(str(exc) or type(exc).__name__))
        return AttemptResult(
            status=answer.status, duration_ms=_ms_since(started),
            retry_after=parse_retry_after(answer.headers.get("retry-after"), self._clock()))

    async def _settle(self, delivery: Delivery, target: _Target,
                      result: AttemptResult) -> float | None:
        subs = self._stores.subscriptions
        deliveries = self._stores.deliveries
        decision = decide(result, delivery.attempts, self._schedule, self._retry_after_max)
        now = self._clock()
        paused = ""
        if target.subscription is not None:
            sub_id = target.subscription.id
            if decision.outcome is Outcome.DELIVERED:
                await subs.succeeded(sub_id)
            elif decision.outcome is Outcome.GONE:
                if await subs.stop(sub_id, SubscriptionStatus.DISABLED,
                                   "the target answered 410 Gone", now):
                    log.warning("webhook subscription disabled: 410 Gone",
                                tenant=delivery.tenant_id, subscription=sub_id)
            else:
                failures = await subs.failed_attempt(sub_id)
                if should_pause(failures, self._pause_after):
                    paused = f"paused after {failures} failed attempts in a row"
                    if await subs.stop(sub_id, SubscriptionStatus.PAUSED, paused, now):
                        log.warning("webhook subscription paused", tenant=delivery.tenant_id,
                                    subscription=sub_id, failures=failures)
        if decision.outcome is Outcome.DELIVERED:
            await deliveries.settle(delivery.id, DeliveryStatus.DELIVERED, delivered=now)
        elif decision.outcome is Outcome.RETRY and not paused:
            await deliveries.settle(delivery.id, DeliveryStatus.PENDING,
                                    next_retry=now + timedelta(seconds=decision.delay))
            return decision.delay
        else:
            await deliveries.settle(delivery.id, DeliveryStatus.FAILED,
                                    error=clip_error(f"{result.failure()}; {paused}")
                                    if paused else None)
        if target.hook_id and decision.outcome is not Outcome.RETRY:
            # Delivered once (or never will be): its secret is kept no longer.
            await self._stores.batch_webhooks.delete(target.hook_id)
        return None

    async def _give_up(self, delivery: Delivery, why: str) -> None:
        await self._stores.deliveries.settle(delivery.id, DeliveryStatus.FAILED, error=why)
        log.info("webhook delivery dropped", tenant=delivery.tenant_id, delivery=delivery.id,
                 reason=why)


def _ms_since(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))
