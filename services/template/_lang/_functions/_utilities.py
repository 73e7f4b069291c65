"""Fallbacks and JSON."""

from __future__ import annotations

import json
from typing import Any

from services.template._lang._errors import ArgumentError
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
    return json_text(value, rt.limits.max_string_length)


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def parse_json(rt: Runtime, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArgumentError(f"expected JSON text, got {describe(value)}")
    try:
        # NaN and Infinity are not JSON; a template would only trip over them later.
        return json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ArgumentError("the text is not valid JSON") from None


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
        "The value the JSON text holds; null gives null.",
        "parseJson('{\"a\": [1, 2]}').a[1]", 2,
    ),
)
