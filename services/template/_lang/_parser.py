"""A precedence-climbing parser from tokens to :mod:`._ast` expressions.

Precedence, lowest first::

    |            filters, left to right: ``x | f: a, b | g``
    ? :          right-associative
    || or
    && and
    == !=
    < <= > >=
    + -
    * / %
    ! not -      prefix
    . [] ()      member, index, call

Nesting is counted as the parser descends, and a tree taller than the limit
is refused, so neither parsing nor evaluating can exhaust Python's stack.
Unknown functions and wrong argument counts are recorded as problems and
parsing goes on, so ``check`` reports all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.template._lang._ast import (
    Array,
    Binary,
    Call,
    Conditional,
    Expr,
    Index,
    Literal,
    Member,
    Name,
    Unary,
)
from services.template._lang._errors import Problem, limit_message
from services.template._lang._functions._registry import Registry
from services.template._lang._lexer import Token

_BINARY: dict[str, tuple[int, str]] = {
    "||": (1, "||"), "or": (1, "||"),
    "&&": (2, "&&"), "and": (2, "&&"),
    "==": (3, "=="), "!=": (3, "!="),
    "<": (4, "<"), "<=": (4, "<="), ">": (4, ">"), ">=": (4, ">="),
    "+": (5, "+"), "-": (5, "-"),
    "*": (6, "*"), "/": (6, "/"), "%": (6, "%"),
}
_WORD_OPERATORS = frozenset({"and", "or", "not"})
_CONSTANTS = {"true": True, "false": False, "null": None}
#: Words that can never name a variable.
RESERVED = frozenset({"true", "false", "null", "and", "or", "not", "in"})


class ParseError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


#: Problems that get a "did you mean" suggestion; the default report shows 100.
_SUGGEST_FOR = 100


@dataclass
class Scope:
    """What a parse needs to know about its surroundings, and what it finds."""

    registry: Registry
    max_depth: int
    #: Loop variables (and ``loop``) of the enclosing ``for`` blocks.
    local_names: frozenset[str] = frozenset()
    problems: list[Problem] = field(default_factory=list)
    #: Root variables read, in order of first use, repeats included.
    roots: list[str] = field(default_factory=list)


def describe(token: Token) -> str:
    if token.kind == "end":
        return "'}}'" if token.value else "the end of the expression"
    if token.kind == "str":
        return "a string"
    if token.kind == "num":
        return f"the number {token.value}"
    return f"'{token.value}'"


def starts_expression(token: Token) -> bool:
    if token.kind in ("num", "str"):
        return True
    if token.kind == "name":
        return token.value not in RESERVED - {"true", "false", "null", "not"}
    return token.kind == "op" and token.value in ("(", "[", "!", "-", "+")


class Parser:
    def __init__(self, tokens: list[Token], start: int, scope: Scope) -> None:
        self._tokens = tokens
        self._pos = start
        self._scope = scope
        self._depth = 0

    def parse(self, *, allow_raw: bool) -> tuple[Expr, bool]:
        """The whole rest of the tokens as one expression, and whether it ends in ``| raw``."""
        expr, raw = self._pipe(allow_raw=allow_raw)
        token = self._peek()
        if token.kind != "end":
            raise self._error(token, f"unexpected {describe(token)} after the expression")
        return expr, raw

    def _peek(self) -> Token:
        return self._tokens[self._pos]

    def _next(self) -> Token:
        token = self._tokens[self._pos]
        if token.kind != "end":
            self._pos += 1
        return token

    def _at(self, *ops: str) -> bool:
        token = self._tokens[self._pos]
        return token.kind == "op" and token.value in ops

    def _expect(self, op: str, context: str) -> Token:
        token = self._peek()
        if token.kind != "op" or token.value != op:
            raise self._error(token, f"expected '{op}' {context}, found {describe(token)}")
        return self._next()

    def _error(self, token: Token, message: str) -> ParseError:
        return ParseError(Problem(token.offset, message))

    def _enter(self, token: Token) -> None:
        self._depth += 1
        if self._depth > self._scope.max_depth:
            raise self._too_deep(token)

    def _too_deep(self, token: Token) -> ParseError:
        return self._error(token, limit_message(
            "max_depth", self._scope.max_depth, "the expression is nested too deeply",
        ))

    def _height(self, token: Token, *children: Expr) -> int:
        height = 1 + max((child.depth for child in children), default=0)
        if height > self._scope.max_depth:
            raise self._too_deep(token)
        return height

    def _pipe(self, *, allow_raw: bool = False) -> tuple[Expr, bool]:
        expr = self._ternary()
        while self._at("|"):
            bar = self._next()
            name = self._next()
            if name.kind != "name":
                raise self._error(name, f"expected a filter name after '|', found {describe(name)}")
            args: list[Expr] = [expr]
            if self._at(":"):
                self._next()
                args.append(self._ternary())
                while self._at(","):
                    self._next()
                    args.append(self._ternary())
            if name.value == "raw":
                if allow_raw and len(args) == 1 and self._peek().kind == "end":
                    return expr, True
                self._scope.problems.append(Problem(
                    name.offset,
                    "'raw' must be the last filter of an output tag and takes no arguments",
                ))
                continue
            self._check_call(name, len(args), piped=True)
            expr = Call(name.value, tuple(args), name.offset,
                        self._height(bar, *args), piped=True)
        return expr, False

    def _ternary(self) -> Expr:
        self._enter(self._peek())
        test = self._binary(1)
        if self._at("?"):
            mark = self._next()
            then = self._ternary()
            self._expect(":", "in a conditional 'test ? a : b'")
            otherwise = self._ternary()
            test = Conditional(test, then, otherwise, mark.offset,
                               self._height(mark, test, then, otherwise))
        self._depth -= 1
        return test

    def _binary(self, min_precedence: int) -> Expr:
        left = self._unary()
        while True:
            token = self._peek()
            if token.kind not in ("op", "name") or token.value not in _BINARY:
                return left
            precedence, op = _BINARY[token.value]
            if precedence < min_precedence:
                return left
            self._next()
            right = self._binary(precedence + 1)
            left = Binary(op, left, right, token.offset, self._height(token, left, right))

    def _unary(self) -> Expr:
        token = self._peek()
        if (token.kind == "op" and token.value in ("!", "-", "+")) or (
            token.kind == "name" and token.value == "not"
        ):
            self._next()
            self._enter(token)
            operand = self._unary()
            self._depth -= 1
            op = "!" if token.value == "not" else token.value
            if op == "-" and isinstance(operand, Literal) and type(operand.value) in (int, float):
                return Literal(-operand.value, token.offset)
            return Unary(op, operand, token.offset, self._height(token, operand))
        return self._postfix()

    def _postfix(self) -> Expr:
        expr = self._primary()
        while True:
            token = self._peek()
            if token.kind != "op":
                return expr
            if token.value == ".":
                self._next()
                key = self._next()
                if key.kind != "name":
                    raise self._error(key, f"expected a property name after '.', found "
                                           f"{describe(key)}")
                expr = Member(expr, key.value, token.offset, self._height(token, expr))
            elif token.value == "[":
                self._next()
                index, _ = self._pipe()
                self._expect("]", "to close '['")
                expr = Index(expr, index, token.offset, self._height(token, expr, index))
            elif token.value == "(":
                raise self._error(token, "only functions can be called, "
                                          "like upper(name); this is not a function name")
            else:
                return expr

    def _primary(self) -> Expr:
        token = self._next()
        if token.kind in ("num", "str"):
            return Literal(token.value, token.offset)
        if token.kind == "name":
            return self._name(token)
        if token.kind == "op" and token.value == "(":
            expr, _ = self._pipe()
            self._expect(")", "to close '('")
            return expr
        if token.kind == "op" and token.value == "[":
            return self._array(token)
        raise self._error(token, f"expected an expression, found {describe(token)}")

    def _name(self, token: Token) -> Expr:
        word: str = token.value
        if word in _CONSTANTS:
            return Literal(_CONSTANTS[word], token.offset)
        if word in RESERVED:
            raise self._error(token, f"'{word}' is a reserved word and cannot start an "
                                     "expression")
        if self._at("("):
            return self._call(token)
        local = word in self._scope.local_names
        if not local:
            self._scope.roots.append(word)
        return Name(word, local, token.offset)

    def _call(self, name: Token) -> Expr:
        self._next()
        args: list[Expr] = []
        while not self._at(")"):
            args.append(self._ternary())
            if not self._at(","):
                break
            self._next()
        self._expect(")", f"to close the arguments of '{name.value}('")
        self._check_call(name, len(args), piped=False)
        return Call(name.value, tuple(args), name.offset, self._height(name, *args))

    def _array(self, bracket: Token) -> Expr:
        items: list[Expr] = []
        while not self._at("]"):
            items.append(self._ternary())
            if not self._at(","):
                break
            self._next()
        self._expect("]", "to close the array")
        return Array(tuple(items), bracket.offset, self._height(bracket, *items))

    def _check_call(self, name: Token, count: int, *, piped: bool) -> None:
        word: str = name.value
        function = self._scope.registry.get(word)
        if function is None:
            usage = "filter" if piped else "function"
            if word == "raw":
                message = ("'raw' is not a function: write {{ raw expr }} or end an output "
                           "tag with | raw")
            elif word in self._scope.local_names:
                message = f"'{word}' is a loop variable, not a {usage}"
            else:
                message = f"unknown {usage} '{word}'"
                # Suggesting costs a fuzzy match over every name; past the
                # problems anyone will read, a hostile source of thousands of
                # misspellings gets none.
                if len(self._scope.problems) < _SUGGEST_FOR:
                    suggestion = self._scope.registry.suggest(word)
                    if suggestion is not None:
                        message += f" (did you mean '{suggestion}'?)"
            self._scope.problems.append(Problem(name.offset, message))
            return
        problem = function.arity_problem(count, piped=piped)
        if problem is not None:
            self._scope.problems.append(Problem(name.offset, problem))
