"""From template text to a tree of text, output tags and blocks.

Blocks are matched with an explicit stack rather than recursion, so even a
template that opens a hundred thousand ``if`` blocks is reported, not crashed
on. Each tag is parsed on its own: one broken tag does not hide the problems
of the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.template._lang._ast import Expr, For, If, Literal, Node, Output, Text
from services.template._lang._errors import Problem, limit_message
from services.template._lang._functions._registry import Registry
from services.template._lang._lexer import LexError, Token, lex
from services.template._lang._limits import Limits
from services.template._lang._parser import (
    RESERVED,
    ParseError,
    Parser,
    Scope,
    describe,
    starts_expression,
)

_MISTAKES = {
    "endif": "close a block with {{ end }}",
    "endfor": "close a block with {{ end }}",
    "elif": "write {{ else if condition }}",
    "elseif": "write {{ else if condition }}",
    "elsif": "write {{ else if condition }}",
}
_PLACEHOLDER = Literal(None, 0)

#: Tags of other template languages, each with Litho's way of saying it.
#: Authors coming from Handlebars, Liquid or Jinja write these first; the
#: error shows the equivalent instead of "unexpected character".
_HANDLEBARS = {
    "#if": "{{#if x}} is {{ if x }} … {{ end }} in Litho",
    "#unless": "{{#unless x}} is {{ if not x }} … {{ end }} in Litho",
    "#each": "{{#each items}} is {{ for item in items }} … {{ end }} in Litho "
             "(the item has a name; {{ loop.index }} is its position)",
    "#with": "Litho has no {{#with}}: write the dotted path, {{ user.name }}",
    "/": "{{/if}} and {{/each}} are {{ end }} in Litho",
    ">": "Litho has no partials ({{> name}}): keep the markup in the template",
    "!": "{{!-- comment --}} is not Litho syntax: use an HTML comment <!-- … -->",
    "{": "{{{ html }}} is {{ raw html }} in Litho",
}
# Possessive: a run of letters is never given back, so a long text of
# "{% aaaa…" is scanned in linear time, not re-tried at every length.
_FOREIGN_BLOCK = re.compile(r"\{%-?\s*+([A-Za-z]++)[^%]{0,200}?-?%\}")
#: At most this many foreign tags are reported in one template.
_MAX_FOREIGN = 20
_LIQUID_JINJA = {
    "if": "{% if x %} is {{ if x }} in Litho",
    "unless": "{% unless x %} is {{ if not x }} in Litho",
    "elsif": "{% elsif x %} is {{ else if x }} in Litho",
    "elif": "{% elif x %} is {{ else if x }} in Litho",
    "else": "{% else %} is {{ else }} in Litho",
    "endif": "{% endif %} is {{ end }} in Litho",
    "endunless": "{% endunless %} is {{ end }} in Litho",
    "for": "{% for item in items %} is {{ for item in items }} in Litho",
    "endfor": "{% endfor %} is {{ end }} in Litho",
    "assign": "Litho has no assignments ({% assign %}): compute the value in an "
              "expression, {{ price * 1.2 | currency }}",
    "set": "Litho has no assignments ({% set %}): compute the value in an expression",
    "capture": "Litho has no {% capture %}: write the expression where it is used",
    "include": "Litho has no includes: keep the markup in the template",
    "raw": "Litho has no {% raw %}: write a literal brace as {{ '{{' }}",
    "comment": "{% comment %} is not Litho syntax: use an HTML comment <!-- … -->",
    "case": "{% case %} is {{ if x == 'a' }} … {{ else if x == 'b' }} … {{ end }} in Litho",
    "block": "Litho has no template inheritance ({% block %})",
    "extends": "Litho has no template inheritance ({% extends %})",
    "macro": "Litho has no macros ({% macro %})",
}


@dataclass(frozen=True)
class Document:
    nodes: tuple[Node, ...]
    problems: list[Problem]
    #: Root variables the template reads, first use first, without ``loop``.
    variables: list[str]
    #: Liquid/Jinja tags in the text (``{% if %}``): not errors of the
    #: language (the text renders as written, and stored templates keep
    #: rendering), but refused on save with Litho's equivalent.
    foreign: list[Problem] = field(default_factory=list)


@dataclass
class _Block:
    keyword: str  # 'if' or 'for'
    offset: int
    branches: list[tuple[Expr, list[Node]]] = field(default_factory=list)
    otherwise: list[Node] | None = None
    item: str = ""
    index: str | None = None
    iterable: Expr = _PLACEHOLDER
    #: The loop variables in scope where this block opened, restored at its end.
    outer_locals: frozenset[str] = frozenset()

    def body(self) -> list[Node]:
        return self.otherwise if self.otherwise is not None else self.branches[-1][1]

    def node(self) -> Node:
        otherwise = tuple(self.otherwise or ())
        if self.keyword == "if":
            return If(tuple((test, tuple(body)) for test, body in self.branches), otherwise,
                      self.offset)
        return For(self.item, self.index, self.iterable, tuple(self.branches[0][1]), otherwise,
                   self.offset)


def parse_expression(source: str, registry: Registry, limits: Limits) -> tuple[
    Expr | None, list[Problem], list[str]
]:
    """A bare expression (no braces), as the expression endpoints receive it."""
    scope = Scope(registry, limits.max_depth)
    try:
        tokens, _ = lex(source, 0, tag_start=None)
        if tokens[0].kind == "end":
            return None, [Problem(0, "the expression is empty")], []
        expr, _ = Parser(tokens, 0, scope).parse(allow_raw=False)
    except (LexError, ParseError) as exc:
        return None, [*scope.problems, exc.problem], _unique(scope.roots)
    except RecursionError:
        return None, [Problem(0, _too_deep(limits))], []
    return expr, scope.problems, _unique(scope.roots)


def parse_document(source: str, registry: Registry, limits: Limits) -> Document:
    return _Builder(source, registry, limits).build()


def outside_tags(source: str, placeholder: str = "") -> str:
    """``source`` with each ``{{ … }}`` tag replaced by ``placeholder``: the
    text the template writes as it is. Tags end where the parser ends them
    (a ``}}`` in a string literal does not end one); a tag that does not
    lex ends at the next ``}}``, and an unterminated one takes the rest."""
    parts: list[str] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            parts.append(source[pos:])
            break
        parts += (source[pos:start], placeholder)
        foreign = _handlebars(source, start) is not None
        if not foreign:
            try:
                _, pos = lex(source, start + 2, tag_start=start)
                continue
            except LexError:
                pass
        close = source.find("}}", start + 2)
        if close < 0:
            break
        pos = close + (3 if foreign and source.startswith("}}}", close) else 2)
    return "".join(parts)


def _handlebars(source: str, start: int) -> str | None:
    """The hint for a Handlebars tag at ``start`` (``{{#if``, ``{{/if}}``,
    ``{{{html}}}``, …), or None when the tag is not one."""
    head = source[start + 2:start + 12].lstrip(" ~")
    if head.startswith("{"):
        return "Handlebars tags are not Litho syntax: " + _HANDLEBARS["{"]
    for prefix in ("#if", "#unless", "#each", "#with"):
        if head.startswith(prefix):
            return "Handlebars tags are not Litho syntax: " + _HANDLEBARS[prefix]
    if head[:1] in ("#", "/", ">"):
        key = head[:1] if head[:1] != "#" else "#if"
        return "Handlebars tags are not Litho syntax: " + _HANDLEBARS[key]
    if source.startswith("!--", start + 2):
        # Only the block comment: "{{ !a }}" and "{{!a}}" are Litho's "not".
        return "Handlebars tags are not Litho syntax: " + _HANDLEBARS["!"]
    return None


def _too_deep(limits: Limits) -> str:
    return limit_message("max_depth", limits.max_depth, "the expression is nested too deeply")


def _unique(names: list[str]) -> list[str]:
    return [name for name in dict.fromkeys(names) if name != "loop"]


class _Builder:
    def __init__(self, source: str, registry: Registry, limits: Limits) -> None:
        self._source = source
        self._limits = limits
        self._scope = Scope(registry, limits.max_depth)
        self._problems = self._scope.problems
        self._root: list[Node] = []
        self._blocks: list[_Block] = []
        self._too_deep_reported = False
        self._foreign: list[Problem] = []

    def build(self) -> Document:
        source = self._source
        pos = 0
        while True:
            start = source.find("{{", pos)
            if start < 0:
                self._text(source[pos:], pos)
                break
            self._text(source[pos:start], pos)
            foreign = _handlebars(source, start)
            if foreign is not None:
                self._problems.append(Problem(start, foreign))
                close = source.find("}}", start + 2)
                if close < 0:
                    break
                pos = close + (3 if source.startswith("}}}", close) else 2)
                continue
            try:
                tokens, pos = lex(source, start + 2, tag_start=start)
            except LexError as exc:
                self._problems.append(exc.problem)
                close = source.find("}}", start + 2)
                if close < 0:
                    break
                pos = close + 2
                continue
            try:
                self._tag(tokens, start)
            except ParseError as exc:
                self._problems.append(exc.problem)
            except RecursionError:
                self._problems.append(Problem(start, _too_deep(self._limits)))
        for block in self._blocks:
            self._problems.append(Problem(
                block.offset, f"this '{block.keyword}' is never closed with {{{{ end }}}}",
            ))
        return Document(tuple(self._root), self._problems, _unique(self._scope.roots),
                        self._foreign)

    def _body(self) -> list[Node]:
        return self._blocks[-1].body() if self._blocks else self._root

    def _text(self, text: str, offset: int) -> None:
        if not text:
            return
        if "{%" in text and len(self._foreign) < _MAX_FOREIGN:
            for match in _FOREIGN_BLOCK.finditer(text):
                hint = _LIQUID_JINJA.get(match.group(1).lower())
                if hint is not None:
                    self._foreign.append(Problem(
                        offset + match.start(),
                        f"Liquid/Jinja tags are not Litho syntax: {hint} (to show "
                        "the braces as text, write {{ '{%' }})"))
                    if len(self._foreign) == _MAX_FOREIGN:
                        break
        self._body().append(Text(text))

    def _expression(self, tokens: list[Token], start: int, *, allow_raw: bool) -> tuple[
        Expr, bool
    ]:
        return Parser(tokens, start, self._scope).parse(allow_raw=allow_raw)

    def _tag(self, tokens: list[Token], offset: int) -> None:
        first = tokens[0]
        if first.kind == "end":
            raise ParseError(Problem(offset, "empty tag: write an expression between {{ and }}"))
        word = first.value if first.kind == "name" else None
        alone = tokens[1].kind == "end"
        if word == "if":
            self._open_if(tokens, first)
        elif word == "else":
            self._else(tokens, first)
        elif word == "end":
            self._end(tokens, first)
        elif word == "for":
            self._open_for(tokens, first)
        elif word == "raw" and starts_expression(tokens[1]):
            expr, _ = self._expression(tokens, 1, allow_raw=True)
            self._body().append(Output(expr, True, first.offset))
        elif word in _MISTAKES and alone:
            raise ParseError(Problem(first.offset, f"unknown tag '{word}': {_MISTAKES[word]}"))
        else:
            expr, raw = self._expression(tokens, 0, allow_raw=True)
            self._body().append(Output(expr, raw, first.offset))

    def _push(self, block: _Block) -> None:
        block.outer_locals = self._scope.local_names
        if len(self._blocks) >= self._limits.max_depth and not self._too_deep_reported:
            self._too_deep_reported = True
            self._problems.append(Problem(block.offset, limit_message(
                "max_depth", self._limits.max_depth, "blocks are nested too deeply",
            )))
        self._blocks.append(block)

    def _condition(self, tokens: list[Token], start: int, keyword: Token) -> Expr:
        if tokens[start].kind == "end":
            raise ParseError(Problem(keyword.offset, f"'{keyword.value}' needs a condition"))
        expr, _ = self._expression(tokens, start, allow_raw=False)
        return expr

    def _open_if(self, tokens: list[Token], keyword: Token) -> None:
        block = _Block("if", keyword.offset)
        block.branches.append((_PLACEHOLDER, []))
        self._push(block)
        block.branches[0] = (self._condition(tokens, 1, keyword), [])

    def _else(self, tokens: list[Token], keyword: Token) -> None:
        block = self._blocks[-1] if self._blocks else None
        following = tokens[1]
        is_else_if = following.kind == "name" and following.value == "if"
        if block is None:
            raise ParseError(Problem(keyword.offset, "'else' without an open 'if' or 'for'"))
        if block.otherwise is not None:
            raise ParseError(Problem(keyword.offset, f"this '{block.keyword}' already has an "
                                                     "'else'"))
        if is_else_if:
            if block.keyword != "if":
                raise ParseError(Problem(keyword.offset,
                                         "'else if' belongs to an 'if', not a 'for'"))
            block.branches.append((_PLACEHOLDER, []))
            block.branches[-1] = (self._condition(tokens, 2, following), [])
            return
        if following.kind != "end":
            raise ParseError(Problem(following.offset, f"expected '}}}}' or 'if' after 'else', "
                                                       f"found {describe(following)}"))
        block.otherwise = []

    def _end(self, tokens: list[Token], keyword: Token) -> None:
        if not self._blocks:
            raise ParseError(Problem(keyword.offset, "'end' without an open 'if' or 'for'"))
        block = self._blocks.pop()
        self._scope.local_names = block.outer_locals
        self._body().append(block.node())
        if tokens[1].kind != "end":
            raise ParseError(Problem(tokens[1].offset, f"expected '}}}}' after 'end', found "
                                                       f"{describe(tokens[1])}"))

    def _open_for(self, tokens: list[Token], keyword: Token) -> None:
        block = _Block("for", keyword.offset)
        block.branches.append((_PLACEHOLDER, []))
        self._push(block)
        try:
            self._for_header(tokens, block)
        finally:
            # Even a broken header declares the names it got to, so the body's
            # references to them are not mistaken for root variables. Past the
            # depth limit (already an error) scopes stop growing, which keeps
            # absurd nesting linear to check.
            if len(self._blocks) <= self._limits.max_depth:
                names = {"loop", block.item, block.index or ""} - {""}
                self._scope.local_names = block.outer_locals | names

    def _for_header(self, tokens: list[Token], block: _Block) -> None:
        names: list[str] = []
        pos = 1
        while True:
            token = tokens[pos]
            if token.kind != "name" or token.value in RESERVED:
                raise ParseError(Problem(token.offset, "expected a loop variable name, as in "
                                                       "{{ for item in items }}"))
            if token.value == "loop":
                raise ParseError(Problem(token.offset, "'loop' is reserved for the loop's own "
                                                       "variables; choose another name"))
            if token.value in names:
                raise ParseError(Problem(token.offset, f"'{token.value}' is used twice"))
            names.append(token.value)
            block.item, block.index = names[0], (names[1] if len(names) > 1 else None)
            pos += 1
            following = tokens[pos]
            if following.kind == "op" and following.value == "," and len(names) == 1:
                pos += 1
                continue
            if following.kind != "name" or following.value != "in":
                found = describe(following)
                raise ParseError(Problem(
                    following.offset, f"expected 'in' after the loop variable, found {found}",
                ))
            break
        if tokens[pos + 1].kind == "end":
            raise ParseError(Problem(tokens[pos].offset, "'in' needs something to loop over"))
        # Parsed before the loop's names join the scope: it is read outside the loop.
        block.iterable, _ = self._expression(tokens, pos + 1, allow_raw=False)
