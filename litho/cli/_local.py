"""A directory of template folders: read and checked (push), written (pull)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from litho.cli._folders import valid_folder
from litho.cli._model import HTML_FILE, META_FILE, Template, meta_bytes
from litho.cli._schema import TEMPLATE_JSON


@dataclass
class Checked:
    """What a directory holds: the templates that read cleanly, and one
    ``path:LINE:COLUMN: message`` (or ``path: message``) per problem."""

    templates: list[Template] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Every HTML file that read cleanly, by folder, whatever its template.json
    #: holds: push has all of them validated, so one run shows every error.
    sources: dict[str, str] = field(default_factory=dict)


def folders(root: Path) -> list[Path]:
    """The template folders under ``root``: subdirectories holding a
    template.json or a template.html (others, and hidden ones, are ignored)."""
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".")
                  and ((p / META_FILE).exists() or (p / HTML_FILE).exists()))


def read_all(root: Path, max_bytes: int, max_templates: int = 10_000) -> Checked:
    if not root.is_dir():
        return Checked(errors=[f"{root}: not a directory"])
    found = folders(root)
    if len(found) > max_templates:
        return Checked(errors=[f"{root}: more than {max_templates} template folders "
                               "(LITHO_CLI_MAX_TEMPLATES)"])
    checked = Checked()
    for folder in found:
        template = _read(folder, max_bytes, checked)
        if template is not None:
            checked.templates.append(template)
    return checked


def _read(folder: Path, max_bytes: int, checked: Checked) -> Template | None:
    errors = checked.errors
    before = len(errors)
    if not valid_folder(folder.name):
        errors.append(f"{folder}: a template folder's name is 1-40 letters, digits, '.', "
                      "'_' or '-', starting with a letter or digit")
    html = _text(folder / HTML_FILE, max_bytes, errors)
    if html == "":
        errors.append(f"{folder / HTML_FILE}: empty")
    elif html is not None:
        checked.sources[folder.name] = html
    meta = _meta(folder / META_FILE, max_bytes, errors)
    if len(errors) > before or html is None or meta is None:
        return None
    return Template(folder.name, html, meta)


def _text(path: Path, max_bytes: int, errors: list[str]) -> str | None:
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        errors.append(f"{path}: missing")
        return None
    except OSError as exc:
        errors.append(f"{path}: cannot read ({exc.strerror or exc})")
        return None
    if len(raw) > max_bytes:
        errors.append(f"{path}: over {max_bytes} bytes (LITHO_CLI_MAX_FILE_BYTES)")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = position(raw[:exc.start].decode("utf-8"))
        errors.append(f"{path}:{line}:{column}: not UTF-8 (byte 0x{raw[exc.start]:02x})")
        return None


def position(text: str) -> tuple[int, int]:
    """The 1-based line and column just after ``text``."""
    line = text.count("\n") + 1
    return line, len(text) - (text.rfind("\n") + 1) + 1


def _meta(path: Path, max_bytes: int, errors: list[str]) -> dict[str, Any] | None:
    text = _text(path, max_bytes, errors)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}")
        return None
    except RecursionError:
        errors.append(f"{path}: nested too deeply")
        return None
    found = sorted(jsonschema.Draft202012Validator(TEMPLATE_JSON).iter_errors(meta),
                   key=lambda e: list(map(str, e.absolute_path)))
    for error in found[:50]:
        where = _field(error.absolute_path)
        errors.append(f"{path}: {where + ': ' if where else ''}{_short(error)}")
    return None if found else dict(meta)


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(error: jsonschema.ValidationError) -> str:
    if error.validator == "not":
        return "the litho.dir: prefix is kept for the folder tag"
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed",
                                     "unknown field(s)")
    message = error.message
    return message if len(message) <= 200 else message[:200] + "…"


def write(root: Path, template: Template) -> bool:
    """Write one folder; only files whose bytes change are rewritten (clean
    ``git status``). True when anything was written; UnicodeEncodeError when
    the HTML holds what UTF-8 cannot (a lone surrogate)."""
    folder = root / template.folder
    folder.mkdir(parents=True, exist_ok=True)
    wrote = _write_if_changed(folder / HTML_FILE,
                              template.html.encode("utf-8"))
    return _write_if_changed(folder / META_FILE, meta_bytes(template.meta)) or wrote


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def stale(root: Path, kept: Mapping[str, object]) -> list[Path]:
    """Template folders under ``root`` that no server template maps to."""
    if not root.is_dir():
        return []
    return [p for p in folders(root) if p.name not in kept]
