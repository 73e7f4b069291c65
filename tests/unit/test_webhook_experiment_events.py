"""experiment.winner_ready as a webhook event: its row and what a delivery says."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from litho.events.v1 import events_pb2
from services.webhook import _events
from services.webhook._model import Filters

CONTEXT = _events.Context(public_url="https://litho.example.com")


def test_winner_ready_is_a_row_the_fan_out_consumer_subscribes_to() -> None:
    assert "experiment.winner_ready" in _events.names()
    row = _events.BY_SUBJECT["litho.events.v1.experiment.winner_ready"]
    assert row.name == "experiment.winner_ready"
    assert row.message is events_pb2.ExperimentWinnerReady


def test_winner_ready_says_the_winner_and_where_the_statistics_are() -> None:
    message = events_pb2.ExperimentWinnerReady(
        experiment_id="exp_abc", tenant_id="tenant-a", slug="spring-sale", variant_id="b",
        probability_to_be_best=0.973, impressions=2400,
        time=Timestamp(seconds=1_700_000_000))
    event = _events.BY_NAME["experiment.winner_ready"].parse(message.SerializeToString(),
                                                             CONTEXT)
    assert (event.type, event.tenant_id) == ("experiment.winner_ready", "tenant-a")
    assert event.time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert event.data == {
        "experimentId": "exp_abc", "slug": "spring-sale", "recommendedWinnerVariantId": "b",
        "probabilityToBeBest": 0.973, "impressions": 2400,
        "statsUrl": "https://litho.example.com/v1/experiments/exp_abc/stats"}
    assert json.loads(event.body(datetime(2030, 1, 1, tzinfo=UTC)))["type"] == (
        "experiment.winner_ready")
    # Template and binding filters never match it; an unfiltered subscription does.
    assert Filters().matches(event)
    assert not Filters(template_id="tpl_1").matches(event)
