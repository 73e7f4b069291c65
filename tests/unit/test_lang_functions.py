"""Every built-in function: its registered example, then its edges."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from litho.errors import InvalidArgument
from services.template._lang import Engine, FunctionInfo, list_functions

NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)
ENGINE = Engine(clock=lambda: NOW)


def ev(expr: str, **variables: Any) -> Any:
    return ENGINE.evaluate_expression(expr, variables)


def fails(expr: str, message: str, **variables: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ev(expr, **variables)
    assert message in caught.value.message, caught.value.message


@pytest.mark.parametrize("info", list_functions(), ids=lambda i: i.name)
def test_registered_example(info: FunctionInfo) -> None:
    result = ENGINE.evaluate_expression(info.example, info.example_variables)
    assert result == info.example_result
    assert type(result) is type(info.example_result)


def test_listing_is_json_ready() -> None:
    infos = list_functions()
    names = [i.name for i in infos]
    assert len(names) == len(set(names)) == 50
    categories = {i.category for i in infos}
    assert categories == {"strings", "numbers", "formatting", "arrays", "types", "utilities",
                          "codes"}
    currency = next(i for i in infos if i.name == "currency").to_json()
    assert currency == {
        "name": "currency",
        "signature": "currency(number, code = 'USD', locale = 'en-US')",
        "description": currency["description"],
        "example": "currency(price, 'EUR', 'de-DE')",
        "exampleVariables": {"price": 1234.5},
        "exampleResult": "1.234,50\u00a0€",
        "category": "formatting",
    }
    for info in infos:
        assert info.description and info.signature.startswith(info.name + "(")


def test_every_function_is_also_a_filter() -> None:
    assert ev("currency(price, 'EUR', 'de-DE')", price=9.5) == ev(
        "price | currency: 'EUR', 'de-DE'", price=9.5)
    assert ev("x | padStart: 4, '*'", x="ab") == ev("padStart(x, 4, '*')", x="ab") == "**ab"
    assert ev("[3, 1] | sort | first") == 1


# strings

@pytest.mark.parametrize(("expr", "result"), [
    ("uppercase('straße')", "STRASSE"),
    ("uppercase(null)", ""),
    ("uppercase(12)", "12"),
    ("lowercase('ÀB')", "àb"),
    ("capitalize('')", ""),
    ("capitalize('éclair au CHOCOLAT')", "Éclair au CHOCOLAT"),
    ("titleCase('  hello   wORLD ')", "  Hello   World "),
    ("trim('\\n\\t x \\n')", "x"),
    ("truncate('abcdef', 6)", "abcdef"),
    ("truncate('abcdefg', 6)", "abcde…"),
    ("truncate('abcdefg', 6, '...')", "abc..."),
    ("truncate('abcdefg', 2, '...')", "ab"),
    ("truncate('abcdefg', 0)", ""),
    ("truncate('abc def', 5)", "abc…"),
    ("truncate(12345, 3, '')", "123"),
    ("replace('aaa', 'a', 'bb')", "bbbbbb"),
    ("replace('a.b', '.', '$&')", "a$&b"),
    ("replace('(x)', '(', '[')", "[x)"),
    ("replace('ab', '', '-')", "-a-b-"),
    ("split('', ',')", []),
    ("split('a,,b', ',')", ["a", "", "b"]),
    ("split('ab', '')", ["a", "b"]),
    ("padStart('abc', 2)", "abc"),
    ("padStart('5', 3)", "  5"),
    ("padStart('5', 6, 'ab')", "ababa5"),
    ("padEnd('5', 6, 'ab')", "5ababa"),
    ("padEnd('5', 3, '')", "5"),
    ("slugify('  --Hello__World--  ')", "hello-world"),
    ("slugify('日本語')", ""),
    ("slugify('Ça  va? 100%')", "ca-va-100"),
])
def test_strings(expr: str, result: Any) -> None:
    assert ev(expr) == result


def test_string_argument_errors() -> None:
    fails("truncate('abc', -1)", "truncate: the length must not be negative")
    fails("truncate('abc', 1.5)", "truncate: expected a length, got 1.5")
    fails("padStart('a', 'many')", "padStart: expected a number, got the string \"many\"")


# numbers

@pytest.mark.parametrize(("expr", "result"), [
    ("round(2.5)", 3), ("round(-2.5)", -3), ("round(2.4)", 2), ("round(1.005, 2)", 1.01),
    ("round(1234.5678, -2)", 1200), ("round(7)", 7), ("round('2.6')", 3), ("round(null)", 0),
    ("round(0.125, 2)", 0.13), ("round(1e300, -1)", 1e300),
    ("floor(-0.5)", -1), ("floor(3)", 3), ("ceil(-0.5)", 0), ("ceil(2.000001)", 3),
    ("abs(-0)", 0), ("abs('-3')", 3),
    ("min(1)", 1), ("min([4, 2.5, 3])", 2.5), ("min([])", None), ("min(null, 3)", 3),
    ("max(1, '7', 3)", 7), ("max([])", None),
    ("sum([])", 0), ("sum(null)", 0), ("sum([0.1, 0.2])", 0.30000000000000004),
    ("sum([1, null, 2])", 3), ("average([1, 2])", 1.5), ("average([])", None),
])
def test_numbers(expr: str, result: Any) -> None:
    got = ev(expr)
    assert got == result and type(got) is type(result)


def test_number_argument_errors() -> None:
    fails("round(1, 0.5)", "round: expected a whole number of decimal places, got 0.5")
    fails("round(1, 21)", "round: decimal places must be between -20 and 20")
    fails("sum('abc')", "sum: expected an array, got the string \"abc\"")
    fails("sum(['a'])", "sum: expected a number, got the string \"a\"")
    fails("max(1, [2])", "max: expected a number, got an array")
    fails("floor(x)", "floor: expected a finite number", x=float("inf"))


# formatting

@pytest.mark.parametrize(("expr", "result"), [
    ("currency(49 * 0.9)", "$44.10"),
    ("currency(price * quantity, 'USD')", "$89.97"),
    ("currency(-3.5, 'EUR', 'de-DE')", "-3,50\u00a0€"),
    ("currency(1234, 'jpy', 'ja-JP')", "￥1,234"),
    ("currency(1e20)", "$100,000,000,000,000,000,000.00"),
    ("currency(2.675)", "$2.68"),
    ("currency('12')", "$12.00"),
    ("currency(null)", None),
    ("currency(5, 'GBP', 'en_GB')", "£5.00"),
    ("number(1234.5678)", "1,234.568"),
    ("number(1234.5678, 'de-DE', 1)", "1.234,6"),
    ("number(0.5, 'en-US', 0)", "1"),
    ("number(1e21)", "1,000,000,000,000,000,000,000"),
    ("number('3')", "3"),
    ("number(12345678, 'en-IN')", "1,23,45,678"),
    ("percent(0.256)", "26%"),
    ("percent(0.2567, 2)", "25.67%"),
    ("percent(1)", "100%"),
    ("percent(-0.05)", "-5%"),
    ("percent(0.5, 0, 'de-DE')", "50\u00a0%"),
])
def test_formatting(expr: str, result: Any) -> None:
    assert ev(expr, price=29.99, quantity=3) == result


def test_formatting_errors() -> None:
    fails("currency(1, 'XYZ')", "currency: unknown currency code the string \"XYZ\"")
    fails("currency(1, 'USD', 'xx-YY')", "currency: unknown locale 'xx-YY'")
    fails("currency(1, 'USD', '../../etc/passwd')", "expected a locale such as 'en-US'")
    fails("currency('ten')", "currency: expected a number")
    fails("currency(x)", "currency: cannot format the number Infinity", x=float("inf"))
    fails("number(1, 'en-US', 30)", "number: decimal places must be between 0 and 20")
    fails("percent(1, -1)", "percent: decimal places must be between 0 and 20")


# dates

@pytest.mark.parametrize(("expr", "result"), [
    ("date('2024-03-15')", "2024-03-15"),
    ("date('2024-03-15T23:30:00Z', 'YYYY-MM-DD', 'Asia/Tokyo')", "2024-03-16"),
    ("date('2024-03-15', 'YYYY-MM-DD HH:mm Z', 'Asia/Tokyo')", "2024-03-15 00:00 +09:00"),
    ("date('2024-03-15T10:00:00+02:00', 'HH:mm')", "08:00"),
    ("date(0)", "1970-01-01"),
    ("date(1700000000.5, 'ss.SSS')", "20.500"),
    ("date('1700000000', 'YYYY')", "2023"),
    ("date(-86400)", "1969-12-31"),
    ("date('2024-03-05T00:00:00Z', 'h A, hh a')", "12 AM, 12 am"),
    ("date('2024-03-05T13:00:00Z', 'h A, H')", "1 PM, 13"),
    ("date('2024-03-05', '[YYYY] YYYY [unclo')", "YYYY 2024 [unclo"),
    ("date('2024-03-05', 'Do [of] MMMM')", "5o of March"),
    ("date('2024-07-01', 'MMMM MMM dddd ddd', 'UTC', 'es')", "julio jul lunes lun"),
    ("date('2024-03-05T12:00:00', 'HH:mm ZZ', 'America/New_York')", "12:00 -0500"),
    ("date('2024-07-05T12:00:00', 'HH:mm ZZ', 'America/New_York')", "12:00 -0400"),
    ("date(null)", None),
    ("time('2024-03-15T07:08:09Z')", "07:08"),
    ("time(null)", None),
    ("relativeTime('2024-03-20T12:00:00Z')", "in 0 seconds"),
    ("relativeTime('2024-03-20T11:59:00Z')", "1 minute ago"),
    ("relativeTime('2024-06-20T12:00:00Z')", "in 3 months"),
    ("relativeTime('2022-03-20T12:00:00Z')", "2 years ago"),
    ("relativeTime(1710936000 - 7200)", "2 hours ago"),
    ("relativeTime('2024-03-21T12:00:00Z', null, 'fr')", "dans 1 jour"),
    ("relativeTime(null)", None),
])
def test_dates(expr: str, result: Any) -> None:
    assert ev(expr) == result


def test_relative_time_reads_the_injected_clock_once_per_render() -> None:
    ticks = iter([datetime(2024, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)])
    engine = Engine(clock=lambda: next(ticks))
    template = engine.compile("{{ relativeTime('2024-01-04') }}|{{ relativeTime('2024-01-04') }}")
    assert template.render({}, max_output=100) == "in 3 days|in 3 days"


def test_date_errors() -> None:
    fails("date('not a date')", "date: cannot read a date from the string \"not a date\"")
    fails("date([1])", "date: expected a date, got an array")
    fails("date(1e18)", "date: cannot read a date")
    fails("date('2024-01-01', 'YYYY', 'Mars/Olympus')", "date: unknown time zone 'Mars/Olympus'")
    fails("date('2024-01-01', 'YYYY', '../etc/passwd')", "expected a time zone")
    fails("date('2024-01-01', 'YYYY', 'UTC', 'zz')", "date: unknown locale 'zz'")
    fails("date('2024-01-01', 5)", "date: expected a format like 'YYYY-MM-DD'")
    fails("date('2024-01-01', padEnd('', 201, 'Y'))", "longer than 200 characters")


# arrays

def test_there_are_no_object_literals() -> None:
    assert ENGINE.validate_expression("length({'a': 1})")


@pytest.mark.parametrize(("expr", "result"), [
    ("length(obj)", 2), ("length('')", 0), ("first([])", None), ("last('')", None),
    ("first(null)", None), ("join([])", ""), ("join([1, null, true, 'x'], '')", "1truex"),
    ("join([[1], 'x'])", "[1], x"),
    ("slice([1, 2, 3], -2)", [2, 3]), ("slice([1, 2, 3], 5)", []), ("slice('hello', 1, 3)", "el"),
    ("slice(null, 0)", []),
    ("contains([1, [2]], [2])", True), ("contains([1], '1')", False), ("contains(null, 1)", False),
    ("contains('abc', '')", True), ("contains(obj, 'b')", True), ("contains(obj, 'z')", False),
    ("indexOf([1, 2, 1], 1)", 0), ("indexOf('', 'x')", -1),
    ("sort([3, null, 'b', true, 1.5, 'a'])", [None, True, 1.5, 3, "a", "b"]),
    ("sort([])", []), ("sort(people, 'age') | pluck: 'name'", ["Cy", "Al", "Bo"]),
    ("sort(people, 'missing') | pluck: 'name'", ["Al", "Bo", "Cy"]),
    ("reverse('')", ""), ("reverse(null)", []),
    ("unique([1, 1.0, true, '1', null, null, [1], [1]])", [1, True, "1", None, [1]]),
    ("pluck(people, 'name')", ["Al", "Bo", "Cy"]), ("pluck([1, obj], 'a')", [None, 1]),
    ("pluck(nested, 'a.b')", [1, None]),
])
def test_arrays(expr: str, result: Any) -> None:
    variables = {
        "obj": {"a": 1, "b": 2},
        "people": [{"name": "Al", "age": 40}, {"name": "Bo", "age": 50},
                   {"name": "Cy", "age": 30}],
        "nested": [{"a": {"b": 1}}, {"a": 2}],
    }
    assert ENGINE.evaluate_expression(expr, variables) == result


def test_array_errors() -> None:
    fails("length(5)", "length: expected an array, a string or an object, got the number 5")
    fails("first(5)", "first: expected an array or a string")
    fails("join('abc')", "join: expected an array")
    fails("sort([[1], [2]])", "sort: cannot sort arrays or objects without a key")
    fails("sort([1], '')", "sort: expected a property name")
    fails("slice([1], 'x')", "slice: expected a number")


# types and utilities

@pytest.mark.parametrize(("expr", "result"), [
    ("isEmpty(' ')", False), ("isEmpty(false)", False), ("isEmpty(obj)", True),
    ("isNotEmpty(null)", False), ("isDefined(0)", True), ("isDefined(null)", False),
    ("isArray(obj)", False), ("isString(null)", False), ("isNumber(true)", False),
    ("isNumber(-0.5)", True),
    ("default(false, 1)", False), ("default(0, 1)", 0), ("default([], 1)", []),
    ("default('', 'x')", "x"), ("coalesce(null)", None), ("coalesce(0, 1)", 0),
    ("json(null)", "null"), ("json('a\"b')", '"a\\"b"'), ("json([1.0, 2.5])", "[1,2.5]"),
    ("json(obj)", "{}"), ("parseJson('[1, 2]')", [1, 2]), ("parseJson(null)", None),
    ("parseJson('\"x\"')", "x"),
])
def test_types_and_utilities(expr: str, result: Any) -> None:
    got = ENGINE.evaluate_expression(expr, {"obj": {}})
    assert got == result and type(got) is type(result)


def test_parse_json_errors() -> None:
    fails("parseJson('{')", "parseJson: the text is not valid JSON")
    fails("parseJson('NaN')", "parseJson: the text is not valid JSON")
    fails("parseJson(s)", "parseJson: the text is not valid JSON", s="[" * 100_000)
    fails("parseJson(1)", "parseJson: expected JSON text, got the number 1")
