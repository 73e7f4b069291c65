from __future__ import annotations

import math
from typing import Any

import pytest

from services.template._lang._errors import ArgumentError, LimitExceeded
from services.template._lang._values import (
    compare,
    display,
    equal,
    exact_number_text,
    json_text,
    normalize,
    number_text,
    parse_number,
    to_number,
    truthy,
    type_name,
)


class HostObject:
    secret = "never shown"


@pytest.mark.parametrize(("value", "kind"), [
    ("", "string"), (0, "number"), (1.5, "number"), (True, "boolean"), (None, "null"),
    ([], "array"), ({}, "object"), (HostObject(), "null"), ((1, 2), "null"),
])
def test_type_name(value: Any, kind: str) -> None:
    assert type_name(value) == kind


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), (False, False), (0, False), (0.0, False), (math.nan, False), ("", False),
    ([], False), ({}, False), (HostObject(), False),
    (True, True), (1, True), (-0.5, True), ("0", True), ("false", True), ([0], True),
    ({"a": None}, True),
])
def test_truthiness(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(("number", "text"), [
    (0, "0"), (-0.0, "0"), (3, "3"), (3.0, "3"), (44.1, "44.1"), (0.1 + 0.2, "0.3"),
    (1 / 3, "0.333333333333333"), (1e20, "100000000000000000000"), (1e21, "1e+21"),
    (1.5e-7, "1.5e-7"), (0.00001, "0.00001"), (123456.789, "123456.789"),
    (1234567890123456.5, "1234567890123456.5"), (math.inf, "Infinity"),
    (-math.inf, "-Infinity"), (math.nan, "NaN"), (2**60, "1152921504606846976"),
])
def test_number_text(number: float, text: str) -> None:
    assert number_text(number) == text


@pytest.mark.parametrize(("number", "text"), [
    (0.1 + 0.2, "0.30000000000000004"), (2.0, "2"), (1e-7, "1e-7"), (math.inf, "null"),
    (5, "5"),
])
def test_exact_number_text(number: float, text: str) -> None:
    assert exact_number_text(number) == text


@pytest.mark.parametrize(("value", "text"), [
    (None, ""), (True, "true"), (False, "false"), ("<b>", "<b>"), (7, "7"),
    ([1, "a", None, 2.5], '[1,"a",null,2.5]'), ({"k": "é", "n": {}}, '{"k":"é","n":{}}'),
    (HostObject(), ""),
])
def test_display(value: Any, text: str) -> None:
    assert display(value, 1000) == text


def test_json_text_stops_at_the_limit_without_building_everything() -> None:
    big = "x" * 500
    assert json_text([big, big], 1007) == f'["{big}","{big}"]'
    with pytest.raises(LimitExceeded, match="LITHO_TEMPLATE_MAX_STRING_LENGTH"):
        json_text([big] * 1_000_000, 10_000)


def test_json_text_handles_deep_nesting_iteratively() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert json_text(deep, 100_000) == "[" * 5000 + "[]" + "]" * 5000


@pytest.mark.parametrize(("a", "b", "same"), [
    (1, 1.0, True), (1, True, False), (0, False, False), (1, "1", False), (None, None, True),
    ([1, [2]], [1, [2.0]], True), ([1], [1, 2], False), ({"a": 1}, {"a": 1}, True),
    ({"a": 1}, {"a": 2}, False), ({"a": 1}, {"b": 1}, False), ("x", "x", True),
])
def test_equality_is_by_value_and_kind(a: Any, b: Any, same: bool) -> None:
    assert equal(a, b) is same


@pytest.mark.parametrize(("a", "b", "order"), [
    (1, 2, -1), (2.5, 2.5, 0), ("b", "a", 1), ("10", 9, 1), (9, "10", -1), (None, 1, None),
    (True, False, None), ([1], [2], None), ("abc", 1, None), (math.nan, 1, None),
])
def test_compare(a: Any, b: Any, order: int | None) -> None:
    assert compare(a, b) == order


@pytest.mark.parametrize(("value", "number"), [
    (3, 3), (2.5, 2.5), (True, 1), (False, 0), (None, 0), ("42", 42), (" 1.5 ", 1.5),
    ("", 0), ("-3e2", -300), ("+7", 7),
])
def test_to_number_is_lenient_like_javascript(value: Any, number: float) -> None:
    assert to_number(value) == number


@pytest.mark.parametrize("value", ["abc", "1,5", "0x10", "Infinity", "١٢", [1], {}])
def test_to_number_refuses_the_rest(value: Any) -> None:
    with pytest.raises(ArgumentError, match="expected a number"):
        to_number(value)


def test_parse_number_keeps_integers_exact() -> None:
    assert parse_number("9007199254740993") == 9007199254740993
    assert parse_number("1e999") is None


def test_normalize() -> None:
    assert normalize(3.0) == 3 and type(normalize(3.0)) is int
    assert type(normalize(2**60)) is float
    assert normalize(0.5) == 0.5
    for bad in (math.inf, math.nan, 10**400):
        with pytest.raises(ArgumentError):
            normalize(bad)
