"""The one table of functions: it drives the engine, the checker and the docs.

Every function is also a filter: ``x | f: a, b`` is ``f(x, a, b)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Function:
    name: str
    #: Called as ``impl(runtime, *args)``; raises ArgumentError for bad input.
    impl: Callable[..., Any]
    min_args: int
    #: None for a variadic function.
    max_args: int | None
    category: str
    signature: str
    description: str
    example: str
    example_result: Any
    example_variables: Mapping[str, Any] = field(default_factory=dict)
    #: Steps charged for a call on top of the one every node pays: for
    #: functions whose fixed cost (Babel, zoneinfo) is far above a step's.
    cost: int = 0

    def arity_problem(self, count: int, *, piped: bool) -> str | None:
        """Why ``count`` arguments do not fit, or None when they do."""
        if count >= self.min_args and (self.max_args is None or count <= self.max_args):
            return None
        if self.max_args is None:
            wanted = f"at least {self.min_args}"
        elif self.min_args == self.max_args:
            wanted = str(self.min_args)
        else:
            wanted = f"{self.min_args} to {self.max_args}"
        noun = "argument" if wanted == "1" else "arguments"
        got = f"{count - 1} after the piped value" if piped else str(count)
        usage = "filter" if piped else "function"
        return f"{usage} '{self.name}' takes {wanted} {noun} ({self.signature}), got {got}"

    def info(self) -> FunctionInfo:
        return FunctionInfo(
            name=self.name, signature=self.signature, description=self.description,
            example=self.example, example_result=self.example_result, category=self.category,
            example_variables=dict(self.example_variables),
        )


@dataclass(frozen=True)
class FunctionInfo:
    """What ``GET /v1/expressions/functions`` lists for one function."""

    name: str
    signature: str
    description: str
    example: str
    example_result: Any
    category: str
    example_variables: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signature": self.signature,
            "description": self.description,
            "example": self.example,
            "exampleVariables": self.example_variables,
            "exampleResult": self.example_result,
            "category": self.category,
        }


class Registry:
    def __init__(self, functions: Iterable[Function]) -> None:
        self._functions: dict[str, Function] = {}
        for function in functions:
            if function.name in self._functions:
                raise ValueError(f"function {function.name!r} is registered twice")
            self._functions[function.name] = function
        self._folded = {name.lower(): name for name in self._functions}

    def get(self, name: str) -> Function | None:
        return self._functions.get(name)

    def names(self) -> list[str]:
        return list(self._functions)

    def functions(self) -> list[Function]:
        return list(self._functions.values())

    def suggest(self, name: str) -> str | None:
        """The registered name closest to a misspelt one, if any is close."""
        folded = self._folded.get(name.lower())
        if folded is not None:
            return folded
        close = difflib.get_close_matches(name, self._functions, n=1, cutoff=0.6)
        return close[0] if close else None
