"""The syntax tree: expressions, and the template nodes that hold them.

``depth`` on an expression is the height of its tree. The parser refuses a
tree taller than ``Limits.max_depth``, which is what lets the compiler and
the evaluator recurse without ever meeting Python's recursion limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any
    offset: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Array:
    items: tuple[Expr, ...]
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    #: True for a loop variable (or ``loop``) of an enclosing ``for``.
    local: bool
    offset: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Member:
    target: Expr
    key: str
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Index:
    target: Expr
    index: Expr
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # '!' or '-' or '+'
    operand: Expr
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # arithmetic, comparison, '&&' or '||'
    left: Expr
    right: Expr
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Conditional:
    test: Expr
    then: Expr
    otherwise: Expr
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    offset: int
    depth: int
    #: Written as a filter: ``x | name: a`` (the piped value is args[0]).
    piped: bool = False


Expr = Literal | Array | Name | Member | Index | Unary | Binary | Conditional | Call


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Output:
    expr: Expr
    raw: bool
    offset: int


@dataclass(frozen=True, slots=True)
class If:
    branches: tuple[tuple[Expr, tuple[Node, ...]], ...]
    otherwise: tuple[Node, ...]
    offset: int


@dataclass(frozen=True, slots=True)
class For:
    item: str
    index: str | None
    iterable: Expr
    body: tuple[Node, ...]
    #: Rendered instead of the body when there is nothing to iterate.
    otherwise: tuple[Node, ...]
    offset: int


Node = Text | Output | If | For
