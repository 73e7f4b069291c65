"""Fallbacks and JSON."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from services.template._lang._errors import ArgumentError, limit_message
from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, json_text


def _missing(value: Any) -> bool:
    return value is None or value == ""


def default(rt: Runtime, value: Any, fallback: Any) -> Any:
    return fallback if _missing(value) else value


def coalesce(rt: Runtime, *values: Any) -> Any:
    return next((value for value in values if not _missing(value)), None)


def json_(rt: Runtime, value: Any) -> str:
    return json_text(value, rt.limits.max_string_length, rt.charge)


def _no_constant(name: str) -> Any:
    raise ValueError(name)


#: Digits of the longest integer parseJson accepts: past 309 digits an
#: integer is larger than any double, so no arithmetic could use it.
MAX_INTEGER_DIGITS = 309


def _integer(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INTEGER_DIGITS:
        raise ArgumentError(f"the JSON text holds an integer of more than "
                            f"{MAX_INTEGER_DIGITS} digits")
    return int(text)


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ArgumentError(f"the JSON text holds a number too large to represent "
                            f"({text[:20]}{'…' if len(text) > 20 else ''})")
    return number


def parse_json(rt: Runtime, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArgumentError(f"expected JSON text, got {describe(value)}")
    # The parser builds an object for every few characters: a step per 16.
    rt.charge(len(value) >> 4)
    try:
        # NaN and Infinity are not JSON; a template would only trip over them later.
        parsed = json.loads(value, parse_constant=_no_constant, parse_int=_integer,
                            parse_float=_finite)
    except (ValueError, RecursionError):
        raise ArgumentError("the text is not valid JSON") from None
    _check_parsed(parsed, rt.limits.max_depth, _SURROGATE_ESCAPE.search(value) is not None)
    return parsed


#: A \uD800-\uDFFF escape in JSON text; only then can the result hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_parsed(value: Any, max_depth: int, surrogates: bool) -> None:
    """Refuse a parsed value nested deeper than the language allows (nothing
    could send it on), or holding a lone surrogate: "\\ud800" is valid JSON
    but not valid Unicode, so it could never be sent on as text."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            if depth >= max_depth:
                raise ArgumentError(limit_message(
                    "max_depth", max_depth, "the JSON text is nested too deeply"))
            children = item if isinstance(item, list) else [*item.keys(), *item.values()]
            stack.extend((child, depth + 1) for child in children)
        elif surrogates and isinstance(item, str) and _SURROGATE.search(item):
            raise ArgumentError("the JSON text holds a lone surrogate (\\uD800-\\uDFFF), "
                                "which is not valid Unicode")


FUNCTIONS = (
    Function(
        "default", default, 2, 2, "utilities", "default(value, fallback)",
        "The fallback when the value is null (a missing variable) or empty text; the value "
        "otherwise, even when it is 0 or false.",
        "name | default: 'Guest'", "Guest", {},
    ),
    Function(
        "coalesce", coalesce, 1, None, "utilities", "coalesce(value, …)",
        "The first value that is neither null nor empty text, or null.",
        "coalesce(nickname, firstName, 'friend')", "Ada", {"nickname": "", "firstName": "Ada"},
    ),
    Function(
        "json", json_, 1, 1, "utilities", "json(value)",
        "The value as compact JSON text, numbers at full precision.",
        "json(user)", '{"name":"Ada","tags":["x"]}', {"user": {"name": "Ada", "tags": ["x"]}},
    ),
    Function(
        "parseJson", parse_json, 1, 1, "utilities", "parseJson(text)",
        "The value the JSON text holds; null gives null. Integers of more than 309 digits "
        "and numbers too large for a double are refused.",
        "parseJson('{\"a\": [1, 2]}').a[1]", 2,
    ),
)
