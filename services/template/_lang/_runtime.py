"""The state of one render: variables, loop scopes, and the budgets it spends.

Every node evaluated costs a step, and every operation whose work grows with
its operands costs steps in proportion (an item compared or copied, a KiB of
text read or written), so the step budget bounds the time a render takes.
The hot path checks one integer, ``max_steps``, which is not the budget
itself but the next *checkpoint*: every :data:`CHECK_EVERY` steps the runtime
looks at the clock (the expansion's deadline, a backstop for anything the
steps undercount), and it stops at whichever comes first of the budget, the
deadline, or a caller's ``step_cap``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NoReturn

from services.template._lang._errors import (
    LimitExceeded,
    StepCapReached,
    deadline_message,
    limit_message,
)
from services.template._lang._limits import Limits

Clock = Callable[[], datetime]

#: Steps between two looks at the deadline (a few milliseconds of work).
CHECK_EVERY = 4096


class Runtime:
    """Created per render and never shared, so compiled templates stay reentrant."""

    __slots__ = (
        "_budget", "_cap", "_clock", "_now", "_timeout", "deadline", "iterations", "limits",
        "locals", "max_iterations", "max_steps", "steps", "variables",
    )

    def __init__(
        self,
        variables: Mapping[str, Any],
        limits: Limits,
        clock: Clock,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        step_cap: int | None = None,
    ) -> None:
        """``timeout`` (seconds) ends the render with an error naming
        LITHO_TEMPLATE_EXPAND_TIMEOUT at ``deadline`` (a ``time.monotonic()``
        value; by default ``timeout`` from now), so a caller can start the
        clock before the work that precedes the render."""
        self.variables = variables
        self.locals: dict[str, Any] = {}
        self.limits = limits
        self.steps = 0
        self._budget = limits.max_steps
        self._cap = self._budget if step_cap is None else min(step_cap, self._budget)
        self._timeout = timeout
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        #: Read by the compiled calls after each function call.
        self.deadline = deadline
        #: The next checkpoint; the hot path compares ``steps`` against it.
        self.max_steps = min(self._cap, CHECK_EVERY)
        self.iterations = 0
        self.max_iterations = limits.max_loop_iterations
        self._clock = clock
        self._now: datetime | None = None

    def out_of_steps(self, offset: int | None) -> None:
        """Called when ``steps`` passes the checkpoint: raises when the budget,
        the step cap or the deadline is spent, else sets the next checkpoint."""
        if self.steps > self._budget:
            raise LimitExceeded(limit_message(
                "max_steps", self._budget, "the template needs too many evaluation steps",
            ), offset)
        if self.steps > self._cap:
            raise StepCapReached()
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.past_deadline(offset)
        self.max_steps = min(self._cap, self.steps + CHECK_EVERY)

    def past_deadline(self, offset: int | None) -> NoReturn:
        raise LimitExceeded(deadline_message(self._timeout or 0), offset)

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
