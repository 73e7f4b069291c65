"""The webhook service end to end, inside this process: a real ``nats-server``
(``tests/support/nats_server.py``), the SQLite document store, the service
started by ``litho.service.running`` on port 0 and driven over gRPC, events
published with the real Publisher, and a loopback aiohttp receiver (allowed
through ``LITHO_OUTBOUND_ALLOW``) that verifies what it gets with the
``standardwebhooks`` library, as a receiver would.

Waits are bounded by what the receiver or the delivery log shows; times are
backstops only. Each step a test waits for is gated by the receiver, so no
retry can overtake the state a test checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.errors import NotFoundError
from standardwebhooks.webhooks import Webhook

from litho import messaging, renders
from litho.config import OutboundSettings
from litho.events.v1 import events_pb2
from litho.outbound import OutboundGuard
from litho.service import Endpoints, running
from litho.streams import EVENTS_STREAM, JOBS_STREAM, ensure_streams
from litho.webhook.v1 import webhook_pb2 as pb
from litho.webhook.v1 import webhook_pb2_grpc as pb_grpc
from services import _registry
from services.webhook._deliverer import SendFailed
from services.webhook._settings import WebhookSettings
from services.webhook._transport import GuardTransport
from tests.support._process import free_port
from tests.support.nats_server import NatsServer, start_nats

BACKSTOP = 20.0
TENANT = "t-webhooks"
PUBLIC_URL = "https://images.example.test"


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats-webhook"))
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def publisher(nats_server: NatsServer) -> AsyncIterator[messaging.Publisher]:
    """A publisher on fresh streams (their consumers go with them)."""
    async with contextlib.AsyncExitStack() as stack:
        nc = await messaging.connect(stack, nats_server.url, name="webhook-test")
        js = nc.jetstream()
        for name in (EVENTS_STREAM, JOBS_STREAM):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
        await ensure_streams(js)
        yield messaging.Publisher(js)


# ------------------------------------------------------------- receiver ----

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[[Received], Awaitable[web.Response]]


def answer(status: int, headers: dict[str, str] | None = None) -> Behaviour:
    async def respond(_: Received) -> web.Response:
        return web.Response(status=status, headers=headers)
    return respond


@dataclass
class Receiver:
    """A webhook receiver on loopback: each request takes the next behaviour
    (200 once they run out) and is queued for the test as it arrives."""

    behaviours: list[Behaviour] = field(default_factory=list)
    requests: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hang(self) -> Behaviour:
        async def respond(_: Received) -> web.Response:
            await self.closing.wait()
            return web.Response(status=599)
        return respond

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            received = Received(request.path, dict(request.headers), await request.read())
            self.requests.put_nowait(received)
            behaviour = self.behaviours.pop(0) if self.behaviours else answer(200)
            return await behaviour(received)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def next(self) -> Received:
        return await asyncio.wait_for(self.requests.get(), BACKSTOP)


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


# -------------------------------------------------------------- service ----

def settings_for(data_dir: Path, nats_url: str, **overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "data_dir": data_dir, "nats_url": nats_url,
        "outbound": OutboundSettings(allow="127.0.0.1"),
        "webhook_public_url": PUBLIC_URL, "webhook_retry_schedule": "0.2s,0.2s,0.2s",
        "webhook_timeout": 2.0, "shutdown_grace": 5.0, "webhook_scheduler_interval": 0.05,
    }
    values.update(overrides)
    return WebhookSettings(**values)


@contextlib.asynccontextmanager
async def webhook_service(
    settings: WebhookSettings,
) -> AsyncIterator[pb_grpc.WebhookServiceAsyncStub]:
    spec = _registry.registry()["webhook"]
    root = _registry.app(spec)
    async with running(spec, settings, root.build,
                       endpoints=Endpoints(listen="127.0.0.1:0")) as host, \
            grpc.aio.insecure_channel(f"127.0.0.1:{host.grpc_port}") as channel:
        yield pb_grpc.WebhookServiceStub(channel)


async def subscribe(stub: pb_grpc.WebhookServiceAsyncStub, event: str, url: str, *,
                    template_id: str = "", tenant: str = TENANT) -> tuple[str, str]:
    created = await stub.CreateSubscription(pb.CreateSubscriptionRequest(
        tenant_id=tenant, event=event, target_url=url,
        filters=pb.SubscriptionFilters(template_id=template_id)))
    return created.subscription.id, created.secret


async def deliveries(stub: pb_grpc.WebhookServiceAsyncStub, sub_id: str) -> list[pb.Delivery]:
    page = await stub.ListDeliveries(pb.ListDeliveriesRequest(
        tenant_id=TENANT, subscription_id=sub_id))
    return list(page.deliveries)


async def log_shows(stub: pb_grpc.WebhookServiceAsyncStub, sub_id: str,
                    check: Callable[[list[pb.Delivery]], bool], what: str) -> list[pb.Delivery]:
    deadline = time.monotonic() + BACKSTOP
    while True:
        log = await deliveries(stub, sub_id)
        if check(log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the log: {log}")
        await asyncio.sleep(0.02)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return ts


async def publish(publisher: messaging.Publisher, subject: str, message: Message) -> None:
    await publisher.publish(subject, message, msg_id=uuid.uuid4().hex)


def render_completed(template_id: str = "tpl_a",
                     render_id: str = "r_1") -> events_pb2.RenderCompleted:
    return events_pb2.RenderCompleted(
        render_id=render_id, tenant_id=TENANT, template_id=template_id, template_version=3,
        blob_key=f"renders/{render_id}.jpeg", format="jpeg", width=1200, height=630,
        cached=False, duration_ms=41.5, time=_now())


COMPLETED = "litho.events.v1.render.completed"
#: What the gateway sends as a batch webhook's secret: whsec_ and base64.
BATCH_SECRET = "whsec_a2V5LWRlcml2ZWQtYmF0Y2gtc2VjcmV0"


def verified(secret: str | bytes, got: Received) -> Any:
    """What a receiver reads once the signature checks out (raises if not)."""
    return Webhook(secret).verify(got.body, got.headers)


def only(log: list[pb.Delivery]) -> pb.Delivery:
    assert len(log) == 1, log
    return log[0]


# ---------------------------------------------------------------- tests ----

async def test_an_event_arrives_signed_at_the_matching_subscription_only(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
    receiver: Receiver,
) -> None:
    async with webhook_service(settings_for(tmp_path, nats_server.url)) as stub:
        sub_id, secret = await subscribe(stub, "render.completed", receiver.url("/a"),
                                         template_id="tpl_a")
        other_id, _ = await subscribe(stub, "render.completed", receiver.url("/b"),
                                      template_id="tpl_b")
        await subscribe(stub, "render.completed", receiver.url("/c"), tenant="t-other")
        await subscribe(stub, "render.failed", receiver.url("/d"))

        await publish(publisher, COMPLETED, render_completed("tpl_a", "r_42"))
        got = await receiver.next()
        assert got.path == "/a"
        body = verified(secret, got)
        assert body["type"] == "render.completed"
        assert body["data"] == {
            "renderId": "r_42", "templateId": "tpl_a", "templateVersion": 3,
            "format": "jpeg", "width": 1200, "height": 630, "cached": False,
            "durationMs": 41.5, "url": f"{PUBLIC_URL}/images/r_42.jpeg"}
        assert body["timestamp"].endswith("Z")
        assert got.headers["webhook-id"].startswith("msg_")
        assert got.headers["Content-Type"] == "application/json"
        with pytest.raises(Exception, match="signature"):
            verified("whsec_" + "A" * 32, got)  # another secret does not verify

        done = only(await log_shows(
            stub, sub_id, lambda log: bool(log) and log[0].status == pb.DELIVERY_STATUS_DELIVERED,
            "the delivery logged as delivered"))
        assert (done.attempts, done.last_response_code, done.event) == (1, 200, "render.completed")
        assert done.HasField("delivered_time") and not done.HasField("next_retry_time")
        assert await deliveries(stub, other_id) == []

        # A redelivery is the same payload, with the same webhook-id.
        again = await stub.RedeliverDelivery(pb.RedeliverDeliveryRequest(
            tenant_id=TENANT, subscription_id=sub_id, delivery_id=done.id))
        assert again.delivery.redelivery_of == done.id
        second = await receiver.next()
        assert (second.path, second.body) == ("/a", got.body)
        assert second.headers["webhook-id"] == got.headers["webhook-id"]
        verified(secret, second)
        log = await log_shows(
            stub, sub_id, lambda log: len(log) == 2
            and all(d.status == pb.DELIVERY_STATUS_DELIVERED for d in log), "the redelivery")
        assert log[0].id == again.delivery.id  # newest first
        assert receiver.requests.empty()  # /b, /c and /d got nothing

        # Another tenant's subscription and deliveries do not exist for it.
        for call in (
            stub.GetSubscription(pb.GetSubscriptionRequest(
                tenant_id="t-other", subscription_id=sub_id)),
            stub.ListDeliveries(pb.ListDeliveriesRequest(
                tenant_id="t-other", subscription_id=sub_id)),
            stub.RedeliverDelivery(pb.RedeliverDeliveryRequest(
                tenant_id="t-other", subscription_id=sub_id, delivery_id=done.id)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_with_an_image_base_url_a_payloads_url_is_the_apis(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
    receiver: Receiver,
) -> None:
    """``LITHO_IMAGE_BASE_URL`` points a render.completed ``url`` at the blob,
    by the rule the gateway's answers follow (``litho.renders.image_url``)."""
    render_id = "cd" + "0123456789abcdef" * 3 + "0123456789abcd"
    settings = settings_for(tmp_path, nats_server.url,
                            image_base_url="https://cdn.example.test/litho/")
    async with webhook_service(settings) as stub:
        _, secret = await subscribe(stub, "render.completed", receiver.url("/a"))
        await publish(publisher, COMPLETED, render_completed("tpl_a", render_id))
        body = verified(secret, await receiver.next())
    url = body["data"]["url"]
    assert url == f"https://cdn.example.test/litho/outputs/cd/{render_id}.jpeg"
    assert url == renders.image_url(PUBLIC_URL, "https://cdn.example.test/litho", render_id,
                                    "jpeg")


