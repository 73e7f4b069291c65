"""Applying operations to a template: all of them, or none.

Each operation is checked against the template as the earlier operations
left it (its target must match, the span it edits must hold whole template
blocks, …) and becomes position-based splices of the HTML, so everything it
does not touch stays byte-for-byte. An operation that cannot be applied
raises :class:`ApplyError` naming the operation; the caller's template is
never half-changed because nothing is returned until every operation passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from litho.errors import FieldError, InvalidArgument
from services.template._copilot._css import (
    Declaration,
    Reflow,
    colors_in,
    declarations,
    format_px,
    normalize_color,
    px_lengths,
    sheet_declarations,
)
from services.template._copilot._html import (
    RAW_TEXT,
    VOID,
    Document,
    EditError,
    Element,
    Splice,
    escape_attr,
    escape_text,
    parse_selector,
    splice,
)
from services.template._copilot._limits import CopilotLimits
from services.template._copilot._tags import find_tags, is_balanced
from services.template._copilot._vocabulary import (
    AddElement,
    DuplicateTemplate,
    EditOperation,
    Operation,
    Props,
    RemoveElement,
    ResizeCanvas,
    SetStyle,
    SetText,
    Styles,
    Target,
)


@dataclass(frozen=True)
class TemplateView:
    """What the copilot reads of a template (the lead maps ``_model.Template``)."""

    html: str
    width: int
    height: int
    name: str = ""


@dataclass(frozen=True)
class NewTemplate:
    """A template ``duplicate_template`` asks to create."""

    name: str
    html: str
    width: int
    height: int


@dataclass(frozen=True)
class Applied:
    html: str
    width: int
    height: int
    created: tuple[NewTemplate, ...] = ()


class ApplyError(InvalidArgument):
    """An operation that does not fit the template; ``field`` names it."""

    def __init__(self, field: str, label: str, problem: str) -> None:
        super().__init__(f"{label}: {problem}", errors=[FieldError(field, problem)])
        self.field = field


#: Properties whose words are never colour names (``font-family: Red Hat``).
_NO_NAMED_COLORS = frozenset({
    "font-family", "font", "content", "grid-area", "grid-template-areas", "animation",
    "animation-name", "transition", "transition-property", "counter-reset",
    "counter-increment", "list-style", "quotes", "will-change",
})
#: Attributes that hold one colour (inline SVG and old HTML).
_COLOR_ATTRS = ("fill", "stroke", "stop-color", "color", "bgcolor")


def apply(template: TemplateView, operations: Sequence[Operation], *,
          labels: Sequence[str] | None = None, field: str = "operations",
          limits: CopilotLimits | None = None) -> Applied:
    """Apply ``operations`` in order; ``labels`` (step ids) name them in errors,
    and ``field`` is the request field whose items they are."""
    limits = limits or CopilotLimits()
    if len(template.html.encode("utf-8", "surrogatepass")) > limits.max_html_bytes:
        raise ApplyError("html", "the template", "its HTML is larger than the copilot edits "
                         f"({limits.max_html_bytes} bytes)")
    if len(operations) > limits.max_steps:
        raise ApplyError(field, "the request", f"has {len(operations)} operations; at most "
                                               f"{limits.max_steps}")
    # Every operation rereads the whole document: bound them all, nested ones included.
    total = sum(1 + len(o.operations) if isinstance(o, DuplicateTemplate) else 1
                for o in operations)
    if total > limits.max_operations:
        raise ApplyError(field, "the request", f"holds {total} operations in all (those in "
                                               "duplicate_template included); at most "
                                               f"{limits.max_operations}")
    state = Applied(template.html, template.width, template.height)
    created: list[NewTemplate] = []
    for i, operation in enumerate(operations):
        label = labels[i] if labels is not None else f"operation {i + 1}"
        where = f"{field}[{i}]"
        if isinstance(operation, DuplicateTemplate):
            copy = state
            for j, inner in enumerate(operation.operations):
                copy = _one(copy, inner, f"{where}.operations[{j}]",
                            f"{label}, operation {j + 1}", limits)
            created.append(NewTemplate(operation.name, copy.html, copy.width, copy.height))
        else:
            state = _one(state, operation, where, label, limits)
    return replace(state, created=tuple(created))


def _one(state: Applied, operation: EditOperation, where: str, label: str,
         limits: CopilotLimits) -> Applied:
    try:
        changed = _edit(state, operation)
    except EditError as exc:
        raise ApplyError(where, label, str(exc)) from exc
    if len(changed.html.encode("utf-8", "surrogatepass")) > limits.max_html_bytes:
        raise ApplyError(where, label, "the HTML would pass the template size limit "
                                       f"({limits.max_html_bytes} bytes)")
    if changed.html != state.html and is_balanced(state.html) and not is_balanced(changed.html):
        raise ApplyError(where, label, "the change would break the template's "
                                       "{{ if }}/{{ for }} blocks")
    return changed


def _edit(state: Applied, operation: EditOperation) -> Applied:
    if isinstance(operation, ResizeCanvas):
        html = state.html
        if operation.reflow == "scale":
            html = _scaled(Document(html), Reflow(state.width, state.height,
                                                  operation.width, operation.height))
        return replace(state, html=html, width=operation.width, height=operation.height)
    doc = Document(state.html)
    if isinstance(operation, SetText):
        edits = [_set_text(doc, _resolve(doc, operation.target), operation.text)]
    elif isinstance(operation, SetStyle):
        edits = [_set_style(doc, _resolve(doc, operation.target), operation.styles)]
    elif isinstance(operation, AddElement):
        edits = [_add(doc, operation)]
    elif isinstance(operation, RemoveElement):
        edits = [doc.remove(_resolve(doc, operation.target))]
    else:
        edits = _swap(doc, dict(operation.map))
    return replace(state, html=splice(state.html, edits))


def _resolve(doc: Document, target: Target) -> Element:
    selector = parse_selector(target.selector)
    if selector is None:  # the vocabulary checked it; kept for callers that did not
        raise EditError(f"the selector {target.selector!r} is not supported")
    found = doc.select(selector)
    if not found:
        raise EditError(f"the target {target.selector!r} matches no element")
    if target.index >= len(found):
        raise EditError(f"the target {target.selector!r} matches {len(found)} element(s); "
                        f"index {target.index} is past them")
    return found[target.index]


def _set_text(doc: Document, element: Element, text: str) -> Splice:
    if element.tag in RAW_TEXT | VOID:
        raise EditError(f"cannot set the text of {doc.where(element)}")
    start, end = doc.need_closed(element, "set the text of")
    if doc.children(element):
        raise EditError(f"cannot set the text of {doc.where(element)}: it holds other "
                        "elements; target one of them, or remove them first")
    doc.need_whole_blocks(start, end, "set the text of", element)
    return Splice(start, end, escape_text(text, find_tags(text)))


def _set_style(doc: Document, element: Element, styles: Styles) -> Splice:
    doc.need_attrs(element, "style")
    attr = doc.attr(element, "style")
    quote = attr.quote if attr is not None and attr.quote else '"'
    if attr is None or attr.value_start is None or attr.value_end is None:
        value, decls = "", []
    else:
        value = doc.source[attr.value_start:attr.value_end]
        decls = declarations(doc.masked[attr.value_start:attr.value_end])
    edits: list[Splice] = []
    appended: list[str] = []
    for name, new in styles:
        same = [d for d in decls if d.name == name]
        if new is None:
            edits += [_drop_declaration(value, d.start, d.end) for d in same]
            continue
        written = escape_attr(new, quote, find_tags(new))
        if same:
            edits.append(Splice(same[-1].value_start, same[-1].value_end, written))
        else:
            appended.append(f"{name}: {written}")
    new_value = splice(value, edits)
    if appended:
        body = new_value.rstrip()
        tail = new_value[len(body):]
        joined = "; ".join(appended)
        if not body:
            new_value = joined
        elif body.endswith(";"):
            new_value = f"{body} {joined};{tail}"
        else:
            new_value = f"{body}; {joined}{tail}"
    if attr is not None and attr.value_start is not None and attr.value_end is not None \
            and attr.quote:
        return Splice(attr.value_start, attr.value_end, new_value)
    return doc.set_attr(element, "style", new_value)


def _drop_declaration(value: str, start: int, end: int) -> Splice:
    after = end
    if value[after:after + 1] == ";":
        after += 1
    while after < len(value) and value[after] in " \t\n":
        after += 1
    return Splice(start, after, "")


def _declarations(doc: Document) -> list[Declaration]:
    """Every CSS declaration of the document: style attributes, then <style> blocks."""
    decls: list[Declaration] = []
    for _, attr in doc.style_spans():
        if attr.value_start is not None and attr.value_end is not None:
            decls += declarations(doc.masked[attr.value_start:attr.value_end], attr.value_start)
    for start, end in doc.style_blocks():
        decls += sheet_declarations(doc.masked[start:end], start)
    return decls


def _scaled(doc: Document, reflow: Reflow) -> str:
    edits: list[Splice] = []
    for decl in _declarations(doc):
        value = doc.masked[decl.value_start:decl.value_end]
        rescale = reflow.rescale(decl.name, value)
        for n, (start, end, number) in enumerate(px_lengths(value)):
            edits.append(Splice(decl.value_start + start, decl.value_start + end,
                                format_px(rescale(n, number))))
    uniform = min(reflow.new_width / reflow.width, reflow.new_height / reflow.height)
    for element in doc.elements:
        for name in ("data-fit-min", "data-fit-max"):
            fit = doc.attr(element, name)
            if fit is None or fit.value_start is None or fit.value_end is None:
                continue
            raw = doc.masked[fit.value_start:fit.value_end]
            try:
                number = float(raw)
            except ValueError:
                continue
            edits.append(Splice(fit.value_start, fit.value_end,
                                str(max(1, round(number * uniform)))))
    return splice(doc.source, edits)


def _swap(doc: Document, palette: dict[str, str]) -> list[Splice]:
    edits: list[Splice] = []
    for decl in _declarations(doc):
        value = doc.masked[decl.value_start:decl.value_end]
        for use in colors_in(value, decl.value_start):
            named = doc.masked[use.start:use.start + 1].isalpha() and \
                not doc.masked[use.start:use.start + 3].lower().startswith("rgb")
            if named and decl.name in _NO_NAMED_COLORS:
                continue
            dest = palette.get(use.rgb)
            if dest is not None:
                edits.append(Splice(use.start, use.end, dest + use.alpha
                                    if len(dest) == 7 else dest))
    for element in doc.elements:
        for name in _COLOR_ATTRS:
            held = doc.attr(element, name)
            if held is None or held.value_start is None or held.value_end is None:
                continue
            color = normalize_color(doc.masked[held.value_start:held.value_end])
            if color is not None and color[:7] in palette:
                edits.append(Splice(held.value_start, held.value_end, palette[color[:7]]))
    return edits


# ---------------------------------------------------------------- new elements

_DEFAULTS: dict[str, Styles] = {
    "text": (),
    "image": (("max-width", "100%"),),
    "shape": (("width", "200px"), ("height", "200px"), ("background", "#e11d48")),
    "badge": (("display", "inline-block"), ("padding", "8px 20px"),
              ("border-radius", "999px"), ("background", "#e11d48"), ("color", "#ffffff"),
              ("font", "600 24px/1.2 sans-serif")),
}


def _add(doc: Document, operation: AddElement) -> Splice:
    html = _element_html(doc, operation.kind, operation.props)
    if operation.parent is not None:
        parent: Element | None = _resolve(doc, operation.parent)
    else:
        parent = doc.root()
    if parent is None:
        return Splice(len(doc.source), len(doc.source), html)
    return doc.insert_child(parent, html, at_start=operation.position == "start")


def _element_html(doc: Document, kind: str, props: Props) -> str:
    litho_id = doc.unique_litho_id(kind)
    defaults: Styles = _DEFAULTS.get(kind, ())
    if kind == "qr":
        size = props.size or 240
        defaults = (("width", f"{size}px"), ("height", f"{size}px"))
    elif kind == "shape" and props.shape == "circle":
        defaults = (*defaults, ("border-radius", "50%"))
    style = _style_text(defaults, props.style)
    style_attr = f' style="{style}"' if style else ""
    head = f'data-litho-id="{litho_id}"'
    if kind in ("text", "badge"):
        text = props.text or ""
        tag = (props.tag or "p") if kind == "text" else "span"
        return f"<{tag} {head}{style_attr}>{escape_text(text, find_tags(text))}</{tag}>"
    if kind == "image":
        src = props.src or ""
        alt = props.alt or ""
        return (f'<img {head} src="{escape_attr(src, chr(34), find_tags(src))}" '
                f'alt="{escape_attr(alt, chr(34), find_tags(alt))}"{style_attr}>')
    if kind == "shape":
        return f"<div {head}{style_attr}></div>"
    source = _qr_tag(props.value or "", props.size or 240)
    quote = "'" if '"' in source else '"'
    if quote in source and "'" in source:
        raise EditError("the QR code's value holds both kinds of quote")
    return f"<img {head} src={quote}{source}{quote} alt=\"QR code\"{style_attr}>"


def _qr_tag(value: str, size: int) -> str:
    tags = find_tags(value)
    if len(tags) == 1 and tags[0].start == 0 and tags[0].end == len(value):
        expression = f"({value[2:-2].strip()})"
    else:
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        expression = f"'{escaped}'"
    return f"{{{{ qr({expression}, {size}) }}}}"


def _style_text(defaults: Styles, given: Styles) -> str:
    merged = dict(defaults)
    merged.update(given)
    parts = []
    for name, value in merged.items():
        if value is not None:
            parts.append(f"{name}: {escape_attr(value, chr(34), find_tags(value))}")
    return "; ".join(parts)
