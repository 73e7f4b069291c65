"""Templates written to hurt: each must end with a clear error (or a harmless result).

What each test checks is the error raised, which names the limit that stopped
the work: steps, iterations, depth, sizes. The wall-clock bound is only a
backstop against a hang (exponential work would never finish); it is far
above what any of these takes even on a loaded machine, so it cannot fail
because the machine is slow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from litho.errors import InvalidArgument
from services.template._lang import Engine, Limits

ENGINE = Engine()
MAX_OUTPUT = 2 * 1024 * 1024


#: Seconds; a backstop against a hang, never a measure of speed.
BACKSTOP = 60.0


@contextmanager
def quickly(seconds: float = BACKSTOP) -> Iterator[None]:
    start = time.perf_counter()
    yield
    assert time.perf_counter() - start < seconds


def render(source: str, engine: Engine = ENGINE, **variables: Any) -> str:
    return engine.compile(source).render(variables, max_output=MAX_OUTPUT)


def refused(match: str, action: Callable[[], object]) -> InvalidArgument:
    with quickly(), pytest.raises(InvalidArgument) as caught:
        action()
    text = " ".join([caught.value.message, *(e.message for e in caught.value.errors)])
    assert match in text, text
    return caught.value


def check_refused(match: str, source: str, engine: Engine = ENGINE) -> None:
    with quickly():
        errors = engine.check(source)
    assert any(match in e.message for e in errors), errors


# nesting

@pytest.mark.parametrize("depth", [100, 100_000])
@pytest.mark.parametrize(("opener", "closer"), [("(", ")"), ("[", "]"), ("f(", ")")])
def test_deep_parentheses_and_brackets(depth: int, opener: str, closer: str) -> None:
    expression = opener * depth + "1" + closer * depth
    check_refused("LITHO_TEMPLATE_MAX_DEPTH", "{{ " + expression + " }}")
    with quickly():
        errors = ENGINE.validate_expression(expression)
    assert "nested too deeply" in errors[0].message


@pytest.mark.parametrize("expression", [
    "!" * 100_000 + "x", "-" * 100_000 + "x", "not " * 50_000 + "x",
    "+".join(["1"] * 100_000), "x" + " | trim" * 50_000, "a ? " * 50_000 + "1" + " : 2" * 50_000,
    "x" + ".a" * 100_000, "x" + "[0]" * 100_000,
])
def test_long_operator_chains(expression: str) -> None:
    with quickly():
        errors = ENGINE.validate_expression(expression)
    assert len(errors) == 1
    assert "LITHO_TEMPLATE_MAX_DEPTH" in errors[0].message or "too large" in errors[0].message


def test_deeply_nested_if_blocks() -> None:
    source = "{{ if a }}" * 20_000 + "x" + "{{ end }}" * 20_000
    check_refused("blocks are nested too deeply", source)
    refused("blocks are nested too deeply", lambda: ENGINE.compile(source))


def test_deeply_nested_blocks_past_a_raised_size_limit_still_do_not_recurse() -> None:
    engine = Engine(Limits(max_template_bytes=10**8))
    source = "{{ for a in b }}" * 100_000 + "{{ end }}" * 100_000
    with quickly():
        errors = engine.check(source)
    assert [e.message for e in errors] == [
        "line 1, column 1028: blocks are nested too deeply "
        "(limit 64, setting LITHO_TEMPLATE_MAX_DEPTH)",
    ]


def test_unclosed_blocks_are_reported_once_each_and_capped() -> None:
    with quickly():
        errors = ENGINE.check("{{ if a }}" * 5000)
    assert len(errors) == 101
    assert "more problems are not shown" in errors[-1].message


def test_deeply_nested_variables() -> None:
    deep = json.loads("[" * 900 + "]" * 900)
    other = json.loads("[" * 900 + "]" * 900)
    assert render("{{ length(json(x)) }}", x=deep) == "1800"
    # Equality walks without recursion, so depth is no obstacle (the edge
    # bounds the depth of what is accepted; see LITHO_*_MAX_JSON_DEPTH).
    assert render("{{ x == y }}|{{ contains([x], y) }}", x=deep, y=other) == "true|true"
    assert render("{{ x == y }}", x=deep, y=json.loads("[" * 899 + "1" + "]" * 899)) == "false"


# loops

def test_huge_loop() -> None:
    refused("LITHO_TEMPLATE_MAX_LOOP_ITERATIONS",
            lambda: render("{{ for x in xs }}{{ x }}{{ end }}", xs=list(range(100_000))))


def test_nested_loops_multiplying() -> None:
    source = ("{{ for a in xs }}{{ for b in xs }}{{ for c in xs }}{{ for d in xs }}"
              ".{{ end }}{{ end }}{{ end }}{{ end }}")
    refused("LITHO_TEMPLATE_MAX_LOOP_ITERATIONS", lambda: render(source, xs=list(range(100))))


def test_quadratic_work_inside_allowed_loops_runs_out_of_steps() -> None:
    engine = Engine(Limits(max_loop_iterations=10**7))
    source = ("{{ for a in xs }}{{ for b in xs }}{{ if a == b && contains(xs, a) }}"
              "{{ end }}{{ end }}{{ end }}")
    refused("LITHO_TEMPLATE_MAX_STEPS", lambda: render(source, engine, xs=list(range(3000))))


# lookups into the host

@pytest.mark.parametrize("path", [
    "x.__class__", "x.__class__.__mro__", "x.__globals__", "x.__dict__", "x.__init__",
    "x.constructor", "x.__proto__", "x.prototype", "x['__class__']", "x['__proto__']",
    "s.__class__", "s.upper", "s.format", "n.real", "n.__add__", "xs.append", "xs.__len__",
    "xs['__class__']", "f.__code__", "__builtins__", "__import__", "globals", "self",
])
def test_host_attributes_are_unreachable(path: str) -> None:
    variables: dict[str, Any] = {"x": {}, "s": "text", "n": 5, "xs": [1],
                                 "f": {"__code__": None}}
    assert render("[{{ " + path + " }}]", **variables) == "[]"


def test_names_of_python_builtins_are_not_functions() -> None:
    for name in ("eval", "exec", "open", "__import__", "getattr", "compile", "print"):
        check_refused(f"unknown function '{name}'", "{{ " + name + "('1') }}")


def test_host_objects_in_variables_behave_as_null() -> None:
    class Secret:
        token = "s3cret"

        def __str__(self) -> str:
            return self.token

    out = render("[{{ o }}{{ o.token }}{{ o['token'] }}{{ json(o) }}{{ [o] }}]", o=Secret())
    assert out == "[null[null]]"
    assert "s3cret" not in out


# size

def test_giant_padding() -> None:
    refused("LITHO_TEMPLATE_MAX_STRING_LENGTH", lambda: render("{{ 'x' | padStart: 1e12 }}"))
    refused("LITHO_TEMPLATE_MAX_STRING_LENGTH",
            lambda: render("{{ padEnd('', 9007199254740991, 'ab') }}"))


def test_repeated_concatenation_in_loops() -> None:
    source = "{{ for a in xs }}{{ if (s + s + s + s) == '' }}{{ end }}{{ end }}"
    refused("LITHO_TEMPLATE_MAX_STRING_LENGTH",
            lambda: render(source, xs=list(range(10_000)), s="x" * 300_000))
    source = "{{ for a in xs }}{{ if (s + s) == t }}{{ end }}{{ end }}"
    refused("LITHO_TEMPLATE_MAX_STEPS",
            lambda: render(source, xs=list(range(10_000)), s="x" * 400_000, t="y" * 800_000))


def test_giant_output() -> None:
    refused("LITHO_TEMPLATE_MAX_OUTPUT_BYTES",
            lambda: render("{{ for a in xs }}{{ s }}{{ end }}", xs=list(range(10_000)),
                           s="x" * 100_000))


def test_many_references_to_one_big_string() -> None:
    refused("LITHO_TEMPLATE_MAX_STRING_LENGTH",
            lambda: render("{{ json([s, s, s, s, s, s, s, s, s, s]) }}", s="x" * 200_000))
    refused("LITHO_TEMPLATE_MAX_STRING_LENGTH",
            lambda: render("{{ [s, s, s, s, s, s, s, s, s, s] | join }}", s="x" * 200_000))
    refused("LITHO_TEMPLATE_MAX_ARRAY_LENGTH",
            lambda: render("{{ split(padStart('', 900000, 'a,'), ',') }}"))


def test_replace_that_would_explode() -> None:
    refused("LITHO_TEMPLATE_MAX_STRING_LENGTH",
            lambda: render("{{ replace(s, '', s) }}", s="x" * 5000))


def test_very_long_template() -> None:
    check_refused("LITHO_TEMPLATE_MAX_HTML_BYTES", "x" * (600 * 1024))
    source = ("<div class='row'>" + "x" * 40 + "{{ a }}</div>\n") * 7_000
    assert len(source) < 512 * 1024
    with quickly():
        assert len(render(source, a="é")) == len(source) - 7_000 * len("{{ a }}") + 7_000


def test_many_tiny_tags() -> None:
    with quickly():
        assert render("{{ a }}" * 20_000, a="") == ""


def test_many_tokens_in_one_tag() -> None:
    source = "{{ " + " + ".join(["a"] * 60) + " }}"
    assert render(source, a=1) == "60"
    with quickly():
        errors = ENGINE.check("{{ " + "1 " * 200_000 + "}}")
    assert "unexpected the number 1 after the expression" in errors[0].message


# numbers

@pytest.mark.parametrize(("expression", "message"), [
    ("1e308 * 10", "too large to represent"),
    ("-1e308 - 1e308", "too large to represent"),
    ("1e308 / 1e-308", "too large to represent"),
    ("big * big", "too large"),
    ("x + 1", "too large"),
])
def test_huge_numbers(expression: str, message: str) -> None:
    variables = {"big": 10**4000, "x": float("inf")}
    refused(message, lambda: ENGINE.evaluate_expression(expression, variables))


def test_infinity_from_variables_renders_sensibly_and_does_not_format() -> None:
    assert render("{{ x }} {{ y }} {{ json(x) }}", x=float("inf"), y=float("-inf")) == (
        "Infinity -Infinity null"
    )
    refused("cannot negate", lambda: render("{{ -x }}", x=float("inf")))
    refused("cannot format", lambda: render("{{ x | currency }}", x=float("inf")))
    refused("expected a finite number", lambda: render("{{ round(x, 2) }}", x=float("nan")))


def test_huge_literals() -> None:
    check_refused("is too large", "{{ 1e999 }}")
    check_refused("is too large", "{{ " + "9" * 400 + " }}")
    assert render("{{ " + "9" * 300 + " > 1 }}") == "true"


# malformed

@pytest.mark.parametrize(("source", "message"), [
    ("{{", "unterminated tag"),
    ("{{ a", "unterminated tag"),
    ("{{ 'abc", "unterminated string"),
    ('{{ "abc }}', "unterminated string"),
    ("{{ a }" * 1000, "a tag ends with '}}'"),
    ("{{ '\\", "unterminated string"),
    ("{{ '\\u{1111111111}' }}", "invalid escape"),
    ("{{ \x00 }}", "unexpected character"),
])
def test_unterminated_and_malformed(source: str, message: str) -> None:
    check_refused(message, source)


def test_regex_free_functions_treat_patterns_as_text() -> None:
    assert render("{{ replace(s, '.*', 'x') }}|{{ split(s, '(a+)+') }}|{{ contains(s, '.') }}",
                  s="a.*b(a+)+c") == "axb(a+)+c|[&quot;a.*b&quot;,&quot;c&quot;]|true"
    with quickly():
        assert render("{{ contains(s, t) }}", s="a" * 100_000, t="a" * 5000 + "b") == "false"


def test_the_deepest_allowed_nesting_stays_inside_pythons_stack() -> None:
    engine = Engine(Limits(max_depth=100))
    expression = "(" * 98 + "-x" + ")" * 98
    calls = "abs(" * 98 + "x" + ")" * 98
    source = "{{ if true }}" * 99 + "{{ " + expression + " }}{{ " + calls + " }}" + "{{ end }}" * 99
    assert render(source, engine, x=2) == "-22"
    assert engine.validate_expression("[" * 99 + "]" * 99) == []


# parseJson: the one way a template can make values the edge never saw

@pytest.mark.parametrize(("text", "message"), [
    ('"\\ud800"', "lone surrogate"),
    ('{"\\udc00": 1}', "lone surrogate"),
    ('["x", ["\\udbff"]]', "lone surrogate"),
    ("1" + "0" * 400, "more than 309 digits"),
    ("[1e999]", "too large to represent"),
])
def test_parse_json_refuses_what_could_not_be_sent_on(text: str, message: str) -> None:
    refused(message, lambda: ENGINE.evaluate_expression("parseJson(t)", {"t": text}))


def test_parse_json_keeps_valid_pairs_and_escaped_backslashes() -> None:
    value = ENGINE.evaluate_expression("parseJson(t)", {"t": '["\\ud83d\\ude00", "a\\\\ud800"]'})
    assert value == ["\U0001F600", "a\\ud800"]


def test_thousands_of_misspellings_get_suggestions_only_for_those_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.template._lang._functions._registry import Registry

    calls = 0
    suggest = Registry.suggest

    def counting(self: Registry, name: str) -> str | None:
        nonlocal calls
        calls += 1
        return suggest(self, name)

    monkeypatch.setattr(Registry, "suggest", counting)
    errors = ENGINE.check("{{ fooo(a) }}" * 5000)
    assert len(errors) == 101
    assert "did you mean 'floor'" in errors[0].message
    assert calls <= 100  # a fuzzy match each, not 5,000
