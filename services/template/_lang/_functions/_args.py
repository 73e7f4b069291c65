"""Argument coercions shared by the functions, lenient the JavaScript way."""

from __future__ import annotations

from typing import Any

from services.template._lang._errors import ArgumentError
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, display, to_int, type_name


def text(rt: Runtime, value: Any) -> str:
    """Any value as text: null is empty, numbers as they render, arrays as JSON."""
    return value if isinstance(value, str) else display(
        value, rt.limits.max_string_length, rt.charge)


def whole(value: Any, what: str = "a whole number") -> int:
    return to_int(value, what)


def array(value: Any) -> list[Any]:
    """An array, with null standing for an empty one."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise ArgumentError(f"expected an array, got {describe(value)}")


def sequence(value: Any) -> list[Any] | str:
    """An array or a text (null as an empty array)."""
    if value is None:
        return []
    if isinstance(value, list | str):
        return value
    raise ArgumentError(f"expected an array or a string, got {describe(value)}")


def key_path(rt: Runtime, value: Any, items: int) -> list[str]:
    """A property name, or a dotted path to one: 'author.name', to be followed
    in each of ``items`` items: a step per segment per item, paid up front."""
    if not isinstance(value, str) or not value:
        raise ArgumentError(f"expected a property name, got {describe(value)}")
    rt.charge((len(value) >> 4) + value.count(".") * items)
    return value.split(".")


def pick(item: Any, path: list[str]) -> Any:
    for key in path:
        if type_name(item) != "object":
            return None
        item = item.get(key)
    return item
