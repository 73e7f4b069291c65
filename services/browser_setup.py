"""``make browser``: make sure Chromium and a font for every script are installed.

The scripts and their packages are the renderer's start-up font check
(``services/renderer/_fonts_check.py``): Latin, Arabic, Hebrew, Devanagari
and Thai from ``fonts-noto-core``, Japanese, Chinese and Korean from
``fonts-noto-cjk``, colour emoji from ``fonts-noto-color-emoji``. A script
counts as present when ``fc-list :lang=<tag>`` lists a font for it, whatever
package or file that font came from, so only the packages of the scripts
with no font are installed.

As root on Debian/Ubuntu: ``apt-get install`` Chromium and those packages
when missing. Otherwise: ``playwright install chromium`` (which needs the
internet) unless a Chromium is already on PATH, and a warning naming the font
packages to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from services.renderer._chromium import executable_path
from services.renderer._fonts_check import SCRIPTS, missing_packages, missing_scripts

#: fc-list itself, without which no font can be checked.
FONTCONFIG = "fontconfig"


def _missing_fonts() -> list[str]:
    """The packages to install: those of the scripts no font covers."""
    if shutil.which("fc-list") is None:
        return [FONTCONFIG, *missing_packages((s.name, s.package) for s in SCRIPTS)]
    return missing_packages(missing_scripts())


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
        still = missing_scripts()
        if still:
            print("warning: still no font for "
                  f"{', '.join(f'{name} ({package})' for name, package in still)}",
                  file=sys.stderr)
        return 0
    if "chromium" in need:
        print("no system Chromium; running `playwright install chromium`", flush=True)
        subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], check=True)
    fonts = [p for p in need if p != "chromium"]
    if fonts:
        print(f"warning: fonts missing; install {' '.join(fonts)} as root "
              f"(apt-get install {' '.join(fonts)}) or text in some scripts renders as "
              "empty boxes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
