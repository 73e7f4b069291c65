"""Errors say what and where: every problem at check time, the failing tag at render time."""

from __future__ import annotations

from typing import Any

import pytest

from litho.errors import FieldError, InvalidArgument
from services.template._lang import Engine, Limits

ENGINE = Engine()


def messages(source: str, engine: Engine = ENGINE) -> list[str]:
    errors = engine.check(source)
    assert all(e.field == "html" for e in errors)
    return [e.message for e in errors]


def test_a_valid_template_has_no_problems() -> None:
    assert messages("<p>{{ if a }}{{ for x in a }}{{ x | uppercase }}{{ end }}{{ end }}</p>") == []


def test_the_issue_example() -> None:
    source = "\n" * 11 + "<p>Price: {{ curency(price) }}</p>"
    assert messages(source) == [
        "line 12, column 14: unknown function 'curency' (did you mean 'currency'?)",
    ]


def test_check_reports_every_problem_in_source_order() -> None:
    source = (
        "{{ name | uppercse }}\n"        # unknown filter
        "{{ 1 + }}\n"                    # syntax error
        "{{ end }}\n"                    # end without a block
        "{{ for x xs }}{{ end }}\n"      # missing 'in'
        "{{ truncate(a) }} {{ if }}\n"   # arity, empty condition
        "{{ else }}{{ else }}{{ end }}"  # else after else
    )
    assert messages(source) == [
        "line 1, column 11: unknown filter 'uppercse' (did you mean 'uppercase'?)",
        "line 2, column 8: expected an expression, found '}}'",
        "line 3, column 4: 'end' without an open 'if' or 'for'",
        "line 4, column 10: expected 'in' after the loop variable, found 'xs'",
        "line 5, column 4: function 'truncate' takes 2 to 3 arguments "
        "(truncate(text, length, suffix = '…')), got 1",
        "line 5, column 22: 'if' needs a condition",
        "line 6, column 14: this 'if' already has an 'else'",
    ]


@pytest.mark.parametrize(("source", "message"), [
    ("{{ }}", "line 1, column 1: empty tag"),
    ("a {{ b", "line 1, column 3: unterminated tag: '{{' has no closing '}}'"),
    ("{{ 'abc }}", "line 1, column 4: unterminated string: no closing '"),
    ("{{ if a }}", "line 1, column 4: this 'if' is never closed with {{ end }}"),
    ("{{ for a in b }}", "line 1, column 4: this 'for' is never closed with {{ end }}"),
    ("{{ else }}", "line 1, column 4: 'else' without an open 'if' or 'for'"),
    ("{{ for a in b }}{{ else if c }}{{ end }}", "'else if' belongs to an 'if', not a 'for'"),
    ("{{ if a }}{{ else x }}{{ end }}", "line 1, column 19: expected '}}' or 'if' after 'else'"),
    ("{{ if a }}{{ end if }}", "line 1, column 18: expected '}}' after 'end', found 'if'"),
    ("{{ endfor }}", "unknown tag 'endfor': close a block with {{ end }}"),
    ("{{ elif x }}", "line 1, column 9: unexpected 'x' after the expression"),
    ("{{ elseif }}", "unknown tag 'elseif': write {{ else if condition }}"),
    ("{{ for loop in xs }}{{ end }}", "'loop' is reserved"),
    ("{{ for a, a in xs }}{{ end }}", "'a' is used twice"),
    ("{{ for in xs }}{{ end }}", "expected a loop variable name"),
    ("{{ for a, b, c in xs }}{{ end }}", "expected 'in' after the loop variable, found ','"),
    ("{{ for a in }}{{ end }}", "'in' needs something to loop over"),
    ("{{ for x in xs }}{{ x(1) }}{{ end }}", "'x' is a loop variable, not a function"),
    ("{{ a {{ b }}", "line 1, column 6: unexpected '{'"),
])
def test_problems(source: str, message: str) -> None:
    found = messages(source)
    assert any(message in m for m in found), found


def test_a_broken_tag_does_not_hide_the_next() -> None:
    found = messages("{{ 'open }} {{ zzz(1) }} {{ a b }}")
    assert found == [
        "line 1, column 4: unterminated string: no closing '",
        "line 1, column 16: unknown function 'zzz'",
        "line 1, column 31: unexpected 'b' after the expression",
    ]


def test_columns_count_characters_not_bytes() -> None:
    assert messages("é€😀 {{ zzz() }}") == ["line 1, column 8: unknown function 'zzz'"]


def test_errors_beyond_the_cap_are_summarised() -> None:
    engine = Engine(Limits(max_errors=3))
    found = messages("{{ a b }}" * 5, engine)
    assert len(found) == 4
    assert found[-1] == ("2 more problems are not shown "
                         "(limit 3, setting LITHO_TEMPLATE_MAX_ERRORS)")


