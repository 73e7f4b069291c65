from __future__ import annotations

import pytest

from services.template._lang._ast import (
    Array,
    Binary,
    Call,
    Conditional,
    Expr,
    Index,
    Literal,
    Member,
    Name,
    Unary,
)
from services.template._lang._document import parse_expression
from services.template._lang._functions import default_registry
from services.template._lang._limits import Limits


def sexp(expr: Expr) -> str:
    """A compact Lisp-like rendering of a tree, to assert on its shape."""
    if isinstance(expr, Literal):
        return repr(expr.value)
    if isinstance(expr, Name):
        return expr.name
    if isinstance(expr, Array):
        return "[" + " ".join(sexp(i) for i in expr.items) + "]"
    if isinstance(expr, Member):
        return f"(. {sexp(expr.target)} {expr.key})"
    if isinstance(expr, Index):
        return f"([] {sexp(expr.target)} {sexp(expr.index)})"
    if isinstance(expr, Unary):
        return f"({expr.op} {sexp(expr.operand)})"
    if isinstance(expr, Binary):
        return f"({expr.op} {sexp(expr.left)} {sexp(expr.right)})"
    if isinstance(expr, Conditional):
        return f"(? {sexp(expr.test)} {sexp(expr.then)} {sexp(expr.otherwise)})"
    assert isinstance(expr, Call)
    mark = "|" if expr.piped else ""
    return f"({mark}{expr.name} " + " ".join(sexp(a) for a in expr.args) + ")"


def parse(source: str, limits: Limits | None = None) -> str:
    expr, problems, _ = parse_expression(source, default_registry(), limits or Limits())
    assert not problems, problems
    assert expr is not None
    return sexp(expr)


def problems(source: str, limits: Limits | None = None) -> list[tuple[int | None, str]]:
    _, found, _ = parse_expression(source, default_registry(), limits or Limits())
    return [(p.offset, p.message) for p in found]


@pytest.mark.parametrize(("source", "tree"), [
    ("1 + 2 * 3", "(+ 1 (* 2 3))"),
    ("(1 + 2) * 3", "(* (+ 1 2) 3)"),
    ("1 - 2 - 3", "(- (- 1 2) 3)"),
    ("8 / 4 / 2", "(/ (/ 8 4) 2)"),
    ("a % b * c", "(* (% a b) c)"),
    ("a || b && c", "(|| a (&& b c))"),
    ("a && b || c", "(|| (&& a b) c)"),
    ("a or b and c", "(|| a (&& b c))"),
    ("!a == b", "(== (! a) b)"),
    ("not a == b", "(== (! a) b)"),
    ("!!a", "(! (! a))"),
    ("-a * b", "(* (- a) b)"),
    ("- -a", "(- (- a))"),
    ("-3", "-3"),
    ("+a", "(+ a)"),
    ("a < b == c > d", "(== (< a b) (> c d))"),
    ("a == b && c != d", "(&& (== a b) (!= c d))"),
    ("a + b < c * d", "(< (+ a b) (* c d))"),
    ("a ? b : c ? d : e", "(? a b (? c d e))"),
    ("a ? b ? c : d : e", "(? a (? b c d) e)"),
    ("a || b ? c : d", "(? (|| a b) c d)"),
    ("price * 0.9 | currency", "(|currency (* price 0.9))"),
    ("a ? b : c | uppercase", "(|uppercase (? a b c))"),
    ("x | truncate: 40, '…' | uppercase", "(|uppercase (|truncate x 40 '…'))"),
    ("x | default: a ? b : c", "(|default x (? a b c))"),
    ("currency(price, 'EUR', 'de-DE')", "(currency price 'EUR' 'de-DE')"),
    ("user.profile.name", "(. (. user profile) name)"),
    ("items[0].price", "(. ([] items 0) price)"),
    ("row['key']", "([] row 'key')"),
    ("items[-1]", "([] items -1)"),
    ("a[b | trim]", "([] a (|trim b))"),
    ("(a | trim) + 'x'", "(+ (|trim a) 'x')"),
    ("[1, 'two', [3]]", "[1 'two' [3]]"),
    ("[1, 2,]", "[1 2]"),
    ("[]", "[]"),
    ("true && false || null", "(|| (&& True False) None)"),
    ("x.if.end", "(. (. x if) end)"),
    ("min(1, max(2, 3))", "(min 1 (max 2 3))"),
    ("first(items).name", "(. (first items) name)"),
])
def test_precedence_and_shape(source: str, tree: str) -> None:
    assert parse(source) == tree


