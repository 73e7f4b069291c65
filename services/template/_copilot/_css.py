"""Just enough CSS: declarations with their source spans, colours, and px lengths.

Everything works on *masked* text (see ``_tags``), so a ``{{ … }}`` tag is an
opaque run of :data:`~._tags.MASK` characters that no edit ever enters.
Declarations are found in a ``style`` attribute's raw value (where ``&quot;``
and other character references are kept whole) and in ``<style>`` blocks
(where the text before a ``{`` is a selector or at-rule prelude, never
edited).
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.template._copilot._tags import MASK, find_tags, is_plain_path, mask


@dataclass(frozen=True, slots=True)
class Declaration:
    #: Lower-cased property name (custom properties keep their case).
    name: str
    #: Span of the whole declaration, without its ``;``.
    start: int
    end: int
    #: Span of the value, stripped of surrounding whitespace.
    value_start: int
    value_end: int
    #: For ``<style>`` blocks: the prelude (selector) of the enclosing rule.
    selector: str = ""


_ENTITY = re.compile(r"&#?[A-Za-z0-9]{1,32};")


def _skip(text: str, pos: int, *, entities: bool) -> int | None:
    """The offset after a string, comment or character reference at ``pos``, if any."""
    char = text[pos]
    if char in "\"'":
        close = text.find(char, pos + 1)
        return len(text) if close < 0 else close + 1
    if text.startswith("/*", pos):
        close = text.find("*/", pos + 2)
        return len(text) if close < 0 else close + 2
    if entities and char == "&":
        match = _ENTITY.match(text, pos)
        if match:
            return match.end()
    return None


def declarations(text: str, offset: int = 0, *, entities: bool = True,
                 selector: str = "") -> list[Declaration]:
    """The declarations of a declaration list (a ``style`` attribute's value)."""
    out: list[Declaration] = []
    pos = start = 0
    depth = 0
    size = len(text)
    while pos <= size:
        if pos == size or (text[pos] == ";" and depth == 0):
            decl = _declaration(text, start, pos, offset, selector)
            if decl is not None:
                out.append(decl)
            start = pos + 1
            pos += 1
            continue
        after = _skip(text, pos, entities=entities)
        if after is not None:
            pos = after
            continue
        if text[pos] in "([":
            depth += 1
        elif text[pos] in ")]" and depth:
            depth -= 1
        pos += 1
    return out


def _declaration(text: str, start: int, end: int, offset: int,
                 selector: str) -> Declaration | None:
    colon = text.find(":", start, end)
    if colon < 0:
        return None
    name = text[start:colon].strip()
    if not re.fullmatch(r"-{0,2}[A-Za-z][A-Za-z0-9-]*", name):
        return None
    raw = text[colon + 1:end]
    lead = len(raw) - len(raw.lstrip())
    value_start = colon + 1 + lead
    value_end = colon + 1 + len(raw.rstrip())
    real_start = start + len(text[start:colon]) - len(text[start:colon].lstrip())
    return Declaration(
        name if name.startswith("--") else name.lower(),
        offset + real_start, offset + value_end,
        offset + value_start, offset + max(value_start, value_end), selector)


def sheet_declarations(text: str, offset: int = 0) -> list[Declaration]:
    """The declarations inside the rules of a ``<style>`` block's text."""
    out: list[Declaration] = []
    preludes: list[str] = []
    pos = start = 0
    size = len(text)
    while pos < size:
        after = _skip(text, pos, entities=False)
        if after is not None:
            pos = after
            continue
        char = text[pos]
        if char == "{":
            preludes.append(" ".join(text[start:pos].split()))
            start = pos + 1
        elif char == "}":
            if preludes:
                out += declarations(text[start:pos], offset + start, entities=False,
                                    selector=preludes[-1])
                preludes.pop()
            start = pos + 1
        elif char == ";" and preludes:
            out += declarations(text[start:pos], offset + start, entities=False,
                                selector=preludes[-1])
            start = pos + 1
        elif char == ";":
            start = pos + 1  # an at-statement such as @import …; before any rule
        pos += 1
    return out


# ---------------------------------------------------------------- colours

#: The named colours the copilot reads and swaps (the CSS basic set and a few
#: common extras); any other name is left alone.
NAMED = {
    "black": "#000000", "white": "#ffffff", "red": "#ff0000", "green": "#008000",
    "blue": "#0000ff", "yellow": "#ffff00", "orange": "#ffa500", "purple": "#800080",
    "gray": "#808080", "grey": "#808080", "silver": "#c0c0c0", "navy": "#000080",
    "teal": "#008080", "maroon": "#800000", "olive": "#808000", "lime": "#00ff00",
    "aqua": "#00ffff", "fuchsia": "#ff00ff", "whitesmoke": "#f5f5f5",
}
#: A colour inside a value: hex, rgb()/rgba() with plain numbers, or a name.
COLOR = re.compile(
    r"(?<![\w#-])(?:#(?P<hex>[0-9a-fA-F]{8}|[0-9a-fA-F]{6}|[0-9a-fA-F]{3,4})(?![\w-])"
    r"|(?P<fn>rgba?)\(\s*(?P<r>\d{1,3})\s*,\s*(?P<g>\d{1,3})\s*,\s*(?P<b>\d{1,3})\s*"
    r"(?:,\s*(?P<a>(?:0|1|0?\.\d{1,4}|1\.0{1,4}))\s*)?\)"
    r"|(?P<name>" + "|".join(sorted(NAMED, key=len, reverse=True)) + r")(?![\w-]))",
    re.IGNORECASE,
)
_HEX = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")


@dataclass(frozen=True, slots=True)
class ColorUse:
    start: int
    end: int
    #: ``#rrggbb``, lower case.
    rgb: str
    #: Two hex digits of alpha when the source had one (``#rrggbbaa``, ``rgba()``).
    alpha: str


def normalize_color(text: str) -> str | None:
    """``#rrggbb`` (or ``#rrggbbaa``) for a hex colour or a known name, else None."""
    text = text.strip().lower()
    if text in NAMED:
        return NAMED[text]
    if not _HEX.fullmatch(text):
        return None
    digits = text[1:]
    if len(digits) in (3, 4):
        digits = "".join(c * 2 for c in digits)
    if len(digits) == 8 and digits.endswith("ff"):
        digits = digits[:6]
    return "#" + digits


def colors_in(text: str, offset: int = 0) -> Iterator[ColorUse]:
    """The colours in a (masked) value, skipping strings and ``url(…)``."""
    for start, end in _plain_runs(text):
        for match in COLOR.finditer(text, start, end):
            yield _use(match, offset)


def _use(match: re.Match[str], offset: int) -> ColorUse:
    alpha = ""
    if match.group("hex"):
        digits = match.group("hex").lower()
        if len(digits) in (3, 4):
            digits = "".join(c * 2 for c in digits)
        rgb, alpha = "#" + digits[:6], digits[6:]
    elif match.group("fn"):
        parts = [min(255, int(match.group(k))) for k in "rgb"]
        rgb = "#" + "".join(f"{p:02x}" for p in parts)
        if match.group("a") is not None:
            alpha = f"{round(float(match.group('a')) * 255):02x}"
    else:
        rgb = NAMED[match.group("name").lower()]
    if alpha == "ff":
        alpha = ""
    return ColorUse(offset + match.start(), offset + match.end(), rgb, alpha)


def _plain_runs(text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``text`` outside strings, comments, masked tags and ``url(…)``."""
    pos = start = 0
    size = len(text)
    lower = text.lower()
    while pos < size:
        skip = _skip(text, pos, entities=True)
        if skip is None and lower.startswith("url(", pos):
            close = text.find(")", pos)
            skip = size if close < 0 else close + 1
        if skip is None and text[pos] == MASK:
            skip = pos
            while skip < size and text[skip] == MASK:
                skip += 1
        if skip is None:
            pos += 1
            continue
        if pos > start:
            yield start, pos
        pos = start = skip
    if start < size:
        yield start, size


def luminance(rgb: str) -> float:
    """WCAG relative luminance of ``#rrggbb``: 0 black, 1 white."""
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4
    r, g, b = (int(rgb[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def hls(rgb: str) -> tuple[float, float, float]:
    r, g, b = (int(rgb[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hls(r, g, b)


def from_hls(h: float, lightness: float, s: float) -> str:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, min(1.0, max(0.0, lightness)),
                                  min(1.0, max(0.0, s)))
    return "#" + "".join(f"{round(c * 255):02x}" for c in (r, g, b))


def is_neutral(rgb: str) -> bool:
    """Greys, near-white and near-black: never "the brand colour"."""
    _, lightness, saturation = hls(rgb)
    return saturation < 0.25 or lightness < 0.12 or lightness > 0.92


# ---------------------------------------------------------------- lengths

_PX = re.compile(r"(?<![\w.#-])(-?(?:\d{1,6}(?:\.\d{1,6})?|\.\d{1,6}))px(?![\w-])",
                 re.IGNORECASE)


def px_lengths(text: str) -> Iterator[tuple[int, int, float]]:
    """``(start, end, number)`` of each ``…px`` length outside strings, tags and url()."""
    for start, end in _plain_runs(text):
        for match in _PX.finditer(text, start, end):
            yield match.start(), match.end(), float(match.group(1))


def format_px(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0px" if text in ("-0", "0", "") else text + "px"


def font_size_px(value: str) -> float | None:
    """The px font size in a ``font-size`` or ``font`` value, if it has one."""
    for _, _, number in px_lengths(value):
        return number
    return None


#: Positions follow their own axis (so elements keep their place on the new
#: canvas); every other px length (sizes, fonts, paddings, borders, radii) is
#: scaled by the smaller factor, so text and boxes keep fitting and keep their
#: shape, except a width or height equal to the whole canvas, which becomes
#: the new canvas size.
HORIZONTAL = frozenset({"left", "right", "margin-left", "margin-right"})
VERTICAL = frozenset({"top", "bottom", "margin-top", "margin-bottom"})
#: Shorthands of positions: top, right, bottom, left.
BOX = frozenset({"margin", "inset"})
CANVAS_WIDTH = frozenset({"width", "min-width", "max-width"})
CANVAS_HEIGHT = frozenset({"height", "min-height", "max-height"})


@dataclass(frozen=True, slots=True)
class Reflow:
    """Old canvas size and new one: how each px length of a declaration changes."""

    width: int
    height: int
    new_width: int
    new_height: int

    def rescale(self, name: str, value: str) -> Callable[[int, float], float]:
        """For declaration ``name: value``: the n-th px length's new number."""
        sx = self.new_width / self.width
        sy = self.new_height / self.height
        uniform = min(sx, sy)
        if name in HORIZONTAL:
            return lambda _, v: v * sx
        if name in VERTICAL:
            return lambda _, v: v * sy
        if name in BOX:
            count = len(value.split())
            pattern = {2: (sy, sx), 3: (sy, sx, sy), 4: (sy, sx, sy, sx)}.get(count)
            if pattern is not None:
                return lambda n, v: v * pattern[n % len(pattern)]
        if name in CANVAS_WIDTH:
            return lambda _, v: self.new_width if v == self.width else v * uniform
        if name in CANVAS_HEIGHT:
            return lambda _, v: self.new_height if v == self.height else v * uniform
        return lambda _, v: v * uniform


# ---------------------------------------------------------------- values from outside

#: Properties a copilot operation may set: a CSS name or a custom property.
PROPERTY = re.compile(r"(?:--[a-z0-9][a-z0-9-]{0,62}|-?[a-z][a-z-]{0,62})")
_FORBIDDEN = (
    (re.compile(r"[;{}<>\\]"), "may not hold ; { } < > or \\"),
    (re.compile(r"/\*|\*/"), "may not hold a CSS comment"),
    (re.compile(r"expression\s*\(|javascript:|vbscript:|@import|behavior\s*:|-moz-binding",
                re.IGNORECASE), "may not hold script (expression(), javascript:, @import)"),
    (re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]"),
     "may not hold control characters or lone surrogates"),
)
_DATA_URL = re.compile(r"url\(\s*(['\"]?)data:image/[a-z+.-]{1,20}(?:;base64)?,"
                       r"[A-Za-z0-9+/=%._-]*\1\s*\)", re.IGNORECASE)
_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)


def value_problem(value: str) -> str | None:
    """Why ``value`` may not be written into a style, or None when it may.

    Template tags are allowed when they name a variable (``{{ brand }}``):
    no block tag, no string, call or filter (a tag's own text would escape
    the checks below, which run on the value with its tags masked)."""
    tags = find_tags(value)
    for tag in tags:
        if tag.tokens is None:
            return "has a template tag that does not parse"
        if tag.keyword:
            return f"may not hold a {{{{ {tag.keyword} }}}} block tag"
        if not is_plain_path(tag):
            return ("may hold template tags that name a variable, such as {{ brand }}, "
                    "and nothing else (no strings, calls or filters)")
    # A data: URI holds a ';' (";base64,") that CSS reads as part of url();
    # one in the safe alphabet is set aside, anything else stays to be checked.
    masked = _DATA_URL.sub("url()", mask(value, tags))
    for pattern, problem in _FORBIDDEN:
        if pattern.search(masked):
            return problem
    if masked.count("(") != masked.count(")"):
        return "has unbalanced parentheses"
    if masked.count('"') % 2 or masked.count("'") % 2:
        return "has an unterminated string"
    lower = masked.lower()
    found = 0
    for match in _URL.finditer(masked):
        found += 1
        target = match.group(2).strip()
        if not (not target
                or (target and set(target) == {MASK} and len(tags) >= 1)):
            return ("may use url() only with a data:image/ URI or a template tag "
                    "such as url({{ image }}); nothing is fetched from elsewhere")
    if lower.count("url(") != found or "image-set(" in lower or "src(" in lower:
        return "may use url() only with a data:image/ URI or a template tag"
    return None
