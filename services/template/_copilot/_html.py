"""The template's HTML as elements with source spans, and minimal edits to it.

A :class:`Document` parses a masked copy of the template (``_tags``) with the
standard library's ``html.parser`` and records, for every element, where its
start tag, attributes and end tag are. Edits are :class:`Splice` values —
replace ``[start, end)`` with new text — applied right to left, so every
byte outside a splice (tags, blocks, loops, attribute order and quoting,
whitespace) stays as it was. Whatever cannot be edited safely raises
:class:`EditError` instead of guessing.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

from services.template._copilot._tags import (
    MASK,
    Tag,
    UnbalancedBlocks,
    check_balanced,
    find_tags,
    mask,
)

VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
    "source", "track", "wbr",
})
#: Elements whose content is not markup, or that hold the document's frame.
RAW_TEXT = frozenset({"script", "style", "textarea", "title", "template"})
STRUCTURE = frozenset({"html", "head", "body"})


class EditError(ValueError):
    """An edit that cannot be made without risking the template; the message says why."""


@dataclass(frozen=True, slots=True)
class Attr:
    name: str
    start: int
    end: int
    #: The raw value's span inside the quotes; None for a bare attribute.
    value_start: int | None
    value_end: int | None
    quote: str


@dataclass(slots=True)
class Element:
    index: int
    tag: str
    start: int
    open_end: int
    parent: int | None
    #: Start of ``</tag>`` and the offset after it; None while (or when never) closed.
    close_start: int | None = None
    end: int | None = None
    #: Void or ``<x/>``: no content at all.
    empty: bool = False
    attrs: tuple[Attr, ...] = ()
    #: False when the attribute scan disagreed with the HTML parser.
    attrs_readable: bool = True


@dataclass(frozen=True, slots=True)
class Splice:
    start: int
    end: int
    text: str


def splice(source: str, edits: Iterable[Splice]) -> str:
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise EditError("two edits of one operation overlap")
    out = source
    for edit in reversed(ordered):
        out = out[:edit.start] + edit.text + out[edit.end:]
    return out


_ATTR = re.compile(
    r"""([^\s/>"'=][^\s/>"'=]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")


class _Parser(HTMLParser):
    def __init__(self, doc: Document) -> None:
        super().__init__(convert_charrefs=False)
        self._doc = doc
        self._stack: list[int] = []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._doc.line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closed=tag in VOID)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closed=True)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        start = self._offset()
        text = self.get_starttag_text() or ""
        doc = self._doc
        if doc.masked[start:start + len(text)] != text:
            raise EditError(f"the HTML parser lost its place near offset {start}; the "
                            "template's HTML cannot be edited safely")
        scanned = _scan_attrs(doc.masked, start + 1 + len(tag), start + len(text))
        readable = [a.name for a in scanned] == [name for name, _ in attrs]
        element = Element(
            len(doc.elements), tag, start, start + len(text),
            self._stack[-1] if self._stack else None, attrs=tuple(scanned),
            attrs_readable=readable)
        if closed:
            element.empty = True
            element.end = element.open_end
        doc.elements.append(element)
        if not closed:
            self._stack.append(element.index)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        start = self._offset()
        if not self._doc.masked.startswith("</", start):
            raise EditError(f"the HTML parser lost its place near offset {start}; the "
                            "template's HTML cannot be edited safely")
        close = self._doc.masked.find(">", start)
        end = len(self._doc.masked) if close < 0 else close + 1
        for depth in range(len(self._stack) - 1, -1, -1):
            element = self._doc.elements[self._stack[depth]]
            if element.tag == tag:
                element.close_start, element.end = start, end
                del self._stack[depth:]
                return


def _scan_attrs(masked: str, start: int, end: int) -> list[Attr]:
    out: list[Attr] = []
    pos = start
    while pos < end:
        if masked[pos].isspace() or masked[pos] == "/":
            pos += 1
            continue
        match = _ATTR.match(masked, pos, end)
        if match is None or match.end() == pos:
            break
        for group, quote in ((2, '"'), (3, "'"), (4, "")):
            if match.group(group) is not None:
                out.append(Attr(match.group(1).lower(), match.start(), match.end(),
                                match.start(group), match.end(group), quote))
                break
        else:
            out.append(Attr(match.group(1).lower(), match.start(), match.end(), None, None, ""))
        pos = match.end()
    return out


