from __future__ import annotations

import time
from typing import Any

import pytest

from litho.errors import FieldError, InvalidArgument
from litho.jsonlimits import JsonLimits
from services.template._variables import (
    VariableDefinition,
    apply_definitions,
    coerce_strings,
    parse_definitions,
)


def definition_errors(definitions: Any) -> list[FieldError]:
    with pytest.raises(InvalidArgument) as caught:
        parse_definitions(definitions)
    return caught.value.errors


def variable_errors(definitions: list[dict[str, Any]], variables: dict[str, Any]) -> list[
    FieldError
]:
    with pytest.raises(InvalidArgument) as caught:
        apply_definitions(parse_definitions(definitions), variables)
    assert caught.value.message == "some variables are invalid"
    return caught.value.errors


def test_parse_a_full_definition() -> None:
    [title, accent] = parse_definitions([
        {"name": "title", "type": "text", "defaultValue": "Hello", "description": "Headline",
         "validation": {"required": True, "minLength": 1, "maxLength": 40, "pattern": "[A-Z].*",
                        "enum": ["Hello", "Hi"]}},
        {"name": "accent", "type": "color"},
    ])
    assert title == VariableDefinition("title", "text", "Hello", "Headline", title.validation)
    assert title.validation.max_length == 40 and title.validation.required
    assert title.validation.pattern is not None and title.validation.enum == ("Hello", "Hi")
    assert title.to_json() == {
        "name": "title", "type": "text", "defaultValue": "Hello", "description": "Headline",
        "validation": {"required": True, "minLength": 1, "maxLength": 40, "pattern": "[A-Z].*",
                       "enum": ["Hello", "Hi"]},
    }
    assert accent.to_json() == {"name": "accent", "type": "color"}


def test_definitions_must_be_a_list_of_objects() -> None:
    assert definition_errors({"name": "x"}) == [FieldError("variables", "must be an array")]
    assert definition_errors([1]) == [FieldError("variables[0]", "must be an object")]
    assert definition_errors([{}] * 201) == [
        FieldError("variables", "must have at most 200 definitions"),
    ]


def test_every_problem_is_named_by_path() -> None:
    errors = definition_errors([
        {"name": "ok", "type": "text"},
        {"name": "ok", "type": "text"},
        {"name": "2bad", "type": "texty", "extra": 1},
        {"name": "n", "type": "number", "defaultValue": "five"},
        {"name": "p", "type": "text", "validation": {"pattern": "(", "min": 1, "foo": 2}},
        {"name": "l", "type": "list", "validation": {"minLength": 3, "maxLength": 2}},
        {"name": "loop", "type": "text"},
        {"name": "e", "type": "number", "validation": {"enum": [1, "2"], "required": "yes"}},
        {"name": "d", "type": "text", "description": 5},
    ])
    assert [(e.field, e.message) for e in errors] == [
        ("variables[1].name", "'ok' is defined twice"),
        ("variables[2].extra", "unknown property; expected one of defaultValue, description, "
                               "name, type, validation"),
        ("variables[2].name", "must be a name usable in a template: letters, digits, _ or $, "
                              "not starting with a digit"),
        ("variables[2].type", "must be one of text, number, boolean, color, image, date, list, "
                              "object"),
        ("variables[3].defaultValue", "must be a number"),
        ("variables[4].validation.foo", "unknown rule; expected one of required, minLength, "
                                        "maxLength, min, max, pattern, enum"),
        ("variables[4].validation.min", "applies only to number variables"),
        ("variables[4].validation.pattern",
         "is not a regular expression RE2 accepts: missing ): ( (backreferences and "
         "lookaround are not supported)"),
        ("variables[5].validation.minLength", "must not be greater than maxLength"),
        ("variables[6].name", "'loop' is reserved by the template language"),
        ("variables[7].validation.required", "must be true or false"),
        ("variables[7].validation.enum[1]", "must be a number"),
        ("variables[8].description", "must be text"),
    ]


