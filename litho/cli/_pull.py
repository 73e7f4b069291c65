"""``litho templates pull DIR``: every template of the tenant as a folder."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TextIO

from litho.cli._client import Client
from litho.cli._errors import CliError
from litho.cli._folders import assign
from litho.cli._local import stale, write
from litho.cli._model import from_server


async def pull(client: Client, root: Path, out: TextIO) -> None:
    tagged, named = assign(await client.templates())
    mapping = {**tagged, **named}
    failed = []
    for folder in sorted(mapping):
        server = mapping[folder]
        try:
            wrote = await asyncio.to_thread(write, root, from_server(folder, server))
        except UnicodeEncodeError:
            failed.append(folder)
            print(f"skipped   {folder}  ({server.get('id')}: its HTML is not valid "
                  "Unicode)", file=out)
            continue
        except OSError as exc:
            raise CliError(f"cannot write {root}/{folder}: {exc.strerror or exc}") from exc
        status = "written" if wrote else "unchanged"
        print(f"{status:<9} {folder}  ({server.get('id')} v{server.get('version')})", file=out)
    for path in await asyncio.to_thread(stale, root, mapping):
        print(f"stale     {path.name}  (no such template on the server: delete the folder, "
              "or push to create it again)", file=out)
    if failed:
        raise CliError(f"{len(failed)} template(s) could not be written: "
                       + ", ".join(failed))
