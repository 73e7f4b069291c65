"""``litho templates push DIR``: make the tenant's templates match the folders.

Every folder is checked first (its files, then its HTML by the API's
validator); one error anywhere and nothing is changed. Then each folder's
template is created, updated (only the fields that differ, so a new version
only when something changed) or left alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from litho.cli._client import Client
from litho.cli._errors import InvalidFolder
from litho.cli._folders import assign, folder_of
from litho.cli._local import read_all
from litho.cli._model import HTML_FILE, Template, changes
from litho.cli._settings import CliSettings

#: The validator repeats the position in the message: ``line 2, column 4: …``.
_POSITION = re.compile(r"^line \d+, column \d+: ")
_LOCATED = re.compile(r"^(?P<path>.*?)(?::(?P<line>\d+):(?P<column>\d+))?: ")


@dataclass(frozen=True)
class PushOptions:
    dry_run: bool = False
    prune: bool = False


async def push(client: Client, settings: CliSettings, root: Path, options: PushOptions,
               out: TextIO) -> None:
    checked = await asyncio.to_thread(read_all, root, settings.cli_max_file_bytes,
                                      settings.cli_max_templates)
    found = await _validate(client, root, checked.sources, settings.cli_concurrency)
    if checked.errors or found:
        raise InvalidFolder(sorted(checked.errors + found, key=_by_position))
    server = await client.templates()
    tagged, named = assign(server)
    for local in checked.templates:
        match = tagged.get(local.folder) or _adoptable(named.get(local.folder), local)
        if match is None:
            if options.dry_run:
                print(f"would create {local.folder}", file=out)
                continue
            made = await client.create_template(local.body())
            print(f"created   {local.folder}  ({made.get('id')} v{made.get('version')})",
                  file=out)
            continue
        body = changes(local, match)
        if not body:
            print(f"unchanged {local.folder}  ({match.get('id')} v{match.get('version')})",
                  file=out)
        elif options.dry_run:
            print(f"would update {local.folder}  ({match.get('id')}: {', '.join(body)})",
                  file=out)
        else:
            made = await client.update_template(str(match["id"]), body)
            print(f"updated   {local.folder}  ({made.get('id')} v{made.get('version')}: "
                  f"{', '.join(body)})", file=out)
    if options.prune:
        await _prune(client, server, {t.folder for t in checked.templates}, options, out)


def _adoptable(candidate: Mapping[str, Any] | None,
               local: Template) -> Mapping[str, Any] | None:
    """A template never pushed whose name-derived folder is this one is
    adopted only when its name is the same: a push never overwrites an
    unrelated template that happens to slug alike."""
    if candidate is not None and candidate.get("name") == local.meta.get("name"):
        return candidate
    return None


def _by_position(line: str) -> tuple[str, int, int]:
    """File by file, then line and column as numbers (10 after 9)."""
    m = _LOCATED.match(line)
    if m is None:
        return line, 0, 0
    return m["path"], int(m["line"] or 0), int(m["column"] or 0)


async def _validate(client: Client, root: Path, sources: Mapping[str, str],
                    concurrency: int) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(folder: str, html: str) -> list[str]:
        async with gate:
            found = await client.validate(html)
        path = root / folder / HTML_FILE
        return [f"{path}:{e.get('line')}:{e.get('column')}: "
                + _POSITION.sub("", str(e.get("message", ""))) for e in found]

    results = await asyncio.gather(*(one(f, h) for f, h in sources.items()))
    return [line for lines in results for line in lines]


async def _prune(client: Client, server: list[dict[str, Any]], local: set[str],
                 options: PushOptions, out: TextIO) -> None:
    """Delete the templates a push made (they carry a folder tag) whose
    folder is gone; templates never pushed are never deleted."""
    for template in server:
        folder = folder_of(template.get("tags") or [])
        if folder is None or folder in local:
            continue
        if options.dry_run:
            print(f"would delete {folder}  ({template.get('id')})", file=out)
            continue
        await client.delete_template(str(template["id"]))
        print(f"deleted   {folder}  ({template.get('id')})", file=out)
