"""The webhook service's domain on the real SQLite store: what callers may
send, tenant isolation, fan-out idempotency, the schedule (claims, leases,
the scheduler), per-tenant bounds, and the pause and disable rules
(attempts through a scripted Transport, jobs into a list)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook

from litho.docstore import open_document_store
from litho.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    LithoError,
    NotFound,
    ResourceExhausted,
)
from litho.outbound import AllowList
from services.webhook import _signing
from services.webhook._deliverer import Answer, Deliverer, SendFailed
from services.webhook._dispatch import Dispatcher
from services.webhook._events import Event
from services.webhook._model import (
    Delivery,
    DeliveryStatus,
    Filters,
    Limits,
    SubscriptionChange,
    SubscriptionStatus,
)
from services.webhook._service import Scheduler, Stores, Webhooks
from services.webhook._store import BatchWebhookStore, DeliveryStore, SubscriptionStore

T1, T2 = "tenant-1", "tenant-2"
URL = "https://hooks.example.com/litho"
LIMITS = Limits(max_subscriptions=3, max_description_chars=500, max_url_chars=2048,
                max_pending_per_tenant=50)
QUEUE_LEASE = 300.0
BATCH_SECRET = "whsec_" + "a2V5LWRlcml2ZWQtYmF0Y2gtc2VjcmV0"  # base64 of key-derived-batch-secret


class Clock:
    def __init__(self) -> None:
        # Real time: receivers refuse signatures more than 5 minutes off.
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Jobs:
    def __init__(self) -> None:
        self.queued: list[str] = []
        #: (delivery id, attempts made before the job), as its Nats-Msg-Id says.
        self.jobs: list[tuple[str, int]] = []

    async def enqueue(self, delivery: Delivery) -> None:
        self.queued.append(delivery.id)
        self.jobs.append((delivery.id, delivery.attempts))


class Script:
    """A Transport answering from a list (an exception is raised instead)."""

    def __init__(self) -> None:
        self.answers: list[Answer | Exception] = []
        self.sent: list[tuple[str, bytes, Mapping[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.sent.append((url, body, headers))
        step = self.answers.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class World:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.clock = Clock()
        self.jobs = Jobs()
        self.script = Script()
        self.webhooks = Webhooks(stores, self.jobs, limits=LIMITS,
                                 allow=AllowList.parse("10.9.0.0/16"), batch_retention=3600,
                                 delivery_retention=86400, rotation_overlap=60,
                                 queue_lease=QUEUE_LEASE, clock=self.clock)
        self.dispatcher = Dispatcher(stores, self.jobs, max_subscriptions=100,
                                     max_pending_per_tenant=LIMITS.max_pending_per_tenant,
                                     queue_lease=QUEUE_LEASE, clock=self.clock)
        self.scheduler = Scheduler(stores, self.jobs, queue_lease=QUEUE_LEASE, clock=self.clock)
        self.deliverer = self.deliverer_with(schedule=(5.0, 60.0), pause_after=10)

    def deliverer_with(self, *, schedule: tuple[float, ...], pause_after: int,
                       per_tenant: int = 4) -> Deliverer:
        return Deliverer(self.stores, self.script, schedule=schedule, retry_after_max=600,
                         pause_after=pause_after, attempt_lease=60,
                         max_in_flight_per_tenant=per_tenant, clock=self.clock)

    async def attempt(self, delivery_id: str) -> float | None:
        """Run the delivery's next job, as the queue would: the one queued
        for it, else (the clock moved on to its retry) the one the scheduler
        queues when it is due. The retry delay it asked for (None: settled)."""
        found = await self.stores.deliveries.find(delivery_id)
        if found is not None and found.next_retry_time is not None:
            self.clock.now = max(self.clock.now, found.next_retry_time)
            await self.scheduler.tick()
        attempts = found.attempts if found is not None else 0
        return await self.deliverer.attempt(delivery_id, attempts)

    async def delivery(self, delivery_id: str) -> Delivery:
        found = await self.stores.deliveries.find(delivery_id)
        assert found is not None
        return found


@pytest_asyncio.fixture(loop_scope="session")
async def world() -> AsyncIterator[World]:
    store = await open_document_store("sqlite:///:memory:", "litho")
    try:
        stores = Stores(SubscriptionStore(store), DeliveryStore(store), BatchWebhookStore(store))
        await stores.prepare()
        yield World(stores)
    finally:
        await store.close()


def event(template_id: str = "tpl_a", tenant: str = T1, batch_id: str = "",
          kind: str = "render.completed") -> Event:
    return Event(type=kind, tenant_id=tenant, template_id=template_id, binding_id="",
                 batch_id=batch_id, time=datetime(2026, 11, 30, 21, 59, tzinfo=UTC),
                 data={"renderId": "r1"})


def field_of(exc: LithoError) -> str:
    assert len(exc.errors) == 1, exc.errors
    return exc.errors[0].field


# ------------------------------------------------------------ validation ----

@pytest.mark.parametrize(("changes", "field", "says"), [
    ({"event": "render.started"}, "event", "render.completed, render.failed"),
    ({"event": ""}, "event", "unknown event"),
    ({"target_url": ""}, "targetUrl", "required"),
    ({"target_url": "ftp://hooks.example.com/x"}, "targetUrl", "http"),
    ({"target_url": "file:///etc/passwd"}, "targetUrl", "http"),
    ({"target_url": "http://127.0.0.1:8080/x"}, "targetUrl", "public address"),
    ({"target_url": "http://localhost/x"}, "targetUrl", "public address"),
    ({"target_url": "http://192.168.1.10/x"}, "targetUrl", "public address"),
    ({"target_url": "http://[::1]/x"}, "targetUrl", "public address"),
    ({"target_url": "http://169.254.169.254/latest"}, "targetUrl", "public address"),
    ({"target_url": "https://hooks.example.com/a b"}, "targetUrl", "spaces"),
    ({"target_url": "https://h.example.com/" + "a" * 2030}, "targetUrl", "at most 2048"),
    ({"description": "d" * 501}, "description", "at most 500"),
    ({"filters": Filters(template_id="t" * 201)}, "filters.templateId", "at most 200"),
    ({"filters": Filters(template_id="a\nb")}, "filters.templateId", "control"),
    ({"filters": Filters(binding_id="bnd_1")}, "filters.bindingId", "must be a binding id"),
    # Hosts IDNA cannot encode (review #3): a 422 naming the field, never a 500.
    ({"target_url": "http://" + "a" * 64 + ".com/"}, "targetUrl", "not a valid host"),
    ({"target_url": "http://a..b/"}, "targetUrl", "not a valid host"),
    ({"target_url": "http://\u2488.com/"}, "targetUrl", "not a valid host"),
    ({"target_url": "http://xn--a.com/"}, "targetUrl", "not a valid host"),
    ({"target_url": "http://%zz/"}, "targetUrl", "not a valid host"),
    ({"target_url": "http://[v1.x]/"}, "targetUrl", "not an IPv6 address"),
])
async def test_what_a_subscription_may_not_be(
    world: World, changes: dict[str, object], field: str, says: str
) -> None:
    fields: dict[str, object] = {"event": "render.completed", "target_url": URL,
                                 "filters": Filters(), "description": ""}
    fields.update(changes)
    with pytest.raises(InvalidArgument) as refused:
        await world.webhooks.create(T1, **fields)  # type: ignore[arg-type]
    assert field_of(refused.value) == field
    assert says in refused.value.message


async def test_an_allow_listed_private_target_is_accepted(world: World) -> None:
    sub, secret = await world.webhooks.create(
        T1, event="batch.failed", target_url="http://10.9.1.2:9000/hook", filters=Filters(),
        description="to the office")
    assert sub.status is SubscriptionStatus.ACTIVE and secret.startswith("whsec_")
    assert (await world.webhooks.get(T1, sub.id)).secret == secret


async def test_a_tenant_has_at_most_its_subscriptions(world: World) -> None:
    for _ in range(3):
        await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                    filters=Filters(), description="")
    with pytest.raises(InvalidArgument, match="LITHO_WEBHOOK_MAX_SUBSCRIPTIONS"):
        await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                    filters=Filters(), description="")
    await world.webhooks.create(T2, event="render.completed", target_url=URL,
                                filters=Filters(), description="")  # another tenant's own


async def test_updates_check_their_fields_and_keep_what_is_absent(world: World) -> None:
    sub, _ = await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                         filters=Filters("tpl_a"), description="one")
    for change, field in ((SubscriptionChange(status=SubscriptionStatus.DISABLED), "status"),
                          (SubscriptionChange(target_url="http://10.0.0.1/"), "targetUrl"),
                          (SubscriptionChange(description="x" * 501), "description")):
        with pytest.raises(InvalidArgument) as refused:
            await world.webhooks.update(T1, sub.id, change)
        assert field_of(refused.value) == field
    world.clock.now += timedelta(seconds=5)
    paused = await world.webhooks.update(T1, sub.id, SubscriptionChange(
        status=SubscriptionStatus.PAUSED, filters=Filters()))
    assert (paused.status, paused.filters, paused.description, paused.target_url) == (
        SubscriptionStatus.PAUSED, Filters(), "one", URL)
    assert paused.update_time == world.clock.now
    assert await world.webhooks.update(T1, sub.id, SubscriptionChange()) == paused


async def test_another_tenants_subscription_is_not_found(world: World) -> None:
    sub, _ = await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                         filters=Filters(), description="")
    for call in (world.webhooks.get(T2, sub.id),
                 world.webhooks.update(T2, sub.id, SubscriptionChange(description="x")),
                 world.webhooks.rotate_secret(T2, sub.id),
                 world.webhooks.delete(T2, sub.id),
                 world.webhooks.deliveries(T2, sub.id, 10, "")):
        with pytest.raises(NotFound):
            await call
    listed, _ = await world.webhooks.list_subscriptions(T2, 10, "")
    assert sub.id not in [s.id for s in listed]
    assert (await world.webhooks.get(T1, sub.id)).id == sub.id


async def test_subscriptions_are_listed_a_page_at_a_time(world: World) -> None:
    made = [(await world.webhooks.create(T2, event="render.failed", target_url=URL,
                                         filters=Filters(), description=str(n)))[0].id
            for n in range(3)]
    first, token = await world.webhooks.list_subscriptions(T2, 2, "")
    second, end = await world.webhooks.list_subscriptions(T2, 2, token)
    # In id order: ids are time-ordered to the millisecond (three made within
    # one millisecond are in the order of their random part).
    assert [s.id for s in first + second] == sorted(made) and end == ""
    with pytest.raises(InvalidArgument, match="pageToken"):
        await world.webhooks.list_subscriptions(T2, 2, "not-a-token")


async def test_rotating_answers_a_new_secret_that_signs_from_then_on(world: World) -> None:
    sub, old = await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                           filters=Filters(), description="")
    rotated, new = await world.webhooks.rotate_secret(T1, sub.id)
    assert new != old and rotated.secret == new
    [made] = await world.dispatcher.handle(event(), "ev-rotate")
    world.script.answers = [Answer(200, {})]
    await world.attempt(made)
    _, body, headers = world.script.sent[0]
    Webhook(new).verify(body, dict(headers))


async def test_a_batch_webhook_needs_a_public_url_and_a_whsec_secret(world: World) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await world.webhooks.register_batch_webhook(T1, "bat_1", "http://127.0.0.1/",
                                                    BATCH_SECRET)
    assert field_of(refused.value) == "webhookUrl"
    for secret in ("", "whsec_", "lss_key-signing-secret", "whsec_not base64!"):
        with pytest.raises(InvalidArgument) as refused:
            await world.webhooks.register_batch_webhook(T1, "bat_1", URL, secret)
        assert field_of(refused.value) == "secret", secret
    with pytest.raises(InvalidArgument):
        await world.webhooks.register_batch_webhook("", "bat_1", URL, BATCH_SECRET)


# ---------------------------------------------------------------- fan-out ----

async def test_an_event_handled_twice_makes_one_delivery_per_matching_subscription(
    world: World
) -> None:
    match, _ = await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                           filters=Filters(template_id="tpl_a"), description="")
    await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                filters=Filters(template_id="tpl_b"), description="")
    await world.webhooks.create(T1, event="render.failed", target_url=URL, filters=Filters(),
                                description="")
    await world.webhooks.create(T2, event="render.completed", target_url=URL,
                                filters=Filters(), description="")
    first = await world.dispatcher.handle(event("tpl_a"), "event-1")
    again = await world.dispatcher.handle(event("tpl_a"), "event-1")
    assert first == again and len(first) == 1
    # Its job is queued (its claim held): the second handling queues none.
    assert world.jobs.jobs == [(first[0], 0)]
    log, _ = await world.webhooks.deliveries(T1, match.id, 10, "")
    assert [d.id for d in log] == first and log[0].status is DeliveryStatus.PENDING
    world.script.answers = [Answer(200, {})]
    await world.attempt(first[0])
    await world.dispatcher.handle(event("tpl_a"), "event-1")
    assert world.jobs.queued == first  # attempted: never queued again
    assert len(await world.dispatcher.handle(event("tpl_a"), "event-2")) == 1


async def test_a_stored_delivery_never_queued_is_queued_when_the_event_comes_back(
    world: World
) -> None:
    await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                filters=Filters(), description="")

    class Down(Jobs):
        async def enqueue(self, delivery: Delivery) -> None:
            raise ConnectionError("NATS is away")

    failing = Dispatcher(world.stores, Down(), max_subscriptions=100, clock=world.clock)
    [made] = await failing.handle(event(), "event-3")  # stored, given back to the scheduler
    [again] = await world.dispatcher.handle(event(), "event-3")
    assert again == made and world.jobs.jobs == [(made, 0)]
    assert await world.scheduler.tick() == 0  # claimed by the second handling


# ------------------------------------------------------ pause and disable ----

async def _one_delivery(world: World, template: str = "tpl_a") -> tuple[str, str]:
    sub, _ = await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                         filters=Filters(template_id=template), description="")
    [made] = await world.dispatcher.handle(event(template), f"ev-{template}-{sub.id}")
    return sub.id, made


async def test_failed_attempts_follow_the_schedule_then_fail(world: World) -> None:
    sub_id, made = await _one_delivery(world)
    world.script.answers = [Answer(500, {}), SendFailed("could not connect"),
                            Answer(503, {"retry-after": "120"})]
    assert await world.attempt(made) == 5.0
    waiting = await world.delivery(made)
    assert (waiting.status, waiting.attempts, waiting.last_response_code) == (
        DeliveryStatus.PENDING, 1, 500)
    assert waiting.next_retry_time == world.clock.now + timedelta(seconds=5)
    assert await world.attempt(made) == 60.0
    assert (await world.delivery(made)).last_error == "could not connect"
    assert await world.attempt(made) is None  # the schedule is used up
    failed = await world.delivery(made)
    assert (failed.status, failed.attempts, failed.last_error, failed.next_retry_time) == (
        DeliveryStatus.FAILED, 3, "the target answered 503", None)
    assert (await world.webhooks.get(T1, sub_id)).consecutive_failures == 3
    assert await world.attempt(made) is None and len(world.script.sent) == 3  # settled


async def test_retry_after_is_honoured(world: World) -> None:
    _, made = await _one_delivery(world)
    world.script.answers = [Answer(429, {"retry-after": "120"})]
    assert await world.attempt(made) == 120.0


async def test_consecutive_failures_pause_the_subscription_and_a_success_resets_them(
    world: World
) -> None:
    world.deliverer = world.deliverer_with(schedule=(5.0,) * 5, pause_after=3)
    sub_id, first = await _one_delivery(world, "tpl_p")
    [second] = await world.dispatcher.handle(event("tpl_p"), "ev-p-2")
    [third] = await world.dispatcher.handle(event("tpl_p"), "ev-p-3")
    world.script.answers = [Answer(500, {}), Answer(500, {}), Answer(204, {}),
                            Answer(500, {}), SendFailed("timed out"), Answer(302, {})]
    assert await world.attempt(first) == 5.0
    assert await world.attempt(second) == 5.0
    assert (await world.webhooks.get(T1, sub_id)).consecutive_failures == 2
    assert await world.attempt(third) is None  # delivered: the count starts again
    assert (await world.webhooks.get(T1, sub_id)).consecutive_failures == 0
    assert await world.attempt(first) == 5.0
    assert await world.attempt(second) == 5.0
    assert (await world.webhooks.get(T1, sub_id)).status is SubscriptionStatus.ACTIVE
    assert await world.attempt(first) is None  # the third in a row: paused, no retry
    sub = await world.webhooks.get(T1, sub_id)
    assert (sub.status, sub.consecutive_failures) == (SubscriptionStatus.PAUSED, 3)
    assert sub.status_reason == "paused after 3 failed attempts in a row"
    stopped = await world.delivery(first)
    assert stopped.status is DeliveryStatus.FAILED and "paused after 3" in stopped.last_error
    assert stopped.last_response_code == 302
    # Its other pending delivery ends unsent; no new deliveries, no redeliveries.
    assert await world.attempt(second) is None and len(world.script.sent) == 6
    assert (await world.delivery(second)).last_error == "the subscription is paused"
    assert await world.dispatcher.handle(event("tpl_p"), "ev-p-4") == []
    with pytest.raises(FailedPrecondition, match="paused"):
        await world.webhooks.redeliver(T1, sub_id, third)
    resumed = await world.webhooks.update(T1, sub_id, SubscriptionChange(
        status=SubscriptionStatus.ACTIVE))
    assert (resumed.status, resumed.consecutive_failures, resumed.status_reason) == (
        SubscriptionStatus.ACTIVE, 0, "")
    again = await world.webhooks.redeliver(T1, sub_id, third)
    assert (again.redelivery_of, again.status, again.attempts) == (
        third, DeliveryStatus.PENDING, 0)
    assert world.jobs.queued[-1] == again.id


async def test_a_delivery_pending_when_its_subscription_is_paused_fails_unsent(
    world: World
) -> None:
    sub_id, made = await _one_delivery(world, "tpl_q")
    await world.webhooks.update(T1, sub_id, SubscriptionChange(status=SubscriptionStatus.PAUSED))
    assert await world.attempt(made) is None
    assert world.script.sent == []
    stopped = await world.delivery(made)
    assert (stopped.status, stopped.attempts, stopped.last_error) == (
        DeliveryStatus.FAILED, 0, "the subscription is paused")


async def test_410_disables_at_once(world: World) -> None:
    sub_id, made = await _one_delivery(world, "tpl_g")
    world.script.answers = [Answer(410, {})]
    assert await world.attempt(made) is None
    sub = await world.webhooks.get(T1, sub_id)
    assert (sub.status, sub.status_reason) == (SubscriptionStatus.DISABLED,
                                               "the target answered 410 Gone")
    gone = await world.delivery(made)
    assert (gone.status, gone.last_response_code) == (DeliveryStatus.FAILED, 410)


async def test_deleting_a_subscription_ends_its_deliveries(world: World) -> None:
    sub_id, made = await _one_delivery(world, "tpl_d")
    await world.webhooks.delete(T1, sub_id)
    assert await world.attempt(made) is None and world.script.sent == []
    with pytest.raises(NotFound):
        await world.webhooks.get(T1, sub_id)


async def test_a_batch_webhook_is_delivered_once_then_forgotten(world: World) -> None:
    await world.webhooks.register_batch_webhook(T1, "bat_7", URL, BATCH_SECRET)
    [made] = await world.dispatcher.handle(
        event(batch_id="bat_7", kind="batch.completed"), "batch-finished:bat_7")
    assert (await world.delivery(made)).subscription_id == ""
    world.script.answers = [Answer(500, {}), Answer(200, {})]
    assert await world.attempt(made) == 5.0
    assert await world.attempt(made) is None
    _, body, headers = world.script.sent[-1]
    Webhook(BATCH_SECRET).verify(body, dict(headers))  # as receivers are told to
    assert (await world.delivery(made)).status is DeliveryStatus.DELIVERED
    # Forgotten once delivered: the event coming back finds its delivery only.
    assert await world.dispatcher.handle(
        event(batch_id="bat_7", kind="batch.completed"), "batch-finished:bat_7") == []


async def test_an_expired_batch_webhook_gets_nothing_and_is_swept(world: World) -> None:
    await world.webhooks.register_batch_webhook(T1, "bat_8", URL, BATCH_SECRET)
    world.clock.now += timedelta(seconds=3601)
    assert await world.dispatcher.handle(
        event(batch_id="bat_8", kind="batch.failed"), "batch-finished:bat_8") == []
    hooks, _ = await world.webhooks.sweep()
    assert hooks == 1


async def test_deliveries_leave_the_log_after_their_retention(world: World) -> None:
    sub_id, made = await _one_delivery(world, "tpl_old")
    world.clock.now += timedelta(seconds=86399)
    assert await world.webhooks.sweep() == (0, 0)
    world.clock.now += timedelta(seconds=2)
    assert await world.webhooks.sweep() == (0, 1)
    assert await world.webhooks.deliveries(T1, sub_id, 10, "") == ([], "")
    assert await world.attempt(made) is None and world.script.sent == []


# ------------------------------------------------------------ the schedule ----

class Gate(Script):
    """A Script whose posts wait at a gate (opened by the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.arrived = asyncio.Event()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.arrived.set()
        await self.open.wait()
        return await super().post(url, body, headers)


async def test_a_delivery_waiting_for_its_retry_holds_no_job(world: World) -> None:
    """Review #1: a failed attempt acks its job; the scheduler queues the
    retry's job when it is due, named by the attempt it stands for."""
    _, made = await _one_delivery(world, "tpl_s")
    assert world.jobs.jobs == [(made, 0)]
    world.script.answers = [Answer(500, {}), Answer(200, {})]
    assert await world.deliverer.attempt(made, 0) == 5.0
    assert await world.scheduler.tick() == 0 and world.jobs.jobs == [(made, 0)]
    world.clock.now += timedelta(seconds=4.9)
    assert await world.scheduler.tick() == 0  # not due yet
    world.clock.now += timedelta(seconds=0.2)
    assert await world.scheduler.tick() == 1 and world.jobs.jobs[-1] == (made, 1)
    assert await world.scheduler.tick() == 0  # claimed: queued once
    assert await world.deliverer.attempt(made, 0) is None  # a stale job: dropped unsent
    assert len(world.script.sent) == 1
    assert await world.deliverer.attempt(made, 1) is None
    assert (await world.delivery(made)).status is DeliveryStatus.DELIVERED
    assert len(world.script.sent) == 2


async def test_two_jobs_for_one_attempt_send_it_once(world: World) -> None:
    """Review #4: of two jobs for the same attempt, one sends; the other is dropped."""
    _, made = await _one_delivery(world, "tpl_dup")
    gate = Gate()
    gate.answers = [Answer(500, {})]
    world.script = gate
    world.deliverer = world.deliverer_with(schedule=(5.0,), pause_after=10)
    first = asyncio.create_task(world.deliverer.attempt(made, 0))
    await gate.arrived.wait()
    assert await world.deliverer.attempt(made, 0) is None  # taken: nothing sent
    gate.open.set()
    assert await first == 5.0
    assert len(gate.sent) == 1 and (await world.delivery(made)).attempts == 1


async def test_a_delivery_whose_job_was_lost_is_queued_again(world: World) -> None:
    """Review #10: a job terminated or never run, or an attempt whose worker
    died, leaves a lease that ends; the scheduler then queues it again."""
    _, made = await _one_delivery(world, "tpl_lost")
    assert await world.scheduler.tick() == 0  # its job is queued (the claim holds)
    world.clock.now += timedelta(seconds=QUEUE_LEASE + 1)
    assert await world.scheduler.tick() == 1 and world.jobs.jobs[-1] == (made, 0)
    # This job's worker dies mid-attempt: its lease ends too.
    assert await world.stores.deliveries.start(
        made, 0, "attempt:dead", world.clock.now + timedelta(seconds=60)) is not None
    world.clock.now += timedelta(seconds=30)
    assert await world.scheduler.tick() == 0
    world.clock.now += timedelta(seconds=31)
    assert await world.scheduler.tick() == 1
    world.script.answers = [Answer(204, {})]
    assert await world.deliverer.attempt(made, 0) is None
    assert (await world.delivery(made)).status is DeliveryStatus.DELIVERED


async def test_a_tenant_past_its_pending_cap_gets_failed_deliveries(world: World) -> None:
    capped = Dispatcher(world.stores, world.jobs, max_subscriptions=100,
                        max_pending_per_tenant=2, clock=world.clock)
    sub, _ = await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                         filters=Filters(template_id="tpl_cap"), description="")
    await world.webhooks.create(T2, event="render.completed", target_url=URL,
                                filters=Filters(template_id="tpl_cap"), description="")
    made = [(await capped.handle(event("tpl_cap"), f"ev-cap-{n}"))[0] for n in range(3)]
    assert world.jobs.queued == made[:2]
    flooded = await world.delivery(made[2])
    assert flooded.status is DeliveryStatus.FAILED and flooded.attempts == 0
    assert "LITHO_WEBHOOK_MAX_PENDING_PER_TENANT" in flooded.last_error
    # Another tenant is not held back by it.
    [other] = await capped.handle(event("tpl_cap", tenant=T2), "ev-cap-t2")
    assert (await world.delivery(other)).status is DeliveryStatus.PENDING
    assert world.jobs.queued[-1] == other
    listed, _ = await world.webhooks.deliveries(T1, sub.id, 10, "")
    assert len(listed) == 3