@dataclass(frozen=True, slots=True)
class Selector:
    tag: str | None = None
    id: str | None = None
    cls: str | None = None
    litho_id: str | None = None

    def matches(self, doc: Document, element: Element) -> bool:
        if self.tag is not None and element.tag != self.tag:
            return False
        if self.id is not None and doc.attr_value(element, "id") != self.id:
            return False
        if self.cls is not None and self.cls not in (doc.attr_value(element, "class") or
                                                     "").split():
            return False
        return self.litho_id is None or doc.attr_value(element, "data-litho-id") == self.litho_id


_SELECTOR = re.compile(
    r"(?P<tag>[a-z][a-z0-9-]{0,31})?"
    r"(?:#(?P<id>[A-Za-z_][A-Za-z0-9_-]{0,63})"
    r"|\.(?P<cls>[A-Za-z_][A-Za-z0-9_-]{0,63})"
    r"|\[data-litho-id=\"(?P<litho>[A-Za-z0-9_-]{1,64})\"\])?")
SELECTOR_FORMS = ('tag ("h1")', '#id', '.class', 'tag.class ("p.lead")',
                  '[data-litho-id="…"]', '"body"')


def parse_selector(text: str) -> Selector | None:
    match = _SELECTOR.fullmatch(text)
    if match is None or not any(match.groupdict().values()):
        return None
    if match.group("tag") and (match.group("id") or match.group("litho")):
        return None  # not in the documented subset
    return Selector(match.group("tag"), match.group("id"), match.group("cls"),
                    match.group("litho"))


