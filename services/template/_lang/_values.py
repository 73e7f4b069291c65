"""The semantics of JSON values: types, truthiness, text, equality, order.

The engine only ever sees ``dict``, ``list``, ``str``, ``int``, ``float``,
``bool`` and ``None``. Anything else a caller slips in behaves as null, so no
host object can be reached through a template.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from services.template._lang._errors import ArgumentError, LimitExceeded, limit_message

#: Integers beyond this are not exact in IEEE doubles (JavaScript's
#: Number.MAX_SAFE_INTEGER); past it arithmetic continues in floats.
MAX_SAFE_INTEGER = 2**53

#: Charges the render's step budget; raises when it is spent.
Charge = Callable[[int], None]

#: Walks over values charge their budget in batches of this many items, so a
#: walk over a huge value stops part way rather than after the work is done.
_BATCH = 256

#: Digits of a number shown in an error message; the rest are elided.
_SHOWN_DIGITS = 24

#: Numeric text. Unambiguous (each digit can belong to one part only), so a
#: failed match costs time linear in the text, never quadratic.
_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
#: Longer text is not read as a number: no double needs more characters, and
#: a bound keeps every conversion cheap whatever the text.
MAX_NUMERIC_TEXT = 400

_KINDS: dict[type, str] = {
    str: "string", int: "number", float: "number", bool: "boolean",
    type(None): "null", list: "array", dict: "object",
}


def type_name(value: Any) -> str:
    """'string', 'number', 'boolean', 'null', 'array' or 'object'."""
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def is_number(value: Any) -> bool:
    return type_name(value) == "number"


def truthy(value: Any) -> bool:
    """JavaScript's rules, except that an empty object is falsy like an empty array."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    kind = type_name(value)
    if kind in ("string", "array", "object"):
        return len(value) > 0
    if kind == "number":
        return bool(value == value and value != 0)
    return False


def normalize(number: int | float) -> int | float:
    """Integers stay exact while they can; whole floats become integers.

    Raises ArgumentError for a result that is not a finite number, so an
    overflow is an error the author sees rather than "Infinity" in an image.
    """
    if isinstance(number, int):
        if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            return number
        try:
            return float(number)
        except OverflowError:
            raise ArgumentError("the number is too large") from None
    if not math.isfinite(number):
        raise ArgumentError("the result is not a finite number")
    if number.is_integer() and -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
        return int(number)
    return number


def parse_number(text: str) -> int | float | None:
    stripped = text.strip()
    if not stripped:
        return 0
    if len(stripped) > MAX_NUMERIC_TEXT or _NUMERIC.fullmatch(stripped) is None:
        return None
    if len(stripped) <= 16 and stripped.lstrip("+-").isdigit():
        return int(stripped)
    value = float(stripped)
    if not math.isfinite(value):
        return None
    return normalize(value)


def to_number(value: Any) -> int | float:
    """Numbers as they are; booleans, null and numeric text the JavaScript way."""
    kind = type_name(value)
    if kind == "number":
        return value  # type: ignore[no-any-return]
    if kind == "boolean":
        return 1 if value else 0
    if kind == "null":
        return 0
    if kind == "string":
        number = parse_number(value)
        if number is not None:
            return number
    raise ArgumentError(f"expected a number, got {describe(value)}")


