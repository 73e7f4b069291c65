"""The state of one render: variables, loop scopes, and the budgets it spends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NoReturn

from services.template._lang._errors import LimitExceeded, limit_message
from services.template._lang._limits import Limits

Clock = Callable[[], datetime]


class Runtime:
    """Created per render and never shared, so compiled templates stay reentrant."""

    __slots__ = (
        "_clock", "_now", "iterations", "limits", "locals", "max_iterations", "max_steps",
        "steps", "variables",
    )

    def __init__(self, variables: Mapping[str, Any], limits: Limits, clock: Clock) -> None:
        self.variables = variables
        self.locals: dict[str, Any] = {}
        self.limits = limits
        self.steps = 0
        self.max_steps = limits.max_steps
        self.iterations = 0
        self.max_iterations = limits.max_loop_iterations
        self._clock = clock
        self._now: datetime | None = None

    def out_of_steps(self, offset: int | None) -> NoReturn:
        raise LimitExceeded(limit_message(
            "max_steps", self.max_steps, "the template needs too many evaluation steps",
        ), offset)

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.max_steps:
            self.out_of_steps(None)

    def charge_value(self, value: Any) -> None:
        """One step per array item or object entry, and per KiB of text."""
        if isinstance(value, str):
            if len(value) >= 1024:
                self.charge(len(value) >> 10)
        elif isinstance(value, list | dict):
            self.charge(len(value))

    def check_string(self, length: int) -> None:
        if length > self.limits.max_string_length:
            raise LimitExceeded(limit_message(
                "max_string_length", self.limits.max_string_length,
                f"a string of {length} characters would be too long",
            ))
        if length >= 1024:
            self.charge(length >> 10)

    def check_array(self, length: int) -> None:
        if length > self.limits.max_array_length:
            raise LimitExceeded(limit_message(
                "max_array_length", self.limits.max_array_length,
                f"an array of {length} items would be too long",
            ))

    def begin_loop(self, count: int, offset: int) -> None:
        """Reserve a loop's iterations up front, so a loop that would break the
        budget stops before its first iteration rather than part way."""
        self.iterations += count
        if self.iterations > self.max_iterations:
            raise LimitExceeded(limit_message(
                "max_loop_iterations", self.max_iterations,
                "the template's loops run too many iterations",
            ), offset)

    def now(self) -> datetime:
        """Read the clock once per render, so every "now" in one image agrees."""
        if self._now is None:
            self._now = self._clock()
        return self._now
