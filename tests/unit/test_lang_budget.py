"""The step budget charges each operation in proportion to the work it does.

Steps are counted, not timed, so these tests hold on any machine: an
operation over ``n`` items must be refused by a budget well under ``n`` and
allowed by one well over it. The deadline tests use a deadline far shorter
than the work, so a slow machine only makes them pass sooner.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from litho.errors import InvalidArgument
from litho.lru import Lru
from services.template._lang import Engine, Limits, StepCapReached

MAX_OUTPUT = 2 * 1024 * 1024
N = 20_000


def engine(max_steps: int, **limits: int) -> Engine:
    return Engine(Limits(max_steps=max_steps, max_array_length=10 * N,
                         max_loop_iterations=10 * N, **limits))


def render(source: str, eng: Engine, **variables: Any) -> str:
    return eng.compile(source).render(variables, max_output=MAX_OUTPUT)


def over_budget(source: str, eng: Engine, **variables: Any) -> bool:
    try:
        render(source, eng, **variables)
    except InvalidArgument as exc:
        assert "LITHO_TEMPLATE_MAX_STEPS" in exc.message, exc.message
        return True
    return False


def nested(n: int) -> list[Any]:
    return [[i, {"k": [i]}] for i in range(n)]


# Each operation, on operands of about N items (or N KiB-free units of work):
# a budget of N/4 steps must stop it, a budget of 40·N must not.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("array equality", "{{ a == b }}", {"a": list(range(N)), "b": list(range(N))}),
    ("nested array equality", "{{ a == b }}", {"a": nested(N // 4), "b": nested(N // 4)}),
    ("object equality", "{{ a != b }}",
     {"a": {str(i): i for i in range(N)}, "b": {str(i): i for i in range(N)}}),
    ("contains of nested items", "{{ contains(a, b) }}",
     {"a": [[i, i] for i in range(N // 2)], "b": [-1, -1]}),
    ("indexOf of nested items", "{{ indexOf(a, b) }}",
     {"a": [[i, i] for i in range(N // 2)], "b": [-1, -1]}),
    ("unique of arrays", "{{ length(unique(a)) }}", {"a": [[i, i] for i in range(N // 4)]}),
    ("sort", "{{ length(sort(a)) }}", {"a": list(range(N // 8, 0, -1))}),
    ("join of arrays", "{{ length(join(a, ',')) }}", {"a": [[i, i] for i in range(N // 4)]}),
    ("json", "{{ length(json(a)) }}", {"a": nested(N // 4)}),
    ("output of an array", "{{ a }}", {"a": nested(N // 4)}),
    ("text plus an array", "{{ length('' + a) }}", {"a": nested(N // 4)}),
    ("titleCase", "{{ length(titleCase(s)) }}", {"s": "a " * N}),
    ("slugify", "{{ length(slugify(s)) }}", {"s": "é" * 8 * N}),
]


@pytest.mark.parametrize(("source", "variables"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_work_is_charged_in_proportion(source: str, variables: dict[str, Any]) -> None:
    assert over_budget(source, engine(N // 4), **variables)
    assert not over_budget(source, engine(40 * N), **variables)


def test_equality_of_big_arrays_in_a_loop_runs_out_of_steps() -> None:
    # The attack from issue 7: three 10,000-item arrays (about 150 KB of
    # variables), a cheap-looking comparison in a loop: 10^8 comparisons.
    xs = list(range(10_000))
    source = "{{ for x in xs }}{{ if big == big2 }}.{{ end }}{{ end }}"
    with pytest.raises(InvalidArgument) as caught:
        render(source, Engine(), xs=xs, big=list(xs), big2=list(xs))
    assert "LITHO_TEMPLATE_MAX_STEPS" in caught.value.message


def test_comparison_stops_part_way_through_a_huge_value() -> None:
    # One comparison alone is more than the budget: it must stop within a
    # batch of the budget, not after walking everything.
    big = list(range(200_000))
    eng = Engine(Limits(max_steps=1000, max_array_length=10**6))
    compiled = eng.compile("{{ a == b }}")
    with pytest.raises(InvalidArgument) as caught:
        compiled.render({"a": big, "b": list(big)}, max_output=MAX_OUTPUT)
    assert "limit 1000" in caught.value.message


def test_deadline_ends_an_expansion_with_a_clear_error() -> None:
    # A budget so large that only the deadline can stop this loop.
    eng = Engine(Limits(max_steps=10**12, max_loop_iterations=10**8, max_array_length=10**6))
    xs = list(range(10_000))
    source = "{{ for a in xs }}{{ for b in xs }}{{ a + b }}{{ end }}{{ end }}"
    with pytest.raises(InvalidArgument) as caught:
        eng.compile(source).render({"xs": xs}, max_output=10**9, timeout=0.05)
    # Whichever node is evaluating when the clock is read is the one named.
    assert re.fullmatch(
        r"line 1, column \d+: the template took longer than 0\.05 s to expand "
        r"\(setting LITHO_TEMPLATE_EXPAND_TIMEOUT\)", caught.value.message,
    ), caught.value.message


def test_deadline_also_bounds_expression_tests() -> None:
    eng = Engine(Limits(max_steps=10**12, max_loop_iterations=10**8, max_array_length=10**6))
    with pytest.raises(InvalidArgument) as caught:
        eng.evaluate_expression("a == b", {"a": list(range(10**6)), "b": list(range(10**6))},
                                timeout=0.000_001)
    assert "LITHO_TEMPLATE_EXPAND_TIMEOUT" in caught.value.message


def test_a_step_cap_stops_a_render_for_its_caller_to_retry() -> None:
    source = "{{ for x in xs }}{{ x }}{{ end }}"
    compiled = Engine().compile(source)
    with pytest.raises(StepCapReached):
        compiled.render({"xs": list(range(5000))}, max_output=MAX_OUTPUT, step_cap=1000)
    # Under the cap it renders; a cap above the budget is the budget.
    assert compiled.render({"xs": [1, 2]}, max_output=MAX_OUTPUT, step_cap=1000) == "12"
    out = compiled.render({"xs": list(range(5000))}, max_output=MAX_OUTPUT, step_cap=10**9)
    assert out.endswith("4999")


def test_the_budget_is_still_the_budget_below_the_cap() -> None:
    compiled = Engine(Limits(max_steps=100)).compile("{{ for x in xs }}{{ x }}{{ end }}")
    with pytest.raises(InvalidArgument) as caught:
        compiled.render({"xs": list(range(1000))}, max_output=MAX_OUTPUT, step_cap=10_000)
    assert "LITHO_TEMPLATE_MAX_STEPS" in caught.value.message


def test_huge_integers_are_shown_short_in_errors() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Engine().evaluate_expression("x * 2 - y", {"x": 10**4000, "y": "z"})
    text = " ".join([caught.value.message, *(e.message for e in caught.value.errors)])
    assert len(text) < 400, text
    assert "4001 digits" in text or "too large" in text


def test_a_difference_found_last_still_pays_for_the_whole_queue() -> None:
    # Arrays equal but for their last item: the walk queues every pair before
    # it meets the difference, and the queue is paid for.
    a = list(range(N))
    b = [*a[:-1], -1]
    assert over_budget("{{ a == b }}", engine(N // 4), a=a, b=b)
    assert not over_budget("{{ a == b }}", engine(40 * N), a=a, b=b)


@pytest.mark.parametrize("source", [
    "{{ s * 2 }}", "{{ -s }}", "{{ round(s) }}", "{{ padStart('x', s) }}",
    "{{ number(s) }}",
])
def test_long_text_is_not_read_as_a_number(source: str) -> None:
    # A run of digits that ends in a letter: an ambiguous number pattern took
    # time quadratic in its length (minutes for 64,000 characters).
    s = "1" * 64_000 + "x"
    with pytest.raises(InvalidArgument) as caught:
        render(source, Engine(), s=s)
    assert "expected a number" in caught.value.message or "cannot" in caught.value.message


def test_long_text_has_no_order_with_numbers() -> None:
    assert render("{{ s < 1 }}|{{ s >= 1 }}", Engine(), s="1" * 64_000 + "x") == "false|false"


def test_text_that_is_a_number_still_reads_as_one() -> None:
    assert render("{{ s * 2 }}|{{ t < 1 }}|{{ u * 1 }}", Engine(),
                  s="21", t=" 0.5 ", u="-1e3") == "42|true|-1000"


@pytest.mark.parametrize("source", [
    "{{ for x in xs }}{{ number(x) }}{{ end }}",
    "{{ for x in xs }}{{ currency(x) }}{{ end }}",
    "{{ for x in xs }}{{ date(x) }}{{ end }}",
])
def test_formatting_calls_pay_their_fixed_cost(source: str) -> None:
    # About 20-50 µs each in Babel: a thousand calls cost tens of thousands of steps.
    xs = list(range(1000))
    assert over_budget(source, engine(15_000), xs=xs)
    assert not over_budget(source, engine(200_000), xs=xs)


def test_loading_locales_and_zones_is_charged(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.template._lang._functions import _locale

    monkeypatch.setattr(_locale, "_LOCALES", Lru(128))
    monkeypatch.setattr(_locale, "_ZONES", Lru(128))
    locales = ["de-DE", "fr-FR", "ja-JP", "pt-BR", "sv-SE", "pl-PL", "tr-TR", "ko-KR"]
    zones = ["Europe/Paris", "Asia/Tokyo", "America/Lima", "Africa/Cairo"]
    source = "{{ for l in ls }}{{ for z in zs }}{{ date(0, 'H', z, l) }}{{ end }}{{ end }}"
    cold = len(locales) * _locale.COLD_LOCALE_STEPS + len(zones) * _locale.COLD_ZONE_STEPS
    assert over_budget(source, engine(cold), ls=locales, zs=zones)
    # Now cached: the same render costs a fraction of that.
    assert not over_budget(source, engine(cold // 2), ls=locales, zs=zones)


def test_long_key_paths_are_charged_per_item() -> None:
    items = [{"a": {"b": i}} for i in range(1000)]
    key = "a" + ".b" * 2000
    assert over_budget("{{ length(sort(items, k)) }}", engine(100_000), items=items, k=key)
    assert over_budget("{{ length(pluck(items, k)) }}", engine(100_000), items=items, k=key)
    assert render("{{ pluck(sort(items, 'a.b'), 'a.b') | first }}", engine(100_000),
                  items=items) == "0"


def test_searching_text_is_charged_for_the_worst_case() -> None:
    haystack = "a" * 200_000
    needle = "a" * 97 + "ba"
    for source in ("{{ contains(h, n) }}", "{{ indexOf(h, n) }}"):
        assert over_budget(source, engine(1000), h=haystack, n=needle)
        assert not over_budget(source, engine(10_000), h=haystack, n=needle)


def test_parse_json_is_held_to_the_nesting_limit() -> None:
    ok = "[" * 64 + "]" * 64
    assert render("{{ length(json(parseJson(t))) }}", Engine(), t=ok) == "128"
    with pytest.raises(InvalidArgument) as caught:
        render("{{ parseJson(t) }}", Engine(), t="[" * 200 + "]" * 200)
    assert "LITHO_TEMPLATE_MAX_DEPTH" in caught.value.message


def test_an_expression_result_too_large_to_send_back_is_refused() -> None:
    # 200,000 characters of 'é': more than the limit in JSON text.
    with pytest.raises(InvalidArgument) as caught:
        Engine().evaluate_expression("padStart('', 200000, 'é')", {}, max_output=100_000)
    assert caught.value.errors[0].field == "expression"
    assert "LITHO_TEMPLATE_MAX_OUTPUT_BYTES" in caught.value.message
    assert Engine().evaluate_expression("padStart('', 10, 'é')", {}, max_output=100_000) == (
        "é" * 10)
