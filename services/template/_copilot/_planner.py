"""The embedded planner: a documented set of intents, recognised deterministically.

``plan(prompt, template)`` finds every intent the prompt names (in the order
they appear in it) and turns each into steps of the vocabulary; the same
input always gives the same steps, numbered ``s1``, ``s2``, … A prompt with
no recognised intent gives one explanation step (no operation) listing what
the planner understands, never a guess. How it finds the title, the
background and the brand colour is in the design notes and below.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from litho.errors import InvalidArgument
from services.template._copilot._apply import TemplateView, apply
from services.template._copilot._css import (
    NAMED,
    colors_in,
    declarations,
    font_size_px,
    format_px,
    from_hls,
    hls,
    is_neutral,
    luminance,
    normalize_color,
    sheet_declarations,
)
from services.template._copilot._html import Document, EditError, Element
from services.template._copilot._limits import CopilotLimits
from services.template._copilot._request import Turn, check_history, check_prompt
from services.template._copilot._vocabulary import (
    AddElement,
    DuplicateTemplate,
    EditOperation,
    Operation,
    Props,
    ResizeCanvas,
    SetStyle,
    Step,
    SwapPalette,
    Target,
    operation_from_json,
)

#: Canvas presets by platform, most specific names first.
PLATFORMS: tuple[tuple[str, str, int, int], ...] = (
    ("Instagram Story", r"\binsta(?:gram)?\s*(?:stor(?:y|ies)|reels?)\b|\bstor(?:y|ies)\b",
     1080, 1920),
    ("Instagram post", r"\binsta(?:gram)?\b", 1080, 1080),
    ("LinkedIn", r"\blinked\s?in\b", 1200, 627),
    ("X/Twitter", r"\btwitter\b|\bfor x\b|\bx\s*(?:/|post|card|header)", 1600, 900),
    ("Open Graph", r"\bog\b|\bopen\s*graph\b|\bfacebook\b|\bog:image\b", 1200, 630),
)
HELP = (
    "I could not tell what to change. The built-in copilot understands: "
    "\"make a dark mode version\" (or light mode), \"resize for Instagram Story\" "
    "(Open Graph, Instagram post, Instagram Story, X/Twitter, LinkedIn) or \"make it "
    "1080x1920\", \"brand colour #e11d48\", \"make the title bigger\" (or smaller, or "
    "\"20% bigger\"), \"add a QR code for {{ url }}\", \"add a badge saying NEW\", "
    "\"3 background variants\"; add \"as a new template\" to get a copy instead."
)
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3}
_DARK_BG = "#111827"
_LIGHT_TEXT = "#f3f4f6"
_LIGHT_BG = "#ffffff"
_DARK_TEXT = "#111827"
_DEFAULT_ACCENT = "#e11d48"
#: Browser default font sizes, for a title whose size the template does not set.
_DEFAULT_EM = {"h1": 2.0, "h2": 1.5, "h3": 1.17}


@dataclass(frozen=True)
class _Draft:
    description: str
    operation: Operation | None = None


def plan(prompt: object, template: TemplateView, *, history: object = None,
         limits: CopilotLimits | None = None) -> list[Step]:
    """Steps for ``prompt``; raises ``InvalidArgument`` (422) for a prompt or
    history that breaks a limit, never for a prompt it does not understand."""
    limits = limits or CopilotLimits()
    text = check_prompt(prompt, limits)
    check_history(history, limits)
    if len(template.html.encode("utf-8", "surrogatepass")) > limits.max_html_bytes:
        raise InvalidArgument(f"the template's HTML is larger than the copilot edits "
                              f"({limits.max_html_bytes} bytes)")
    lowered = " ".join(text.lower().split())
    try:
        doc = Document(template.html)
    except EditError as exc:
        return [Step("s1", f"The template's HTML could not be read safely: {exc}")]
    context = _Context(template, doc, text, lowered, limits)
    found: list[tuple[int, list[_Draft]]] = []
    for recognise in _RECOGNISERS:
        hit = recognise(context)
        if hit is not None:
            found.append(hit)
    found.sort(key=lambda hit: hit[0])
    drafts = [draft for _, group in found for draft in group]
    if not drafts:
        drafts = [_Draft(HELP)]
    as_copy = re.search(r"\b(?:as an? (?:new|separate) template|new template|"
                        r"(?:a |as a )?cop(?:y|ies)|duplicate)\b", lowered)
    if as_copy and any(d.operation is not None and not isinstance(d.operation,
                       DuplicateTemplate) for d in drafts):
        drafts = _as_copy(drafts, template.name)
    drafts = [_checked(d, template, limits) for d in drafts]
    if len(drafts) > limits.max_steps:
        raise InvalidArgument(f"prompt: asks for {len(drafts)} steps; at most "
                              f"{limits.max_steps} (LITHO_COPILOT_MAX_STEPS)")
    return [Step(f"s{i}", d.description, d.operation) for i, d in enumerate(drafts, 1)]


def _checked(draft: _Draft, template: TemplateView, limits: CopilotLimits) -> _Draft:
    """The draft if its operation reads back through the vocabulary and applies
    to the template on its own; else an explanation of why it cannot."""
    if draft.operation is None:
        return draft
    try:
        operation_from_json(draft.operation.to_json(), "operation", limits)
        apply(template, [draft.operation], limits=limits)
    except InvalidArgument as exc:
        return _Draft(f"Cannot do this: {draft.description} ({exc.message})")
    return draft


def _as_copy(drafts: list[_Draft], name: str) -> list[_Draft]:
    edits = [d.operation for d in drafts if d.operation is not None and
             not isinstance(d.operation, DuplicateTemplate)]
    others = [d for d in drafts if d.operation is None or isinstance(d.operation,
                                                                     DuplicateTemplate)]
    copy_name = f"{name or 'Template'} (copy)"[:200]
    joined = "; ".join(d.description for d in drafts if d.operation is not None
                       and not isinstance(d.operation, DuplicateTemplate))
    return [_Draft(f"Create a new template \"{copy_name}\": {joined}",
                   DuplicateTemplate(copy_name, tuple(e for e in edits
                                                      if not isinstance(e, DuplicateTemplate)))),
            *others]


# ---------------------------------------------------------------- reading the template

class _Context:
    def __init__(self, template: TemplateView, doc: Document, text: str, lowered: str,
                 limits: CopilotLimits) -> None:
        self.template = template
        self.doc = doc
        self.text = text
        self.lowered = lowered
        self.limits = limits
        self._colors: list[tuple[str, str]] | None = None

    def target(self, element: Element) -> Target:
        """A selector for ``element``: ``body``, a unique ``#id``, its
        ``data-litho-id``, else its tag and position among that tag."""
        doc = self.doc
        if element.tag == "body":
            return Target("body")
        litho_id = doc.attr_value(element, "data-litho-id")
        if litho_id and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", litho_id):
            return Target(f'[data-litho-id="{litho_id}"]')
        ident = doc.attr_value(element, "id")
        if ident and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", ident) and \
                sum(doc.attr_value(e, "id") == ident for e in doc.elements) == 1:
            return Target(f"#{ident}")
        same = [e for e in doc.elements if e.tag == element.tag]
        return Target(element.tag, same.index(element))

    def inline(self, element: Element) -> dict[str, str]:
        """The element's inline declarations (the last of each name wins)."""
        attr = self.doc.attr(element, "style")
        if attr is None or attr.value_start is None or attr.value_end is None:
            return {}
        masked = self.doc.masked
        return {d.name: masked[d.value_start:d.value_end]
                for d in declarations(masked[attr.value_start:attr.value_end], attr.value_start)}

    def rules_for(self, element: Element) -> dict[str, str]:
        """Declarations of ``<style>`` rules whose selector list names the
        element simply (its tag, ``.class``, ``#id``, ``tag.class``; ``html``
        and ``:root`` count for ``<body>``)."""
        names = {element.tag}
        classes = (self.doc.attr_value(element, "class") or "").split()
        names |= {f".{c}" for c in classes} | {f"{element.tag}.{c}" for c in classes}
        ident = self.doc.attr_value(element, "id")
        if ident:
            names.add(f"#{ident}")
        if element is self.doc.root():
            names |= {"html", ":root", "body"}
        out: dict[str, str] = {}
        masked = self.doc.masked
        for start, end in self.doc.style_blocks():
            for decl in sheet_declarations(masked[start:end], start):
                if names & {s.strip() for s in decl.selector.split(",")}:
                    out[decl.name] = masked[decl.value_start:decl.value_end]
        return out

    def style_of(self, element: Element) -> dict[str, str]:
        return {**self.rules_for(element), **self.inline(element)}

    def colors(self) -> list[tuple[str, str]]:
        """``(property, #rrggbb)`` of every literal colour, in source order."""
        if self._colors is None:
            self._colors = self._find_colors()
        return self._colors

    def _find_colors(self) -> list[tuple[str, str]]:
        doc = self.doc
        found: list[tuple[int, str, str]] = []
        for _, attr in doc.style_spans():
            if attr.value_start is not None and attr.value_end is not None:
                for decl in declarations(doc.masked[attr.value_start:attr.value_end],
                                         attr.value_start):
                    found += [(u.start, decl.name, u.rgb) for u in colors_in(
                        doc.masked[decl.value_start:decl.value_end], decl.value_start)]
        for start, end in doc.style_blocks():
            for decl in sheet_declarations(doc.masked[start:end], start):
                found += [(u.start, decl.name, u.rgb) for u in colors_in(
                    doc.masked[decl.value_start:decl.value_end], decl.value_start)]
        for element in doc.elements:
            for name in ("fill", "stroke", "stop-color", "color", "bgcolor"):
                held = doc.attr(element, name)
                if held is not None and held.value_start is not None:
                    rgb = normalize_color(doc.masked[held.value_start:held.value_end])
                    if rgb is not None:
                        found.append((held.value_start, name, rgb[:7]))
        return [(name, rgb) for _, name, rgb in sorted(found)]

    def brand(self) -> str | None:
        """The most used non-neutral colour; the first used wins a tie."""
        counts = Counter(rgb for _, rgb in self.colors() if not is_neutral(rgb))
        if not counts:
            return None
        first: dict[str, int] = {}
        for n, (_, rgb) in enumerate(self.colors()):
            first.setdefault(rgb, n)
        return max(counts, key=lambda rgb: (counts[rgb], -first[rgb]))

    def title(self) -> Element | None:
        """The first element with ``data-fit``, else the first ``<h1>``, else
        the first ``<h2>``, else the element with the largest px font size set
        inline (the first of equals)."""
        closed = [e for e in self.doc.elements if not e.empty]
        for test in (lambda e: self.doc.attr(e, "data-fit") is not None,
                     lambda e: e.tag == "h1", lambda e: e.tag == "h2"):
            for element in closed:
                if test(element):
                    return element
        best: tuple[float, Element] | None = None
        for element in closed:
            style = self.inline(element)
            size = font_size_px(style.get("font-size", "")) or \
                font_size_px(style.get("font", ""))
            if size is not None and (best is None or size > best[0]):
                best = (size, element)
        return best[1] if best else None

    def background(self) -> tuple[Element | None, str | None]:
        """The root (``<body>``, else the first top-level element) and the
        first literal colour of its ``background``/``background-color``."""
        root = self.doc.root()
        if root is None:
            return None, None
        style = self.style_of(root)
        for name in ("background", "background-color"):
            for use in colors_in(style.get(name, "")):
                return root, use.rgb
        return root, None


