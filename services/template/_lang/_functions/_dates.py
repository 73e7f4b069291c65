"""Dates and times: dayjs-style format tokens, names from Babel, zones from zoneinfo.

A date is ISO-8601 text (``2024-03-15``, ``2024-03-15T09:30:00Z``) or a unix
timestamp in seconds. Text without an offset is a wall-clock time in the zone
the function is asked to format in (UTC unless told), so a plain date never
shifts to the previous day.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

from babel import Locale
from babel.dates import format_timedelta, get_day_names, get_month_names, get_period_names

from services.template._lang._errors import ArgumentError
from services.template._lang._functions._locale import locale, zone
from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, is_number

_TOKENS = re.compile(
    r"\[([^\]]*)\]|YYYY|YY|MMMM|MMM|MM|M|DD|D|dddd|ddd|HH|H|hh|h|mm|m|ss|s|SSS|A|a|ZZ|Z"
)
_TIMESTAMP = re.compile(r"-?\d+(?:\.\d+)?", re.ASCII)
#: Longer formats are refused: a format is a short pattern, and its output
#: grows with it.
MAX_FORMAT_LENGTH = 200


def to_datetime(value: Any, where: tzinfo) -> datetime | None:
    """The moment a value names, in ``where``; None for null."""
    if value is None:
        return None
    try:
        if is_number(value):
            return datetime.fromtimestamp(value, UTC).astimezone(where)
        if isinstance(value, str):
            text = value.strip()
            if _TIMESTAMP.fullmatch(text):
                return datetime.fromtimestamp(float(text), UTC).astimezone(where)
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                return moment.replace(tzinfo=where)
            return moment.astimezone(where)
    except (ValueError, OverflowError, OSError):
        raise ArgumentError(f"cannot read a date from {describe(value)}; expected ISO-8601 "
                            "text like '2024-03-15T09:30:00Z' or a unix timestamp") from None
    raise ArgumentError(f"expected a date, got {describe(value)}")


@lru_cache(maxsize=256)
def _parts(pattern: str) -> tuple[tuple[bool, str], ...]:
    """(is_token, text) pieces of a format; bracketed text is literal."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for match in _TOKENS.finditer(pattern):
        if match.start() > pos:
            parts.append((False, pattern[pos:match.start()]))
        if match.group(1) is not None:
            parts.append((False, match.group(1)))
        else:
            parts.append((True, match.group()))
        pos = match.end()
    if pos < len(pattern):
        parts.append((False, pattern[pos:]))
    return tuple(parts)


@lru_cache(maxsize=64)
def _names(where: Locale) -> dict[str, Any]:
    periods = get_period_names("abbreviated", "format", where)
    return {
        "MMMM": get_month_names("wide", "format", where),
        "MMM": get_month_names("abbreviated", "format", where),
        "dddd": get_day_names("wide", "format", where),
        "ddd": get_day_names("abbreviated", "format", where),
        "am": str(periods["am"]), "pm": str(periods["pm"]),
    }


def _offset(moment: datetime, separator: str) -> str:
    delta = moment.utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{separator}{minutes:02d}"


def _token(token: str, moment: datetime, names: dict[str, Any]) -> str:
    hour12 = moment.hour % 12 or 12
    period = str(names["am"] if moment.hour < 12 else names["pm"])
    match token:
        case "YYYY":
            return f"{moment.year:04d}"
        case "YY":
            return f"{moment.year % 100:02d}"
        case "MMMM" | "MMM":
            return str(names[token][moment.month])
        case "MM":
            return f"{moment.month:02d}"
        case "M":
            return str(moment.month)
        case "DD":
            return f"{moment.day:02d}"
        case "D":
            return str(moment.day)
        case "dddd" | "ddd":
            return str(names[token][moment.weekday()])
        case "HH":
            return f"{moment.hour:02d}"
        case "H":
            return str(moment.hour)
        case "hh":
            return f"{hour12:02d}"
        case "h":
            return str(hour12)
        case "mm":
            return f"{moment.minute:02d}"
        case "m":
            return str(moment.minute)
        case "ss":
            return f"{moment.second:02d}"
        case "s":
            return str(moment.second)
        case "SSS":
            return f"{moment.microsecond // 1000:03d}"
        case "A":
            return period
        case "a":
            return period.lower()
        case "ZZ":
            return _offset(moment, "")
        case _:
            return _offset(moment, ":")


def format_moment(moment: datetime, pattern: Any, where: Locale) -> str:
    if not isinstance(pattern, str):
        raise ArgumentError(f"expected a format like 'YYYY-MM-DD', got {describe(pattern)}")
    if len(pattern) > MAX_FORMAT_LENGTH:
        raise ArgumentError(f"the format is longer than {MAX_FORMAT_LENGTH} characters")
    names = _names(where)
    return "".join(
        _token(text, moment, names) if is_token else text for is_token, text in _parts(pattern)
    )


def date(rt: Runtime, value: Any, pattern: Any = "YYYY-MM-DD", timezone: Any = None,
         where: Any = "en-US") -> str | None:
    moment = to_datetime(value, zone(timezone, rt))
    if moment is None:
        return None
    return format_moment(moment, pattern, locale(where, rt))


def time(rt: Runtime, value: Any, pattern: Any = "HH:mm", timezone: Any = None,
         where: Any = "en-US") -> str | None:
    return date(rt, value, pattern, timezone, where)


def relative_time(rt: Runtime, value: Any, now: Any = None, where: Any = "en-US") -> str | None:
    moment = to_datetime(value, UTC)
    if moment is None:
        return None
    reference = to_datetime(now, UTC) or rt.now()
    return str(format_timedelta(moment - reference, add_direction=True, locale=locale(where, rt)))


#: Formatting a date with Babel's names costs ~10-20 µs a call.
_DATE_COST = 20

FUNCTIONS = (
    Function(
        "date", date, 1, 4, "formatting",
        "date(value, format = 'YYYY-MM-DD', timezone = 'UTC', locale = 'en-US')",
        "A date formatted with tokens YYYY YY MMMM MMM MM M DD D dddd ddd HH H hh h mm m ss "
        "s SSS A a ZZ Z; [text in brackets] is kept as it is. Month and day names come "
        "from the locale. Null gives null.",
        "createdAt | date: 'MMM D, YYYY'", "Mar 15, 2024",
        {"createdAt": "2024-03-15T09:30:00Z"}, cost=_DATE_COST,
    ),
    Function(
        "time", time, 1, 4, "formatting",
        "time(value, format = 'HH:mm', timezone = 'UTC', locale = 'en-US')",
        "Like date, with a time-of-day format by default.",
        "time('2024-03-15T21:05:00Z', 'h:mm A', 'America/New_York')", "5:05 PM",
        cost=_DATE_COST,
    ),
    Function(
        "relativeTime", relative_time, 1, 3, "formatting",
        "relativeTime(value, now = the render time, locale = 'en-US')",
        "How long before or after now the value is, in the largest sensible unit: "
        "'3 days ago', 'in 2 hours'. Without now, the time of the render is used.",
        "relativeTime('2024-03-12T12:00:00Z', '2024-03-15T12:00:00Z')", "3 days ago",
        cost=_DATE_COST,
    ),
)
