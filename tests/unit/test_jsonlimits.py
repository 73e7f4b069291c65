"""The JSON checker every edge uses: each refusal names the path and the limit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from litho.jsonlimits import JsonLimitError, JsonLimits, check, loads

LIMITS = JsonLimits(max_depth=8, max_number_chars=20, depth_setting="LITHO_X_DEPTH",
                    number_setting="LITHO_X_NUMBER")


def refused(text: str | bytes) -> JsonLimitError:
    with pytest.raises(JsonLimitError) as info:
        loads(text, LIMITS)
    return info.value


@pytest.mark.parametrize("depth", [9, 40, 973, 5000])
def test_depth_over_the_limit_names_the_path_whatever_the_depth(depth: int) -> None:
    text = '{"a": [1, {"b/c": ' + "[" * depth + "]" * depth + "}]}"
    err = refused(text)
    # The object, /a, /a/1 and /a/1/b~1c are four levels; the ninth is 5 deeper.
    assert err.path == "/a/1/b~1c" + "/0" * 5
    assert "8 levels" in err.problem and "LITHO_X_DEPTH" in err.problem


def test_depth_at_the_limit_is_accepted() -> None:
    text = "[" * 8 + "]" * 8
    assert loads(text, LIMITS) == json.loads(text)


@pytest.mark.parametrize(("text", "path"), [
    ('{"html": "\\ud800"}', "/html"),
    ('{"v": ["ok", "a\\udfffb"]}', "/v/1"),
    ('{"k\\ud800": 1}', "/k\\ud800"),
    ('"\\udbff"', ""),
])
def test_lone_surrogates_are_refused_in_strings_and_keys(text: str, path: str) -> None:
    err = refused(text)
    assert err.path == path and "not valid Unicode" in err.problem
    err.path.encode()  # the pointer itself stays encodable


def test_utf8_encoded_surrogates_in_bytes_are_refused() -> None:
    assert refused(b'{"x": "\xed\xa0\x80"}').path == "/x"


def test_paired_surrogates_and_other_text_are_accepted() -> None:
    assert loads('{"e": "\\ud83d\\ude00 \\u00e9 \\\\ud800"}', LIMITS) == {
        "e": "\U0001F600 \u00e9 \\ud800"}


@pytest.mark.parametrize(("literal", "ok"), [
    # 20 characters is the limit here (a 20-digit integer is past int64: below).
    ("12345678901234.56789", True), ("-" + "9" * 18, True), ("9" * 21, False),
    ("9" * 4000, False), ("9" * 50_000, False),
    ("-1.5e300", True), ("1e400", False), ("-1e400", False), ("0.1", True),
])
def test_numbers_are_bounded(literal: str, ok: bool) -> None:
    text = '{"x": [0, ' + literal + "]}"
    if ok:
        assert loads(text, LIMITS)["x"][1] == json.loads(literal)
        return
    err = refused(text)
    assert err.path == "/x/1" and "LITHO_X_NUMBER" in err.problem
    assert len(err.problem) < 300  # the message does not repeat the number


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]", "{", ""])
def test_what_is_not_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text, LIMITS)


def test_check_walks_parsed_values() -> None:
    value: Any = {"a": "ok"}
    check(value, LIMITS)
    with pytest.raises(JsonLimitError) as info:
        check({"a": [float("inf")]}, LIMITS)
    assert info.value.path == "/a/0"


@pytest.mark.parametrize(("literal", "ok"), [
    (str(2**63 - 1), True), (str(-(2**63)), True), ("1e19", True), ("-1.5e300", True),
    (str(2**63), False), (str(-(2**63) - 1), False), ("99999999999999999999", False),
])
def test_integers_must_fit_in_64_bits_as_mongodb_stores_them(literal: str, ok: bool) -> None:
    text = '{"sampleVariables": {"n": [' + literal + "]}}"
    if ok:
        assert loads(text, LIMITS)["sampleVariables"]["n"] == [json.loads(literal)]
        return
    err = refused(text)
    assert err.path == "/sampleVariables/n/0"
    assert "64-bit" in err.problem and "MongoDB" in err.problem and literal in err.problem


def test_nul_in_a_key_is_refused_and_the_pointer_stays_printable() -> None:
    err = refused('{"sampleVariables": {"ok": 1, "a\\u0000b": 1}}')
    assert err.path == "/sampleVariables/a\\u0000b" and "\x00" not in str(err)
    assert "NUL" in err.problem and "MongoDB" in err.problem
    err = refused(b'[{"\\u0000": 1}]')
    assert err.path == "/0/\\u0000"
    # In a value (not a key), NUL is stored as it is by every store.
    assert loads('{"a": "x\\u0000y"}', LIMITS) == {"a": "x\x00y"}


def test_check_applies_the_integer_and_key_rules_to_parsed_values() -> None:
    with pytest.raises(JsonLimitError) as info:
        check({"a": [1, 2**63]}, LIMITS)
    assert info.value.path == "/a/1" and "64-bit" in info.value.problem
    with pytest.raises(JsonLimitError) as info:
        check({"a": {"b\x00": True}}, LIMITS)
    assert info.value.path == "/a/b\\u0000"
    check({"a": [True, -(2**63), 2**63 - 1, "\x00"]}, LIMITS)