async def test_a_tenant_at_its_in_flight_bound_hands_jobs_back(world: World) -> None:
    gate = Gate()
    world.script = gate
    world.deliverer = world.deliverer_with(schedule=(5.0,), pause_after=10, per_tenant=1)
    _, first = await _one_delivery(world, "tpl_busy1")
    _, second = await _one_delivery(world, "tpl_busy2")
    await world.webhooks.create(T2, event="render.completed", target_url=URL,
                                filters=Filters(template_id="tpl_busy3"), description="")
    [third] = await world.dispatcher.handle(event("tpl_busy3", tenant=T2), "ev-busy-t2")
    running = asyncio.create_task(world.deliverer.attempt(first, 0))
    await gate.arrived.wait()
    # T1 has its one attempt running: its next job goes back, due in a second.
    assert await world.deliverer.attempt(second, 0) is None
    assert len(gate.sent) == 0
    assert await world.scheduler.tick() == 0
    # T2's attempt is not held up by T1's.
    gate.answers = [Answer(200, {}), Answer(200, {}), Answer(200, {})]
    gate.open.set()
    assert await world.deliverer.attempt(third, 0) is None
    assert await running is None
    world.clock.now += timedelta(seconds=1)
    assert await world.scheduler.tick() == 1 and world.jobs.jobs[-1] == (second, 0)
    assert await world.deliverer.attempt(second, 0) is None
    assert all([(await world.delivery(d)).status is DeliveryStatus.DELIVERED
                for d in (first, second, third)])


