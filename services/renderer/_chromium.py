"""Where Chromium is and how it is launched."""

from __future__ import annotations

import os
import shutil

#: Chromium must not reach the network by itself: no background services, and
#: every page request is intercepted and fetched by the outbound guard, so DNS
#: and direct connections from the browser are pointed at nothing as a backstop.
BASE_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--font-render-hinting=none",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
]


def executable_path(configured: str) -> str | None:
    """The configured binary, else a system Chromium, else None (Playwright's own)."""
    if configured:
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_args() -> list[str]:
    args = list(BASE_ARGS)
    if os.geteuid() == 0:
        # Chromium's sandbox refuses to run as root.
        args.append("--no-sandbox")
    return args
