"""When a delivery is retried, and what an attempt's answer means: pure rules.

| an attempt gets          | the delivery                          | the subscription     |
| ------------------------ | ------------------------------------- | -------------------- |
| 2xx                      | delivered                             | failure count reset  |
| 410 Gone                 | failed, no retry                      | disabled             |
| anything else, or no     | retried after the schedule's next     | failure count + 1;   |
| answer (3xx, 4xx, 5xx,   | delay (later if ``Retry-After`` asks, | paused at the        |
| timeout, refused)        | capped); failed once the schedule is  | threshold (and the   |
|                          | used up                               | delivery failed)     |

Redirects are never followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

#: Longest error text kept in a delivery's log.
MAX_ERROR_CHARS = 200
#: Most retries a schedule may hold.
MAX_SCHEDULE_ENTRIES = 30
#: Longest the schedule alone may take.
MAX_SCHEDULE_SECONDS = 6 * 24 * 3600.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"5s,5m,30m,2h"`` → ``(5.0, 300.0, 1800.0, 7200.0)``; an empty text
    means no retries. Raises ``ValueError`` saying which entry is wrong."""
    delays: list[float] = []
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        match = _DELAY.match(entry)
        if match is None:
            raise ValueError(f"{raw.strip()!r} is not a delay: write a number with an "
                             "optional unit ms, s, m, h or d, e.g. 5s,5m,30m,2h")
        delays.append(float(match.group(1)) * _UNITS[match.group(2) or "s"])
    if len(delays) > MAX_SCHEDULE_ENTRIES:
        raise ValueError(f"at most {MAX_SCHEDULE_ENTRIES} retries, got {len(delays)}")
    if sum(delays) > MAX_SCHEDULE_SECONDS:
        raise ValueError(f"the retries add up to {sum(delays):g} s, more than "
                         f"{MAX_SCHEDULE_SECONDS:g} s (at most 6 days)")
    return tuple(delays)


#: Longest delay a ``Retry-After`` is read as (about 31 years): anything
#: longer is this much, and every caller caps it far lower.
RETRY_AFTER_CEILING = 1e9
#: Digits of a delta-seconds value read as a number; more is the ceiling.
_MAX_DELTA_DIGITS = 10


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an
    HTTP-date, RFC 9110 10.2.3), between 0 and :data:`RETRY_AFTER_CEILING`;
    None when absent or unreadable. Never raises, whatever the header holds."""
    try:
        return _retry_after(value, now)
    except Exception:  # a target's header must never break an attempt
        return None


def _retry_after(value: str | None, now: datetime) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        if len(digits) > _MAX_DELTA_DIGITS:
            return RETRY_AFTER_CEILING
        return min(float(int(digits)), RETRY_AFTER_CEILING)
    if len(text) > 100:  # far longer than any HTTP-date
        return None
    when = parsedate_to_datetime(text)  # raises on what is not a date
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CEILING)


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt got: an HTTP status (0 when none came) or an error."""

    status: int
    duration_ms: int
    error: str = ""
    #: Seconds the answer's ``Retry-After`` asked for.
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def failure(self) -> str:
        """Why it failed, for the log (at most :data:`MAX_ERROR_CHARS`)."""
        if self.error:
            text = self.error
        elif 300 <= self.status < 400:
            text = f"the target answered {self.status}; redirects are not followed"
        else:
            text = f"the target answered {self.status}"
        return clip_error(text)


def clip_error(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    #: 410 Gone: the delivery failed and the subscription is disabled.
    GONE = "gone"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    #: Seconds until the next attempt (RETRY only).
    delay: float = 0.0


def decide(result: AttemptResult, attempts: int, schedule: tuple[float, ...],
           retry_after_max: float) -> Decision:
    """What follows attempt number ``attempts`` (1 for the first)."""
    if result.ok:
        return Decision(Outcome.DELIVERED)
    if result.status == 410:
        return Decision(Outcome.GONE)
    if attempts > len(schedule):
        return Decision(Outcome.FAILED)
    delay = schedule[attempts - 1]
    if result.retry_after is not None:
        delay = max(delay, min(result.retry_after, retry_after_max))
    return Decision(Outcome.RETRY, delay)


def should_pause(consecutive_failures: int, threshold: int) -> bool:
    """Whether a subscription with this many failed attempts in a row pauses."""
    return consecutive_failures >= threshold
