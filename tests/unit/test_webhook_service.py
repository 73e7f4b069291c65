"""The webhook service's domain on the real SQLite store: what callers may
send, tenant isolation, fan-out idempotency, and the pause and disable rules
(attempts through a scripted Transport, jobs into a list)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook

from litho.docstore import open_document_store
from litho.errors import FailedPrecondition, InvalidArgument, LithoError, NotFound
from litho.outbound import AllowList
from services.webhook._deliverer import Answer, Deliverer, RetryLater, SendFailed
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
from services.webhook._service import Stores, Webhooks
from services.webhook._store import BatchWebhookStore, DeliveryStore, SubscriptionStore

T1, T2 = "tenant-1", "tenant-2"
URL = "https://hooks.example.com/litho"
LIMITS = Limits(max_subscriptions=3, max_description_chars=500, max_url_chars=2048)


class Clock:
    def __init__(self) -> None:
        # Real time: receivers refuse signatures more than 5 minutes off.
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Jobs:
    def __init__(self) -> None:
        self.queued: list[str] = []

    async def enqueue(self, delivery: Delivery) -> None:
        self.queued.append(delivery.id)


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
                                 delivery_retention=86400, clock=self.clock)
        self.dispatcher = Dispatcher(stores, self.jobs, max_subscriptions=100, clock=self.clock)
        self.deliverer = self.deliverer_with(schedule=(5.0, 60.0), pause_after=10)

    def deliverer_with(self, *, schedule: tuple[float, ...], pause_after: int) -> Deliverer:
        return Deliverer(self.stores, self.script, schedule=schedule, retry_after_max=600,
                         pause_after=pause_after, clock=self.clock)

    async def attempt(self, delivery_id: str) -> float | None:
        """The retry delay the attempt asked for (None: settled)."""
        try:
            await self.deliverer.attempt(delivery_id)
        except RetryLater as exc:
            return exc.delay
        return None

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
    ({"filters": Filters(binding_id="a\nb")}, "filters.bindingId", "control"),
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
    assert [s.id for s in first + second] == made and end == ""
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


async def test_a_batch_webhook_needs_a_public_url_and_a_secret(world: World) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await world.webhooks.register_batch_webhook(T1, "bat_1", "http://127.0.0.1/", "lss_x")
    assert field_of(refused.value) == "webhookUrl"
    with pytest.raises(InvalidArgument) as refused:
        await world.webhooks.register_batch_webhook(T1, "bat_1", URL, "")
    assert field_of(refused.value) == "secret"
    with pytest.raises(InvalidArgument):
        await world.webhooks.register_batch_webhook("", "bat_1", URL, "lss_x")


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
    # Queued again only because it was never attempted (the first handling
    # may have died before queueing); the job's Nats-Msg-Id is the delivery's,
    # so the stream keeps one.
    assert world.jobs.queued == first * 2
    log, _ = await world.webhooks.deliveries(T1, match.id, 10, "")
    assert [d.id for d in log] == first and log[0].status is DeliveryStatus.PENDING
    world.script.answers = [Answer(200, {})]
    await world.attempt(first[0])
    await world.dispatcher.handle(event("tpl_a"), "event-1")
    assert world.jobs.queued == first * 2  # attempted: never queued again
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
    with pytest.raises(ConnectionError):
        await failing.handle(event(), "event-3")
    [made] = await world.dispatcher.handle(event(), "event-3")
    assert world.jobs.queued == [made]


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
    await world.webhooks.register_batch_webhook(T1, "bat_7", URL, "lss_secret")
    [made] = await world.dispatcher.handle(
        event(batch_id="bat_7", kind="batch.completed"), "batch-finished:bat_7")
    assert (await world.delivery(made)).subscription_id == ""
    world.script.answers = [Answer(500, {}), Answer(200, {})]
    assert await world.attempt(made) == 5.0
    assert await world.attempt(made) is None
    _, body, headers = world.script.sent[-1]
    Webhook(b"lss_secret").verify(body, dict(headers))
    assert (await world.delivery(made)).status is DeliveryStatus.DELIVERED
    # Forgotten once delivered: the event coming back finds its delivery only.
    assert await world.dispatcher.handle(
        event(batch_id="bat_7", kind="batch.completed"), "batch-finished:bat_7") == []


async def test_an_expired_batch_webhook_gets_nothing_and_is_swept(world: World) -> None:
    await world.webhooks.register_batch_webhook(T1, "bat_8", URL, "lss_secret")
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
