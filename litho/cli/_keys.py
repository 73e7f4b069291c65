"""``litho keys list|create|delete``: the tenant's API keys."""

from __future__ import annotations

from typing import TextIO

from litho.cli._client import Client

SCOPES = ("render", "full")


async def list_keys(client: Client, out: TextIO) -> None:
    rows = [(str(k.get("id", "")), str(k.get("name", "")),
             ",".join(map(str, k.get("scopes") or [])), str(k.get("createTime") or "-"),
             str(k.get("lastUsedTime") or "never")) for k in await client.keys()]
    header = ("ID", "NAME", "SCOPES", "CREATED", "LAST USED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(),
              file=out)


async def create_key(client: Client, name: str, scope: str, out: TextIO,
                     err: TextIO) -> None:
    """The key alone on stdout (``KEY=$(litho keys create ci --scope render)``)."""
    made = await client.create_key(name, [scope])
    print(f"created key {made.get('id')} ({made.get('name')}, "
          f"{','.join(map(str, made.get('scopes') or []))}): it is shown only now, "
          "store it", file=err)
    print(made.get("key", ""), file=out)


async def delete_key(client: Client, key_id: str, out: TextIO) -> None:
    await client.delete_key(key_id)
    print(f"deleted key {key_id}", file=out)
