"""Templates: text, output tags, if and for blocks, escaping."""

from __future__ import annotations

from typing import Any

import pytest

from litho.errors import InvalidArgument
from services.template._lang import Engine

ENGINE = Engine()


def render(source: str, **variables: Any) -> str:
    return ENGINE.compile(source).render(variables, max_output=1 << 20)


def test_text_passes_through_untouched() -> None:
    source = "<style>a{color:red} .x{}</style> } { }} single"
    assert render(source) == source


def test_output_tags_and_whitespace() -> None:
    assert render("a{{x}}b{{  x  }}c{{\n x\n}}d", x=1) == "a1b1c1d"


def test_output_is_html_escaped() -> None:
    assert render("{{ s }}", s="<script>\"&'</script>") == (
        "&lt;script&gt;&quot;&amp;&#x27;&lt;/script&gt;"
    )
    assert render("{{ [s] }}", s="<") == "[&quot;&lt;&quot;]"


@pytest.mark.parametrize("source", ["{{ raw s }}", "{{ s | raw }}", "{{raw s}}",
                                    "{{ raw (s) }}", "{{ s | trim | raw }}"])
def test_raw_opts_out_of_escaping(source: str) -> None:
    assert render(source, s="<b>x</b>") == "<b>x</b>"


def test_raw_as_a_variable_name_still_reads_the_variable() -> None:
    assert render("{{ raw }}|{{ raw.x }}|{{ raw | uppercase }}", raw={"x": "<"}) == (
        "{&quot;x&quot;:&quot;&lt;&quot;}|&lt;|{&quot;X&quot;:&quot;&lt;&quot;}"
    )


@pytest.mark.parametrize("source", [
    "{{ s | raw | trim }}", "{{ (s | raw) }}", "{{ if s | raw }}{{ end }}",
    "{{ for x in s | raw }}{{ end }}", "{{ s | raw: 1 }}", "{{ uppercase((s | raw)) }}",
])
def test_raw_anywhere_else_is_an_error(source: str) -> None:
    assert any("raw" in e.message for e in ENGINE.check(source))


def test_if_else_if_else() -> None:
    source = "{{ if n > 2 }}big{{ else if n > 1 }}mid{{ else if n }}one{{ else }}none{{ end }}"
    assert [render(source, n=n) for n in (3, 2, 1, 0)] == ["big", "mid", "one", "none"]
    assert render("{{ if missing }}x{{ end }}") == ""
    assert render("{{ if a }}A{{ else if b }}B{{ end }}", b=True) == "B"


def test_only_the_chosen_branch_is_evaluated() -> None:
    assert render("{{ if true }}ok{{ else }}{{ 1 / 0 }}{{ end }}") == "ok"
    assert render("{{ ok || 1 / 0 }}{{ !ok && 1 / 0 }}", ok=True) == "truefalse"
    assert render("{{ ok ? 'y' : 1 / 0 }}", ok=True) == "y"


def test_for_with_loop_variables() -> None:
    source = ("{{ for x, i in xs }}{{ i }}{{ loop.index }}{{ loop.number }}"
              "{{ loop.first ? 'F' : '' }}{{ loop.last ? 'L' : '' }}{{ loop.length }}"
              "={{ x }};{{ end }}")
    assert render(source, xs=["a", "b", "c"]) == "001F3=a;1123=b;223L3=c;"


def test_for_over_nothing_runs_zero_times_and_renders_else() -> None:
    source = "[{{ for x in xs }}{{ x }}{{ else }}empty{{ end }}]"
    assert render(source) == "[empty]"
    assert render(source, xs=None) == "[empty]"
    assert render(source, xs=[]) == "[empty]"
    assert render(source, xs={}) == "[empty]"
    assert render(source, xs=[1]) == "[1]"


def test_for_over_an_object_iterates_entries_in_order() -> None:
    assert render("{{ for e in o }}{{ e.key }}={{ e.value }},{{ end }}",
                  o={"b": 1, "a": [2]}) == "b=1,a=[2],"
    assert render("{{ for e, i in o }}{{ i }}{{ e.key }}{{ end }}", o={"x": 0}) == "0x"


@pytest.mark.parametrize("value", ["abc", 3, True])
def test_for_over_a_scalar_is_an_error(value: Any) -> None:
    with pytest.raises(InvalidArgument, match="line 1, column 4: cannot loop over"):
        render("{{ for x in v }}{{ x }}{{ end }}", v=value)


def test_nested_loops_shadow_and_restore() -> None:
    source = ("{{ for x in outer }}{{ loop.index }}({{ for x in x }}{{ x }}{{ loop.index }}"
              "{{ end }}){{ x | json }}{{ loop.length }};{{ end }}{{ x }}")
    assert render(source, outer=[[1, 2], [3]], x="root") == (
        "0(1021)[1,2]2;1(30)[3]2;root"
    )


def test_loop_variables_do_not_leak_and_loop_outside_is_a_variable() -> None:
    assert render("{{ for i in xs }}{{ end }}[{{ i }}][{{ loop }}]", xs=[1], loop="L") == "[][L]"


def test_loop_bodies_can_read_root_variables_and_nest_ifs() -> None:
    source = ("{{ for p in posts }}{{ if p.published }}{{ site }}/{{ p.slug }} "
              "{{ else }}draft {{ end }}{{ end }}")
    posts = [{"slug": "a", "published": True}, {"slug": "b"}]
    assert render(source, posts=posts, site="s") == "s/a draft "


def test_blocks_nest_deeply_within_the_limit() -> None:
    source = "{{ if true }}" * 60 + "deep" + "{{ end }}" * 60
    assert render(source) == "deep"


def test_empty_blocks() -> None:
    assert render("{{ if x }}{{ end }}{{ for a in xs }}{{ end }}", x=1, xs=[1, 2]) == ""


def test_block_keywords_are_only_keywords_at_the_start_of_a_tag() -> None:
    assert render("{{ x.if }}{{ x.end }}{{ x.for }}", x={"if": 1, "end": 2, "for": 3}) == "123"


def test_template_variables_are_only_read() -> None:
    variables: dict[str, Any] = {"xs": [3, 1, 2], "o": {"k": "v"}}
    ENGINE.compile("{{ sort(xs) }}{{ reverse(xs) }}{{ for e in o }}{{ e }}{{ end }}").render(
        variables, max_output=1000)
    assert variables == {"xs": [3, 1, 2], "o": {"k": "v"}}
