"""Each limit stops a render with an error naming the limit and its setting."""

from __future__ import annotations

from typing import Any

import pytest

from litho.errors import InvalidArgument
from services.template._lang import Engine, Limits


def render(source: str, limits: Limits | None = None, max_output: int = 1 << 20,
           **variables: Any) -> str:
    return Engine(limits).compile(source).render(variables, max_output=max_output)


def refused(setting: str, source: str, limits: Limits | None = None,
            max_output: int = 1 << 20, **variables: Any) -> str:
    with pytest.raises(InvalidArgument) as caught:
        render(source, limits, max_output, **variables)
    assert f"setting {setting})" in caught.value.message, caught.value.message
    return caught.value.message


def test_template_size() -> None:
    limits = Limits(max_template_bytes=10)
    assert Engine(limits).check("é" * 5) == []
    [error] = Engine(limits).check("é" * 6)
    assert error.message == ("the template is too large "
                             "(limit 10, setting LITHO_TEMPLATE_MAX_HTML_BYTES)")
    with pytest.raises(InvalidArgument, match="LITHO_TEMPLATE_MAX_HTML_BYTES"):
        Engine(limits).compile("x" * 11)
    assert Engine(limits).validate_expression("1 + 1 + 1 + 1")[0].message.startswith(
        "the expression is too large")


def test_output_size_is_counted_while_rendering() -> None:
    assert render("{{ for x in xs }}ab{{ end }}", max_output=6, xs=[1, 2, 3]) == "ababab"
    message = refused("LITHO_TEMPLATE_MAX_OUTPUT_BYTES", "{{ for x in xs }}ab{{ end }}",
                      max_output=5, xs=[1, 2, 3])
    assert message == ("the expanded document would be too large "
                       "(limit 5, setting LITHO_TEMPLATE_MAX_OUTPUT_BYTES)")


def test_loop_iterations_count_across_the_render() -> None:
    limits = Limits(max_loop_iterations=6)
    assert render("{{ for x in xs }}{{ for y in xs }}.{{ end }}{{ end }}", limits,
                  xs=[1, 2]) == "...."
    message = refused("LITHO_TEMPLATE_MAX_LOOP_ITERATIONS",
                      "{{ for x in xs }}{{ for y in xs }}.{{ end }}{{ end }}", limits,
                      xs=[1, 2, 3])
    assert message.startswith("line 1, column 21: the template's loops run too many iterations")
    refused("LITHO_TEMPLATE_MAX_LOOP_ITERATIONS", "{{ for x in a }}{{ end }}{{ for x in a }}"
            "{{ end }}", limits, a=[1, 2, 3, 4])


def test_a_loop_over_too_many_items_stops_before_its_first_iteration() -> None:
    with pytest.raises(InvalidArgument):
        render("{{ for x in xs }}{{ x }}{{ end }}", Limits(max_loop_iterations=5),
               max_output=1, xs=list(range(6)))


def test_steps() -> None:
    limits = Limits(max_steps=10)
    assert render("{{ 1 + 2 + 3 + 4 }}", limits) == "10"
    message = refused("LITHO_TEMPLATE_MAX_STEPS", "{{ 1 + 2 + 3 + 4 + 5 + 6 }}", limits)
    assert message.startswith("line 1, column ")


def test_functions_pay_steps_for_the_data_they_touch() -> None:
    limits = Limits(max_steps=1000)
    refused("LITHO_TEMPLATE_MAX_STEPS", "{{ length(xs) }}", limits, xs=list(range(2000)))
    refused("LITHO_TEMPLATE_MAX_STEPS", "{{ length(s) }}", limits, s="x" * 1024 * 1001)
    refused("LITHO_TEMPLATE_MAX_STEPS", "{{ s == t }}", limits, s="x" * 1024 * 1001,
            t="x" * 1024 * 1001)


def test_string_length_is_checked_before_building() -> None:
    limits = Limits(max_string_length=10)
    assert render("{{ padStart('x', 10) }}", limits) == " " * 9 + "x"
    for source in ["{{ padStart('x', 11) }}", "{{ padEnd('x', 1e12) }}",
                   "{{ 'abcdef' + 'ghijk' }}", "{{ replace('aaaaa', 'a', 'bbb') }}",
                   "{{ join(['abcdef', 'ghij']) }}", "{{ json(['abcdefghij']) }}",
                   "{{ [1, 2, 3, 4, 5, 6] }}", "{{ uppercase('ßßßßßß') }}",
                   "{{ 'x' + [1, 2, 3, 4, 5, 6, 7, 8, 9] }}"]:
        refused("LITHO_TEMPLATE_MAX_STRING_LENGTH", source, limits)


def test_array_length() -> None:
    limits = Limits(max_array_length=3)
    assert render("{{ split('a,b,c', ',') | join: '' }}", limits) == "abc"
    refused("LITHO_TEMPLATE_MAX_ARRAY_LENGTH", "{{ split('a,b,c,d', ',') }}", limits)
    refused("LITHO_TEMPLATE_MAX_ARRAY_LENGTH", "{{ split('abcd', '') }}", limits)
    refused("LITHO_TEMPLATE_MAX_ARRAY_LENGTH", "{{ [1, 2, 3, 4] }}", limits)


def test_depth_applies_to_blocks_too() -> None:
    limits = Limits(max_depth=3)
    assert Engine(limits).check("{{ if a }}" * 3 + "{{ end }}" * 3) == []
    errors = Engine(limits).check("{{ if a }}" * 5 + "{{ end }}" * 5)
    assert [e.message for e in errors] == [
        "line 1, column 34: blocks are nested too deeply "
        "(limit 3, setting LITHO_TEMPLATE_MAX_DEPTH)",
    ]
