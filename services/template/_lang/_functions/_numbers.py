"""Arithmetic functions. Rounding is half away from zero, as people round by hand."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from services.template._lang._errors import ArgumentError
from services.template._lang._functions._args import array, whole
from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, exact_number_text, normalize, to_number

#: Rounding beyond this many places (either side of the point) means nothing for a double.
_MAX_PLACES = 20


def _finite(value: Any) -> int | float:
    number = to_number(value)
    if isinstance(number, float) and not math.isfinite(number):
        raise ArgumentError(f"expected a finite number, got {describe(value)}")
    return number


def round_half_away(number: int | float, places: int) -> Decimal:
    """Rounds the decimal the number reads as (1.005 is "1.005", not 1.00499…)."""
    with localcontext() as context:
        context.prec = 400
        context.rounding = ROUND_HALF_UP
        return Decimal(exact_number_text(number)).quantize(Decimal(1).scaleb(-places))


def round_(rt: Runtime, value: Any, places: Any = 0) -> int | float:
    number, digits = _finite(value), whole(places, "a whole number of decimal places")
    if not -_MAX_PLACES <= digits <= _MAX_PLACES:
        raise ArgumentError(f"decimal places must be between -{_MAX_PLACES} and {_MAX_PLACES}")
    rounded = round_half_away(number, digits)
    return normalize(int(rounded) if digits <= 0 else float(rounded))


def floor(rt: Runtime, value: Any) -> int | float:
    return normalize(math.floor(_finite(value)))


def ceil(rt: Runtime, value: Any) -> int | float:
    return normalize(math.ceil(_finite(value)))


def abs_(rt: Runtime, value: Any) -> int | float:
    return normalize(abs(to_number(value)))


def _numbers(values: tuple[Any, ...]) -> list[int | float]:
    items = list(values[0]) if len(values) == 1 and isinstance(values[0], list) else values
    return [to_number(item) for item in items if item is not None]


def min_(rt: Runtime, *values: Any) -> int | float | None:
    numbers = _numbers(values)
    return min(numbers) if numbers else None


def max_(rt: Runtime, *values: Any) -> int | float | None:
    numbers = _numbers(values)
    return max(numbers) if numbers else None


def _summed(items: list[Any]) -> tuple[int | float, int]:
    numbers = [to_number(item) for item in items if item is not None]
    if all(isinstance(n, int) for n in numbers):
        return sum(numbers), len(numbers)
    return math.fsum(numbers), len(numbers)


def sum_(rt: Runtime, values: Any) -> int | float:
    total, _ = _summed(array(values))
    return normalize(total)


def average(rt: Runtime, values: Any) -> int | float | None:
    total, count = _summed(array(values))
    if not count:
        return None
    return normalize(total / count)


FUNCTIONS = (
    Function(
        "round", round_, 1, 2, "numbers", "round(number, places = 0)",
        "The number rounded to places decimals, halves away from zero. Negative places "
        "round to tens, hundreds, and so on.",
        "round(2.345, 2)", 2.35,
    ),
    Function(
        "floor", floor, 1, 1, "numbers", "floor(number)",
        "The largest whole number not above the number.",
        "floor(4.7)", 4,
    ),
    Function(
        "ceil", ceil, 1, 1, "numbers", "ceil(number)",
        "The smallest whole number not below the number.",
        "ceil(4.2)", 5,
    ),
    Function(
        "abs", abs_, 1, 1, "numbers", "abs(number)",
        "The number without its sign.",
        "abs(-7.5)", 7.5,
    ),
    Function(
        "min", min_, 1, None, "numbers", "min(number, …) or min(array)",
        "The smallest of the numbers given, or of one array of numbers; nulls are skipped "
        "and nothing at all gives null.",
        "min(3, 1, 2)", 1,
    ),
    Function(
        "max", max_, 1, None, "numbers", "max(number, …) or max(array)",
        "The largest of the numbers given, or of one array of numbers; nulls are skipped "
        "and nothing at all gives null.",
        "max(prices)", 25, {"prices": [10, 25, 5]},
    ),
    Function(
        "sum", sum_, 1, 1, "numbers", "sum(array)",
        "The total of an array of numbers; nulls are skipped.",
        "sum([1, 2, 3.5])", 6.5,
    ),
    Function(
        "average", average, 1, 1, "numbers", "average(array)",
        "The mean of an array of numbers (nulls skipped), or null for an empty array.",
        "average(scores)", 4, {"scores": [3, 4, 5]},
    ),
)
