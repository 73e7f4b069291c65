"""Questions about a value's kind; each answers true or false."""

from __future__ import annotations

from typing import Any

from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime
from services.template._lang._values import type_name


def is_empty(rt: Runtime, value: Any) -> bool:
    if value is None:
        return True
    return type_name(value) in ("string", "array", "object") and len(value) == 0


def is_not_empty(rt: Runtime, value: Any) -> bool:
    return not is_empty(rt, value)


def is_defined(rt: Runtime, value: Any) -> bool:
    return value is not None


def is_array(rt: Runtime, value: Any) -> bool:
    return type_name(value) == "array"


def is_string(rt: Runtime, value: Any) -> bool:
    return type_name(value) == "string"


def is_number(rt: Runtime, value: Any) -> bool:
    return type_name(value) == "number"


FUNCTIONS = (
    Function(
        "isEmpty", is_empty, 1, 1, "types", "isEmpty(value)",
        "True for null, '' , [] and {}; false for everything else, 0 and false included.",
        "isEmpty(tags)", True, {"tags": []},
    ),
    Function(
        "isNotEmpty", is_not_empty, 1, 1, "types", "isNotEmpty(value)",
        "The opposite of isEmpty.",
        "isNotEmpty('x')", True,
    ),
    Function(
        "isDefined", is_defined, 1, 1, "types", "isDefined(value)",
        "True unless the value is null. A missing variable is null, so this also tells "
        "whether a variable was given.",
        "isDefined(subtitle)", False, {},
    ),
    Function(
        "isArray", is_array, 1, 1, "types", "isArray(value)",
        "Whether the value is an array.",
        "isArray([1, 2])", True,
    ),
    Function(
        "isString", is_string, 1, 1, "types", "isString(value)",
        "Whether the value is text.",
        "isString(42)", False,
    ),
    Function(
        "isNumber", is_number, 1, 1, "types", "isNumber(value)",
        "Whether the value is a number (text holding digits is not).",
        "isNumber('42')", False,
    ),
)
