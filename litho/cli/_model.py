"""A template as files, and the one normal form local and server copies are
compared in (so an unchanged template makes no new version)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litho.cli._folders import dir_tag, user_tags

HTML_FILE = "template.html"
META_FILE = "template.json"
#: template.json's keys, in the order written.
META_FIELDS = ("name", "width", "height", "variables", "sampleVariables", "tags",
               "dataSources")
#: What the server fills into a data source left without them.
_DATA_SOURCE_DEFAULTS: Mapping[str, Any] = {"method": "GET", "headers": {}, "ttlSeconds": 60}


@dataclass(frozen=True)
class Template:
    """One folder's template: its HTML and template.json's fields."""

    folder: str
    html: str
    meta: Mapping[str, Any]

    def body(self) -> dict[str, Any]:
        """The create body: every field, with the folder tag."""
        return {"html": self.html, **self.meta,
                "tags": [*self.meta.get("tags", []), dir_tag(self.folder)]}


def from_server(folder: str, template: Mapping[str, Any]) -> Template:
    meta = {
        "name": template.get("name", ""),
        "width": template.get("width", 0),
        "height": template.get("height", 0),
        "variables": template.get("variables") or [],
        "sampleVariables": template.get("sampleVariables") or {},
        "tags": user_tags(template.get("tags") or []),
        "dataSources": template.get("dataSources") or [],
    }
    return Template(folder, str(template.get("html", "")), meta)


def meta_text(meta: Mapping[str, Any]) -> str:
    """template.json: the fields in a fixed order, nested keys sorted, two
    spaces, a trailing newline: the same template always gives the same bytes."""
    ordered = {k: _sorted(meta[k]) for k in META_FIELDS if k in meta}
    return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"


def meta_bytes(meta: Mapping[str, Any]) -> bytes:
    """:func:`meta_text` as UTF-8; text UTF-8 cannot hold (a lone surrogate
    the server let through) is written as ``\\u`` escapes instead."""
    try:
        return meta_text(meta).encode("utf-8")
    except UnicodeEncodeError:
        ordered = {k: _sorted(meta[k]) for k in META_FIELDS if k in meta}
        return (json.dumps(ordered, indent=2) + "\n").encode("ascii")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    # JSON text, not Python equality: true == 1 in Python, not in a template.
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _normal(field: str, value: Any) -> str:
    if field == "dataSources" and isinstance(value, list):
        value = [{**_DATA_SOURCE_DEFAULTS, **s} if isinstance(s, dict) else s for s in value]
    return _canonical(value)


def changes(local: Template, server: Mapping[str, Any]) -> dict[str, Any]:
    """The update body that makes ``server`` equal ``local``: only the fields
    that differ (``{}`` when none does; the API keeps omitted fields)."""
    want = local.body()
    have = {"html": server.get("html"), "name": server.get("name"),
            "width": server.get("width"), "height": server.get("height"),
            "variables": server.get("variables") or [],
            "sampleVariables": server.get("sampleVariables") or {},
            "tags": server.get("tags") or [], "dataSources": server.get("dataSources") or []}
    return {field: value for field, value in want.items()
            if _normal(field, value) != _normal(field, have.get(field))}