@pytest.mark.parametrize(("definition", "field", "message"), [
    ({"type": "text", "defaultValue": "x" * 5, "validation": {"maxLength": 3}},
     "defaultValue", "must be at most 3 characters"),
    ({"type": "color", "defaultValue": "#12"}, "defaultValue", "must be a color"),
    ({"type": "image", "defaultValue": "ftp://x/y.png"}, "defaultValue", "http(s) URL"),
    ({"type": "number", "validation": {"min": 5, "max": 1}}, "validation.min",
     "must not be greater than max"),
    ({"type": "number", "validation": {"min": "1"}}, "validation.min", "must be a number"),
    ({"type": "number", "validation": {"maxLength": 3}}, "validation.maxLength",
     "does not apply to number variables"),
    ({"type": "text", "validation": {"maxLength": -1}}, "validation.maxLength",
     "must be a whole number, 0 or more"),
    ({"type": "boolean", "validation": {"pattern": "x"}}, "validation.pattern",
     "does not apply to boolean variables"),
    ({"type": "text", "validation": {"pattern": r"(a)\1"}}, "validation.pattern",
     "invalid escape sequence: \\1"),
    ({"type": "text", "validation": {"pattern": "(?=a)a"}}, "validation.pattern",
     "invalid perl operator: (?="),
    ({"type": "text", "validation": {"pattern": "(?<!a)b"}}, "validation.pattern",
     "invalid perl operator"),
    ({"type": "text", "validation": {"pattern": "a++"}}, "validation.pattern",
     "bad repetition operator"),
    ({"type": "text", "validation": {"pattern": "a{1001}"}}, "validation.pattern",
     "invalid repetition size"),
    ({"type": "text", "validation": {"pattern": "((((a{100}){100}){100}){100})"}},
     "validation.pattern", "RE2 accepts"),
    ({"type": "text", "validation": {"pattern": "x" * 501}}, "validation.pattern",
     "at most 500 characters"),
    ({"type": "text", "validation": {"enum": []}}, "validation.enum", "non-empty array"),
    ({"type": "text", "validation": []}, "validation", "must be an object"),
    ({"type": "date", "defaultValue": "tomorrow"}, "defaultValue", "ISO-8601"),
])
def test_definition_problems(definition: dict[str, Any], field: str, message: str) -> None:
    [error] = definition_errors([{"name": "v", **definition}])
    assert error.field == f"variables[0].{field}"
    assert message in error.message


def test_apply_fills_defaults_and_passes_unknown_variables_through() -> None:
    definitions = parse_definitions([
        {"name": "title", "type": "text", "defaultValue": "Hello"},
        {"name": "count", "type": "number", "defaultValue": 3},
        {"name": "tags", "type": "list"},
    ])
    variables = {"count": 0, "extra": {"anything": [1]}}
    assert apply_definitions(definitions, variables) == {
        "title": "Hello", "count": 0, "extra": {"anything": [1]},
    }
    assert variables == {"count": 0, "extra": {"anything": [1]}}
    assert apply_definitions(definitions, {"title": None})["title"] == "Hello"


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("text", ["", "x"], [1, None if False else [], True]),
    ("number", [0, -1.5, 10**6], ["1", True, float("inf")]),
    ("boolean", [True, False], [0, "true"]),
    ("color", ["#abc", "#ABCD", "#a1b2c3", "#a1b2c3d4", "rgb(1, 2, 3)", "rgba(0 0 0 / 50%)",
               "hsl(120deg, 50%, 50%)", "hsla(1,2%,3%,0.5)", "red", "RebeccaPurple"],
     ["#ab", "#abcde", "blue!", "rgb(1,2,3", "url(x)", "", 3, "var(--x)"]),
    ("image", ["https://example.com/a.png", "http://cdn.example.com/x?y=1"],
     ["ftp://x.com/a.png", "/relative.png", "https:///nohost", "https://a b.com/x", 5,
      "javascript:alert(1)"]),
    ("date", ["2024-03-15", "2024-03-15T09:30:00Z", 1700000000, 1.5],
     ["15/03/2024", "soon", True, [2024]]),
    ("list", [[], [1, "a"]], [{}, "a,b"]),
    ("object", [{}, {"a": 1}], [[], "{}"]),
])
def test_types(kind: str, good: list[Any], bad: list[Any]) -> None:
    definitions = parse_definitions([{"name": "v", "type": kind}])
    for value in good:
        assert apply_definitions(definitions, {"v": value}) == {"v": value}
    for value in bad:
        with pytest.raises(InvalidArgument) as caught:
            apply_definitions(definitions, {"v": value})
        [error] = caught.value.errors
        assert error.field == "v", value


def test_apply_reports_every_offending_variable() -> None:
    errors = variable_errors(
        [
            {"name": "title", "type": "text", "validation": {"required": True, "maxLength": 5}},
            {"name": "subtitle", "type": "text", "validation": {"required": True}},
            {"name": "score", "type": "number", "validation": {"min": 0, "max": 10}},
            {"name": "size", "type": "text", "validation": {"enum": ["S", "M"]}},
            {"name": "code", "type": "text", "validation": {"pattern": "[A-Z]{3}",
                                                            "minLength": 3}},
            {"name": "tags", "type": "list", "validation": {"minLength": 1, "maxLength": 2}},
            {"name": "empty", "type": "text", "validation": {"required": True}},
            {"name": "flag", "type": "boolean"},
        ],
        {"title": "Too long!", "score": 11, "size": "XL", "code": "ab", "tags": [1, 2, 3],
         "empty": "", "flag": "yes"},
    )
    assert [(e.field, e.message) for e in errors] == [
        ("title", "must be at most 5 characters"),
        ("subtitle", "is required"),
        ("score", "must be at most 10"),
        ("size", "must be one of 'S', 'M'"),
        ("code", "must be at least 3 characters"),
        ("code", "must match the pattern [A-Z]{3}"),
        ("tags", "must be at most 2 items"),
        ("empty", "is required"),
        ("flag", "must be true or false"),
    ]


