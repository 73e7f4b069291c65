"""A binding's mapping: variables computed from fetched data by expressions
of the template language (``EvaluateMapping``).

Each entry maps a variable name to a bare expression (no braces)::

    {"title": "items[0].name", "price.amount": "items[0].price * 1.2",
     "price.label": "stock > 0 ? 'In stock' : 'Sold out'"}

The expressions read the data's top-level fields as variables when the data
is an object, and ``data`` as the whole value (a top-level field named
``data`` wins). A path that is absent reads as null, as in a template
(``missing.deeper`` is null, not an error), so a source that leaves a field
out maps it to null rather than failing. Dotted names nest: ``price.amount``
and ``price.label`` make ``{"price": {"amount": …, "label": …}}``; a name
that is both a value and a prefix of another (``price`` and
``price.amount``) is refused, naming both.

All expressions share one render's budget (steps, loop iterations, the
expansion deadline), as if they were the tags of one template, and the
result must fit ``LITHO_TEMPLATE_MAX_VARIABLES_BYTES`` as JSON text (it
becomes a render's variables). Problems
are ``mapping.<name>`` field errors, every one at once: syntax errors with
``line L, column C: …``, evaluation errors (a type error, a spent budget)
with the same position inside the expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from litho.errors import FieldError, InvalidArgument
from litho.jsonlimits import safe_text
from services.template._lang import CompiledExpression, Engine
from services.template._lang._errors import LimitExceeded
from services.template._lang._values import json_text
from services.template._model import VARIABLES_BYTES_SETTING

#: Entries one mapping may hold (bindings allow 100).
MAX_ENTRIES: Final = 1000
#: Longest variable name, dots included.
MAX_NAME_CHARS: Final = 200
DATA_VARIABLE: Final = "data"
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)


def compile_mapping(engine: Engine, mapping: Mapping[str, str]) -> dict[str, CompiledExpression]:
    """Every expression compiled; raises InvalidArgument listing every bad
    name, conflict and syntax error (``mapping.<name>``)."""
    if len(mapping) > MAX_ENTRIES:
        raise InvalidArgument("the mapping has too many entries", errors=[FieldError(
            "mapping", f"at most {MAX_ENTRIES} entries; got {len(mapping)}")])
    errors: list[FieldError] = []
    compiled: dict[str, CompiledExpression] = {}
    names: list[str] = []
    for name in sorted(mapping):
        field = f"mapping.{name}"
        if len(name) > MAX_NAME_CHARS or _NAME.fullmatch(name) is None:
            errors.append(FieldError(f"mapping.{_shown(name)}",
                                     "must be a variable name, or names joined by dots "
                                     f"(letters, digits and _, at most {MAX_NAME_CHARS} "
                                     "characters)"))
            continue
        names.append(name)
        expression, problems = engine.compile_expression(mapping[name])
        errors.extend(FieldError(field, p.message) for p in problems)
        if expression is not None:
            compiled[name] = expression
    errors.extend(_conflicts(names))
    if errors:
        raise InvalidArgument(f"the mapping is invalid: {errors[0].field}: {errors[0].message}",
                              errors=errors)
    return compiled


def _conflicts(names: list[str]) -> list[FieldError]:
    """Each name under another name that holds a value (``a.b`` under ``a``)."""
    values = set(names)
    errors = []
    for name in names:
        parts = name.split(".")
        for end in range(1, len(parts)):
            prefix = ".".join(parts[:end])
            if prefix in values:
                errors.append(FieldError(
                    f"mapping.{name}",
                    f"conflicts with mapping.{prefix}: '{prefix}' cannot be both a value and "
                    f"an object holding '{name[len(prefix) + 1:]}'"))
                break
    return errors


def variables_of(data: Any) -> dict[str, Any]:
    """The variables the expressions read: the data's fields, and ``data``."""
    if isinstance(data, dict):
        return {DATA_VARIABLE: data, **data}
    return {DATA_VARIABLE: data}


def evaluate_mapping(
    engine: Engine, compiled: Mapping[str, CompiledExpression], data: Any, *,
    timeout: float, max_bytes: int, deadline: float | None = None,
) -> str:
    """The mapped variables as JSON object text, nested by dotted names, at
    most ``max_bytes`` of UTF-8 (they become a render's variables, which
    ``LITHO_TEMPLATE_MAX_VARIABLES_BYTES`` bounds). Raises InvalidArgument
    naming each failing variable (``mapping.<name>``)."""
    try:
        values = engine.evaluate_all(compiled, variables_of(data), timeout=timeout,
                                     deadline=deadline)
    except InvalidArgument as exc:
        errors = [FieldError(f"mapping.{e.field}", e.message) for e in exc.errors]
        raise InvalidArgument(f"the mapping failed: {errors[0].field}: {errors[0].message}"
                              if errors else exc.message, errors=errors) from None
    nested: dict[str, Any] = {}
    for name, value in values.items():
        *parents, last = name.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    message = (f"the mapped variables take more than {max_bytes} bytes as JSON, more than "
               f"a render's variables may ({VARIABLES_BYTES_SETTING})")
    try:
        text = json_text(nested, max_bytes)
    except LimitExceeded:
        raise InvalidArgument(message, errors=[FieldError("mapping", message)]) from None
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(message, errors=[FieldError("mapping", message)])
    return text


def _shown(name: str) -> str:
    text = safe_text(name).replace("\x00", "\\u0000")
    return text if len(text) <= 60 else text[:40] + "…"
