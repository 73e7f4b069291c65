"""The copilot's one vocabulary: typed, frozen operations and the steps that carry them.

Every operation is read from JSON by :func:`operation_from_json`, which
checks strictly (unknown operation or field, missing field, wrong type,
oversize or invalid text, unsafe CSS) and raises :class:`VocabularyError`
naming the offending field by path (``steps[2].operation.styles.color``).
The planner and the model both produce these values; nothing else reaches
the applier. ``docs``: /tmp/bind/copilot-design.md (shapes and examples).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, cast

from litho.errors import FieldError, InvalidArgument
from services.template._copilot._css import PROPERTY, normalize_color, value_problem
from services.template._copilot._html import SELECTOR_FORMS, parse_selector
from services.template._copilot._limits import CopilotLimits
from services.template._copilot._tags import (
    UnbalancedBlocks,
    check_balanced,
    find_tags,
    is_plain_path,
    is_raw,
)

Reflow = Literal["scale", "none"]
Kind = Literal["text", "image", "shape", "qr", "badge"]
Position = Literal["end", "start"]
Shape = Literal["rect", "circle"]
TEXT_TAGS = ("p", "h1", "h2", "h3", "span", "div")
KINDS: tuple[Kind, ...] = ("text", "image", "shape", "qr", "badge")
MAX_SELECTOR_CHARS = 128
MAX_INDEX = 999
MAX_NAME_CHARS = 200
MIN_QR_SIZE = 32


class VocabularyError(InvalidArgument):
    """One field of an operation or step is wrong; ``path`` names it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}", errors=[FieldError(path, problem)])
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Target:
    """A selector from the documented subset and which match (0 = the first)."""

    selector: str
    index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"selector": self.selector, "index": self.index}


Styles: TypeAlias = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class SetText:
    op: ClassVar[str] = "set_text"
    target: Target
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "target": self.target.to_json(), "text": self.text}


@dataclass(frozen=True)
class SetStyle:
    op: ClassVar[str] = "set_style"
    target: Target
    #: Property and value, in order; None removes the property.
    styles: Styles

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "target": self.target.to_json(), "styles": dict(self.styles)}


@dataclass(frozen=True)
class ResizeCanvas:
    op: ClassVar[str] = "resize_canvas"
    width: int
    height: int
    reflow: Reflow = "scale"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "width": self.width, "height": self.height,
                "reflow": self.reflow}


@dataclass(frozen=True)
class Props:
    """What an added element shows; which fields a kind takes is in ``_PROPS``."""

    text: str | None = None
    tag: str | None = None
    src: str | None = None
    alt: str | None = None
    shape: Shape | None = None
    value: str | None = None
    size: int | None = None
    style: Styles = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("text", "tag", "src", "alt", "shape", "value", "size"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.style:
            out["style"] = dict(self.style)
        return out


@dataclass(frozen=True)
class AddElement:
    op: ClassVar[str] = "add_element"
    kind: Kind
    props: Props
    #: The element to add to; None means the root (``<body>``, else the first
    #: top-level element).
    parent: Target | None = None
    position: Position = "end"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "kind": self.kind, "props": self.props.to_json()}
        if self.parent is not None:
            out["parent"] = self.parent.to_json()
        if self.position != "end":
            out["position"] = self.position
        return out


@dataclass(frozen=True)
class RemoveElement:
    op: ClassVar[str] = "remove_element"
    target: Target

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "target": self.target.to_json()}


@dataclass(frozen=True)
class SwapPalette:
    op: ClassVar[str] = "swap_palette"
    #: ``#rrggbb`` (or ``#rrggbbaa``) pairs, normalised, each source once.
    map: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "map": dict(self.map)}


@dataclass(frozen=True)
class DuplicateTemplate:
    op: ClassVar[str] = "duplicate_template"
    name: str
    operations: tuple[EditOperation, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "name": self.name,
                "operations": [o.to_json() for o in self.operations]}


EditOperation: TypeAlias = SetText | SetStyle | ResizeCanvas | AddElement | RemoveElement | \
    SwapPalette
Operation: TypeAlias = EditOperation | DuplicateTemplate
OPERATIONS = ("set_text", "set_style", "resize_canvas", "add_element", "remove_element",
              "swap_palette", "duplicate_template")


