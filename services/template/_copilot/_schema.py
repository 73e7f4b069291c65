"""The vocabulary as JSON Schema: what the model is told to answer in.

The schema describes; :func:`~._vocabulary.operation_from_json` decides (it
also checks CSS values, template tags and colours, which a schema cannot).
"""

from __future__ import annotations

from typing import Any

from services.template._copilot._limits import CopilotLimits
from services.template._copilot._vocabulary import KINDS, TEXT_TAGS


def vocabulary_schema(limits: CopilotLimits | None = None) -> dict[str, Any]:
    limits = limits or CopilotLimits()
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars}
    target = {
        "type": "object", "additionalProperties": False, "required": ["selector"],
        "properties": {
            "selector": {"type": "string", "maxLength": 128, "description":
                         'one of: tag ("h1"), "#id", ".class", "tag.class", '
                         '[data-litho-id="x"], "body"'},
            "index": {"type": "integer", "minimum": 0, "maximum": 999,
                      "description": "which match, 0 = the first"}}}
    value = {"type": "string", "maxLength": limits.max_style_value_chars}
    styles = {"type": "object", "minProperties": 1,
              "maxProperties": limits.max_style_properties,
              "propertyNames": {"pattern": "^(--[a-z0-9][a-z0-9-]*|-?[a-z][a-z-]*)$"},
              "additionalProperties": {"anyOf": [value, {"type": "null"}]},
              "description": "CSS property -> value (null removes it); no ; { } < > \\, "
                             "url() only with data:image/ or a template tag"}
    set_styles = {**styles, "additionalProperties": value}
    color = {"type": "string", "description": "#rgb, #rrggbb, #rrggbbaa or a CSS colour name"}

    def op(name: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False,
                "required": ["op", *required],
                "properties": {"op": {"const": name}, **properties}}

    props = {
        "type": "object", "additionalProperties": False, "properties": {
            "text": text, "tag": {"enum": list(TEXT_TAGS)},
            "src": {"type": "string", "description": "http(s) URL, data:image/ URI or one "
                                                     "template tag such as {{ image }}"},
            "alt": {"type": "string"}, "shape": {"enum": ["rect", "circle"]},
            "value": {"type": "string", "description": "QR content: text or one tag "
                                                       "such as {{ url }}"},
            "size": {"type": "integer", "minimum": 32, "maximum": limits.max_dimension},
            "style": set_styles},
        "description": "text: text (+tag, style); image: src (+alt, style); shape: "
                       "(shape, style); qr: value (+size, style); badge: text (+style)"}
    edits = [
        op("set_text", ["target", "text"], {"target": target, "text": {
            **text, "description": "replaces the element's content; may hold {{ }} tags"}}),
        op("set_style", ["target", "styles"], {"target": target, "styles": styles}),
        op("resize_canvas", ["width", "height"], {
            "width": {"type": "integer", "minimum": 1, "maximum": limits.max_dimension},
            "height": {"type": "integer", "minimum": 1, "maximum": limits.max_dimension},
            "reflow": {"enum": ["scale", "none"]}}),
        op("add_element", ["kind", "props"], {
            "kind": {"enum": list(KINDS)}, "props": props, "parent": target,
            "position": {"enum": ["end", "start"]}}),
        op("remove_element", ["target"], {"target": target}),
        op("swap_palette", ["map"], {"map": {
            "type": "object", "minProperties": 1, "maxProperties": limits.max_palette_entries,
            "additionalProperties": color, "description": "old colour -> new colour"}}),
    ]
    duplicate = op("duplicate_template", ["name", "operations"], {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "operations": {"type": "array", "maxItems": limits.max_steps,
                       "items": {"oneOf": edits}}})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "properties": {"steps": {
            "type": "array", "maxItems": limits.max_steps, "items": {
                "type": "object", "additionalProperties": False,
                "required": ["description", "operation"],
                "properties": {
                    "description": {"type": "string", "maxLength": 1000},
                    "operation": {"oneOf": [*edits, duplicate, {"type": "null"}]}}}}},
    }
