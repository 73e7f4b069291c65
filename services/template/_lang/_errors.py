"""What goes wrong inside the engine, before it becomes a public error.

    Problem          found while parsing; ``check`` reports every one
    EvalError        an expression failed while rendering (carries the offset)
    └── LimitExceeded  a render broke one of the configured :class:`Limits`
    ArgumentError    a function refused its arguments; the call site names it
    StepCapReached   a render ran past the step cap its caller set (not an
                     error of the template: the caller runs it again elsewhere)

Only :mod:`._engine` turns these into :class:`litho.errors.InvalidArgument`,
with the line and column the offset points at.
"""

from __future__ import annotations

from typing import NamedTuple

from litho.errors import FieldError
from services.template._lang._limits import OUTPUT_SETTING, SETTING_NAMES


class Problem(NamedTuple):
    """A syntax or reference error; ``offset`` is None for the whole source."""

    offset: int | None
    message: str


class EvalError(Exception):
    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class LimitExceeded(EvalError):
    pass


class StepCapReached(Exception):
    """The render used the steps its caller allowed it in this place."""


#: The setting of the expansion deadline, named in the error that ends one.
DEADLINE_SETTING = "LITHO_TEMPLATE_EXPAND_TIMEOUT"


def deadline_message(timeout: float) -> str:
    return (f"the template took longer than {timeout:g} s to expand "
            f"(setting {DEADLINE_SETTING})")


class ArgumentError(Exception):
    """Raised by a function implementation; the message omits the function's name."""


def limit_message(limit: str, value: int, what: str) -> str:
    setting = OUTPUT_SETTING if limit == "max_output_bytes" else SETTING_NAMES[limit]
    return f"{what} (limit {value}, setting {setting})"


def position(source: str, offset: int) -> str:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def located(source: str, offset: int | None, message: str) -> str:
    return message if offset is None else f"{position(source, offset)}: {message}"


def field_errors(
    source: str, problems: list[Problem], *, field: str, max_errors: int
) -> list[FieldError]:
    ordered = sorted(problems, key=lambda p: -1 if p.offset is None else p.offset)
    shown = [FieldError(field, located(source, p.offset, p.message)) for p in ordered[:max_errors]]
    if len(ordered) > max_errors:
        shown.append(FieldError(field, limit_message(
            "max_errors", max_errors,
            f"{len(ordered) - max_errors} more problems are not shown",
        )))
    return shown
