"""binding.updated and binding.failed as webhook events: their rows, what a
delivery says, and the ``bindingId`` filter that selects them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from litho.errors import InvalidArgument
from litho.events.v1 import events_pb2
from services.webhook import _events
from services.webhook._model import Filters, check_filters

BINDING = "bnd_" + "0123456789ab" + "c" * 24
OTHER = "bnd_" + "0123456789ab" + "d" * 24
CONTEXT = _events.Context(public_url="https://litho.example.com")


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=250_000_000)


def test_the_binding_events_are_rows_the_fan_out_consumer_subscribes_to() -> None:
    assert {"binding.updated", "binding.failed"} <= set(_events.names())
    assert {"litho.events.v1.binding.updated",
            "litho.events.v1.binding.failed"} <= set(_events.subjects())
    assert _events.BY_SUBJECT["litho.events.v1.binding.updated"].message is \
        events_pb2.BindingUpdated
    assert _events.BY_SUBJECT["litho.events.v1.binding.failed"].message is \
        events_pb2.BindingFailed


@pytest.mark.parametrize(("fmt", "extension"), [("png", "png"), ("jpeg", "jpeg"),
                                               ("webp", "webp"), ("", "png")])
def test_binding_updated_says_what_changed_and_where_the_image_is(
    fmt: str, extension: str
) -> None:
    message = events_pb2.BindingUpdated(
        binding_id=BINDING, tenant_id="tenant-a", template_id="tpl_" + "1" * 24,
        data_hash="ab" * 32, format=fmt, source="push", fetch_time=_ts(1_700_000_000),
        time=_ts(1_700_000_001))
    event = _events.BY_NAME["binding.updated"].parse(message.SerializeToString(), CONTEXT)
    assert (event.type, event.tenant_id, event.binding_id, event.template_id) == (
        "binding.updated", "tenant-a", BINDING, "tpl_" + "1" * 24)
    assert event.time == datetime(2023, 11, 14, 22, 13, 21, 250_000, tzinfo=UTC)
    assert event.data == {
        "bindingId": BINDING, "templateId": "tpl_" + "1" * 24, "dataHash": "ab" * 32,
        "source": "push", "fetchedAt": "2023-11-14T22:13:20.250Z",
        "imageUrl": f"https://litho.example.com/b/{BINDING}.{extension}"}
    body = json.loads(event.body(datetime(2030, 1, 1, tzinfo=UTC)))
    assert body["type"] == "binding.updated"
    assert body["timestamp"] == "2023-11-14T22:13:21.250Z"


def test_binding_failed_says_the_error_and_the_status() -> None:
    message = events_pb2.BindingFailed(
        binding_id=BINDING, tenant_id="tenant-a", template_id="tpl_" + "2" * 24,
        error="the source answered 500", status="error")
    event = _events.BY_NAME["binding.failed"].parse(message.SerializeToString(), CONTEXT)
    assert event.binding_id == BINDING and event.time is None
    assert event.data == {"bindingId": BINDING, "templateId": "tpl_" + "2" * 24,
                          "error": "the source answered 500", "status": "error"}


def test_a_binding_updated_without_fetch_time_says_null() -> None:
    message = events_pb2.BindingUpdated(binding_id=BINDING, format="png")
    event = _events.BY_NAME["binding.updated"].parse(message.SerializeToString(), CONTEXT)
    assert event.data["fetchedAt"] is None


def test_an_unreadable_binding_event_is_refused() -> None:
    with pytest.raises(ValueError, match="BindingUpdated"):
        _events.BY_NAME["binding.updated"].parse(b"\xff\xff\xff", CONTEXT)


def test_the_binding_filter_matches_only_that_bindings_events() -> None:
    kind = _events.BY_NAME["binding.failed"]
    mine = kind.parse(events_pb2.BindingFailed(
        binding_id=BINDING, template_id="tpl_a").SerializeToString(), CONTEXT)
    other = kind.parse(events_pb2.BindingFailed(
        binding_id=OTHER, template_id="tpl_a").SerializeToString(), CONTEXT)
    assert Filters(binding_id=BINDING).matches(mine)
    assert not Filters(binding_id=BINDING).matches(other)
    assert Filters(binding_id=BINDING, template_id="tpl_a").matches(mine)
    assert not Filters(binding_id=BINDING, template_id="tpl_b").matches(mine)
    assert Filters().matches(other)


def test_a_binding_id_filter_is_valid() -> None:
    assert check_filters(Filters(binding_id=BINDING)) == Filters(binding_id=BINDING)


@pytest.mark.parametrize(("value", "says"), [
    ("bnd_1", "must be a binding id"),
    ("tpl_" + "0" * 24, "must be a binding id"),
    ("bnd_" + "A" * 36, "must be a binding id"),
    ("b" * 201, "at most 200"),
    ("bnd_\n", "control characters"),
])
def test_a_binding_filter_that_is_no_binding_id_is_refused(value: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_filters(Filters(binding_id=value))
    assert [e.field for e in refused.value.errors] == ["filters.bindingId"]
    assert says in refused.value.message
