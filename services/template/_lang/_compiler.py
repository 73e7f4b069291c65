"""Turns the syntax tree into nested Python closures, once per template.

No Python source is generated and nothing is ``eval``-ed: each node becomes a
small function over a :class:`Runtime`. Every node evaluated spends one step
of the runtime's budget; every error a node raises carries its offset, so the
author is told where it happened.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape as html_escape
from time import monotonic
from typing import Any

from services.template._lang._ast import (
    Array,
    Binary,
    Call,
    Conditional,
    Expr,
    For,
    If,
    Index,
    Literal,
    Member,
    Name,
    Node,
    Output,
    Text,
    Unary,
)
from services.template._lang._errors import ArgumentError, EvalError, LimitExceeded, limit_message
from services.template._lang._functions._registry import Registry
from services.template._lang._operators import BINARY, negate, plus
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, display, truthy

Eval = Callable[[Runtime], Any]
Emit = Callable[[Runtime, "Sink"], None]
#: How an output tag's text is written (``{{ raw … }}`` and ``| raw`` are
#: always written as they are): HTML-escaped by default.
Escape = Callable[[str], str]
_MISSING = object()
TOO_DEEP = "a value is nested too deeply to work with"


class Sink:
    """The output, counted in UTF-8 bytes as it grows so a runaway loop stops early."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit

    def write(self, text: str, size: int = -1) -> None:
        if size < 0:
            size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        self.size += size
        if self.size > self.limit:
            raise LimitExceeded(limit_message(
                "max_output_bytes", self.limit, "the expanded document would be too large",
            ))
        self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)


def compile_expr(expr: Expr, registry: Registry) -> Eval:
    compiler = _EXPRESSIONS[type(expr)]
    return compiler(expr, registry)


def _locate(exc: EvalError, offset: int) -> None:
    if exc.offset is None:
        exc.offset = offset


