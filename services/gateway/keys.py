"""``python -m services.gateway.keys create --tenant NAME [--scope full|render]``:
create an API key and print it (a ``full`` key unless told otherwise: a
tenant's first key must be able to manage the others, over ``/v1/keys``)."""

from __future__ import annotations

import argparse
import asyncio

from litho.config import load
from litho.docstore import open_document_store
from services.gateway._keys import FULL, SCOPES, KeyStore
from services.gateway._settings import GatewaySettings


async def _create(tenant: str, name: str, scope: str) -> str:
    settings = load(GatewaySettings)
    store = await open_document_store(
        settings.docstore_location("gateway"), settings.docstore_database)
    try:
        keys = KeyStore(store, cache_ttl=0, max_per_tenant=settings.gateway_max_keys_per_tenant)
        await keys.prepare()
        return await keys.create(tenant, name, (scope,))
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.keys")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create an API key for a tenant and print it")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="default")
    create.add_argument("--scope", choices=SCOPES, default=FULL,
                        help="full (default: everything, managing keys included) or render "
                             "(renders and reads only)")
    args = parser.parse_args()
    print(asyncio.run(_create(args.tenant, args.name, args.scope)))


if __name__ == "__main__":
    main()
