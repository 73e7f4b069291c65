"""Expansion of template sources.

:class:`Expander` is the seam the template language plugs into: the service
asks it to ``check`` a source on save (every problem with its position) and to
``expand`` a saved source with variables. :class:`LookupExpander` is the first
implementation: ``{{ name }}``, ``{{ user.name }}``, ``{{ items[0].title }}`` and
``{{ row['key'] }}`` lookups, HTML-escaped, a missing value rendering empty.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from litho.errors import FieldError, InvalidArgument

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_STEP = re.compile(
    r"""\s*(?:
        (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
      | \.(?P<attr>[A-Za-z_$][A-Za-z0-9_$]*)
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*'(?P<sq>[^'\\]*)'\s*\]
      | \[\s*"(?P<dq>[^"\\]*)"\s*\]
    )""",
    re.VERBOSE,
)

Path = tuple[str | int, ...]


class Expander(Protocol):
    def check(self, source: str) -> list[FieldError]:
        """Every syntax problem in ``source``, each naming its line and column."""

    def expand(self, source: str, variables: Mapping[str, Any], *, max_output: int) -> str:
        """The source with every tag replaced; raises InvalidArgument past ``max_output``."""


def _position(source: str, offset: int) -> str:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def parse_path(expression: str) -> Path | None:
    """``user.items[0]['x']`` → ``("user", "items", 0, "x")``; None if not a lookup."""
    steps: list[str | int] = []
    pos = 0
    text = expression.strip()
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None or (not steps and match.group("name") is None):
            return None
        if steps and match.group("name") is not None:
            return None
        pos = match.end()
        if match.group("index") is not None:
            steps.append(int(match.group("index")))
        else:
            key = next(g for g in (match.group("name"), match.group("attr"),
                                   match.group("sq"), match.group("dq")) if g is not None)
            steps.append(key)
    return tuple(steps) if steps else None


def lookup(variables: Mapping[str, Any], path: Path) -> Any:
    """Walk JSON data only: dict keys and list indexes; anything else is None."""
    value: Any = variables
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(step)
    return value


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class LookupExpander:
    def check(self, source: str) -> list[FieldError]:
        problems = []
        for match in _TAG.finditer(source):
            if parse_path(match.group(1)) is None:
                problems.append(FieldError(
                    "html",
                    f"{_position(source, match.start())}: "
                    f"cannot read {match.group(0)!r}; expected a variable like {{{{ user.name }}}}",
                ))
        return problems

    def expand(self, source: str, variables: Mapping[str, Any], *, max_output: int) -> str:
        def substitute(match: re.Match[str]) -> str:
            path = parse_path(match.group(1))
            if path is None:
                raise InvalidArgument(f"{_position(source, match.start())}: invalid tag")
            return html.escape(to_text(lookup(variables, path)), quote=True)

        out = _TAG.sub(substitute, source)
        if len(out.encode()) > max_output:
            raise InvalidArgument(f"the expanded document is larger than {max_output} bytes")
        return out