async def test_a_receiver_that_is_down_gets_the_event_on_a_retry(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
) -> None:
    late = Receiver(port=free_port())  # nothing listens there yet
    settings = settings_for(tmp_path, nats_server.url, webhook_retry_schedule="0.3s,0.3s,0.3s")
    try:
        async with webhook_service(settings) as stub:
            sub_id, secret = await subscribe(stub, "render.completed", late.url())
            await publish(publisher, COMPLETED, render_completed())
            first = only(await log_shows(
                stub, sub_id, lambda log: bool(log) and log[0].attempts >= 1,
                "the first attempt"))
            assert first.status == pb.DELIVERY_STATUS_PENDING
            assert first.last_response_code == 0 and "connect" in first.last_error
            assert first.HasField("next_retry_time")

            await late.start()
            verified(secret, await late.next())
            done = only(await log_shows(
                stub, sub_id, lambda log: log[0].status == pb.DELIVERY_STATUS_DELIVERED,
                "the retry delivered"))
            assert done.attempts >= 2 and done.last_response_code == 200
            assert done.last_error == ""
    finally:
        await late.stop()


async def test_a_receiver_that_hangs_is_timed_out_and_retried(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
    receiver: Receiver,
) -> None:
    gate = asyncio.Event()

    async def after_the_gate(_: Received) -> web.Response:
        await gate.wait()
        return web.Response(status=204)

    receiver.behaviours = [receiver.hang(), after_the_gate]
    settings = settings_for(tmp_path, nats_server.url, webhook_timeout=0.5)
    async with webhook_service(settings) as stub:
        sub_id, secret = await subscribe(stub, "render.completed", receiver.url())
        await publish(publisher, COMPLETED, render_completed())
        started = time.monotonic()
        verified(secret, await receiver.next())  # it hangs on this one
        timed_out = only(await log_shows(
            stub, sub_id, lambda log: bool(log) and log[0].attempts == 1, "the timeout"))
        assert time.monotonic() - started >= 0.45
        assert "LITHO_WEBHOOK_TIMEOUT" in timed_out.last_error
        assert timed_out.status == pb.DELIVERY_STATUS_PENDING
        assert 400 <= timed_out.last_duration_ms < 2000

        verified(secret, await receiver.next())  # the retry, held at the gate
        gate.set()
        done = only(await log_shows(
            stub, sub_id, lambda log: log[0].status == pb.DELIVERY_STATUS_DELIVERED,
            "the retry delivered"))
        assert (done.attempts, done.last_response_code) == (2, 204)


