"""Where Chromium is and how it is launched."""

from __future__ import annotations

import os
import shutil

#: Playwright's own ``--disable-features`` list (its ``chromiumSwitches``).
#: Chromium keeps only the last ``--disable-features`` switch, and Playwright
#: puts its list before our arguments, so ours repeats it
#: (tests/unit/test_chromium.py fails when the installed driver's list changes).
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion",
)
#: Off on top of Playwright's: ``SpareRendererForSitePerProcess``. Chromium
#: keeps one spare renderer process warm, for the browser context that
#: navigated last. Every pooled page has a context of its own and the pages
#: take turns, so every page reset (a navigation, ``_engine.ChromiumPage.reset``)
#: killed the spare and started another (~60-90 ms of Chromium CPU a render).
DISABLED_FEATURES = (*PLAYWRIGHT_DISABLED_FEATURES, "SpareRendererForSitePerProcess")

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
    "--disable-features=" + ",".join(DISABLED_FEATURES),
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