async def test_setting_an_active_subscription_active_keeps_its_failure_count(
    world: World
) -> None:
    """Review 1e: a PATCH of status active must not reset the count towards the pause."""
    world.deliverer = world.deliverer_with(schedule=(5.0,) * 5, pause_after=3)
    sub_id, made = await _one_delivery(world, "tpl_1e")
    world.script.answers = [Answer(500, {}), Answer(500, {})]
    await world.attempt(made)
    await world.attempt(made)
    again = await world.webhooks.update(T1, sub_id, SubscriptionChange(
        status=SubscriptionStatus.ACTIVE))
    assert again.consecutive_failures == 2


async def test_a_retry_after_that_overflows_still_logs_the_attempt(world: World) -> None:
    """Review #2: whatever Retry-After holds, the attempt is logged and settled."""
    _, made = await _one_delivery(world, "tpl_ra1")
    world.script.answers = [
        Answer(200, {"retry-after": "Fri, 31 Dec 99999999999999999999 23:59:59 GMT"})]
    assert await world.attempt(made) is None
    done = await world.delivery(made)
    assert (done.status, done.attempts) == (DeliveryStatus.DELIVERED, 1)
    _, other = await _one_delivery(world, "tpl_ra2")
    world.script.answers = [Answer(503, {"retry-after": "9" * 5000})]
    assert await world.attempt(other) == 600.0  # capped at retry_after_max