def test_enum_compares_by_kind() -> None:
    definitions = parse_definitions([{"name": "n", "type": "number",
                                      "validation": {"enum": [1, 2]}}])
    assert apply_definitions(definitions, {"n": 1.0}) == {"n": 1.0}
    with pytest.raises(InvalidArgument):
        apply_definitions(definitions, {"n": 3})


def test_pattern_uses_fullmatch() -> None:
    definitions = parse_definitions([{"name": "c", "type": "text",
                                      "validation": {"pattern": "[a-z]+"}}])
    assert apply_definitions(definitions, {"c": "abc"}) == {"c": "abc"}
    with pytest.raises(InvalidArgument):
        apply_definitions(definitions, {"c": "abc1"})


def test_pattern_input_is_bounded() -> None:
    definitions = parse_definitions([{"name": "c", "type": "text",
                                      "validation": {"pattern": "a*b?"}}])
    assert apply_definitions(definitions, {"c": "a" * 10_000}) == {"c": "a" * 10_000}
    with pytest.raises(InvalidArgument) as caught:
        apply_definitions(definitions, {"c": "a" * 10_001})
    assert caught.value.errors[0].message == (
        "is longer than the 10000 characters a pattern is checked against "
        "(setting LITHO_TEMPLATE_MAX_PATTERN_INPUT)"
    )
    assert apply_definitions(definitions, {"c": "a" * 20}, max_pattern_input=20)
    with pytest.raises(InvalidArgument):
        apply_definitions(definitions, {"c": "a" * 21}, max_pattern_input=20)


@pytest.mark.parametrize("pattern", [
    r"\w*\w*\w*\w*\w*\w*!", r"\w*\w*\w*\w*!", r"(a+)+$", r"(a*)*b", r"(a|a)*c",
    r"(\w+\s?)+$", r"(x+x+)+y", r"^(([a-z])+.)+[A-Z]([a-z])+$", r"(.*a){12}",
])
def test_patterns_that_backtrack_in_python_match_in_linear_time(pattern: str) -> None:
    # Each of these takes Python's backtracking `re` seconds to ages on this
    # input; RE2 answers in microseconds. The time bound is only a backstop
    # (catastrophic backtracking would not finish at all): what is checked is
    # that the pattern is accepted and the hostile value refused.
    definitions = parse_definitions([
        {"name": "v", "type": "text", "validation": {"pattern": pattern}},
    ])
    hostile = "a" * 9_999 + "\u2603"  # a snowman: no pattern here ends with one
    start = time.perf_counter()
    errors = []
    for _ in range(20):
        with pytest.raises(InvalidArgument) as caught:
            apply_definitions(definitions, {"v": hostile})
        errors = caught.value.errors
    assert time.perf_counter() - start < 30
    assert [e.field for e in errors] == ["v"]
    assert errors[0].message == f"must match the pattern {pattern}"


def test_patterns_match_as_before() -> None:
    definitions = parse_definitions([
        {"name": "slug", "type": "text", "validation": {"pattern": r"[a-z0-9]+(?:-[a-z0-9]+)*"}},
        {"name": "mail", "type": "text", "validation": {"pattern": r"\w+@\w+\.\w+"}},
        {"name": "greek", "type": "text", "validation": {"pattern": r"\p{Greek}+"}},
    ])
    ok = {"slug": "a-b-c", "mail": "a@b.io", "greek": "αβγ"}
    assert apply_definitions(definitions, ok) == ok
    bad = {"slug": "a--b", "mail": "a@b", "greek": "abc"}
    errors = variable_errors([d.to_json() for d in definitions], bad)
    assert [e.field for e in errors] == ["slug", "mail", "greek"]


def test_a_saved_pattern_reads_back_as_written() -> None:
    [definition] = parse_definitions([
        {"name": "v", "type": "text", "validation": {"pattern": r"\d{3}-\d{4}"}},
    ])
    assert definition.to_json()["validation"] == {"pattern": r"\d{3}-\d{4}"}


