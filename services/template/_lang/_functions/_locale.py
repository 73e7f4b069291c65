"""Locales and time zones named by template authors, validated and cached.

Both names come from user text, so each is checked against a strict shape
before Babel or zoneinfo touches the file system, and the caches are bounded.
"""

from __future__ import annotations

import re
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from litho.lru import Lru
from services.template._lang._errors import ArgumentError
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe

_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}", re.ASCII)
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2}", re.ASCII)


#: Steps charged when a locale or zone is not cached: loading one reads and
#: unpickles files (~0.5 ms for a Babel locale), a thousand times the cost of
#: a cached lookup, so a template cycling through many pays for it.
COLD_LOCALE_STEPS = 500
COLD_ZONE_STEPS = 100
_CACHE_SIZE = 128


_LOCALES: Lru[str, Locale] = Lru(_CACHE_SIZE)
_ZONES: Lru[str, tzinfo] = Lru(_CACHE_SIZE)


def locale(value: Any, rt: Runtime) -> Locale:
    if not isinstance(value, str) or _LOCALE.fullmatch(value) is None:
        raise ArgumentError(f"expected a locale such as 'en-US', got {describe(value)}")
    name = value.replace("_", "-")
    cached = _LOCALES.get(name)
    if cached is not None:
        return cached
    rt.charge(COLD_LOCALE_STEPS)
    try:
        loaded = Locale.parse(name, sep="-")
    except (UnknownLocaleError, ValueError):
        raise ArgumentError(f"unknown locale '{name}'") from None
    _LOCALES.put(name, loaded)
    return loaded


def zone(value: Any, rt: Runtime) -> tzinfo:
    if value is None:
        return UTC
    if not isinstance(value, str) or len(value) > 64 or _ZONE.fullmatch(value) is None:
        raise ArgumentError(f"expected a time zone such as 'Europe/Paris', got {describe(value)}")
    if value.upper() == "UTC":
        return UTC
    cached = _ZONES.get(value)
    if cached is not None:
        return cached
    rt.charge(COLD_ZONE_STEPS)
    try:
        loaded = ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ArgumentError(f"unknown time zone '{value}'") from None
    _ZONES.put(value, loaded)
    return loaded