async def test_concurrent_creates_never_pass_the_subscription_limit(world: World) -> None:
    """Review #5: the limit holds under concurrency."""
    results = await asyncio.gather(*[
        world.webhooks.create("t-race", event="render.completed", target_url=URL,
                              filters=Filters(), description="") for _ in range(20)],
        return_exceptions=True)
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 3  # one slot each: the racers take the free ones, no more
    assert all(isinstance(r, InvalidArgument) for r in results if isinstance(r, BaseException))
    assert await world.stores.subscriptions.count("t-race") == len(created)


async def test_a_redelivery_is_refused_while_the_last_one_is_pending(world: World) -> None:
    """Review #6: one pending redelivery per delivery, and the tenant's cap."""
    sub_id, made = await _one_delivery(world, "tpl_re")
    world.script.answers = [Answer(200, {})]
    await world.attempt(made)
    again = await world.webhooks.redeliver(T1, sub_id, made)
    raced = await asyncio.gather(*[world.webhooks.redeliver(T1, sub_id, made)
                                   for _ in range(5)], return_exceptions=True)
    assert all(isinstance(r, Conflict) for r in raced), raced
    world.script.answers = [Answer(200, {})]
    assert await world.attempt(again.id) is None
    third = await world.webhooks.redeliver(T1, sub_id, made)  # the last one is settled
    assert third.redelivery_of == made and world.jobs.queued[-1] == third.id
    capped = Webhooks(world.stores, world.jobs, allow=AllowList(), batch_retention=3600,
                      delivery_retention=86400, clock=world.clock,
                      limits=Limits(3, 500, 2048, max_pending_per_tenant=1))
    world.script.answers = [Answer(200, {})]
    await world.attempt(third.id)
    _, pending = await _one_delivery(world, "tpl_re2")
    with pytest.raises(ResourceExhausted, match="LITHO_WEBHOOK_MAX_PENDING_PER_TENANT"):
        await capped.redeliver(T1, sub_id, made)
    assert (await world.delivery(pending)).status is DeliveryStatus.PENDING