# ---------------------------------------------------------------- intents

Hit = tuple[int, list[_Draft]]


def _theme(ctx: _Context) -> Hit | None:
    match = re.search(r"\b(dark|night|light)(?:[\s-]?(?:mode|theme|version|variant))?\b",
                      ctx.lowered)
    if match is None or (match.group(1) == "light" and not re.search(
            r"\blight[\s-]?(?:mode|theme|version|variant)", ctx.lowered)):
        return None
    dark = match.group(1) != "light"
    mode = "dark" if dark else "light"
    root, background = ctx.background()
    # A page without a background colour is white (Chromium's default).
    seen = luminance(background) if background is not None else 1.0
    if (dark and seen < 0.2) or (not dark and seen > 0.5):
        return match.start(), [_Draft(f"The background is already {mode} "
                                      f"({background or 'the default white'}); nothing to change")]
    palette: dict[str, str] = {}
    for _, rgb in ctx.colors():
        if rgb not in palette:
            palette[rgb] = _flip(rgb, dark)
    if background is not None:
        # The background itself always changes side, even from a mid tone.
        flipped = _flip(background, dark)
        h, _, s = hls(flipped)
        if dark and luminance(flipped) > 0.03:
            flipped = from_hls(h, 0.1, min(s, 0.45))
        elif not dark and luminance(flipped) < 0.8:
            flipped = from_hls(h, 0.96, min(s, 0.45))
        palette[background] = flipped
    changes = {k: v for k, v in palette.items() if k != v}
    drafts: list[_Draft] = []
    if changes:
        shown = ", ".join(f"{k} → {v}" for k, v in list(changes.items())[:8])
        drafts.append(_Draft(f"Swap the palette for {mode} mode: {shown}"
                             + (" …" if len(changes) > 8 else "")
                             + " (colours set by template variables stay as they are)",
                             SwapPalette(tuple(changes.items())[:ctx.limits.max_palette_entries])))
    if root is not None and background is None:
        bg, fg = (_DARK_BG, _LIGHT_TEXT) if dark else (_LIGHT_BG, _DARK_TEXT)
        drafts.append(_Draft(f"Give the background ({ctx.doc.where(root)[4:]}) the {mode} "
                             f"colour {bg} and its text {fg}",
                             SetStyle(ctx.target(root), (("background", bg), ("color", fg)))))
    if not drafts:
        drafts.append(_Draft(f"The template has no colours the copilot can change for {mode} "
                             "mode (no literal colours, no element to hold a background)"))
    return match.start(), drafts


