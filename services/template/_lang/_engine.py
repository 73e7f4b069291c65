"""The public face of the language: check, compile, render, evaluate.

Parse problems become :class:`FieldError` lists (``check``) or one
:class:`InvalidArgument` carrying all of them (``compile``); errors while
rendering become :class:`InvalidArgument` naming the line and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from litho.errors import FieldError, InvalidArgument
from services.template._lang._compiler import (
    TOO_DEEP,
    Emit,
    Eval,
    Sink,
    compile_expr,
    compile_nodes,
)
from services.template._lang._document import parse_document, parse_expression
from services.template._lang._errors import (
    EvalError,
    LimitExceeded,
    Problem,
    field_errors,
    limit_message,
    located,
)
from services.template._lang._functions import FunctionInfo, Registry, default_registry
from services.template._lang._limits import Limits
from services.template._lang._runtime import Clock, Runtime
from services.template._lang._values import json_text, type_name

_TEMPLATE_FIELD = "html"
_EXPRESSION_FIELD = "expression"


def _system_clock() -> datetime:
    return datetime.now(UTC)


def result_type(value: Any) -> str:
    """'string', 'number', 'boolean', 'null', 'array' or 'object'."""
    return type_name(value)


class CompiledTemplate:
    """A parsed template, ready to render any number of times, from any thread."""

    def __init__(self, source: str, body: Emit, variables: list[str], limits: Limits,
                 clock: Clock, foreign: list[FieldError] | None = None) -> None:
        self._source = source
        self._foreign = foreign or []
        self._body = body
        self._variables = variables
        self._limits = limits
        self._clock = clock

    @property
    def source(self) -> str:
        return self._source

    @property
    def variables(self) -> list[str]:
        """Root variables the template reads, in order of first use."""
        return list(self._variables)

    @property
    def foreign_tags(self) -> list[FieldError]:
        """Tags of other template languages in the text (``{% if %}``), each
        with Litho's equivalent: refused on save, rendered as text."""
        return list(self._foreign)

    def render(
        self,
        variables: Mapping[str, Any],
        *,
        max_output: int,
        timeout: float | None = None,
        deadline: float | None = None,
        step_cap: int | None = None,
    ) -> str:
        """The expanded document. ``timeout`` (seconds) ends the render with an
        InvalidArgument; past ``step_cap`` steps (when below the budget) it
        raises StepCapReached, for a caller that tries cheap renders inline
        and runs the rest elsewhere with the whole budget."""
        runtime = Runtime(variables, self._limits, self._clock, timeout=timeout,
                          deadline=deadline, step_cap=step_cap)
        sink = Sink(max_output)
        try:
            self._body(runtime, sink)
        except EvalError as exc:
            message = located(self._source, exc.offset, exc.message)
            raise InvalidArgument(message, errors=[FieldError(_TEMPLATE_FIELD, message)]) from None
        except RecursionError:
            raise InvalidArgument(TOO_DEEP) from None
        return sink.text()


class CompiledExpression:
    """A parsed bare expression; evaluated with a caller's runtime, so several
    can share one budget (``Engine.evaluate_all``)."""

    __slots__ = ("_evaluate", "source")

    def __init__(self, source: str, evaluate: Eval) -> None:
        self.source = source
        self._evaluate = evaluate

    def evaluate(self, runtime: Runtime) -> Any:
        return self._evaluate(runtime)


def uri_component(text: str) -> str:
    """``text`` percent-encoded as one URI component, as RFC 6570's simple
    expansion (and JavaScript's ``encodeURIComponent``, less ``!'()*``) does:
    the unreserved characters ``A-Z a-z 0-9 - . _ ~`` are kept and every
    other one is written as the ``%XX`` escapes of its UTF-8 bytes, ``/ ? # @
    & = + : %`` included. Such text cannot end a path segment, start a query
    or fragment, or change the host."""
    return quote(text, safe="", errors="surrogatepass")


def _as_is(text: str) -> str:
    return text