def test_compile_raises_with_every_error() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ENGINE.compile("{{ zzz() }} {{ a b }}")
    assert caught.value.message == "the template has errors"
    assert [e.field for e in caught.value.errors] == ["html", "html"]


@pytest.mark.parametrize(("source", "variables", "message"), [
    ("x\n  {{ a / b }}", {"a": 1, "b": 0},
     "line 2, column 8: division by zero: the number 1 / the number 0"),
    ("{{ a % 0 }}", {"a": 1}, "line 1, column 6: division by zero: the number 1 % the number 0"),
    ("{{ 'a' * 2 }}", {},
     "line 1, column 8: cannot apply '*' to the string \"a\" and the number 2"),
    ("{{ -[1] }}", {}, "line 1, column 4: cannot negate an array"),
    ("{{ if round(x) }}{{ end }}", {"x": "?"},
     "line 1, column 7: round: expected a number, got the string \"?\""),
    ("{{ for x in xs }}\n{{ x | currency }}{{ end }}", {"xs": [1, "z"]},
     "line 2, column 8: currency: expected a number, got the string \"z\""),
    ("{{ [1] + 1 }}", {}, "line 1, column 8: cannot apply '+' to an array and the number 1"),
])
def test_evaluation_errors_name_the_line_and_column(source: str, variables: dict[str, Any],
                                                     message: str) -> None:
    template = ENGINE.compile(source)
    with pytest.raises(InvalidArgument) as caught:
        template.render(variables, max_output=1000)
    assert caught.value.message == message
    assert caught.value.errors == [FieldError("html", message)]


def test_expression_errors_use_the_expression_field() -> None:
    assert ENGINE.validate_expression("a +") == [
        FieldError("expression", "line 1, column 4: expected an expression, "
                                 "found the end of the expression"),
    ]
    assert ENGINE.validate_expression("") == [
        FieldError("expression", "line 1, column 1: the expression is empty"),
    ]
    assert ENGINE.validate_expression("{{ a }}")[0].message.startswith(
        "line 1, column 1: unexpected '{'")
    with pytest.raises(InvalidArgument) as caught:
        ENGINE.evaluate_expression("1 / x", {"x": 0})
    assert caught.value.errors == [
        FieldError("expression", "line 1, column 3: division by zero: the number 1 / the number 0"),
    ]


@pytest.mark.parametrize(("source", "expected"), [
    ("{{#if featured}}x{{/if}}", ["{{#if x}} is {{ if x }} … {{ end }} in Litho",
                                  "{{/if}} and {{/each}} are {{ end }} in Litho"]),
    ("{{#each items}}{{this}}{{/each}}", ["is {{ for item in items }} … {{ end }}",
                                          "are {{ end }} in Litho"]),
    ("{{{ body }}}", ["{{{ html }}} is {{ raw html }} in Litho"]),
    ("{{> header}}", ["Litho has no partials"]),
    ("{% if featured %}x{% endif %}", ["{% if x %} is {{ if x }} in Litho",
                                       "{% endif %} is {{ end }} in Litho"]),
    ("{%- for p in products -%}{{ p }}{% endfor %}",
     ["is {{ for item in items }} in Litho", "{% endfor %} is {{ end }}"]),
    ("{% assign x = 1 %}", ["Litho has no assignments"]),
    ("{{!-- note --}}", ["use an HTML comment"]),
])
def test_tags_of_other_template_languages_show_the_litho_equivalent(
        source: str, expected: list[str]) -> None:
    errors = Engine().check(source)
    assert len(errors) == len(expected)
    for error, text in zip(errors, expected, strict=True):
        assert error.field == "html" and text in error.message, error.message


@pytest.mark.parametrize("source", [
    "width: 100%; {% not a known tag %}", "{{ '{% if x %}' }}", "{{ '{{' }}", "50% {%",
    "{{ !a }}", "{{!a}}",
])
def test_text_that_only_looks_foreign_is_not_an_error(source: str) -> None:
    assert Engine().check(source) == []


def test_liquid_text_in_a_stored_template_still_renders_as_written() -> None:
    """Refused on save (check), but not an error of the language: a template
    stored before the check keeps rendering."""
    source = "<pre>{% if user %}Hi{% endif %}</pre>"
    compiled = Engine().compile(source)
    assert compiled.render({}, max_output=1000) == source
    assert [e.field for e in compiled.foreign_tags] == ["html", "html"]
    assert len(Engine().check(source)) == 2


def test_at_most_twenty_foreign_tags_are_reported() -> None:
    assert len(Engine().check("{% if x %}" * 100)) == 20