def _flip(rgb: str, dark: bool) -> str:
    """Light colours become dark and dark ones light for dark mode (and the
    reverse for light mode); mid tones, such as accents, stay."""
    h, lightness, s = hls(rgb)
    if is_neutral(rgb):
        h, s = 0.61, min(0.3, s + 0.15)  # neutrals lean to slate, like #111827
    if dark and lightness >= 0.6:
        return from_hls(h, 0.07 + (1 - lightness) * 0.4, s)
    if dark and lightness <= 0.4:
        return from_hls(h, 0.95 - lightness * 0.4, s)
    if not dark and lightness <= 0.4:
        return from_hls(h, 0.97 - lightness * 0.3, s)
    if not dark and lightness >= 0.6:
        return from_hls(h, 0.1 + (1 - lightness) * 0.4, s)
    return rgb


def _resize(ctx: _Context) -> Hit | None:
    dims = re.search(r"\b(\d{2,5})\s*(?:x|×|\*|by)\s*(\d{2,5})\b", ctx.lowered)
    verb = re.search(r"\b(?:resize|size|canvas|format|fit|make it|turn it|convert|adapt|"
                     r"version for|for)\b", ctx.lowered)
    found: tuple[int, str, int, int] | None = None
    if dims is not None:
        found = (dims.start(), f"{dims.group(1)}×{dims.group(2)}", int(dims.group(1)),
                 int(dims.group(2)))
    elif verb is not None:
        for label, pattern, width, height in PLATFORMS:
            match = re.search(pattern, ctx.lowered)
            if match is not None:
                found = (min(verb.start(), match.start()), f"{label} ({width}×{height})",
                         width, height)
                break
    if found is None:
        return None
    at, label, width, height = found
    limit = ctx.limits.max_dimension
    if not (1 <= width <= limit and 1 <= height <= limit):
        return at, [_Draft(f"Cannot resize to {width}×{height}: each side must be from 1 "
                           f"to {limit} px")]
    if (width, height) == (ctx.template.width, ctx.template.height):
        return at, [_Draft(f"The canvas is already {width}×{height}")]
    return at, [_Draft(
        f"Resize the canvas from {ctx.template.width}×{ctx.template.height} to {label}, "
        "scaling positions and px sizes to fit", ResizeCanvas(width, height, "scale"))]