def test_coerce_strings_converts_query_text_to_defined_types() -> None:
    from services.template._variables import coerce_strings, parse_definitions

    defs = parse_definitions([
        {"name": "n", "type": "number"}, {"name": "f", "type": "number"},
        {"name": "b", "type": "boolean"}, {"name": "l", "type": "list"},
        {"name": "o", "type": "object"}, {"name": "t", "type": "text"},
        {"name": "bad", "type": "number"},
    ])
    out = coerce_strings(defs, {"n": "49", "f": "4.5", "b": "true", "l": "[1,2]",
                                "o": '{"a":1}', "t": "007", "bad": "lots", "free": "x"},
                         JsonLimits())
    assert out == {"n": 49, "f": 4.5, "b": True, "l": [1, 2], "o": {"a": 1}, "t": "007",
                   "bad": "lots", "free": "x"}


@pytest.mark.parametrize(("name", "text", "field", "message"), [
    ("items", '["\\ud800"]', "items/0", "not valid Unicode"),
    ("items", "[" * 3000 + "]" * 3000, "items/0/0/0", "nested more than 3 levels"),
    ("items", "[" + "1" * 4000 + "]", "items/0", "LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS"),
    ("doc", '{"a": 1e400}', "doc/a", "LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS"),
    ("n", "9" * 300, "n", "longer than 32 characters"),
])
def test_query_text_is_held_to_the_json_limits(
    name: str, text: str, field: str, message: str,
) -> None:
    # Values from a signed URL's query arrive as text and are parsed here, so
    # they meet the same limits as JSON bodies: a 422 naming the variable.
    defs = parse_definitions([{"name": "items", "type": "list"}, {"name": "doc", "type": "object"},
                              {"name": "n", "type": "number"}])
    limits = JsonLimits(max_depth=3, number_setting="LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS")
    with pytest.raises(InvalidArgument) as caught:
        coerce_strings(defs, {name: text}, limits)
    [error] = caught.value.errors
    assert error.field == field
    assert message in error.message


def test_query_text_that_is_not_json_is_left_for_the_type_check() -> None:
    defs = parse_definitions([{"name": "items", "type": "list"}])
    assert coerce_strings(defs, {"items": "[1,"}, JsonLimits()) == {"items": "[1,"}


@pytest.mark.parametrize("pattern", [
    r"(?:.{0,999}a.{0,999}b)*", r"[\p{L}\p{N} ]{1,50}", r"(?:\pL|\pN){0,400}",
])
def test_patterns_too_costly_to_compile_or_match_are_refused_on_save(pattern: str) -> None:
    [error] = definition_errors([{"name": "v", "type": "text",
                                  "validation": {"pattern": pattern}}])
    assert error.field == "variables[0].validation.pattern"
    assert "pattern too" in error.message  # "too complex" or RE2's "too large"


def test_pattern_matching_per_render_is_bounded_by_work() -> None:
    # Each value costs its length × the pattern's program size; RE2's NFA
    # takes a few ns for each, so the budget bounds the time.
    definitions = parse_definitions([
        {"name": f"v{i}", "type": "text", "validation": {"pattern": r"(?:.{0,200}a.{0,200}b)*"}}
        for i in range(3)
    ])
    size = definitions[0].validation.pattern.size if definitions[0].validation.pattern else 0
    assert size > 1000
    values = {f"v{i}": "ab" * 2000 for i in range(3)}
    budget = 2 * 4000 * size  # two of the three values
    with pytest.raises(InvalidArgument) as caught:
        apply_definitions(definitions, values, max_pattern_work=budget)
    [error] = caught.value.errors
    assert error.field == "v2"
    assert "LITHO_TEMPLATE_MAX_PATTERN_WORK" in error.message
    assert apply_definitions(definitions, values, max_pattern_work=3 * 4000 * size) == values


def test_query_text_takes_the_type_of_its_sample_unless_defined() -> None:
    from services.template._variables import coerce_like_samples

    samples = {"featured": True, "price": 49, "tags": ["a"], "title": "x",
               "user": {"age": 30, "name": "Ada", "vip": False}, "defined": 1}
    query = {"featured": "false", "price": "12.5", "tags": '["b", "c"]', "title": "true",
             "user": {"age": "36", "name": "Bo", "vip": "yes"}, "defined": "7",
             "extra": "false"}
    out = coerce_like_samples(samples, query, {"defined"}, JsonLimits())
    assert out == {"featured": False, "price": 12.5, "tags": ["b", "c"], "title": "true",
                   "user": {"age": 36, "name": "Bo", "vip": True},
                   "defined": "7",  # its definition converts it
                   "extra": "false"}  # no sample, no definition: text
    # Text that does not read as the sample's type stays text.
    assert coerce_like_samples({"n": 1}, {"n": "many"}, (), JsonLimits()) == {"n": "many"}
    with pytest.raises(InvalidArgument):  # the JSON limits still hold
        coerce_like_samples({"l": []}, {"l": "[" * 100 + "]" * 100}, (), JsonLimits())
