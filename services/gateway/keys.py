"""``python -m services.gateway.keys create --tenant NAME``: create an API key and print it."""

from __future__ import annotations

import argparse
import asyncio

from litho.config import load
from litho.docstore import open_document_store
from services.gateway._keys import KeyStore
from services.gateway._settings import GatewaySettings


async def _create(tenant: str, name: str) -> str:
    settings = load(GatewaySettings)
    store = await open_document_store(
        settings.docstore_location("gateway"), settings.docstore_database)
    try:
        keys = KeyStore(store, cache_ttl=0)
        await keys.prepare()
        return await keys.create(tenant, name)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.keys")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create an API key for a tenant and print it")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="default")
    args = parser.parse_args()
    print(asyncio.run(_create(args.tenant, args.name)))


if __name__ == "__main__":
    main()