def _brand(ctx: _Context) -> Hit | None:
    match = re.search(r"\b(?:brand|primary|accent|main|theme)\s+colou?r\b", ctx.lowered)
    if match is None:
        return None
    new = _color_in(ctx.lowered[match.end():]) or _color_in(ctx.lowered)
    if new is None:
        return match.start(), [_Draft("Name the new brand colour, e.g. \"brand colour "
                                      "#e11d48\" (a hex colour or a CSS colour name)")]
    old = ctx.brand()
    if old is None:
        title = ctx.title()
        if title is None:
            return match.start(), [_Draft("The template has no colour that looks like a "
                                          "brand colour (all are greys) and no title to colour")]
        return match.start(), [_Draft(
            f"The template has no brand colour yet; colour the title ({ctx.doc.where(title)[4:]})"
            f" {new}", SetStyle(ctx.target(title), (("color", new),)))]
    if old == new[:7]:
        return match.start(), [_Draft(f"The brand colour is already {old}")]
    return match.start(), [_Draft(f"Change the brand colour {old} (the most used non-grey "
                                  f"colour) to {new} everywhere",
                                  SwapPalette(((old, new),)))]


def _color_in(text: str) -> str | None:
    hexed = re.search(r"#[0-9a-f]{3,8}\b", text)
    if hexed is not None and normalize_color(hexed.group()) is not None:
        return normalize_color(hexed.group())
    for word in re.findall(r"[a-z]+", text):
        if word in NAMED:
            return NAMED[word]
    return None


