"""What the operators do to JSON values.

Arithmetic follows JavaScript where that is unsurprising (``+`` joins text
when either side is text; ``%`` keeps the sign of the dividend; null, true and
numeric text count as numbers) and refuses the rest with a clear error rather
than producing NaN: dividing by zero, or a result too large for a double.
"""

from __future__ import annotations

import math
from typing import Any

from services.template._lang._errors import ArgumentError
from services.template._lang._runtime import Runtime
from services.template._lang._values import (
    compare,
    describe,
    display,
    equal,
    normalize,
    to_number,
)


def _numbers(op: str, left: Any, right: Any) -> tuple[int | float, int | float]:
    try:
        return to_number(left), to_number(right)
    except ArgumentError:
        raise ArgumentError(
            f"cannot apply '{op}' to {describe(left)} and {describe(right)}"
        ) from None


def _finite(op: str, left: int | float, right: int | float, result: int | float) -> int | float:
    try:
        return normalize(result)
    except ArgumentError:
        raise ArgumentError(
            f"the result of {describe(left)} {op} {describe(right)} is too large to represent"
        ) from None


def add(rt: Runtime, left: Any, right: Any) -> Any:
    if isinstance(left, str) or isinstance(right, str):
        limit = rt.limits.max_string_length
        text = display(left, limit, rt.charge), display(right, limit, rt.charge)
        rt.check_string(len(text[0]) + len(text[1]))
        return text[0] + text[1]
    a, b = _numbers("+", left, right)
    return _finite("+", a, b, a + b)


def subtract(rt: Runtime, left: Any, right: Any) -> Any:
    a, b = _numbers("-", left, right)
    return _finite("-", a, b, a - b)


def multiply(rt: Runtime, left: Any, right: Any) -> Any:
    a, b = _numbers("*", left, right)
    return _finite("*", a, b, a * b)


def divide(rt: Runtime, left: Any, right: Any) -> Any:
    a, b = _numbers("/", left, right)
    if b == 0:
        raise ArgumentError(f"division by zero: {describe(left)} / {describe(right)}")
    if isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return _finite("/", a, b, a // b)
    try:
        quotient = a / b
    except OverflowError:
        quotient = math.inf
    return _finite("/", a, b, quotient)


def remainder(rt: Runtime, left: Any, right: Any) -> Any:
    a, b = _numbers("%", left, right)
    if b == 0:
        raise ArgumentError(f"division by zero: {describe(left)} % {describe(right)}")
    if isinstance(a, int) and isinstance(b, int):
        result = abs(a) % abs(b)
        return result if a >= 0 else -result
    if math.isinf(a):
        raise ArgumentError(f"the remainder of {describe(left)} is not a number")
    return _finite("%", a, b, math.fmod(a, b))


def negate(rt: Runtime, value: Any) -> Any:
    try:
        return normalize(-to_number(value))
    except ArgumentError:
        raise ArgumentError(f"cannot negate {describe(value)}") from None


def plus(rt: Runtime, value: Any) -> Any:
    try:
        return to_number(value)
    except ArgumentError:
        raise ArgumentError(f"cannot convert {describe(value)} to a number") from None


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | dict) else 0


def equals(rt: Runtime, left: Any, right: Any) -> bool:
    # Comparing big arrays or long text is real work: equal pays for each item
    # and KiB it compares, as it goes.
    return equal(left, right, rt.charge)


def not_equals(rt: Runtime, left: Any, right: Any) -> bool:
    return not equals(rt, left, right)


def _order(rt: Runtime, left: Any, right: Any) -> int | None:
    # Only numbers and text have an order; comparing text reads up to the shorter.
    rt.charge((min(_size(left), _size(right)) >> 10) + 1)
    return compare(left, right)


def less(rt: Runtime, left: Any, right: Any) -> bool:
    order = _order(rt, left, right)
    return order is not None and order < 0


def less_or_equal(rt: Runtime, left: Any, right: Any) -> bool:
    order = _order(rt, left, right)
    return order is not None and order <= 0


def greater(rt: Runtime, left: Any, right: Any) -> bool:
    order = _order(rt, left, right)
    return order is not None and order > 0


def greater_or_equal(rt: Runtime, left: Any, right: Any) -> bool:
    order = _order(rt, left, right)
    return order is not None and order >= 0


BINARY = {
    "+": add, "-": subtract, "*": multiply, "/": divide, "%": remainder,
    "==": equals, "!=": not_equals,
    "<": less, "<=": less_or_equal, ">": greater, ">=": greater_or_equal,
}