class Document:
    """One parse of one version of the HTML; edits make a new string, not a new state."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tags: list[Tag] = find_tags(source)
        self.masked = mask(source, self.tags)
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.masked)]
        self.elements: list[Element] = []
        parser = _Parser(self)
        try:
            parser.feed(self.masked)
            parser.close()
        except AssertionError as exc:
            # html.parser (via _markupbase) asserts on a malformed "<![" section.
            raise EditError(f"the HTML cannot be read safely: {str(exc)[:80]}") from exc

    # ---------------------------------------------------------------- reading

    def where(self, element: Element) -> str:
        line = bisect.bisect_right(self.line_starts, element.start)
        column = element.start - self.line_starts[line - 1] + 1
        return f"the <{element.tag}> at line {line}, column {column}"

    def attr(self, element: Element, name: str) -> Attr | None:
        found = None
        for attr in element.attrs:
            if attr.name == name and found is None:
                found = attr  # the first one wins, as in browsers
        return found

    def attr_value(self, element: Element, name: str) -> str | None:
        """The raw (masked) value of an attribute; "" for a bare one."""
        attr = self.attr(element, name)
        if attr is None:
            return None
        if attr.value_start is None or attr.value_end is None:
            return ""
        return self.masked[attr.value_start:attr.value_end]

    def select(self, selector: Selector) -> list[Element]:
        return [e for e in self.elements if selector.matches(self, e)]

    def children(self, element: Element) -> list[Element]:
        return [e for e in self.elements if e.parent == element.index]

    def first(self, tag: str) -> Element | None:
        return next((e for e in self.elements if e.tag == tag), None)

    def style_blocks(self) -> list[tuple[int, int]]:
        """The content spans of closed ``<style>`` elements."""
        return [(e.open_end, e.close_start) for e in self.elements
                if e.tag == "style" and e.close_start is not None]

    def style_spans(self) -> list[tuple[Element, Attr]]:
        """Every ``style`` attribute with a quoted or bare value."""
        out: list[tuple[Element, Attr]] = []
        for element in self.elements:
            attr = self.attr(element, "style")
            if attr is not None and attr.value_start is not None and element.attrs_readable:
                out.append((element, attr))
        return out

    def root(self) -> Element | None:
        """``<body>``, else the first top-level element that can hold content."""
        body = self.first("body")
        if body is not None:
            return body
        for element in self.elements:
            if (element.parent is None or self.elements[element.parent].tag == "html") and \
                    element.tag not in RAW_TEXT | STRUCTURE | VOID and not element.empty:
                return element
        return None

    # ---------------------------------------------------------------- checks

    def need_closed(self, element: Element, doing: str) -> tuple[int, int]:
        """The element's content span, or an error when its end tag is unknown."""
        if element.empty:
            raise EditError(f"cannot {doing} {self.where(element)}: it has no content")
        if element.close_start is None:
            raise EditError(f"cannot {doing} {self.where(element)}: it has no matching "
                            f"</{element.tag}>, so where it ends is not certain")
        return element.open_end, element.close_start

    def need_whole_blocks(self, start: int, end: int, doing: str, element: Element) -> None:
        try:
            check_balanced(self.tags, start, end)
        except UnbalancedBlocks as exc:
            raise EditError(f"cannot {doing} {self.where(element)}: {exc}, so the change "
                            "would break the template's blocks") from exc

    def need_attrs(self, element: Element, doing: str) -> None:
        if not element.attrs_readable:
            raise EditError(f"cannot {doing} {self.where(element)}: its attributes could "
                            "not be read safely")

    # ---------------------------------------------------------------- edits

    def set_attr(self, element: Element, name: str, raw_value: str) -> Splice:
        """A splice giving attribute ``name`` the (already escaped) ``raw_value``."""
        self.need_attrs(element, f"change the {name} of")
        attr = self.attr(element, name)
        if attr is None:
            at = self._attr_insert_at(element)
            return Splice(at, at, f' {name}="{raw_value}"')
        if attr.value_start is None or attr.value_end is None or not attr.quote:
            written = self.source[attr.start:attr.start + len(name)]
            return Splice(attr.start, attr.end, f'{written}="{raw_value}"')
        return Splice(attr.value_start, attr.value_end, raw_value)

    def _attr_insert_at(self, element: Element) -> int:
        pos = element.open_end - 1  # the '>'
        if self.masked[pos - 1] == "/":
            pos -= 1
        while self.masked[pos - 1].isspace():
            pos -= 1
        if element.attrs and element.attrs[-1].end > pos:
            # <img src=x/>: the slash belongs to an unquoted value.
            raise EditError(f"cannot add an attribute to {self.where(element)}: its last "
                            "value is unquoted")
        return pos

    def remove(self, element: Element) -> Splice:
        if element.tag in STRUCTURE:
            raise EditError(f"cannot remove {self.where(element)}: it frames the document")
        if element.end is None:
            raise EditError(f"cannot remove {self.where(element)}: it has no matching "
                            f"</{element.tag}>, so where it ends is not certain")
        self.need_whole_blocks(element.start, element.end, "remove", element)
        start, end = element.start, element.end
        line_start = self.masked.rfind("\n", 0, start) + 1
        line_end = self.masked.find("\n", end)
        line_end = len(self.masked) if line_end < 0 else line_end
        if not self.masked[line_start:start].strip() and not self.masked[end:line_end].strip() \
                and line_end < len(self.masked):
            start, end = line_start, line_end + 1  # the element had its own line
        return Splice(start, end, "")

    def insert_child(self, parent: Element, html: str, *, at_start: bool) -> Splice:
        first, last = self.need_closed(parent, "add an element to")
        if parent.tag in RAW_TEXT | VOID:
            raise EditError(f"cannot add an element to {self.where(parent)}: its content "
                            "is not markup")
        if at_start:
            return Splice(first, first, html)
        line_start = self.masked.rfind("\n", first, last) + 1
        indent = self.masked[line_start:last]
        if line_start > first and not indent.strip():
            return Splice(last, last, "  " + html + "\n" + indent)
        return Splice(last, last, html)

    def unique_litho_id(self, stem: str) -> str:
        used = {self.attr_value(e, "data-litho-id") for e in self.elements}
        n = 1
        while f"{stem}-{n}" in used:
            n += 1
        return f"{stem}-{n}"


def escape_text(text: str, tags: Sequence[Tag]) -> str:
    """``text`` with ``&``, ``<`` and ``>`` escaped outside its template tags."""
    parts: list[str] = []
    pos = 0
    for tag in tags:
        parts += (_escape(text[pos:tag.start]), text[tag.start:tag.end])
        pos = tag.end
    parts.append(_escape(text[pos:]))
    return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attr(value: str, quote: str, tags: Sequence[Tag]) -> str:
    """``value`` for an attribute quoted with ``quote``; a tag holding that
    quote cannot be escaped without breaking it, so it is refused."""
    if not quote:
        quote = '"'
    entity = "&quot;" if quote == '"' else "&#39;"
    parts: list[str] = []
    pos = 0
    for tag in tags:
        if quote in value[tag.start:tag.end]:
            raise EditError(f"the template tag {value[tag.start:tag.end][:60]!r} holds "
                            f"the attribute's quote {quote}")
        parts += (value[pos:tag.start].replace("&", "&amp;").replace(quote, entity),
                  value[tag.start:tag.end])
        pos = tag.end
    parts.append(value[pos:].replace("&", "&amp;").replace(quote, entity))
    return "".join(parts)


def is_masked(text: str) -> bool:
    return bool(text) and set(text) == {MASK}