@pytest.mark.parametrize(("source", "offset", "message"), [
    ("1 +", 3, "expected an expression, found the end of the expression"),
    ("(1 + 2", 6, "expected ')' to close '('"),
    ("[1, 2", 5, "expected ']' to close the array"),
    ("a b", 2, "unexpected 'b' after the expression"),
    ("a ? b", 5, "expected ':' in a conditional"),
    ("a.", 2, "expected a property name after '.'"),
    ("a | 3", 4, "expected a filter name after '|'"),
    ("user.name(1)", 9, "only functions can be called"),
    ("in", 0, "'in' is a reserved word"),
    ("a and or b", 6, "'or' is a reserved word"),
])
def test_syntax_errors_name_the_offset(source: str, offset: int, message: str) -> None:
    [(where, text)] = problems(source)
    assert where == offset
    assert message in text


def test_unknown_functions_are_all_reported_with_suggestions() -> None:
    assert problems("curency(x) + uppercse(y) | lenght") == [
        (0, "unknown function 'curency' (did you mean 'currency'?)"),
        (13, "unknown function 'uppercse' (did you mean 'uppercase'?)"),
        (27, "unknown filter 'lenght' (did you mean 'length'?)"),
    ]


def test_suggestions_fold_case_and_stay_quiet_when_nothing_is_close() -> None:
    assert problems("UPPERCASE(x)") == [
        (0, "unknown function 'UPPERCASE' (did you mean 'uppercase'?)"),
    ]
    assert problems("zzz(x)") == [(0, "unknown function 'zzz'")]


def test_argument_counts_are_checked() -> None:
    assert problems("truncate(x)") == [(0, "function 'truncate' takes 2 to 3 arguments "
                                           "(truncate(text, length, suffix = '…')), got 1")]
    assert problems("x | uppercase: 1") == [(4, "filter 'uppercase' takes 1 argument "
                                                "(uppercase(text)), got 1 after the piped value")]
    assert problems("min()") == [(0, "function 'min' takes at least 1 arguments "
                                     "(min(number, …) or min(array)), got 0")]
    assert problems("default(a, b)") == []


def test_raw_is_not_allowed_in_a_bare_expression() -> None:
    [(_, message)] = problems("x | raw")
    assert "'raw' must be the last filter of an output tag" in message
    [(_, message)] = problems("raw(x)")
    assert "'raw' is not a function" in message


def test_roots_are_reported_in_first_use_order() -> None:
    _, _, roots = parse_expression("b + a.x + b[c] + f | default: d", default_registry(),
                                   Limits())
    assert roots == ["b", "a", "c", "f", "d"]


@pytest.mark.parametrize("source", [
    "(" * 65 + "1" + ")" * 65,
    "[" * 65 + "]" * 65,
    "!" * 65 + "x",
    "-" * 65 + "x",
    " + ".join(["1"] * 66),
    "x" + " | trim" * 65,
    "a ? " * 65 + "1" + " : 2" * 65,
    "f(" * 65 + ")" * 65,
])
def test_nesting_beyond_the_limit_is_refused(source: str) -> None:
    [(_, message)] = problems(source)
    assert "nested too deeply (limit 64, setting LITHO_TEMPLATE_MAX_DEPTH)" in message


def test_nesting_within_the_limit_parses() -> None:
    assert parse("(" * 60 + "1" + ")" * 60) == "1"
    assert parse("(" * 10 + "1" + ")" * 10, Limits(max_depth=11)) == "1"
    assert problems("(" * 12 + "1" + ")" * 12, Limits(max_depth=11))


def test_limits_reject_a_depth_beyond_the_ceiling() -> None:
    with pytest.raises(ValueError, match="at most 100"):
        Limits(max_depth=101)
    with pytest.raises(ValueError, match="positive"):
        Limits(max_steps=0)
