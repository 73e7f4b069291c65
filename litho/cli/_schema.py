"""The shape of template.json, checked before anything is sent (the API's
TemplateCreate, less ``html``, which is template.html)."""

from __future__ import annotations

from typing import Any

from litho.cli._folders import DIR_TAG_PREFIX

_STRING_MAP = {"type": "object", "maxProperties": 20,
               "additionalProperties": {"type": "string", "maxLength": 1000}}

TEMPLATE_JSON: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "width", "height"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "width": {"type": "integer", "minimum": 1, "maximum": 16384},
        "height": {"type": "integer", "minimum": 1, "maximum": 16384},
        "sampleVariables": {"type": "object"},
        "variables": {
            "type": "array", "maxItems": 200,
            "items": {
                "type": "object", "required": ["name", "type"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "type": {"enum": ["text", "number", "boolean", "color", "image", "date",
                                      "list", "object"]},
                    "description": {"type": "string", "maxLength": 1000},
                    "validation": {"type": "object"},
                },
            },
        },
        "tags": {
            # One of the API's 20 is the folder tag.
            "type": "array", "maxItems": 19, "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": 50,
                      "pattern": r"^\S(.*\S)?$",
                      "not": {"pattern": "^" + DIR_TAG_PREFIX.replace(".", r"\.")}},
        },
        "dataSources": {
            "type": "array", "maxItems": 20,
            "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "url"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                             "maxLength": 100},
                    "url": {"type": "string", "minLength": 1, "maxLength": 2000},
                    "method": {"enum": ["GET", "POST"]},
                    "headers": _STRING_MAP,
                    "body": {"type": "string", "maxLength": 65536},
                    "ttlSeconds": {"type": "integer", "minimum": 0, "maximum": 86400},
                },
            },
        },
    },
}
