"""The copilot's CPU work as it runs in a sandbox worker process
(:class:`litho.sandbox.Sandbox`): planning and applying parse the template's
HTML, which a hostile template can make take minutes (the standard library's
HTML parser is quadratic in some documents), so it runs where it can be
killed when its time is up, never in a thread of the service.

Everything here crosses a process boundary: arguments and results are
plain dataclasses, and a refusal comes back as a :class:`Refusal` value
(the engine's exceptions carry their own constructor arguments, which do not
survive pickling), raised again in the service by :func:`unwrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from litho.errors import FieldError, InvalidArgument
from services.template._copilot import (
    Applied,
    CopilotLimits,
    Operation,
    Step,
    TemplateView,
    apply,
    plan,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Refusal:
    """An ``InvalidArgument`` raised in the worker: its message and fields."""

    message: str
    errors: tuple[tuple[str, str], ...] = ()


def plan_steps(prompt: str, view: TemplateView, history: Any,
               limits: CopilotLimits) -> list[Step] | Refusal:
    try:
        return plan(prompt, view, history=history, limits=limits)
    except InvalidArgument as exc:
        return _refusal(exc)


def apply_steps(view: TemplateView, operations: Sequence[Operation], labels: Sequence[str],
                limits: CopilotLimits) -> Applied | Refusal:
    try:
        return apply(view, operations, labels=labels, field="steps", limits=limits)
    except InvalidArgument as exc:
        return _refusal(exc)


def unwrap(result: T | Refusal) -> T:
    """The worker's result, or its refusal raised again as ``InvalidArgument``."""
    if isinstance(result, Refusal):
        raise InvalidArgument(result.message,
                              errors=[FieldError(f, m) for f, m in result.errors])
    return result


def _refusal(exc: InvalidArgument) -> Refusal:
    return Refusal(exc.message, tuple((e.field, e.message) for e in exc.errors))