async def test_410_disables_the_subscription_and_it_gets_nothing_more(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
    receiver: Receiver,
) -> None:
    receiver.behaviours = [answer(410)]
    async with webhook_service(settings_for(tmp_path, nats_server.url)) as stub:
        gone_id, _ = await subscribe(stub, "render.completed", receiver.url("/gone"))
        await publish(publisher, COMPLETED, render_completed(render_id="r_1"))
        assert (await receiver.next()).path == "/gone"
        failed = only(await log_shows(
            stub, gone_id, lambda log: bool(log) and log[0].status == pb.DELIVERY_STATUS_FAILED,
            "the 410 logged"))
        assert (failed.attempts, failed.last_response_code) == (1, 410)
        assert not failed.HasField("next_retry_time")
        sub = (await stub.GetSubscription(pb.GetSubscriptionRequest(
            tenant_id=TENANT, subscription_id=gone_id))).subscription
        assert sub.status == pb.SUBSCRIPTION_STATUS_DISABLED
        assert "410" in sub.status_reason

        # The next event reaches a newer subscription; the disabled one gets
        # no delivery (both are handled by the same fan-out, oldest first).
        await subscribe(stub, "render.completed", receiver.url("/live"))
        await publish(publisher, COMPLETED, render_completed(render_id="r_2"))
        assert (await receiver.next()).path == "/live"
        assert len(await deliveries(stub, gone_id)) == 1

        # Its owner can make it active again.
        resumed = await stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
            tenant_id=TENANT, subscription_id=gone_id, status=pb.SUBSCRIPTION_STATUS_ACTIVE))
        assert resumed.subscription.status == pb.SUBSCRIPTION_STATUS_ACTIVE
        assert resumed.subscription.status_reason == ""