async def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends(world: World) -> None:
    """Review #7: receivers holding the old secret keep verifying for the overlap."""
    sub, old = await world.webhooks.create(T1, event="render.completed", target_url=URL,
                                           filters=Filters(template_id="tpl_rot"),
                                           description="")
    _, new = await world.webhooks.rotate_secret(T1, sub.id)
    [first] = await world.dispatcher.handle(event("tpl_rot"), "ev-rot-1")
    world.script.answers = [Answer(200, {}), Answer(200, {})]
    await world.attempt(first)
    _, body, headers = world.script.sent[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, dict(headers))
    Webhook(old).verify(body, dict(headers))
    world.clock.now += timedelta(seconds=61)  # LITHO_WEBHOOK_ROTATION_OVERLAP is 60 here
    [second] = await world.dispatcher.handle(event("tpl_rot"), "ev-rot-2")
    await world.attempt(second)
    _, body, headers = world.script.sent[-1]
    Webhook(new).verify(body, dict(headers))
    with pytest.raises(Exception, match="signature"):
        Webhook(old).verify(body, dict(headers))


async def test_an_event_without_a_time_gets_one_delivery_sorted_by_its_handling(
    world: World
) -> None:
    """Review #17: not ``whd_000000000000…`` (listed as the oldest), and still one."""
    sub, _ = await world.webhooks.create(T1, event="render.failed", target_url=URL,
                                         filters=Filters(), description="")
    timeless = Event(type="render.failed", tenant_id=T1, template_id="tpl_a", binding_id="",
                     batch_id="", time=None, data={})
    [made] = await world.dispatcher.handle(timeless, "ev-timeless")
    assert made[4:16] == f"{int(world.clock.now.timestamp() * 1000):012x}"
    world.clock.now += timedelta(seconds=2)
    assert await world.dispatcher.handle(timeless, "ev-timeless") == [made]
    listed, _ = await world.webhooks.deliveries(T1, sub.id, 10, "")
    assert [d.id for d in listed] == [made]


