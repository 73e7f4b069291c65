"""Cron refresh policies: five-field expressions in UTC, read by ``croniter``.

A schedule is refused when any two consecutive fires can come closer than
``LITHO_BINDING_MIN_CRON_INTERVAL``. That is decided exactly rather than by
sampling the next few fires: every day that fires at all fires at the same
times of day (the minute and hour fields), so the closest pair is either two
neighbouring times within one day, or the last time of one fire day and the
first of the next; only the second needs the calendar, and it is walked only
when it could break the minimum.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from croniter import CroniterBadDateError, CroniterError, croniter

from litho.errors import FieldError, InvalidArgument
from litho.jsonlimits import describe_text

#: Longest expression accepted, in characters.
MAX_CRON_CHARS: Final = 200
#: The fixed start of every check, so one expression always gets one answer.
_REFERENCE: Final = datetime(2024, 1, 1, tzinfo=UTC)
#: How far the calendar walk looks for two fire days close together: 28
#: years is a whole cycle of weekdays over leap years (between 1901 and 2099).
_HORIZON_SECONDS: Final = 28 * 366 * 86400.0
#: Most fire days walked.
_MAX_DAYS_WALKED: Final = 12_000
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS: Final = "minute hour day-of-month month day-of-week"


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", errors=[FieldError(field, message)])


def normalise(expr: str) -> str:
    """``expr`` with an ``@daily``-style alias written out and spaces tidied."""
    text = " ".join(expr.split())
    return _ALIASES.get(text.lower(), text)


def check_cron(expr: str, *, min_interval: float, field: str = "refreshPolicy.cron") -> None:
    """Raise :class:`InvalidArgument` naming ``field`` unless ``expr`` is a
    valid five-field cron expression (or an alias such as ``@hourly``) that
    fires, and never twice within ``min_interval`` seconds."""
    if not expr.strip():
        raise _invalid(field, f"is required for a cron policy (five fields: {_FIELDS}, UTC)")
    if len(expr) > MAX_CRON_CHARS:
        raise _invalid(field, f"must be at most {MAX_CRON_CHARS} characters")
    problem = describe_text(expr)
    if problem:
        raise _invalid(field, problem)
    if "\x00" in expr:
        raise _invalid(field, "must not contain NUL characters")
    text = normalise(expr)
    parts = text.split(" ")
    if len(parts) != 5:
        raise _invalid(field, f"must have five fields ({_FIELDS}, UTC), got {len(parts)}")
    try:
        schedule = croniter(text, _REFERENCE)
        first = schedule.get_next(float)
    except CroniterBadDateError:
        raise _invalid(field, f"{text!r} never fires (no such date)") from None
    except _CRONITER_ERRORS as exc:
        raise _invalid(field, _bad_field(parts, exc)) from None
    del first
    gap = _closest_fires(schedule, parts, min_interval)
    if gap is not None and gap < min_interval:
        raise _invalid(
            field, f"fires more often than every {min_interval:g} s "
                   f"(LITHO_BINDING_MIN_CRON_INTERVAL): two fires are {gap:g} s apart")


def next_fire(expr: str, after: float) -> float:
    """The first fire of ``expr`` strictly after ``after`` (UTC epoch seconds)."""
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(normalise(expr), start).get_next(float))


def _closest_fires(schedule: croniter, parts: list[str], min_interval: float) -> float | None:
    """The smallest gap, in seconds, between two consecutive fires, as far as
    it matters: None when it is at least ``min_interval`` for sure."""
    minutes = _values(schedule.expanded[0], 60)
    hours = _values(schedule.expanded[1], 24)
    times = sorted(h * 60 + m for h in hours for m in minutes)
    within = min((b - a for a, b in itertools.pairwise(times)), default=None)
    if within is not None and within * 60 < min_interval:
        return within * 60.0
    # Across days: the last time of one fire day to the first of the next.
    wrap = times[0] - times[-1]
    if (1440 + wrap) * 60 >= min_interval:
        return None
    days = _closest_fire_days(f"0 0 {parts[2]} {parts[3]} {parts[4]}", min_interval, wrap)
    return None if days is None else (days * 1440 + wrap) * 60.0


def _closest_fire_days(day_expr: str, min_interval: float, wrap: int) -> int | None:
    """Days between the closest two consecutive fire days, looked for until
    one pair would break ``min_interval`` (or the horizon is reached)."""
    walker = croniter(day_expr, _REFERENCE)
    best: int | None = None
    try:
        previous = walker.get_next(float)
        for _ in range(_MAX_DAYS_WALKED):
            current = walker.get_next(float)
            days = round((current - previous) / 86400)
            best = days if best is None else min(best, days)
            if (best * 1440 + wrap) * 60 < min_interval:
                return best
            if current - _REFERENCE.timestamp() > _HORIZON_SECONDS:
                break
            previous = current
    except CroniterBadDateError:
        pass
    return best


def _values(field: Sequence[int | str], size: int) -> list[int]:
    if any(v == "*" for v in field):
        return list(range(size))
    return sorted({int(v) for v in field})


_CRONITER_ERRORS: Final = (CroniterError, ValueError, KeyError, IndexError, TypeError,
                           OverflowError)


def _bad_field(parts: list[str], exc: Exception) -> str:
    """What is wrong, naming the first field croniter refuses on its own."""
    names = _FIELDS.split(" ")
    for index, part in enumerate(parts):
        if part.lower().strip("0123456789") in ("h", "r") or part.lower().startswith(("h(", "r(")):
            return (f"the {names[index]} field {part!r}: H (hashed) and R (random) values "
                    "are not supported")
        alone = " ".join(part if i == index else "*" for i in range(5))
        try:
            croniter(alone, _REFERENCE)
        except _CRONITER_ERRORS:
            return (f"the {names[index]} field {part[:40]!r} is not valid ({_reason(exc)}); "
                    f"the five fields are {_FIELDS}, in UTC")
    return f"is not a valid cron expression ({_reason(exc)})"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # croniter quotes the whole expression in brackets first.
    if text.startswith("[") and "]" in text:
        text = text[text.index("]") + 1:]
    text = text.replace("is not acceptable", "").strip(" ,.")
    return text[:200] or "not understood"