async def test_a_retry_scheduled_before_a_restart_happens_after_it(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
    receiver: Receiver,
) -> None:
    receiver.behaviours = [answer(503)]
    settings = settings_for(tmp_path, nats_server.url, webhook_retry_schedule="1.5s,1.5s")
    async with webhook_service(settings) as stub:
        sub_id, secret = await subscribe(stub, "render.completed", receiver.url())
        await publish(publisher, COMPLETED, render_completed())
        verified(secret, await receiver.next())
        failed_at = time.monotonic()
        first = only(await log_shows(
            stub, sub_id, lambda log: bool(log) and log[0].attempts == 1, "the failed attempt"))
        assert (first.status, first.last_response_code) == (pb.DELIVERY_STATUS_PENDING, 503)
    # The service is stopped (the retry's job is not queued yet: the delivery
    # waits in the store); a new one on the same store and NATS takes over.
    assert receiver.requests.empty()
    async with webhook_service(settings) as stub:
        verified(secret, await receiver.next())
        assert time.monotonic() - failed_at >= 1.3  # the schedule's delay, not at once
        done = only(await log_shows(
            stub, sub_id, lambda log: log[0].status == pb.DELIVERY_STATUS_DELIVERED,
            "the retry after the restart"))
        assert (done.attempts, done.last_response_code) == (2, 200)


async def test_a_batch_webhook_gets_its_batch_once_signed_with_the_key_secret(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
    receiver: Receiver,
) -> None:
    async with webhook_service(settings_for(tmp_path, nats_server.url)) as stub:
        await stub.RegisterBatchWebhook(pb.RegisterBatchWebhookRequest(
            tenant_id=TENANT, batch_id="bat_1", target_url=receiver.url("/batch"),
            secret=BATCH_SECRET))
        sub_id, secret = await subscribe(stub, "batch.completed", receiver.url("/sub"))
        created = Timestamp(seconds=1_790_000_000)
        await publish(publisher, "litho.events.v1.batch.completed", events_pb2.BatchFinished(
            batch_id="bat_1", tenant_id=TENANT, template_id="tpl_a", template_version=2,
            status="partial", total_items=3, completed_items=2, failed_items=1,
            cancelled_items=0, metadata_json='{"campaign": "spring"}', created_at=created,
            completed_at=_now()))
        got = {r.path: r for r in [await receiver.next(), await receiver.next()]}
        hook = verified(BATCH_SECRET, got["/batch"])  # Webhook("whsec_…"), as documented
        assert hook == verified(secret, got["/sub"])
        assert hook["type"] == "batch.completed"
        assert hook["data"]["metadata"] == {"campaign": "spring"}
        assert hook["data"]["createdAt"] == "2026-09-21T14:13:20.000Z"
        assert (hook["data"]["batchId"], hook["data"]["completedItems"]) == ("bat_1", 2)
        # Only the subscription's own delivery is in its log.
        only(await log_shows(
            stub, sub_id, lambda log: bool(log) and log[0].status == pb.DELIVERY_STATUS_DELIVERED,
            "the subscription's delivery"))
        assert receiver.requests.empty()