@dataclass(frozen=True)
class Step:
    """One proposal: an operation to preview and accept, or, with ``operation``
    None, an explanation (``error`` None) or a refused model step (``error`` set)."""

    id: str
    description: str
    operation: Operation | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "description": self.description,
            "operation": None if self.operation is None else self.operation.to_json()}
        if self.error is not None:
            out["error"] = self.error
        return out


# ---------------------------------------------------------------- reading JSON

def _key_path(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_-][A-Za-z0-9_-]{0,63}", key):
        return f"{path}.{key}"
    shown = key.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    return f"{path}[{shown[:40]!r}]"


def _object(value: Any, path: str, required: tuple[str, ...],
            optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise VocabularyError(path, f"must be an object, not {_type(value)}")
    allowed = required + optional
    for key in value:
        if key not in allowed:
            raise VocabularyError(_key_path(path, str(key)),
                                  f"unknown field (fields: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise VocabularyError(f"{path}.{key}", "is required")
    return cast(Mapping[str, Any], value)


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_field(value: Any, path: str, *, max_chars: int, min_chars: int = 1,
            multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise VocabularyError(path, f"must be a string, not {_type(value)}")
    if _SURROGATE.search(value):
        raise VocabularyError(path, "is not valid Unicode (it holds a lone surrogate)")
    if len(value) > max_chars:
        raise VocabularyError(path, f"has {len(value)} characters; at most {max_chars}")
    if len(value) < min_chars:
        raise VocabularyError(path, "may not be empty")
    if _CONTROL.search(value) or (not multiline and ("\n" in value or "\r" in value)):
        raise VocabularyError(path, "may not hold control characters")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise VocabularyError(path, f"must be an integer, not {_type(value)}")
    if not low <= value <= high:
        raise VocabularyError(path, f"is {value}; it must be from {low} to {high}")
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        shown = repr(value)[:40] if isinstance(value, str) else _type(value)
        raise VocabularyError(path, f"is {shown}; it must be one of {', '.join(choices)}")
    return value


def _target(value: Any, path: str) -> Target:
    obj = _object(value, path, ("selector",), ("index",))
    selector = text_field(obj["selector"], f"{path}.selector", max_chars=MAX_SELECTOR_CHARS)
    if parse_selector(selector) is None:
        raise VocabularyError(f"{path}.selector",
                              f"{selector[:60]!r} is not a supported selector; use "
                              + ", ".join(SELECTOR_FORMS))
    index = _int(obj.get("index", 0), f"{path}.index", 0, MAX_INDEX)
    return Target(selector, index)


def _template_text(value: Any, path: str, limits: CopilotLimits) -> str:
    """Text that may hold template tags: each must parse, blocks must be whole."""
    text = text_field(value, path, max_chars=limits.max_text_chars, multiline=True)
    tags = find_tags(text)
    for tag in tags:
        if tag.tokens is None:
            raise VocabularyError(path, f"the template tag {text[tag.start:tag.end][:60]!r} "
                                        "does not parse")
        if is_raw(tag):
            raise VocabularyError(path, f"the template tag {text[tag.start:tag.end][:60]!r} "
                                        "writes raw HTML; the copilot never does")
    try:
        check_balanced(tags, 0, len(text))
    except UnbalancedBlocks as exc:
        raise VocabularyError(path, f"its template blocks are not whole: {exc}") from exc
    return text


def _styles(value: Any, path: str, limits: CopilotLimits, *, allow_null: bool) -> Styles:
    if not isinstance(value, dict):
        raise VocabularyError(path, f"must be an object, not {_type(value)}")
    if not value and allow_null:
        raise VocabularyError(path, "must set or remove at least one property")
    if len(value) > limits.max_style_properties:
        raise VocabularyError(path, f"has {len(value)} properties; at most "
                                    f"{limits.max_style_properties}")
    out: list[tuple[str, str | None]] = []
    for name, raw in value.items():
        key_path = _key_path(path, str(name))
        if not isinstance(name, str) or not PROPERTY.fullmatch(name):
            raise VocabularyError(key_path, "is not a CSS property name (lower-case letters, "
                                            "digits and '-', or a --custom-property)")
        if raw is None and allow_null:
            out.append((name, None))
            continue
        text = text_field(raw, key_path, max_chars=limits.max_style_value_chars)
        problem = value_problem(text)
        if problem is not None:
            raise VocabularyError(key_path, f"the value {text[:60]!r} {problem}")
        out.append((name, text.strip()))
    return tuple(out)


def _palette(value: Any, path: str, limits: CopilotLimits) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise VocabularyError(path, f"must be an object, not {_type(value)}")
    if not value:
        raise VocabularyError(path, "must map at least one colour")
    if len(value) > limits.max_palette_entries:
        raise VocabularyError(path, f"has {len(value)} colours; at most "
                                    f"{limits.max_palette_entries}")
    seen: dict[str, str] = {}
    for key, raw in value.items():
        key_path = _key_path(path, str(key))
        source = normalize_color(str(key)[:40])
        if source is None:
            raise VocabularyError(key_path, "is not a colour (#rgb, #rrggbb, #rrggbbaa or "
                                            "a CSS colour name)")
        if not isinstance(raw, str) or (dest := normalize_color(raw[:40])) is None:
            raise VocabularyError(key_path, "must map to a colour (#rgb, #rrggbb, "
                                            "#rrggbbaa or a CSS colour name)")
        if source[:7] in seen:
            raise VocabularyError(key_path, "names a colour already in the map")
        seen[source[:7]] = dest
    return tuple(seen.items())


_PROPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text": (("text",), ("tag", "style")),
    "image": (("src",), ("alt", "style")),
    "shape": ((), ("shape", "style")),
    "qr": (("value",), ("size", "style")),
    "badge": (("text",), ("style",)),
}
_SRC = re.compile(r"https?://[^\s\"'<>`\\]{1,2000}|data:image/(?:png|jpeg|gif|webp|svg\+xml)"
                  r"(?:;base64)?,[A-Za-z0-9+/=%._-]*", re.IGNORECASE)


def _props(kind: str, value: Any, path: str, limits: CopilotLimits) -> Props:
    required, optional = _PROPS[kind]
    obj = _object(value, path, required, optional)
    style = _styles(obj["style"], f"{path}.style", limits, allow_null=False) \
        if "style" in obj else ()
    if kind in ("text", "badge"):
        text = _template_text(obj["text"], f"{path}.text", limits)
        tag = _choice(obj.get("tag", "p"), f"{path}.tag", TEXT_TAGS) if kind == "text" \
            else None
        return Props(text=text, tag=tag, style=style)
    if kind == "image":
        src = text_field(obj["src"], f"{path}.src", max_chars=limits.max_text_chars)
        if not (_SRC.fullmatch(src) or _one_output_tag(src)):
            raise VocabularyError(f"{path}.src", "must be an http(s) URL, a data:image/ URI "
                                                 "or one template tag naming a variable, "
                                                 "such as {{ image }}")
        alt = _template_text(obj["alt"], f"{path}.alt", limits) if obj.get("alt") else (
            "" if "alt" in obj else None)
        return Props(src=src, alt=alt, style=style)
    if kind == "shape":
        shape = _choice(obj.get("shape", "rect"), f"{path}.shape", ("rect", "circle"))
        return Props(shape=cast(Shape, shape), style=style)
    qr_value = text_field(obj["value"], f"{path}.value", max_chars=limits.max_text_chars)
    if "{{" in qr_value and not _one_output_tag(qr_value):
        raise VocabularyError(f"{path}.value", "must be plain text or exactly one template "
                                               "tag naming a variable, such as {{ url }}")
    size = _int(obj.get("size", 240), f"{path}.size", MIN_QR_SIZE, limits.max_dimension)
    return Props(value=qr_value, size=size, style=style)


def _one_output_tag(text: str) -> bool:
    """Exactly one tag that is a plain variable (``{{ image }}``)."""
    tags = find_tags(text)
    return (len(tags) == 1 and tags[0].start == 0 and tags[0].end == len(text)
            and is_plain_path(tags[0]))


def operation_from_json(value: Any, path: str = "operation",
                        limits: CopilotLimits | None = None, *,
                        nested: bool = False) -> Operation:
    limits = limits or CopilotLimits()
    if not isinstance(value, dict):
        raise VocabularyError(path, f"must be an object, not {_type(value)}")
    allowed = OPERATIONS[:-1] if nested else OPERATIONS
    if "op" not in value:
        raise VocabularyError(f"{path}.op", f"is required (one of {', '.join(allowed)})")
    op = value["op"]
    if nested and op == "duplicate_template":
        raise VocabularyError(f"{path}.op", "duplicate_template cannot hold another "
                                            "duplicate_template")
    _choice(op, f"{path}.op", allowed)
    if op == "set_text":
        obj = _object(value, path, ("op", "target", "text"))
        return SetText(_target(obj["target"], f"{path}.target"),
                       _template_text(obj["text"], f"{path}.text", limits))
    if op == "set_style":
        obj = _object(value, path, ("op", "target", "styles"))
        return SetStyle(_target(obj["target"], f"{path}.target"),
                        _styles(obj["styles"], f"{path}.styles", limits, allow_null=True))
    if op == "resize_canvas":
        obj = _object(value, path, ("op", "width", "height"), ("reflow",))
        return ResizeCanvas(
            _int(obj["width"], f"{path}.width", 1, limits.max_dimension),
            _int(obj["height"], f"{path}.height", 1, limits.max_dimension),
            cast(Reflow, _choice(obj.get("reflow", "scale"), f"{path}.reflow",
                                 ("scale", "none"))))
    if op == "add_element":
        obj = _object(value, path, ("op", "kind", "props"), ("parent", "position"))
        kind = _choice(obj["kind"], f"{path}.kind", KINDS)
        parent = _target(obj["parent"], f"{path}.parent") \
            if obj.get("parent") is not None else None
        position = _choice(obj.get("position", "end"), f"{path}.position", ("end", "start"))
        return AddElement(cast(Kind, kind), _props(kind, obj["props"], f"{path}.props", limits),
                          parent, cast(Position, position))
    if op == "remove_element":
        obj = _object(value, path, ("op", "target"))
        return RemoveElement(_target(obj["target"], f"{path}.target"))
    if op == "swap_palette":
        obj = _object(value, path, ("op", "map"))
        return SwapPalette(_palette(obj["map"], f"{path}.map", limits))
    obj = _object(value, path, ("op", "name", "operations"))
    name = text_field(obj["name"], f"{path}.name", max_chars=MAX_NAME_CHARS)
    if name != name.strip():
        raise VocabularyError(f"{path}.name", "may not start or end with a space")
    ops = obj["operations"]
    if not isinstance(ops, list):
        raise VocabularyError(f"{path}.operations", f"must be an array, not {_type(ops)}")
    if len(ops) > limits.max_steps:
        raise VocabularyError(f"{path}.operations",
                              f"has {len(ops)} operations; at most {limits.max_steps}")
    inner = tuple(cast(EditOperation, operation_from_json(
        o, f"{path}.operations[{i}]", limits, nested=True)) for i, o in enumerate(ops))
    return DuplicateTemplate(name, inner)


def step_from_json(value: Any, path: str = "step",
                   limits: CopilotLimits | None = None) -> Step:
    """A stored step (``Step.to_json``) read back, as strictly as a new one."""
    obj = _object(value, path, ("id", "description", "operation"), ("error",))
    step_id = text_field(obj["id"], f"{path}.id", max_chars=32)
    if not re.fullmatch(r"s[0-9]{1,4}", step_id):
        raise VocabularyError(f"{path}.id", "must be s1, s2, …")
    description = text_field(obj["description"], f"{path}.description", max_chars=1000,
                          multiline=True)
    operation = None if obj["operation"] is None else \
        operation_from_json(obj["operation"], f"{path}.operation", limits)
    error = None if obj.get("error") is None else \
        text_field(obj["error"], f"{path}.error", max_chars=1000, multiline=True)
    return Step(step_id, description, operation, error)


def accept(steps: list[Step], ids: Any, path: str = "steps") -> list[Step]:
    """The steps a client accepted, in plan order; unknown, repeated and
    unappliable ids are a :class:`VocabularyError` naming the id's position."""
    if not isinstance(ids, list) or not ids:
        raise VocabularyError(path, "must be a non-empty array of step ids")
    by_id = {step.id: step for step in steps}
    chosen: set[str] = set()
    for i, step_id in enumerate(ids):
        item = f"{path}[{i}]"
        if not isinstance(step_id, str) or step_id not in by_id:
            shown = repr(step_id)[:40]
            raise VocabularyError(item, f"no step {shown} in this plan (steps: "
                                        f"{', '.join(by_id) or 'none'})")
        if step_id in chosen:
            raise VocabularyError(item, f"step {step_id} is given twice")
        if by_id[step_id].operation is None:
            raise VocabularyError(item, f"step {step_id} has no operation to apply "
                                        "(it explains or reports an error)")
        chosen.add(step_id)
    return [step for step in steps if step.id in chosen]
