"""``litho render ID``: render a template and download the file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from litho.cli._client import Client
from litho.cli._errors import CliError, UsageError

FORMATS = ("png", "jpeg", "webp", "pdf", "gif")
_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp",
             ".pdf": "pdf", ".gif": "gif"}


def variables(pairs: Sequence[str], vars_file: Path | None, max_bytes: int) -> dict[str, Any]:
    """The vars file's object, then each ``k=v`` over it; ``v`` is JSON when
    it parses (``n=3``, ``ok=true``, ``tags=["a"]``), else the string."""
    values: dict[str, Any] = {}
    if vars_file is not None:
        try:
            with vars_file.open("rb") as f:
                raw = f.read(max_bytes + 1)
        except OSError as exc:
            raise UsageError(f"--vars-file {vars_file}: {exc.strerror or exc}") from exc
        if len(raw) > max_bytes:
            raise UsageError(f"--vars-file {vars_file}: over {max_bytes} bytes")
        try:
            loaded = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"--vars-file {vars_file}: not JSON ({exc})") from exc
        if not isinstance(loaded, dict):
            raise UsageError(f"--vars-file {vars_file}: must hold a JSON object")
        values.update(loaded)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--var {pair!r}: write it as name=value")
        try:
            values[name] = json.loads(text)
        except (ValueError, RecursionError):
            values[name] = text
    return values


def output_format(chosen: str | None, dest: Path) -> str:
    return chosen or _SUFFIXES.get(dest.suffix.lower(), "png")


async def render(client: Client, template_id: str, body: dict[str, Any], dest: Path,
                 out: TextIO, err: TextIO) -> None:
    answer = await client.render(template_id, body)
    url = answer.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CliError(f"the render answered no image URL: {answer!r:.200}")
    size = await client.download(url, dest)
    for warning in answer.get("warnings") or []:
        if isinstance(warning, dict):
            print(f"warning: {warning.get('url')}: {warning.get('outcome')} "
                  f"{warning.get('reason', '')}".rstrip(), file=err)
    print(f"wrote {dest} ({answer.get('width')}×{answer.get('height')} "
          f"{answer.get('format')}, {size} bytes) from {url}", file=out)
