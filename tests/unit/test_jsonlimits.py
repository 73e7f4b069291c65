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
    ("9" * 20, True), ("9" * 21, False), ("9" * 4000, False), ("9" * 50_000, False),
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
