"""Where the template language's ``{{ … }}`` tags are, so HTML edits never touch them.

The copilot parses the HTML of a *masked* copy of the template: every tag is
replaced by the same number of :data:`MASK` characters, so offsets in the
copy are offsets in the original, and neither ``<`` nor a quote inside a tag
(``{{ if a < b }}``, ``{{ x | default: "a" }}``) can mislead the HTML parser.
Tags end where the language's lexer ends them, as in ``_lang.outside_tags``.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.template._lang._lexer import LexError, Token, lex

#: A private-use character: it is never a quote, bracket or separator.
MASK = "\ue000"
BLOCK_OPENERS = frozenset({"if", "for"})
BLOCK_WORDS = frozenset({"if", "for", "else", "end"})


@dataclass(frozen=True, slots=True)
class Tag:
    start: int
    end: int
    #: ``if``, ``for``, ``else`` or ``end`` for block tags, "" for output tags.
    keyword: str
    #: The tokens when the tag lexes, else None (a broken tag stays as it is).
    tokens: tuple[Token, ...] | None


class UnbalancedBlocks(ValueError):
    """The tags of a region do not form whole blocks."""


def find_tags(source: str) -> list[Tag]:
    tags: list[Tag] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            return tags
        try:
            tokens, end = lex(source, start + 2, tag_start=start)
        except LexError:
            close = source.find("}}", start + 2)
            end = len(source) if close < 0 else close + 2
            if source.startswith("}}}", end - 2):
                end += 1
            tags.append(Tag(start, end, "", None))
            pos = end
            continue
        first = tokens[0]
        keyword = first.value if first.kind == "name" and first.value in BLOCK_WORDS else ""
        tags.append(Tag(start, end, keyword, tuple(tokens)))
        pos = end


def mask(source: str, tags: list[Tag]) -> str:
    parts: list[str] = []
    pos = 0
    for tag in tags:
        parts += (source[pos:tag.start], MASK * (tag.end - tag.start))
        pos = tag.end
    parts.append(source[pos:])
    return "".join(parts)


def check_balanced(tags: list[Tag], start: int, end: int) -> None:
    """Raise :class:`UnbalancedBlocks` unless the block tags inside
    ``[start, end)`` open and close whole blocks there (``else`` only inside
    a block opened there)."""
    depth = 0
    for tag in tags:
        if tag.start < start or tag.end > end or not tag.keyword:
            continue
        if tag.keyword in BLOCK_OPENERS:
            depth += 1
        elif tag.keyword == "end":
            depth -= 1
            if depth < 0:
                raise UnbalancedBlocks("an {{ end }} closes a block opened outside")
        elif depth == 0:
            raise UnbalancedBlocks("an {{ else }} belongs to a block opened outside")
    if depth:
        raise UnbalancedBlocks("an {{ if }} or {{ for }} is closed outside")


def is_balanced(source: str) -> bool:
    try:
        check_balanced(find_tags(source), 0, len(source))
    except UnbalancedBlocks:
        return False
    return True


def is_raw(tag: Tag) -> bool:
    """Whether the tag writes unescaped output (``{{ raw x }}``, ``{{ x | raw }}``,
    ``raw(x)``): markup the vocabulary promises never to take."""
    return tag.tokens is not None and any(t.kind == "name" and t.value == "raw"
                                          for t in tag.tokens)


def is_plain_path(tag: Tag) -> bool:
    """Whether the tag is a variable and nothing else: ``{{ image }}``,
    ``{{ brand.colour }}``, ``{{ items[0] }}`` (no string, call or filter,
    so the value comes from the render's variables, never from the step)."""
    if tag.tokens is None or tag.keyword:
        return False
    tokens = tag.tokens[:-1] if tag.tokens[-1].kind == "end" else tag.tokens
    if not tokens or tokens[0].kind != "name" or tokens[0].value == "raw":
        return False
    i = 1
    while i < len(tokens):
        kind, value = tokens[i].kind, tokens[i].value
        if kind == "op" and value == "." and i + 1 < len(tokens) \
                and tokens[i + 1].kind == "name":
            i += 2
        elif (kind == "op" and value == "[" and i + 2 < len(tokens)
              and tokens[i + 1].kind == "num"
              and (tokens[i + 2].kind, tokens[i + 2].value) == ("op", "]")):
            i += 3
        else:
            return False
    return True
