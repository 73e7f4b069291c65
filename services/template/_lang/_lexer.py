"""Tokens of one tag (up to its ``}}``) or of one bare expression."""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from services.template._lang._errors import Problem
from services.template._lang._values import normalize

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
    | (?P<op>}}|==|!=|<=|>=|&&|\|\||[-+*/%!<>?:,.()\[\]|])
    """,
    re.VERBOSE | re.ASCII,
)
_HINTS = {
    "=": "unexpected '='; compare with '=='",
    "&": "unexpected '&'; write '&&' or 'and'",
    "{": "unexpected '{'; tags do not nest and object literals are not supported",
    "}": "unexpected '}'; a tag ends with '}}'",
}
_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0",
    "\\": "\\", "'": "'", '"': '"', "/": "/", "`": "`", "\n": "",
}


class Token(NamedTuple):
    kind: str  # 'num', 'str', 'name', 'op' or 'end'
    value: Any
    offset: int


class LexError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def lex(source: str, start: int, *, tag_start: int | None) -> tuple[list[Token], int]:
    """Tokens from ``start``; with ``tag_start`` set, up to the ``}}`` closing that tag.

    Returns the tokens, ending with an 'end' token, and the offset just past
    the ``}}`` (or the end of the source for a bare expression).
    """
    tokens: list[Token] = []
    pos = start
    size = len(source)
    while True:
        if pos >= size:
            if tag_start is not None:
                raise LexError(Problem(tag_start, "unterminated tag: '{{' has no closing '}}'"))
            tokens.append(Token("end", None, size))
            return tokens, size
        char = source[pos]
        if char == "'" or char == '"':
            value, end = _string(source, pos)
            tokens.append(Token("str", value, pos))
            pos = end
            continue
        match = _TOKEN.match(source, pos)
        if match is None:
            raise LexError(Problem(pos, _HINTS.get(char, f"unexpected character {char!r}")))
        kind = match.lastgroup
        text = match.group()
        if kind == "ws":
            pass
        elif kind == "num":
            tokens.append(Token("num", _number(text, pos), pos))
        elif text == "}}":
            if tag_start is None:
                raise LexError(Problem(pos, _HINTS["}"]))
            tokens.append(Token("end", "}}", pos))
            return tokens, match.end()
        else:
            tokens.append(Token(kind or "op", text, pos))
        pos = match.end()


def _number(text: str, offset: int) -> int | float:
    if text.isdigit() and len(text) <= 16:
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise LexError(Problem(offset, f"the number {text[:20]} is too large"))
    return normalize(value)


def _string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    parts: list[str] = []
    pos = start + 1
    while True:
        close = source.find(quote, pos)
        if close < 0:
            raise LexError(Problem(start, f"unterminated string: no closing {quote}"))
        backslash = source.find("\\", pos, close)
        if backslash < 0:
            parts.append(source[pos:close])
            return "".join(parts), close + 1
        parts.append(source[pos:backslash])
        text, pos = _escape(source, backslash)
        parts.append(text)


def _escape(source: str, backslash: int) -> tuple[str, int]:
    """The text one escape stands for, and the offset after it."""
    code = source[backslash + 1: backslash + 2]
    if code in _ESCAPES:
        return _ESCAPES[code], backslash + 2
    if code == "x":
        return chr(_hex(source, backslash, backslash + 2, 2)), backslash + 4
    if code == "u":
        point, end = _unicode(source, backslash)
        if 0xD800 <= point <= 0xDBFF and source.startswith("\\u", end):
            low, after = _unicode(source, end)
            if 0xDC00 <= low <= 0xDFFF:
                return chr(0x10000 + ((point - 0xD800) << 10) + (low - 0xDC00)), after
        if 0xD800 <= point <= 0xDFFF:
            raise LexError(Problem(backslash, "invalid escape: a lone surrogate"))
        return chr(point), end
    shown = code if code else "end of source"
    raise LexError(Problem(backslash, f"unknown escape '\\{shown}' in a string"))


def _unicode(source: str, backslash: int) -> tuple[int, int]:
    if source.startswith("{", backslash + 2):
        close = source.find("}", backslash + 3, backslash + 10)
        if close < 0:
            raise LexError(Problem(backslash, "invalid escape: '\\u{' needs 1 to 6 hex digits"))
        point = _hex(source, backslash, backslash + 3, close - backslash - 3)
        if point > 0x10FFFF:
            raise LexError(Problem(backslash, "invalid escape: beyond U+10FFFF"))
        return point, close + 1
    return _hex(source, backslash, backslash + 2, 4), backslash + 6


def _hex(source: str, backslash: int, start: int, count: int) -> int:
    digits = source[start: start + count]
    if not 1 <= len(digits) == count or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise LexError(Problem(backslash, f"invalid escape: expected {count} hex digits"))
    return int(digits, 16)
