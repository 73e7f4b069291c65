"""Which folder holds which template: the identity that survives a fresh Litho.

A template's folder is its identity, and the server keeps it as a tag,
``litho.dir:<folder>``, that push adds and pull reads (template.json lists
the other tags only). Server ids never identify a folder: a push to another
tenant or another Litho finds no template with the tag and creates one that
carries it, so the next push finds it again.

A template without the tag (made in the editor, never pushed) gets a folder
from its name: a lowercase ASCII slug, ``-2``, ``-3`` … on a clash, given in
the API's order (oldest first), so two pulls agree. The first push of that
folder to the same tenant adopts the template (same folder, same name) and
adds the tag, which pins the folder from then on, even across renames.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The tag that records a template's folder; tags hold at most 50 characters.
DIR_TAG_PREFIX = "litho.dir:"
MAX_TAG_CHARS = 50
MAX_FOLDER_CHARS = MAX_TAG_CHARS - len(DIR_TAG_PREFIX)
#: Folder names push accepts (and pull reads from a tag): safe on every file
#: system and in a URL, never ``..`` or hidden.
FOLDER_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_FOLDER_CHARS - 1}}}")
#: Names Windows will not create as a folder.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10))}


def valid_folder(name: str) -> bool:
    return (FOLDER_NAME.fullmatch(name) is not None and ".." not in name
            and name.split(".")[0].lower() not in _RESERVED)


def slug(name: str) -> str:
    """``"Blog post: Ünïcode!"`` → ``"blog-post-unicode"``; never empty."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    text = text[:MAX_FOLDER_CHARS].rstrip("-") or "template"
    return text if valid_folder(text) else f"{text}-template"


def dir_tag(folder: str) -> str:
    return DIR_TAG_PREFIX + folder


def folder_of(tags: Iterable[Any]) -> str | None:
    """The folder a template's tags record, if one is valid."""
    for tag in tags:
        if isinstance(tag, str) and tag.startswith(DIR_TAG_PREFIX):
            folder = tag.removeprefix(DIR_TAG_PREFIX)
            if valid_folder(folder):
                return folder
    return None


def user_tags(tags: Iterable[Any]) -> list[str]:
    """The tags a person gave, without the folder tag."""
    return [t for t in tags if isinstance(t, str) and not t.startswith(DIR_TAG_PREFIX)]


def _unique(base: str, taken: set[str]) -> str:
    if base.casefold() not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        name = base[:MAX_FOLDER_CHARS - len(suffix)].rstrip("-") + suffix
        if name.casefold() not in taken:
            return name
        n += 1


def assign(templates: Sequence[Mapping[str, Any]]) -> tuple[
        dict[str, Mapping[str, Any]], dict[str, Mapping[str, Any]]]:
    """Folder → template, split into (tagged, by name): tagged templates keep
    their tag's folder (the oldest wins a folder two claim); the others get
    a unique slug of their name, in order. Folders are unique ignoring case,
    for case-insensitive file systems."""
    tagged: dict[str, Mapping[str, Any]] = {}
    rest: list[Mapping[str, Any]] = []
    taken: set[str] = set()
    for template in templates:
        folder = folder_of(template.get("tags") or [])
        if folder is not None and folder.casefold() not in taken:
            tagged[folder] = template
            taken.add(folder.casefold())
        else:
            rest.append(template)
    named: dict[str, Mapping[str, Any]] = {}
    for template in rest:
        folder = _unique(slug(str(template.get("name", ""))), taken)
        named[folder] = template
        taken.add(folder.casefold())
    return tagged, named
