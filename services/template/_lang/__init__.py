"""Litho's template language: a sandboxed expression engine over JSON values.

``{{ expr }}`` output (HTML-escaped; ``{{ raw expr }}`` or ``| raw`` opts out),
``{{ if }}…{{ else if }}…{{ else }}…{{ end }}`` and
``{{ for item, i in items }}…{{ else }}…{{ end }}`` blocks, operators with
JavaScript-like semantics, and one registry of functions that are also
filters. A hand-written lexer and parser build an AST that is compiled to
closures; nothing is ever ``eval``-ed, and every render is bounded by
:class:`Limits`. ``docs/template-language.md`` is the reference.
"""

from services.template._lang._document import outside_tags
from services.template._lang._engine import (
    CompiledExpression,
    CompiledTemplate,
    Engine,
    discover_variables,
    evaluate_expression,
    list_functions,
    result_type,
    uri_component,
    validate_expression,
)
from services.template._lang._errors import StepCapReached, deadline_message
from services.template._lang._expander import LangExpander
from services.template._lang._functions import FunctionInfo
from services.template._lang._limits import SETTING_NAMES, Limits
from services.template._lang._runtime import Clock

__all__ = [
    "SETTING_NAMES",
    "Clock",
    "CompiledExpression",
    "CompiledTemplate",
    "Engine",
    "FunctionInfo",
    "LangExpander",
    "Limits",
    "StepCapReached",
    "deadline_message",
    "discover_variables",
    "evaluate_expression",
    "list_functions",
    "outside_tags",
    "result_type",
    "uri_component",
    "validate_expression",
]