def to_int(value: Any, what: str = "a whole number") -> int:
    number = to_number(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise ArgumentError(f"expected {what}, got {number_text(number)}")
        return int(number)
    return number


def describe(value: Any) -> str:
    """A value named for an error message, never longer than a short line."""
    kind = type_name(value)
    if kind == "string":
        shown = value if len(value) <= 40 else value[:40] + "…"
        return f"the string {json.dumps(shown, ensure_ascii=False)}"
    if kind == "number":
        return f"the number {_short_number(value)}"
    if kind in ("array", "object"):
        return f"an {kind}" if kind == "array" else "an object"
    if kind == "boolean":
        return "true" if value else "false"
    return "null"


def _short_number(number: int | float) -> str:
    """A number for a message: a huge integer is shown by its ends and length,
    so an error never repeats thousands of digits."""
    if not isinstance(number, int) or number.bit_length() <= 3 * _SHOWN_DIGITS:
        return number_text(number)
    sign = "-" if number < 0 else ""
    if number.bit_length() > 14_000:  # past Python's 4,300-digit str() limit
        return f"{sign}(a whole number of over 4,000 digits)"
    digits = str(abs(number))
    if len(digits) <= _SHOWN_DIGITS:
        return sign + digits
    half = _SHOWN_DIGITS // 2
    return f"{sign}{digits[:half]}…{digits[-half:]} ({len(digits)} digits)"


def number_text(number: int | float) -> str:
    """How a number reads in output: at most 15 significant digits.

    Binary floats cannot hold most decimals exactly, so ``0.1 + 0.2`` is
    0.30000000000000004; fifteen digits is the precision a double always
    keeps, and rounding to it shows what the author meant ("0.3"). ``json``
    keeps the exact value instead.
    """
    if isinstance(number, int):
        return str(number)
    if number != number:
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    magnitude = abs(number)
    if 1e-6 <= magnitude < 1e15:
        return format(Decimal(format(number, ".15g")), "f")
    return _exponent(repr(number) if magnitude >= 1e15 else format(number, ".15g"))


def exact_number_text(number: int | float) -> str:
    """The shortest text that reads back as exactly this number (JSON's view)."""
    if isinstance(number, int):
        return str(number)
    if not math.isfinite(number):
        return "null"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    return _exponent(text) if "e" in text else text


def _exponent(text: str) -> str:
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def display(value: Any, max_length: int, charge: Charge | None = None) -> str:
    """The text a value renders as: null is empty, arrays and objects are JSON."""
    kind = _KINDS.get(type(value)) or type_name(value)
    if kind == "string":
        return str(value)
    if kind == "null":
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "number":
        return number_text(value)
    return json_text(value, max_length, charge)


class _Punct:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_COMMA, _CLOSE_ARRAY, _CLOSE_OBJECT = _Punct(","), _Punct("]"), _Punct("}")


def json_text(value: Any, max_length: int, charge: Charge | None = None) -> str:
    """Compact JSON, built without recursion and stopped at ``max_length`` characters.

    Checking the size as it grows means an array holding many references to
    one huge string cannot make the engine allocate gigabytes; ``charge`` is
    paid a step per item and per KiB of text as the walk goes.
    """
    parts: list[str] = []
    size = 0
    charged_size = 0
    work = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        work += 1
        if work >= _BATCH and charge is not None:
            charge(work + ((size - charged_size) >> 10))
            work, charged_size = 0, size
        if isinstance(item, _Punct):
            text = item.text
        else:
            kind = type_name(item)
            if kind == "array" and item:
                text = "["
                stack.append(_CLOSE_ARRAY)
                for index in range(len(item) - 1, -1, -1):
                    stack.append(item[index])
                    if index:
                        stack.append(_COMMA)
            elif kind == "object" and item:
                text = "{"
                stack.append(_CLOSE_OBJECT)
                entries = list(item.items())
                for index in range(len(entries) - 1, -1, -1):
                    key, member = entries[index]
                    stack.append(member)
                    label = json.dumps(str(key), ensure_ascii=False) + ":"
                    stack.append(_Punct("," + label if index else label))
            else:
                text = _json_scalar(item, kind)
        size += len(text)
        if size > max_length:
            raise LimitExceeded(limit_message(
                "max_string_length", max_length, "the JSON text would be too long",
            ))
        parts.append(text)
    if charge is not None:
        charge(work + ((size - charged_size) >> 10))
    return "".join(parts)


def _json_scalar(value: Any, kind: str) -> str:
    if kind == "string":
        return json.dumps(value, ensure_ascii=False)
    if kind == "number":
        return exact_number_text(value)
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "array":
        return "[]"
    if kind == "object":
        return "{}"
    return "null"


def equal(left: Any, right: Any, charge: Charge | None = None) -> bool:
    """Strict equality by value: 1 == 1.0, but 1 != true and 1 != '1'.

    Walks without recursion; ``charge`` is paid a step per item compared and
    per KiB of text, as the walk goes, so comparing huge values in a loop
    spends the budget in proportion to the work.
    """
    work = 0
    stack: list[tuple[Any, Any]] = [(left, right)]
    try:
        while stack:
            a, b = stack.pop()
            work += 1
            if work >= _BATCH and charge is not None:
                charge(work)
                work = 0
            kind = type_name(a)
            if kind != type_name(b):
                return False
            if kind == "array":
                if len(a) != len(b):
                    return False
                # Queuing costs as much as comparing: pay for every pair now,
                # so a difference found last cannot make the queue free.
                work += len(a)
                if work >= _BATCH and charge is not None:
                    charge(work)
                    work = 0
                stack.extend(zip(a, b, strict=True))
            elif kind == "object":
                work += 2 * len(a)  # the key sets, then the queue
                if work >= _BATCH and charge is not None:
                    charge(work)
                    work = 0
                if a.keys() != b.keys():
                    return False
                stack.extend((a[key], b[key]) for key in a)
            elif kind == "string":
                if len(a) != len(b):
                    return False
                work += len(a) >> 10
                if a != b:
                    return False
            elif kind != "null" and a != b:
                return False
        return True
    finally:
        if charge is not None and work:
            charge(work)


def compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1; None when the two have no order (every comparison is then false)."""
    a, b = type_name(left), type_name(right)
    if a == b == "string" or a == b == "number":
        pass
    elif {a, b} == {"number", "string"}:
        left, right = _as_number(left), _as_number(right)
        if left is None or right is None:
            return None
    else:
        return None
    if left != left or right != right:
        return None
    return -1 if left < right else (1 if left > right else 0)


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, str):
        return parse_number(value) if value.strip() else None
    return value  # type: ignore[no-any-return]