async def test_the_transport_follows_no_redirect_and_reads_a_bounded_answer(
    receiver: Receiver,
) -> None:
    async def big(_: Received) -> web.Response:
        return web.Response(status=200, body=b"x" * 5000)

    receiver.behaviours = [answer(302, {"Location": "/elsewhere"}), answer(307), big,
                           answer(202, {"Retry-After": "5"})]
    outbound = OutboundSettings(allow="127.0.0.1").model_copy(update={"max_redirects": 0})
    async with OutboundGuard(outbound) as guard:
        transport = GuardTransport(guard, timeout=2.0, max_bytes=4096)
        # A redirect is answered as it came (the policy counts it a failure).
        assert (await transport.post(receiver.url("/a"), b"{}", {})).status == 302
        assert (await receiver.next()).path == "/a"  # and nothing at /elsewhere
        assert (await transport.post(receiver.url("/b"), b"{}", {})).status == 307
        # A long answer is cut, not a failure: only its status counts.
        assert (await transport.post(receiver.url("/c"), b"{}", {})).status == 200
        got = await transport.post(receiver.url("/d"), b"{}", {})
        assert (got.status, got.headers["retry-after"]) == (202, "5")
        with pytest.raises(SendFailed, match="not allowed"):
            await transport.post("http://10.0.0.1/", b"{}", {})
    assert [(await receiver.next()).path for _ in range(3)] == ["/b", "/c", "/d"]
    assert receiver.requests.empty()


async def test_one_tenants_failing_receiver_does_not_hold_up_another(
    tmp_path: Path, nats_server: NatsServer, publisher: messaging.Publisher,
    receiver: Receiver,
) -> None:
    """Review #1: retries waiting for tenant A hold none of the jobs that
    tenant B's deliveries need (here the consumer may hold 3 at once)."""
    receiver.behaviours = [answer(500, {"Retry-After": "30"})] * 3
    settings = settings_for(tmp_path, nats_server.url, webhook_max_pending=3,
                            webhook_retry_schedule="1s,1s", webhook_retry_after_max=30.0)
    async with webhook_service(settings) as stub:
        attacker_id, _ = await subscribe(stub, "render.completed", receiver.url("/attacker"),
                                         tenant="A")
        await subscribe(stub, "render.completed", receiver.url("/victim"), tenant="B")
        for i in range(3):
            await publish(publisher, COMPLETED, events_pb2.RenderCompleted(
                render_id=f"a{i}", tenant_id="A", template_id="t", format="png", time=_now()))
        for _ in range(3):
            assert (await receiver.next()).path == "/attacker"
        # All three are logged, waiting 30 s for their retries.
        page = await stub.ListDeliveries(pb.ListDeliveriesRequest(
            tenant_id="A", subscription_id=attacker_id))
        deadline = time.monotonic() + BACKSTOP
        while sum(d.attempts for d in page.deliveries) < 3:
            assert time.monotonic() < deadline, page
            await asyncio.sleep(0.02)
            page = await stub.ListDeliveries(pb.ListDeliveriesRequest(
                tenant_id="A", subscription_id=attacker_id))
        started = time.monotonic()
        await publish(publisher, COMPLETED, events_pb2.RenderCompleted(
            render_id="b0", tenant_id="B", template_id="t", format="png", time=_now()))
        got = await receiver.next()
        assert got.path == "/victim"
        assert time.monotonic() - started < 5  # not behind A's 30 s retries
