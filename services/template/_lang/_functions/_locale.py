"""Locales and time zones named by template authors, validated and cached.

Both names come from user text, so each is checked against a strict shape
before Babel or zoneinfo touches the file system, and the caches are bounded.
"""

from __future__ import annotations

import re
from datetime import UTC, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from services.template._lang._errors import ArgumentError
from services.template._lang._values import describe

_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}", re.ASCII)
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2}", re.ASCII)


def locale(value: Any) -> Locale:
    if not isinstance(value, str) or _LOCALE.fullmatch(value) is None:
        raise ArgumentError(f"expected a locale such as 'en-US', got {describe(value)}")
    return _locale(value.replace("_", "-"))


@lru_cache(maxsize=128)
def _locale(name: str) -> Locale:
    try:
        return Locale.parse(name, sep="-")
    except (UnknownLocaleError, ValueError):
        raise ArgumentError(f"unknown locale '{name}'") from None


def zone(value: Any) -> tzinfo:
    if value is None:
        return UTC
    if not isinstance(value, str) or len(value) > 64 or _ZONE.fullmatch(value) is None:
        raise ArgumentError(f"expected a time zone such as 'Europe/Paris', got {describe(value)}")
    return _zone(value)


@lru_cache(maxsize=128)
def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ArgumentError(f"unknown time zone '{name}'") from None