def _title_size(ctx: _Context) -> Hit | None:
    match = re.search(r"\b(title|heading|headline|header)\b", ctx.lowered)
    bigger = re.search(r"\b(bigger|larger|increase|enlarge|grow|more prominent)\b",
                       ctx.lowered)
    smaller = re.search(r"\b(smaller|reduce|decrease|shrink|less prominent)\b", ctx.lowered)
    if match is None or (bigger is None) == (smaller is None):
        return None
    at = min(match.start(), (bigger or smaller).start())  # type: ignore[union-attr]
    percent = re.search(r"\b(\d{1,3})\s*%", ctx.lowered)
    if percent is not None and 1 <= int(percent.group(1)) <= 300:
        step = int(percent.group(1)) / 100
    else:
        step = 0.5 if re.search(r"\b(much|a lot|way)\b", ctx.lowered) else 0.25
    factor = 1 + step if bigger else 1 / (1 + step)
    title = ctx.title()
    if title is None:
        return at, [_Draft("The template has no title to resize (no data-fit element, "
                           "<h1> or <h2>, and no element with a px font size)")]
    style = ctx.style_of(title)
    size = font_size_px(style.get("font-size", "")) or font_size_px(style.get("font", ""))
    word = "bigger" if bigger else "smaller"
    where = ctx.doc.where(title)[4:]
    if size is not None:
        value = format_px(max(1.0, size * factor))
        note = f"from {format_px(size)} to {value}"
    else:
        value = f"{_DEFAULT_EM.get(title.tag, 1.0) * factor:.3g}em"
        note = f"to {value} (the template sets no px size)"
    if ctx.doc.attr(title, "data-fit-max") is not None:
        note += "; its data-fit-max still caps the fitted size"
    return at, [_Draft(f"Make the title ({where}) {word}: font size {note}",
                       SetStyle(ctx.target(title), (("font-size", value),)))]


