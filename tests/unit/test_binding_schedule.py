"""Cron refresh policies: parsing, the minimum interval, and the next fire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from litho.errors import InvalidArgument
from services.binding._schedule import check_cron, next_fire


def _refused(expr: str, min_interval: float = 300) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        check_cron(expr, min_interval=min_interval)
    assert [e.field for e in caught.value.errors] == ["refreshPolicy.cron"]
    return caught.value


@pytest.mark.parametrize("expr", [
    "*/5 * * * *", "0 * * * *", "@hourly", "@daily", "30 8 * * mon-fri", "0 0 L * *",
    "0 0 29 2 *", "0,55 0,23 * * 1,2", "0,30 9-17 * * 1-5", "  15   4 * * *  ",
])
def test_valid_schedules_at_most_every_five_minutes(expr: str) -> None:
    check_cron(expr, min_interval=300)


@pytest.mark.parametrize(("expr", "gap"), [
    ("* * * * *", 60),
    ("*/4 * * * *", 240),
    ("0,1 * * * *", 60),
    ("0,57 0,23 * * 1,2", 180),  # Monday 23:57, then Tuesday 00:00
    ("0,59 0,23 28,1 * *", 60),  # 28 February 23:59, then 1 March 00:00
])
def test_schedules_firing_too_often_are_refused(expr: str, gap: int) -> None:
    error = _refused(expr)
    message = error.errors[0].message
    assert "LITHO_BINDING_MIN_CRON_INTERVAL" in message
    assert f"{gap} s apart" in message


def test_the_minimum_is_the_setting() -> None:
    check_cron("*/2 * * * *", min_interval=120)
    _refused("*/2 * * * *", min_interval=121)
    check_cron("0 0 * * *", min_interval=86400)
    _refused("0 0,12 * * *", min_interval=86400)


@pytest.mark.parametrize(("expr", "words"), [
    ("", "required"),
    ("* * * * * *", "five fields"),
    ("* * * *", "five fields"),
    ("61 * * * *", "minute field '61'"),
    ("0 25 * * *", "hour field"),
    ("0 0 1 13 *", "month field"),
    ("0 0 * * 8", "day-of-week field"),
    ("H * * * *", "not supported"),
    ("0 0 31 2 *", "never fires"),
    ("0 0 * * \ud800", "lone surrogate"),
    ("0 0 * * *\x00", "NUL"),
    ("1," * 200 + "1 * * * *", "at most 200"),
])
def test_bad_expressions_are_422_naming_the_field(expr: str, words: str) -> None:
    assert words in _refused(expr).errors[0].message


def test_field_name_is_the_callers() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_cron("bad", min_interval=300, field="x.cron")
    assert caught.value.errors[0].field == "x.cron"


def test_next_fire_is_strictly_after_in_utc() -> None:
    start = datetime(2025, 3, 30, 0, 59, tzinfo=UTC).timestamp()
    assert next_fire("0 1 * * *", start) == datetime(2025, 3, 30, 1, 0, tzinfo=UTC).timestamp()
    on_it = datetime(2025, 3, 30, 1, 0, tzinfo=UTC).timestamp()
    assert next_fire("0 1 * * *", on_it) == on_it + 86400
    assert next_fire("@hourly", on_it + 1) == on_it + 3600
