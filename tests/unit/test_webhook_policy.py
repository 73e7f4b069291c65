"""The webhook retry schedule, Retry-After, and what each answer leads to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from litho.config import load
from litho.errors import ConfigError
from services.webhook._policy import (
    MAX_ERROR_CHARS,
    AttemptResult,
    Decision,
    Outcome,
    decide,
    parse_retry_after,
    parse_schedule,
    should_pause,
)
from services.webhook._settings import WebhookSettings

NOW = datetime(2026, 11, 30, 22, 0, 0, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0)


def test_the_default_schedule_is_the_documented_one() -> None:
    assert WebhookSettings().retry_delays == (
        5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 86400.0)


@pytest.mark.parametrize(("text", "delays"), [
    ("5s,5m,30m,2h", (5.0, 300.0, 1800.0, 7200.0)),
    (" 1 , 250ms, 1.5h, 1d ", (1.0, 0.25, 5400.0, 86400.0)),
    ("", ()),
    ("0s", (0.0,)),
])
def test_a_schedule_is_read_with_its_units(text: str, delays: tuple[float, ...]) -> None:
    assert parse_schedule(text) == delays


@pytest.mark.parametrize(("text", "why"), [
    ("5x", "not a delay"),
    ("-5s", "not a delay"),
    ("5s;5m", "not a delay"),
    ("nan", "not a delay"),
    (",".join(["1s"] * 31), "at most 30"),
    ("3d,3d,1d", "add up to"),
])
def test_a_wrong_schedule_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_schedule(text)


def test_a_wrong_schedule_setting_fails_at_start_up() -> None:
    with pytest.raises(ValidationError, match="not a delay"):
        WebhookSettings(webhook_retry_schedule="soon")
    with pytest.raises(ValidationError, match="LITHO_WEBHOOK_DELIVERY_RETENTION"):
        WebhookSettings(webhook_retry_schedule="2d,2d,2d", webhook_retry_after_max=86400,
                        webhook_delivery_retention=7 * 86400)
    # Retries no longer wait in the job stream: past 7 days is fine within retention.
    WebhookSettings(webhook_retry_schedule="2d,2d,2d", webhook_retry_after_max=86400)


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("Mon, 30 Nov 2026 22:01:30 GMT", 90.0),
    ("Mon, 30 Nov 2026 21:00:00 GMT", 0.0),  # in the past: at once
    ("9999999999", 1e9),
    ("1234567890123456", 1e9),  # past the ceiling: the ceiling, not its first 12 digits
    ("99999999999999999999", 1e9),
    ("9" * 5000, 1e9),  # never int() of thousands of digits
    ("000000000000000000042", 42.0),
    (None, None),
    ("", None),
    ("soon", None),
    ("-5", None),
    ("1.5", None),
    ("Mon, 30 Nov 2026 22:01:30 -0000", 90.0),  # "-0000": UTC, RFC 5322
    ("Mon, 30 Nov 2026 23:01:30 +0100", 90.0),
    # Review #2: dates and offsets that overflow are unreadable, never an error.
    ("Fri, 31 Dec 99999999999999999999 23:59:59 GMT", None),
    ("Fri, 31 Dec 9999 23:59:59 +9999", None),
    ("Fri, 31 Dec 9999 23:59:59 GMT", 1e9),
    ("Mon, 01 Jan 0001 00:00:00 -2359", 0.0),
    ("Mon, 30 Nov 2026 22:01:30 GMT" + " " * 200, 90.0),
    ("Mon, 30 Nov 2026 22:01:30 GMT" + "x" * 200, None),
])
def test_retry_after_is_delta_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, NOW) == seconds


def _result(status: int, retry_after: float | None = None, error: str = "") -> AttemptResult:
    return AttemptResult(status=status, duration_ms=10, error=error, retry_after=retry_after)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_is_delivered(status: int) -> None:
    assert decide(_result(status), 1, SCHEDULE, 3600) == Decision(Outcome.DELIVERED)


def test_410_is_gone_at_once_even_with_retries_left() -> None:
    assert decide(_result(410), 1, SCHEDULE, 3600).outcome is Outcome.GONE


@pytest.mark.parametrize("status", [0, 301, 302, 400, 404, 429, 500, 503])
def test_other_answers_follow_the_schedule_then_fail(status: int) -> None:
    assert [decide(_result(status), n, SCHEDULE, 3600) for n in (1, 2, 3, 4)] == [
        Decision(Outcome.RETRY, 5.0), Decision(Outcome.RETRY, 300.0),
        Decision(Outcome.RETRY, 1800.0), Decision(Outcome.FAILED)]


def test_retry_after_pushes_a_retry_out_capped_and_never_brings_it_forward() -> None:
    assert decide(_result(429, 60.0), 1, SCHEDULE, 3600) == Decision(Outcome.RETRY, 60.0)
    assert decide(_result(503, 1.0), 2, SCHEDULE, 3600) == Decision(Outcome.RETRY, 300.0)
    assert decide(_result(503, 86400.0), 1, SCHEDULE, 3600) == Decision(Outcome.RETRY, 3600.0)
    assert decide(_result(503, 60.0), 4, SCHEDULE, 3600).outcome is Outcome.FAILED


def test_a_failure_is_logged_in_at_most_200_characters() -> None:
    assert _result(302).failure() == "the target answered 302; redirects are not followed"
    assert _result(500).failure() == "the target answered 500"
    long = _result(0, error="x" * 1000).failure()
    assert len(long) == MAX_ERROR_CHARS and long.endswith("…")


@pytest.mark.parametrize(("failures", "paused"), [(0, False), (14, False), (15, True),
                                                  (16, True)])
def test_a_subscription_pauses_at_the_threshold(failures: int, paused: bool) -> None:
    assert should_pause(failures, 15) is paused


def test_image_urls_follow_the_webhook_setting_then_the_gateways() -> None:
    assert WebhookSettings().image_base == "http://127.0.0.1:8080"
    assert WebhookSettings(public_url="https://img.example.com/").image_base == (
        "https://img.example.com")
    assert WebhookSettings(public_url="https://a.example.com",
                           webhook_public_url="https://b.example.com").image_base == (
        "https://b.example.com")
    with pytest.raises(ValidationError, match="http"):
        WebhookSettings(webhook_public_url="ftp://x")


def test_the_image_base_url_is_the_gateways_setting_checked_the_same_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITHO_IMAGE_BASE_URL", "https://cdn.example.com/litho/")
    assert load(WebhookSettings).image_base_url == "https://cdn.example.com/litho"
    monkeypatch.setenv("LITHO_IMAGE_BASE_URL", "https://user:pw@cdn.example.com")
    with pytest.raises(ConfigError, match=r"LITHO_IMAGE_BASE_URL: .*user name or password"):
        load(WebhookSettings)
