"""The public API: Engine, CompiledTemplate, LangExpander and the expression helpers."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from litho.errors import FieldError, InvalidArgument
from services.template._lang import (
    Engine,
    LangExpander,
    discover_variables,
    evaluate_expression,
    result_type,
    validate_expression,
)
from services.template._lang._bench import bench_expand


def test_compile_once_render_many() -> None:
    template = Engine().compile("Hi {{ name | default: 'you' }}")
    assert template.render({"name": "Ada"}, max_output=100) == "Hi Ada"
    assert template.render({}, max_output=100) == "Hi you"
    assert template.source == "Hi {{ name | default: 'you' }}"
    assert template.variables == ["name"]


def test_renders_from_many_threads_at_once() -> None:
    template = Engine().compile("{{ for x in xs }}{{ x * k }},{{ end }}")
    results: list[str] = []

    def work(k: int) -> None:
        for _ in range(200):
            results.append(template.render({"xs": [1, 2, 3], "k": k}, max_output=100))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(results)) == ["0,0,0,", "1,2,3,", "2,4,6,", "3,6,9,"]


def test_variables_may_be_any_mapping() -> None:
    class Variables(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            return {"a": 1}[key]

        def __iter__(self) -> Any:
            return iter(["a"])

        def __len__(self) -> int:
            return 1

    assert Engine().compile("{{ a }}{{ b }}").render(Variables(), max_output=10) == "1"


def test_lang_expander_implements_the_expander_seam() -> None:
    expander = LangExpander()
    assert expander.check("{{ a b }}") == [
        FieldError("html", "line 1, column 6: unexpected 'b' after the expression"),
    ]
    assert expander.expand("<p>{{ price * 0.9 | currency }}</p>", {"price": 49},
                           max_output=100) == "<p>$44.10</p>"


def test_lang_expander_is_compatible_with_the_lookup_expander() -> None:
    out = LangExpander().expand(
        "<b>{{ name }}</b>{{missing}}|{{ items[1].t }}",
        {"name": "<script>\"&'", "items": [{}, {"t": "two"}]},
        max_output=1000,
    )
    assert out == "<b>&lt;script&gt;&quot;&amp;&#x27;</b>|two"


def test_lang_expander_caches_compiled_templates_lru() -> None:
    compiled: list[str] = []
    CountingEngine = _counting(compiled)

    expander = LangExpander(CountingEngine(), cache_size=2)
    for source in ["a", "b", "a", "c", "a", "b"]:
        expander.expand(source + "{{ 1 }}", {}, max_output=100)
    # 'a' stays (recently used); 'b' was evicted by 'c', so it compiles again.
    assert compiled == ["a{{ 1 }}", "b{{ 1 }}", "c{{ 1 }}", "b{{ 1 }}"]
    assert expander.cached() == 2
    assert expander.compiled("a{{ 1 }}") is expander.compiled("a{{ 1 }}")
    assert compiled == ["a{{ 1 }}", "b{{ 1 }}", "c{{ 1 }}", "b{{ 1 }}"]


def _counting(compiled: list[str]) -> type[Engine]:
    """An engine that notes every source it compiles."""

    class CountingEngine(Engine):
        def compile(self, source: str, *, escape: bool = True, url: bool = False) -> Any:
            compiled.append(source)
            return super().compile(source, escape=escape, url=url)

    return CountingEngine


def test_the_compile_cache_is_bounded_by_estimated_memory() -> None:
    from services.template._lang._expander import compiled_weight

    compiled: list[str] = []
    CountingEngine = _counting(compiled)

    small = "{{ 1 }}" * 10
    budget = 4 * compiled_weight(small) + 40
    expander = LangExpander(CountingEngine(), cache_size=100, max_bytes=budget)
    for i in range(6):
        expander.compiled(f"{i}{small}")
    # Each weighs a quarter of the budget or a little more: at most four stay.
    assert 1 <= expander.cached() <= 4
    # A source heavier than a quarter of the budget is compiled every time.
    heavy = "{{ 1 }}" * 100
    assert compiled_weight(heavy) > budget // 4
    before = expander.cached()
    expander.compiled(heavy)
    expander.compiled(heavy)
    assert compiled.count(heavy) == 2 and expander.cached() == before


def test_lang_expander_without_a_cache_and_with_a_broken_source() -> None:
    expander = LangExpander(cache_size=0)
    expander.expand("{{ 1 }}", {}, max_output=10)
    assert expander.cached() == 0
    with pytest.raises(InvalidArgument) as caught:
        expander.expand("{{ a b }}", {}, max_output=10)
    assert caught.value.message == "the template has errors"
    with pytest.raises(ValueError):
        LangExpander(cache_size=-1)


def test_expander_enforces_max_output() -> None:
    with pytest.raises(InvalidArgument, match="LITHO_TEMPLATE_MAX_OUTPUT_BYTES"):
        LangExpander().expand("{{ s }}", {"s": "é" * 6}, max_output=11)
    assert LangExpander().expand("{{ s }}", {"s": "é" * 6}, max_output=12) == "é" * 6


def test_evaluate_expression_returns_json_values() -> None:
    assert evaluate_expression("currency(price * quantity, 'USD')",
                               {"price": 29.99, "quantity": 3}) == "$89.97"
    assert evaluate_expression("items | pluck: 'n'", {"items": [{"n": 1}]}) == [1]
    assert evaluate_expression("user", {"user": {"a": 1}}) == {"a": 1}
    assert evaluate_expression("missing", {}) is None
    with pytest.raises(InvalidArgument) as caught:
        evaluate_expression("zzz(1)", {})
    assert caught.value.errors == [FieldError("expression",
                                              "line 1, column 1: unknown function 'zzz'")]


def test_validate_expression() -> None:
    assert validate_expression("a | currency: 'EUR'") == []
    assert validate_expression("a | curency") == [
        FieldError("expression",
                   "line 1, column 5: unknown filter 'curency' (did you mean 'currency'?)"),
    ]


@pytest.mark.parametrize(("expr", "kind"), [
    ("'x'", "string"), ("1", "number"), ("1.5", "number"), ("true", "boolean"),
    ("null", "null"), ("missing", "null"), ("[1]", "array"), ("parseJson('{}')", "object"),
])
def test_result_type(expr: str, kind: str) -> None:
    assert result_type(evaluate_expression(expr, {})) == kind


@pytest.mark.parametrize(("source", "names"), [
    ("{{ user.name }} {{ title | truncate: max }}", ["user", "title", "max"]),
    ("{{ for p in posts }}{{ p.title }}{{ loop.index }}{{ limit }}{{ end }}{{ p }}",
     ["posts", "limit", "p"]),
    ("{{ for p, i in posts }}{{ for c in p.comments }}{{ c }}{{ i }}{{ end }}{{ end }}",
     ["posts"]),
    ("{{ b }}{{ a }}{{ b }}{{ if c }}{{ else if d }}{{ e }}{{ end }}", ["b", "a", "c", "d", "e"]),
    ("{{ for x in xs }}{{ end }}{{ x }}", ["xs", "x"]),
    ("{{ loop.index }}", []),
    ("{{ currency(price) }}{{ row['k'] }}{{ items[idx] }}", ["price", "row", "items", "idx"]),
    ("{{ a }}{{ 'broken }}{{ b }}", ["a", "b"]),
    ("{{ zzz(a) }}{{ for x in }}{{ x }}{{ end }}", ["a"]),
    ("no tags", []),
])
def test_discover_variables(source: str, names: list[str]) -> None:
    assert discover_variables(source) == names


def test_discovery_of_an_oversized_template_is_empty() -> None:
    assert discover_variables("{{ a }}" + " " * (600 * 1024)) == []


def test_bench_expand_reports_a_median() -> None:
    result = bench_expand(runs=50, warmup=5)
    assert result.runs == 50
    assert 0 < result.min_us <= result.median_us <= result.p95_us
    # Comfortably under a millisecond even on a busy CI machine.
    assert result.median_us < 1000
    assert "median" in result.summary()
