"""The start-up font check: which scripts have no font, and which package gives one.

Chromium on Linux finds its fallback fonts through fontconfig, so text in a
script no installed font covers renders as empty boxes (tofu) with no error
anywhere. The renderer still starts when a script is missing (a deployment
may never need CJK), but says so once, naming each script and the Debian
package that provides it. ``make browser`` (``services/browser_setup.py``)
installs exactly the packages this check finds missing.

A script counts as present when ``fc-list :lang=<tag>`` lists a font:
fontconfig's language coverage is what Chromium's fallback asks for, and it
does not depend on file names.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from litho.logs import get_logger

log = get_logger(__name__)

#: Seconds one ``fc-list`` may take; it answers in ~10 ms from fontconfig's cache.
FC_LIST_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Script:
    name: str
    #: fontconfig language tag: ``fc-list :lang=<tag>`` lists fonts covering it.
    lang: str
    #: The Debian/Ubuntu package with a font for it.
    package: str


SCRIPTS: Final = (
    Script("Latin", "en", "fonts-noto-core"),
    Script("Japanese", "ja", "fonts-noto-cjk"),
    Script("Chinese", "zh-cn", "fonts-noto-cjk"),
    Script("Korean", "ko", "fonts-noto-cjk"),
    Script("Arabic", "ar", "fonts-noto-core"),
    Script("Hebrew", "he", "fonts-noto-core"),
    Script("Devanagari", "hi", "fonts-noto-core"),
    Script("Thai", "th", "fonts-noto-core"),
    # fontconfig's tag for emoji (Unicode's "Zsye" script); only colour emoji
    # fonts cover it fully.
    Script("colour emoji", "und-zsye", "fonts-noto-color-emoji"),
)

#: The port: a fontconfig language tag → families of the fonts that cover it.
FontLister = Callable[[str], Sequence[str]]


def fc_list(lang: str) -> list[str]:
    """Families fontconfig lists for ``lang``; raises OSError without ``fc-list``."""
    out = subprocess.run(["fc-list", f":lang={lang}", "family"], capture_output=True,
                         text=True, check=True, timeout=FC_LIST_TIMEOUT).stdout
    return [line for line in out.splitlines() if line.strip()]


def missing_scripts(lister: FontLister = fc_list,
                    scripts: Iterable[Script] = SCRIPTS) -> list[tuple[str, str]]:
    """(script, package) for each script no font covers, in ``scripts`` order."""
    return [(s.name, s.package) for s in scripts if not lister(s.lang)]


def missing_packages(missing: Iterable[tuple[str, str]]) -> list[str]:
    """The packages of ``missing``, each once, in order."""
    return list(dict.fromkeys(package for _, package in missing))


def check_fonts(lister: FontLister = fc_list) -> list[tuple[str, str]]:
    """Log a WARNING naming each missing script and its package; return them."""
    try:
        missing = missing_scripts(lister)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not check the installed fonts: fc-list failed "
                    "(install the fontconfig package to check them)", error=str(exc))
        return []
    if missing:
        packages = missing_packages(missing)
        names = ", ".join(name for name, _ in missing)
        log.warning(
            f"no font for {names}: text in these scripts renders as empty boxes; "
            f"install {' '.join(packages)} (apt-get install {' '.join(packages)}, "
            "or `make browser` as root)",
            missing=[f"{name}: {package}" for name, package in missing],
        )
    return missing


async def warn_missing_fonts(lister: FontLister = fc_list) -> list[tuple[str, str]]:
    """``check_fonts`` off the event loop, its ``fc-list`` runs side by side.

    One ``fc-list`` takes ~25 ms on a busy 2-core machine; one after the
    other, the nine would hold up the renderer's start by a quarter second.
    """
    langs = [s.lang for s in SCRIPTS]
    found = await asyncio.gather(*(asyncio.to_thread(lister, lang) for lang in langs),
                                 return_exceptions=True)
    return check_fonts(_replay(dict(zip(langs, found, strict=True))))


def _replay(found: dict[str, Sequence[str] | BaseException]) -> FontLister:
    """A lister answering from ``found``, raising what the real one raised."""
    def lister(lang: str) -> Sequence[str]:
        answer = found[lang]
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return lister
