"""``python -m services``: the whole stack with the embedded defaults (``make run``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from services._stack import Stack, StartupError, die_with_parent, port_taken


async def _main() -> None:
    die_with_parent()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    data_dir = Path(os.environ.get("LITHO_DATA_DIR", "data"))
    port = int(os.environ.get("LITHO_GATEWAY_PORT", "8080"))
    host = os.environ.get("LITHO_GATEWAY_HOST", "127.0.0.1")
    problem = port_taken(host, port)
    if problem is not None:
        raise StartupError(
            f"the gateway cannot listen on {host}:{port} ({problem}): another program, "
            f"or another Litho, has that port.\nStop it, or choose another port with "
            f"LITHO_GATEWAY_PORT, for example:\n  LITHO_GATEWAY_PORT={port + 1} make run")
    # People read these logs; deployments keep the JSON default.
    env = {"LITHO_LOG_FORMAT": os.environ.get("LITHO_LOG_FORMAT", "console")}
    async with Stack(data_dir=data_dir, gateway_port=port, env=env) as stack:
        print(
            f"\nLitho is running.\n  gateway:  {stack.url}\n  API key:  {stack.api_key}\n"
            f"  editor:   {stack.url}/editor (sign in with the key)\n"
            f"  API docs: {stack.url}/docs\n"
            f"  data:     {stack.data_dir}\n\nTry:\n"
            f"  curl -s -X POST {stack.url}/v1/templates -H 'Authorization: Bearer "
            f"{stack.api_key}' -H 'Content-Type: application/json' -d '{{\"name\":\"hello\","
            f"\"width\":600,\"height\":315,\"html\":\"<h1>Hello {{{{ name }}}}</h1>\"}}'\n\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        await stop.wait()
        print("stopping…", flush=True)


def main() -> int:
    try:
        asyncio.run(_main())
    except StartupError as exc:
        # What to do, not a traceback: the services' own logs have the details.
        print(f"Litho could not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