async def test_the_transport_turns_an_unencodable_host_into_a_failed_attempt() -> None:
    """Review #3, the backstop: whatever the URL libraries raise is SendFailed."""
    from services.webhook._transport import GuardTransport

    class Raising:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        async def fetch(self, *args: object, **kwargs: object) -> None:
            raise self.exc

    for exc in (UnicodeError("label empty or too long"), ValueError("bad host")):
        transport = GuardTransport(Raising(exc), timeout=1, max_bytes=1024)  # type: ignore[arg-type]
        with pytest.raises(SendFailed, match="cannot be used"):
            await transport.post("http://a..b/", b"{}", {})


def test_a_batch_secret_signs_as_the_whsec_string_receivers_hold() -> None:
    headers = _signing.headers((_signing.batch_signer(BATCH_SECRET),), "msg_b", "{}",
                               datetime.now(UTC))
    Webhook(BATCH_SECRET).verify("{}", headers)


async def test_one_tenants_backlog_does_not_fill_a_look_of_the_scheduler(world: World) -> None:
    class Down(Jobs):
        async def enqueue(self, delivery: Delivery) -> None:
            raise ConnectionError("NATS is away")

    for tenant in (T1, T2):
        await world.webhooks.create(tenant, event="render.completed", target_url=URL,
                                    filters=Filters(template_id="tpl_backlog"), description="")
    away = Dispatcher(world.stores, Down(), max_subscriptions=100, clock=world.clock)
    backlog = [(await away.handle(event("tpl_backlog"), f"ev-bl-{n}"))[0] for n in range(5)]
    [other] = await away.handle(event("tpl_backlog", tenant=T2), "ev-bl-t2")
    fair = Scheduler(world.stores, world.jobs, queue_lease=QUEUE_LEASE, per_tenant=2,
                     interval=1.0, clock=world.clock)
    assert await fair.tick() == 3
    assert other in world.jobs.queued
    assert len([d for d in world.jobs.queued if d in backlog]) == 2
    world.clock.now += timedelta(seconds=1)
    assert await fair.tick() == 2  # the rest, a look later


async def test_a_delivery_pending_before_the_scheduler_is_put_on_it() -> None:
    store = await open_document_store("sqlite:///:memory:", "litho")
    try:
        now = datetime.now(UTC)
        await store.collection("webhook_deliveries").insert({
            "_id": "whd_old", "tenantId": T1, "subscriptionId": "whs_x", "batchWebhookId": "",
            "event": "render.completed", "messageId": "msg_x", "body": "{}",
            "status": "pending", "attempts": 1, "lastResponseCode": 500, "lastDurationMs": 1,
            "lastError": "", "nextRetryTime": (now + timedelta(seconds=5)).isoformat(),
            "deliveredTime": None, "createTime": now.isoformat(), "redeliveryOf": ""})
        stores = Stores(SubscriptionStore(store), DeliveryStore(store), BatchWebhookStore(store))
        await stores.prepare()
        assert await stores.deliveries.claim_due(now, now + timedelta(seconds=60)) is None
        later = now + timedelta(seconds=6)
        claimed = await stores.deliveries.claim_due(later, later + timedelta(seconds=60))
        assert claimed is not None and claimed.id == "whd_old"
    finally:
        await store.close()