class Engine:
    def __init__(self, limits: Limits | None = None, *, clock: Clock | None = None) -> None:
        self._limits = limits or Limits()
        self._clock = clock or _system_clock
        self._registry: Registry = default_registry()

    @property
    def limits(self) -> Limits:
        return self._limits

    def _too_large(self, source: str, what: str) -> Problem | None:
        limit = self._limits.max_template_bytes
        if len(source) * 4 <= limit or len(source.encode("utf-8", "surrogatepass")) <= limit:
            return None
        return Problem(None, limit_message("max_template_bytes", limit, f"the {what} is too large"))

    def _errors(self, source: str, problems: list[Problem], field: str) -> list[FieldError]:
        return field_errors(source, problems, field=field, max_errors=self._limits.max_errors)

    def check(self, source: str) -> list[FieldError]:
        """Every problem in the template, each naming its line and column."""
        too_large = self._too_large(source, "template")
        if too_large is not None:
            return self._errors(source, [too_large], _TEMPLATE_FIELD)
        document = parse_document(source, self._registry, self._limits)
        return self._errors(source, [*document.problems, *document.foreign], _TEMPLATE_FIELD)

    def compile(self, source: str, *, escape: bool = True, url: bool = False) -> CompiledTemplate:
        """The compiled template. With ``escape=False`` every output is
        written as it is, as if each tag were ``raw``: for text that is not
        HTML (a data source's headers and body). With ``url=True`` (a data
        source's URL) every output is encoded by :func:`uri_component`, so
        a value stays inside the part of the URL its tag is in; ``{{ raw x }}``
        and ``{{ x | raw }}`` are written as they are (``escape`` is then
        not used)."""
        too_large = self._too_large(source, "template")
        if too_large is not None:
            errors = self._errors(source, [too_large], _TEMPLATE_FIELD)
            raise InvalidArgument(errors[0].message, errors=errors)
        document = parse_document(source, self._registry, self._limits)
        if document.problems:
            raise InvalidArgument(
                "the template has errors",
                errors=self._errors(source, document.problems, _TEMPLATE_FIELD),
            )
        if url:
            body = compile_nodes(document.nodes, self._registry, uri_component)
        elif escape:
            body = compile_nodes(document.nodes, self._registry)
        else:
            body = compile_nodes(document.nodes, self._registry, _as_is)
        foreign = self._errors(source, document.foreign, _TEMPLATE_FIELD)
        return CompiledTemplate(source, body, document.variables, self._limits, self._clock,
                                foreign)

    def discover_variables(self, source: str) -> list[str]:
        """Root variables a template reads, first use first; loop variables and
        ``loop`` excluded. Broken tags are skipped, so this works while editing."""
        if self._too_large(source, "template") is not None:
            return []
        return parse_document(source, self._registry, self._limits).variables

    def _expression(self, source: str) -> tuple[Eval | None, list[FieldError]]:
        too_large = self._too_large(source, "expression")
        if too_large is not None:
            return None, self._errors(source, [too_large], _EXPRESSION_FIELD)
        expr, problems, _ = parse_expression(source, self._registry, self._limits)
        if problems or expr is None:
            return None, self._errors(source, problems, _EXPRESSION_FIELD)
        return compile_expr(expr, self._registry), []

    def compile_expression(self, source: str) -> tuple[CompiledExpression | None, list[FieldError]]:
        """The compiled bare expression, or None and every problem in it
        (each ``line L, column C: …``, field ``expression``)."""
        evaluate, errors = self._expression(source)
        if evaluate is None:
            return None, errors
        return CompiledExpression(source, evaluate), []

    def evaluate_all(
        self, expressions: Mapping[str, CompiledExpression], variables: Mapping[str, Any], *,
        timeout: float | None = None, deadline: float | None = None,
    ) -> dict[str, Any]:
        """Each expression's value, by its key, all under one render's
        budget (steps, loop iterations, deadline), as if they were the tags of
        one template. Raises InvalidArgument with one FieldError per failing
        expression (field: its key), every one that fails, except that a
        spent budget ends the evaluation at the expression that spent it."""
        runtime = Runtime(variables, self._limits, self._clock, timeout=timeout,
                          deadline=deadline)
        values: dict[str, Any] = {}
        errors: list[FieldError] = []
        for key, expression in expressions.items():
            try:
                values[key] = expression.evaluate(runtime)
            except LimitExceeded as exc:
                errors.append(FieldError(key, located(expression.source, exc.offset,
                                                      exc.message)))
                break
            except EvalError as exc:
                errors.append(FieldError(key, located(expression.source, exc.offset,
                                                      exc.message)))
            except RecursionError:
                errors.append(FieldError(key, TOO_DEEP))
                break
        if errors:
            raise InvalidArgument(f"{errors[0].field}: {errors[0].message}", errors=errors)
        return values

    def validate_expression(self, source: str) -> list[FieldError]:
        """Every problem in a bare expression (no braces), with its column."""
        return self._expression(source)[1]

    def evaluate_expression(
        self, source: str, variables: Mapping[str, Any], *, timeout: float | None = None,
        max_output: int | None = None,
    ) -> Any:
        """The value; with ``max_output``, one whose JSON text is longer than
        that many characters is refused (it could not be sent back)."""
        evaluate, errors = self._expression(source)
        if evaluate is None:
            raise InvalidArgument("the expression has errors", errors=errors)
        runtime = Runtime(variables, self._limits, self._clock, timeout=timeout)
        try:
            value = evaluate(runtime)
        except EvalError as exc:
            message = located(source, exc.offset, exc.message)
            raise InvalidArgument(
                message, errors=[FieldError(_EXPRESSION_FIELD, message)],
            ) from None
        except RecursionError:
            raise InvalidArgument(TOO_DEEP) from None
        if max_output is not None:
            try:
                json_text(value, max_output)
            except LimitExceeded:
                message = limit_message("max_output_bytes", max_output,
                                        "the result is too large to send back")
                raise InvalidArgument(
                    message, errors=[FieldError(_EXPRESSION_FIELD, message)]) from None
        return value

    def list_functions(self) -> list[FunctionInfo]:
        return [function.info() for function in self._registry.functions()]


def list_functions() -> list[FunctionInfo]:
    """Every built-in function, grouped by category, for the listing endpoint."""
    return Engine().list_functions()


def discover_variables(source: str) -> list[str]:
    return Engine().discover_variables(source)


def evaluate_expression(expr: str, variables: Mapping[str, Any]) -> Any:
    return Engine().evaluate_expression(expr, variables)


def validate_expression(expr: str) -> list[FieldError]:
    return Engine().validate_expression(expr)
