"""``python -m services.gateway.limits``: a tenant's rate limits and render quota.

- ``set --tenant T [--per-second N] [--burst N] [--key-per-second N]
  [--key-burst N] [--renders-per-month N]``: override some of the defaults
  for tenant T (a tenant with at least one API key; 0 means no limit);
- ``show --tenant T``: the override, the limits in effect and this month's renders;
- ``unset --tenant T``: back to the defaults.

Every gateway replica picks a change up within LITHO_GATEWAY_RATE_LIMIT_OVERRIDES_TTL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from litho.config import load
from litho.docstore import DocumentStore, open_document_store
from litho.errors import InvalidArgument
from services.gateway._ratelimit import Limits, SharedCounters, TenantLimits, month_of
from services.gateway._settings import GatewaySettings

#: Option → field of a ``tenant_limits`` document.
_OPTIONS = {
    "per_second": "requestsPerSecond",
    "burst": "burst",
    "key_per_second": "keyRequestsPerSecond",
    "key_burst": "keyBurst",
    "renders_per_month": "rendersPerMonth",
}


async def run(store: DocumentStore, defaults: Limits, args: argparse.Namespace, *,
              now: float | None = None) -> dict[str, Any]:
    """Do what ``args`` say against ``store``; the answer to print (renders
    of the month holding ``now``, by default the current one)."""
    limits = TenantLimits(store, defaults, ttl=0)
    tenant: str = args.tenant
    if args.command == "set":
        values = {f: getattr(args, o) for o, f in _OPTIONS.items()
                  if getattr(args, o) is not None}
        await limits.set(tenant, values)
    elif args.command == "unset":
        if not await limits.unset(tenant):
            return {"tenant": tenant, "override": None, "changed": False}
    override = await limits.override(tenant)
    month, _ = month_of(time.time() if now is None else now)
    return {
        "tenant": tenant,
        "override": None if override is None else {
            k: v for k, v in override.items() if k not in ("_id", "tenantId")},
        "effective": asdict(await limits.of(tenant)),
        "month": month,
        "rendersThisMonth": await SharedCounters(store).renders(tenant, month),
    }


def defaults_from(settings: GatewaySettings) -> Limits:
    """The defaults the settings name (LITHO_GATEWAY_RATE_LIMIT_* and
    LITHO_GATEWAY_RENDERS_PER_MONTH), or the module's own until they exist."""
    fallback = Limits()
    return Limits(
        per_second=getattr(settings, "gateway_rate_limit_per_second", fallback.per_second),
        burst=getattr(settings, "gateway_rate_limit_burst", fallback.burst),
        key_per_second=getattr(settings, "gateway_key_rate_limit_per_second",
                               fallback.key_per_second),
        key_burst=getattr(settings, "gateway_key_rate_limit_burst", fallback.key_burst),
        renders_per_month=getattr(settings, "gateway_renders_per_month",
                                  fallback.renders_per_month))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m services.gateway.limits",
                                  description="a tenant's rate limits and render quota")
    sub = top.add_subparsers(dest="command", required=True)
    set_ = sub.add_parser("set", help="override some limits of a tenant (0: no limit)")
    set_.add_argument("--tenant", required=True)
    set_.add_argument("--per-second", type=float, help="requests per second of the tenant")
    set_.add_argument("--burst", type=int, help="requests the tenant may make at once")
    set_.add_argument("--key-per-second", type=float,
                      help="requests per second of each key (default: the tenant's)")
    set_.add_argument("--key-burst", type=int, help="requests each key may make at once")
    set_.add_argument("--renders-per-month", type=int,
                      help="renders per calendar month (UTC)")
    for name, text in (("show", "print a tenant's limits and this month's renders"),
                       ("unset", "drop a tenant's override (back to the defaults)")):
        sub.add_parser(name, help=text).add_argument("--tenant", required=True)
    return top


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    settings = load(GatewaySettings)
    store = await open_document_store(
        settings.docstore_location("gateway"), settings.docstore_database)
    try:
        return await run(store, defaults_from(settings), args)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        answer = asyncio.run(_main(args))
    except InvalidArgument as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
