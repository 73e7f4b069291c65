"""Delivery bodies, and their Standard Webhooks signatures as a receiver checks them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from litho.events.v1 import events_pb2
from services.webhook import _events, _signing
from services.webhook._events import Context

CTX = Context(public_url="https://litho.example.com")
WHEN = datetime(2026, 11, 30, 22, 5, 1, 123456, tzinfo=UTC)


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def test_a_secret_is_whsec_and_24_random_bytes_in_base64() -> None:
    secrets = {_signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24


def test_a_signed_body_verifies_with_the_reference_library_and_nothing_else() -> None:
    secret = _signing.new_secret()
    body = '{"type":"render.completed","timestamp":"x","data":{}}'
    now = datetime.now(UTC)
    headers = _signing.headers(_signing.subscription_signers([secret]), "msg_1", body, now)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    assert Webhook(secret).verify(body.encode(), headers) == json.loads(body)
    for tampered, changed in ((body.replace("{}", '{"a":1}'), headers),
                              (body, {**headers, "webhook-id": "msg_2"})):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, changed)
    with pytest.raises(WebhookVerificationError):
        Webhook(_signing.new_secret()).verify(body, headers)
    stale = _signing.headers(_signing.subscription_signers([secret]), "msg_1", body,
                             now - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, stale)


def test_a_batch_webhook_is_signed_with_its_whsec_secret() -> None:
    """Review #9: the gateway sends a whsec_ secret; receivers use it as is."""
    secret = "whsec_" + base64.b64encode(b"derived from the key").decode()
    body = '{"type":"batch.completed"}'
    headers = _signing.headers((_signing.batch_signer(secret),), "msg_9", body,
                               datetime.now(UTC))
    Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret.encode()).verify(body, headers)  # not the UTF-8 of the text
    for wrong in ("", "whsec_", "lss_abc", "whsec_***"):
        with pytest.raises(ValueError):
            _signing.batch_signer(wrong)


def test_during_a_rotation_each_secret_verifies_on_its_own() -> None:
    old, new = _signing.new_secret(), _signing.new_secret()
    body = '{"type":"render.completed"}'
    headers = _signing.headers(_signing.subscription_signers([new, old]), "msg_r", body,
                               datetime.now(UTC))
    assert [sig[:3] for sig in headers["webhook-signature"].split(" ")] == ["v1,", "v1,"]
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(_signing.new_secret()).verify(body, headers)


def test_the_event_table_is_one_row_per_event_on_its_subject() -> None:
    assert _events.names() == ("render.completed", "render.failed", "batch.completed",
                               "batch.failed", "binding.updated", "binding.failed",
                               "experiment.winner_ready")
    assert _events.BY_SUBJECT["litho.events.v1.batch.failed"].name == "batch.failed"


def test_a_render_completed_body() -> None:
    message = events_pb2.RenderCompleted(
        render_id="abc", tenant_id="t1", template_id="tpl_1", template_version=4,
        format="webp", width=800, height=400, cached=True, duration_ms=12.25, time=_ts(WHEN))
    event = _events.BY_NAME["render.completed"].parse(message.SerializeToString(), CTX)
    assert (event.tenant_id, event.template_id, event.batch_id) == ("t1", "tpl_1", "")
    assert json.loads(event.body(datetime.now(UTC))) == {
        "type": "render.completed", "timestamp": "2026-11-30T22:05:01.123Z",
        "data": {"renderId": "abc", "templateId": "tpl_1", "templateVersion": 4,
                 "format": "webp", "width": 800, "height": 400, "cached": True,
                 "durationMs": 12.25, "url": "https://litho.example.com/images/abc.webp"}}


def test_a_render_failed_body() -> None:
    message = events_pb2.RenderFailed(
        tenant_id="t1", template_id="tpl_1", template_version=2, format="png",
        status="DEADLINE_EXCEEDED", reason="the render took too long")
    event = _events.BY_NAME["render.failed"].parse(message.SerializeToString(), CTX)
    body = json.loads(event.body(WHEN))
    assert body["timestamp"] == "2026-11-30T22:05:01.123Z"  # no time in the event: now
    assert body["data"] == {"templateId": "tpl_1", "templateVersion": 2, "format": "png",
                            "status": "DEADLINE_EXCEEDED", "reason": "the render took too long"}


@pytest.mark.parametrize(("metadata_json", "metadata"), [
    ('{"k": [1, 2]}', {"k": [1, 2]}), ("{}", {}), ("", {}), ("[1]", {}), ("{bad", {})])
def test_a_batch_body_carries_its_metadata_parsed(metadata_json: str, metadata: object) -> None:
    message = events_pb2.BatchFinished(
        batch_id="bat_1", tenant_id="t1", template_id="tpl_1", template_version=1,
        status="failed", total_items=2, completed_items=0, failed_items=1, cancelled_items=1,
        metadata_json=metadata_json, created_at=_ts(WHEN))
    event = _events.BY_NAME["batch.failed"].parse(message.SerializeToString(), CTX)
    assert event.batch_id == "bat_1"
    data = json.loads(event.body(WHEN))["data"]
    assert data == {"batchId": "bat_1", "templateId": "tpl_1", "templateVersion": 1,
                    "status": "failed", "totalItems": 2, "completedItems": 0,
                    "failedItems": 1, "cancelledItems": 1, "metadata": metadata,
                    "createdAt": "2026-11-30T22:05:01.123Z", "completedAt": None}


def test_bytes_that_are_not_the_event_are_refused() -> None:
    with pytest.raises(ValueError, match=r"not a valid litho\.events\.v1\.RenderCompleted"):
        _events.BY_NAME["render.completed"].parse(b"\xff\xff\xff", CTX)