def _qr(ctx: _Context) -> Hit | None:
    match = re.search(r"\bqr(?:[\s-]?code)?s?\b", ctx.lowered)
    if match is None:
        return None
    tag = re.search(r"\{\{.{1,200}?\}\}", ctx.text)
    url = re.search(r"https?://[^\s\"'<>]{1,1000}", ctx.text)
    if tag is not None:
        value, shown = tag.group(), tag.group()
    elif url is not None:
        value, shown = url.group().rstrip(".,;)"), url.group().rstrip(".,;)")
    else:
        value, shown = "{{ url }}", "the variable url ({{ url }})"
    side = min(ctx.template.width, ctx.template.height)
    size = max(64, min(600, round(side * 0.25)))
    margin = format_px(max(8, round(side * 0.05)))
    props = Props(value=value, size=size, style=(
        ("position", "absolute"), ("right", margin), ("bottom", margin)))
    return match.start(), [_Draft(
        f"Add a {size}px QR code for {shown} in the bottom right corner",
        AddElement("qr", props))]


def _badge(ctx: _Context) -> Hit | None:
    match = re.search(r"\b(badge|sticker|ribbon|pill)\b", ctx.lowered)
    if match is None:
        return None
    quoted = re.search("[\"\u201c'\u2018]([^\"\u201d'\u2019{}<>]{1,40})[\"\u201d'\u2019]",
                       ctx.text)
    said = re.search(r"\b(?:saying|says|that reads|reading|with (?:the )?text|labell?ed)\s+"
                     r"([^.,!;{}<>]{1,40})", ctx.text, re.IGNORECASE)
    text = quoted.group(1) if quoted else said.group(1).strip() if said else "New"
    accent = ctx.brand() or _DEFAULT_ACCENT
    ink = "#ffffff" if luminance(accent) < 0.5 else "#111827"
    side = min(ctx.template.width, ctx.template.height)
    margin = format_px(max(8, round(side * 0.05)))
    font = format_px(max(12, round(side * 0.04)))
    props = Props(text=text, style=(
        ("position", "absolute"), ("top", margin), ("right", margin),
        ("background", accent), ("color", ink), ("font", f"600 {font}/1.2 sans-serif")))
    return match.start(), [_Draft(f"Add a \"{text}\" badge in {accent} in the top right "
                                  "corner", AddElement("badge", props))]


def _variants(ctx: _Context) -> Hit | None:
    number = r"\d{1,3}|" + "|".join(_WORDS)
    match = re.search(rf"\b(?:({number})\s+)?(?:different\s+|new\s+)?(?:background|bg)s?\s+"
                      r"(?:variants?|versions?|variations?|options?|alternatives?|colou?rs?)\b",
                      ctx.lowered) or re.search(
        rf"\b({number})\s+(?:variants?|versions?|variations?)\s+(?:of|with)\s+(?:the\s+)?"
        r"(?:background|bg)", ctx.lowered)
    if match is None:
        return None
    raw = match.group(1)
    count = 3 if raw is None else int(raw) if raw.isdigit() else _WORDS[raw]
    limit = ctx.limits.max_variants
    if not 1 <= count <= limit:
        return match.start(), [_Draft(f"Cannot make {count} background variants: from 1 to "
                                      f"{limit} at a time (LITHO_COPILOT_MAX_VARIANTS)")]
    root, _ = ctx.background()
    if root is None:
        return match.start(), [_Draft("The template has no element to hold a background")]
    base = hls(ctx.brand() or _DEFAULT_ACCENT)[0]
    name = ctx.template.name or "Template"
    drafts: list[_Draft] = []
    for i in range(count):
        hue = base + i / count
        start, end = from_hls(hue, 0.42, 0.7), from_hls(hue + 0.08, 0.28, 0.7)
        background = f"linear-gradient(135deg, {start}, {end})"
        edit: EditOperation = SetStyle(ctx.target(root), (("background", background),))
        copy = f"{name} – background {i + 1}"[:200]
        drafts.append(_Draft(f"New template \"{copy}\" with the background {background}",
                             DuplicateTemplate(copy, (edit,))))
    return match.start(), drafts


_RECOGNISERS: Sequence[Callable[[_Context], Hit | None]] = (
    _theme, _resize, _brand, _title_size, _qr, _badge, _variants)


def history_text(history: Sequence[Turn]) -> str:
    """The history as plain lines (for logs and the model's context)."""
    return "\n".join(f"{t.role}: {t.content}" for t in history)
