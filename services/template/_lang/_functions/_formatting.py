"""Locale-aware numbers, money and percentages, all through Babel (CLDR data)."""

from __future__ import annotations

import copy
import math
from contextlib import AbstractContextManager
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from functools import lru_cache
from typing import Any

from babel import Locale
from babel.numbers import NumberPattern, format_currency, is_currency

from services.template._lang._errors import ArgumentError
from services.template._lang._functions._args import whole
from services.template._lang._functions._locale import locale
from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, exact_number_text, to_number

_MAX_DECIMALS = 20


def _amount(value: Any) -> Decimal:
    number = to_number(value)
    if isinstance(number, float) and not math.isfinite(number):
        raise ArgumentError(f"cannot format {describe(value)}")
    # The shortest decimal that reads back as the float: 44.1, not 44.100000000000001.
    return Decimal(exact_number_text(number))


def _decimals(value: Any) -> int:
    places = whole(value, "a whole number of decimal places")
    if not 0 <= places <= _MAX_DECIMALS:
        raise ArgumentError(f"decimal places must be between 0 and {_MAX_DECIMALS}")
    return places


def _rounding_half_up() -> AbstractContextManager[Context]:
    """Babel rounds with the decimal context; people expect 0.125 → 0.13, not 0.12.

    The precision covers every finite double written out in full.
    """
    return localcontext(prec=400, rounding=ROUND_HALF_UP)


@lru_cache(maxsize=256)
def _pattern(where: Locale, kind: str, places: int | None) -> NumberPattern:
    formats = where.percent_formats if kind == "percent" else where.decimal_formats
    pattern: NumberPattern = formats[None]
    if places is None:
        return pattern
    fixed = copy.copy(pattern)
    fixed.frac_prec = (places, places)
    return fixed


def currency(rt: Runtime, value: Any, code: Any = "USD", where: Any = "en-US") -> str | None:
    if value is None:
        return None
    amount = _amount(value)
    if not isinstance(code, str) or not is_currency(code.upper()):
        raise ArgumentError(f"unknown currency code {describe(code)}; use ISO 4217 like 'EUR'")
    with _rounding_half_up():
        return format_currency(amount, code.upper(), locale=locale(where, rt))


def number(rt: Runtime, value: Any, where: Any = "en-US", places: Any = None) -> str | None:
    if value is None:
        return None
    amount = _amount(value)
    fixed = None if places is None else _decimals(places)
    with _rounding_half_up():
        return str(_pattern(locale(where, rt), "decimal", fixed).apply(amount, locale(where, rt)))


def percent(rt: Runtime, value: Any, places: Any = 0, where: Any = "en-US") -> str | None:
    if value is None:
        return None
    amount = _amount(value)
    with _rounding_half_up():
        return str(_pattern(locale(where, rt), "percent", _decimals(places)).apply(
            amount, locale(where, rt),
        ))


#: Babel's number formatting costs ~10-50 µs a call (more for huge numbers
#: with many decimals): charged as that many steps.
_FORMAT_COST = 50

FUNCTIONS = (
    Function(
        "currency", currency, 1, 3, "formatting",
        "currency(number, code = 'USD', locale = 'en-US')",
        "The amount as money in the locale's style, with the currency's usual number of "
        "decimals (rounded half away from zero). Null gives null.",
        "currency(price, 'EUR', 'de-DE')", "1.234,50\u00a0€", {"price": 1234.5},
        cost=_FORMAT_COST,
    ),
    Function(
        "number", number, 1, 3, "formatting", "number(number, locale = 'en-US', decimals?)",
        "The number with the locale's separators; without decimals, up to three are kept. "
        "Text holding a number is accepted. Null gives null.",
        "number(1234567.891)", "1,234,567.891", cost=_FORMAT_COST,
    ),
    Function(
        "percent", percent, 1, 3, "formatting", "percent(number, decimals = 0, locale = 'en-US')",
        "A fraction as a percentage: 0.256 is 26%. Null gives null.",
        "percent(0.256)", "26%", cost=_FORMAT_COST,
    ),
)