def _literal(expr: Literal, registry: Registry) -> Eval:
    value, offset = expr.value, expr.offset

    def literal(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        return value

    return literal


def _array(expr: Array, registry: Registry) -> Eval:
    items, offset = [compile_expr(item, registry) for item in expr.items], expr.offset

    def array(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        try:
            rt.check_array(len(items))
        except EvalError as exc:
            _locate(exc, offset)
            raise
        return [item(rt) for item in items]

    return array


def _name(expr: Name, registry: Registry) -> Eval:
    key, offset = expr.name, expr.offset
    if expr.local:
        def local(rt: Runtime) -> Any:
            rt.steps += 1
            if rt.steps > rt.max_steps:
                rt.out_of_steps(offset)
            return rt.locals.get(key)

        return local

    def variable(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        return rt.variables.get(key)

    return variable


def _member(expr: Member, registry: Registry) -> Eval:
    target, key, offset = compile_expr(expr.target, registry), expr.key, expr.offset

    def member(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        value = target(rt)
        # Key lookup in JSON objects only: never an attribute of a host object.
        return value.get(key) if isinstance(value, dict) else None

    return member


def item_at(value: Any, key: Any) -> Any:
    """``value[key]`` for JSON data; null for anything out of range or of the wrong kind."""
    if isinstance(value, dict):
        if isinstance(key, str):
            return value.get(key)
        if isinstance(key, int | float) and not isinstance(key, bool) and key == int(key):
            return value.get(str(int(key)))
        return None
    if isinstance(value, list | str):
        if isinstance(key, bool) or not isinstance(key, int | float):
            return None
        if isinstance(key, float):
            if not key.is_integer():
                return None
            key = int(key)
        if -len(value) <= key < len(value):
            return value[key]
    return None


def _index(expr: Index, registry: Registry) -> Eval:
    target, index = compile_expr(expr.target, registry), compile_expr(expr.index, registry)
    offset = expr.offset

    def indexed(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        return item_at(target(rt), index(rt))

    return indexed


def _unary(expr: Unary, registry: Registry) -> Eval:
    operand, offset = compile_expr(expr.operand, registry), expr.offset
    if expr.op == "!":
        def negation(rt: Runtime) -> Any:
            rt.steps += 1
            if rt.steps > rt.max_steps:
                rt.out_of_steps(offset)
            return not truthy(operand(rt))

        return negation
    apply = negate if expr.op == "-" else plus

    def arithmetic(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        value = operand(rt)
        try:
            return apply(rt, value)
        except ArgumentError as exc:
            raise EvalError(str(exc), offset) from None

    return arithmetic


def _binary(expr: Binary, registry: Registry) -> Eval:
    left, right = compile_expr(expr.left, registry), compile_expr(expr.right, registry)
    offset = expr.offset
    if expr.op == "&&":
        def conjunction(rt: Runtime) -> Any:
            rt.steps += 1
            if rt.steps > rt.max_steps:
                rt.out_of_steps(offset)
            value = left(rt)
            return right(rt) if truthy(value) else value

        return conjunction
    if expr.op == "||":
        def disjunction(rt: Runtime) -> Any:
            rt.steps += 1
            if rt.steps > rt.max_steps:
                rt.out_of_steps(offset)
            value = left(rt)
            return value if truthy(value) else right(rt)

        return disjunction
    apply = BINARY[expr.op]

    def operation(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        a = left(rt)
        b = right(rt)
        try:
            return apply(rt, a, b)
        except ArgumentError as exc:
            raise EvalError(str(exc), offset) from None
        except EvalError as exc:
            _locate(exc, offset)
            raise
        except RecursionError:
            raise EvalError(TOO_DEEP, offset) from None

    return operation


def _conditional(expr: Conditional, registry: Registry) -> Eval:
    test = compile_expr(expr.test, registry)
    then = compile_expr(expr.then, registry)
    otherwise = compile_expr(expr.otherwise, registry)
    offset = expr.offset

    def conditional(rt: Runtime) -> Any:
        rt.steps += 1
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        return then(rt) if truthy(test(rt)) else otherwise(rt)

    return conditional


def _call(expr: Call, registry: Registry) -> Eval:
    function = registry.get(expr.name)
    if function is None:  # the parser reports these; compiling means there were none
        raise ValueError(f"unknown function {expr.name!r}")
    impl, name, offset = function.impl, function.name, expr.offset
    args = [compile_expr(arg, registry) for arg in expr.args]
    price = 1 + function.cost

    def call(rt: Runtime) -> Any:
        rt.steps += price
        if rt.steps > rt.max_steps:
            rt.out_of_steps(offset)
        values = [arg(rt) for arg in args]
        try:
            for value in values:
                rt.charge_value(value)
            result = impl(rt, *values)
            rt.charge_value(result)
            # A function's work may be charged after it is done: look at the
            # clock after every call (~50 ns), not only at checkpoints.
            if rt.deadline is not None and monotonic() > rt.deadline:
                rt.past_deadline(offset)
        except ArgumentError as exc:
            raise EvalError(f"{name}: {exc}", offset) from None
        except EvalError as exc:
            _locate(exc, offset)
            raise
        except RecursionError:
            raise EvalError(f"{name}: {TOO_DEEP}", offset) from None
        except (TypeError, ValueError, ArithmeticError, LookupError):
            raise EvalError(f"{name}: cannot use these arguments "
                            f"({', '.join(describe(v) for v in values)})", offset) from None
        return result

    return call


_EXPRESSIONS: dict[type, Callable[..., Eval]] = {
    Literal: _literal, Array: _array, Name: _name, Member: _member, Index: _index,
    Unary: _unary, Binary: _binary, Conditional: _conditional, Call: _call,
}


def compile_nodes(nodes: tuple[Node, ...], registry: Registry,
                  escape: Escape = html_escape) -> Emit:
    """``nodes`` as one emitter; every output that is not raw, in blocks
    too, is written through ``escape``."""
    emitters = [_node(node, registry, escape) for node in nodes]
    if len(emitters) == 1:
        return emitters[0]

    def sequence(rt: Runtime, sink: Sink) -> None:
        for emit in emitters:
            emit(rt, sink)

    return sequence


def _node(node: Node, registry: Registry, escape: Escape) -> Emit:
    if isinstance(node, Text):
        return _text(node)
    if isinstance(node, Output):
        return _output(node, registry, escape)
    if isinstance(node, If):
        return _if(node, registry, escape)
    return _for(node, registry, escape)


def _text(node: Text) -> Emit:
    text = node.text
    size = len(text.encode("utf-8", "surrogatepass"))

    def emit_text(rt: Runtime, sink: Sink) -> None:
        sink.write(text, size)

    return emit_text


def _output(node: Output, registry: Registry, escape: Escape) -> Emit:
    evaluate, raw, offset = compile_expr(node.expr, registry), node.raw, node.expr.offset

    def emit_output(rt: Runtime, sink: Sink) -> None:
        try:
            value = evaluate(rt)
            text = value if type(value) is str else display(
                value, rt.limits.max_string_length, rt.charge)
        except EvalError as exc:
            _locate(exc, offset)
            raise
        sink.write(text if raw else escape(text))

    return emit_output


def _if(node: If, registry: Registry, escape: Escape) -> Emit:
    branches = [
        (compile_expr(test, registry), compile_nodes(body, registry, escape), test.offset)
        for test, body in node.branches
    ]
    otherwise = compile_nodes(node.otherwise, registry, escape) if node.otherwise else None

    def emit_if(rt: Runtime, sink: Sink) -> None:
        for test, body, offset in branches:
            try:
                passed = truthy(test(rt))
            except EvalError as exc:
                _locate(exc, offset)
                raise
            if passed:
                body(rt, sink)
                return
        if otherwise is not None:
            otherwise(rt, sink)

    return emit_if


def _entries(value: dict[str, Any]) -> list[Any]:
    return [{"key": key, "value": item} for key, item in value.items()]


def _for(node: For, registry: Registry, escape: Escape) -> Emit:
    iterable = compile_expr(node.iterable, registry)
    body = compile_nodes(node.body, registry, escape)
    otherwise = compile_nodes(node.otherwise, registry, escape) if node.otherwise else None
    item_name, index_name, offset = node.item, node.index, node.offset

    def emit_for(rt: Runtime, sink: Sink) -> None:
        try:
            value = iterable(rt)
            if isinstance(value, list):
                items = value
            elif isinstance(value, dict):
                rt.charge(len(value))
                items = _entries(value)
            elif value is None:
                items = []
            else:
                raise EvalError(f"cannot loop over {describe(value)}; "
                                "expected an array or an object")
            count = len(items)
            if count:
                rt.begin_loop(count, offset)
        except EvalError as exc:
            _locate(exc, offset)
            raise
        if not count:
            if otherwise is not None:
                otherwise(rt, sink)
            return
        scope = rt.locals
        saved = (scope.get(item_name, _MISSING), scope.get(index_name or "", _MISSING),
                 scope.get("loop", _MISSING))
        last = count - 1
        for position, item in enumerate(items):
            scope[item_name] = item
            if index_name is not None:
                scope[index_name] = position
            scope["loop"] = {
                "index": position, "number": position + 1, "first": position == 0,
                "last": position == last, "length": count,
            }
            body(rt, sink)
        for name, previous in zip((item_name, index_name or "", "loop"), saved, strict=True):
            if previous is _MISSING:
                scope.pop(name, None)
            else:
                scope[name] = previous

    return emit_for
