"""``make browser``: make sure Chromium and the Noto fonts are installed.

As root on Debian/Ubuntu: ``apt-get install chromium fonts-noto-core
fonts-noto-color-emoji`` when missing. Otherwise: ``playwright install
chromium`` (which needs the internet) unless a Chromium is already on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from services.renderer._chromium import executable_path

APT_PACKAGES = ["chromium", "fonts-noto-core", "fonts-noto-color-emoji"]


def _missing_fonts() -> list[str]:
    if shutil.which("fc-list") is None:
        return ["fonts-noto-core", "fonts-noto-color-emoji"]
    listed = subprocess.run(["fc-list"], capture_output=True, text=True, check=False).stdout
    missing = []
    if "NotoSans-Regular" not in listed:
        missing.append("fonts-noto-core")
    if "NotoColorEmoji" not in listed:
        missing.append("fonts-noto-color-emoji")
    return missing


def main() -> int:
    configured = os.environ.get("LITHO_CHROMIUM_PATH", "")
    need = [] if executable_path(configured) else ["chromium"]
    need += _missing_fonts()
    if not need:
        return 0
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(need)} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
                       check=True, env=env)
        return 0
    if "chromium" in need:
        print("no system Chromium; running `playwright install chromium`", flush=True)
        subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], check=True)
    if set(need) - {"chromium"}:
        print(f"warning: fonts missing ({', '.join(set(need) - {'chromium'})}); "
              "install them as root for emoji and full Unicode coverage", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
