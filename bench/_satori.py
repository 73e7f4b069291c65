"""The bench's peer: Satori + resvg-js rendering the same card, in one node process.

``bench/satori/`` is an npm project of its own (``package.json`` and a
committed ``package-lock.json`` pin satori and @resvg/resvg-js, whose native
binary comes in per-platform optional packages that the lockfile pins too).
:func:`prepare` installs it with ``npm ci --ignore-scripts`` (nothing is
fetched from outside the npm registry) when ``node_modules`` is missing or
older than the lockfile, finds the fonts, and writes the process's config;
any missing piece (no ``node``, no ``npm``, no Noto Sans) is a :class:`Skip`
whose message the report prints instead of the row.

Fonts: Satori reads TTF, OTF and WOFF (not WOFF2) and cannot read colour emoji
fonts, so it gets Noto Sans Regular and Bold from fontconfig (``fc-match``,
the files Chromium uses for the card's ``'Noto Sans'``), and the card's emoji
as a PNG that Pillow draws from Noto Color Emoji (``graphemeImages``), the way
@vercel/og draws emoji from Twemoji images.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image, ImageDraw, ImageFont

DIR = Path(__file__).parent / "satori"
SCRIPT = DIR / "render.mjs"
#: A stamp written after a successful ``npm ci``: newer than the lockfile = installed.
STAMP = DIR / "node_modules" / ".installed"
#: Satori's font parser (opentype.js) takes these; WOFF2 it does not.
FONT_SUFFIXES = (".ttf", ".otf", ".woff")
NPM_CI = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
EMOJI = "🚀"


class Skip(Exception):
    """The peer cannot run here; the message says why and what to install."""


@dataclass(frozen=True)
class Setup:
    node: str
    config: Path
    regular: str
    bold: str
    emoji: str  # "" when no colour emoji font was found


def prepare(work: Path, *, avatar_png: bytes, subtitle: str, price: str,
            node: str | None = None) -> Setup:
    """Install the peer if needed and write its config into ``work``; raise
    :class:`Skip` when something it needs is missing."""
    node = node if node is not None else shutil.which("node")
    if not node:
        raise Skip("`node` is not on PATH, so the Satori + resvg-js row was skipped "
                   "(install Node.js ≥ 18, e.g. `apt-get install nodejs npm`)")
    _install()
    regular = _font("Noto Sans:style=Regular")
    bold = _font("Noto Sans:style=Bold")
    emoji = _emoji_png(work / "emoji.png")
    avatar = work / "avatar.png"
    avatar.write_bytes(avatar_png)
    config = work / "satori.json"
    config.write_text(json.dumps({"regular": regular, "bold": bold, "emoji": emoji,
                                  "avatar": str(avatar), "subtitle": subtitle,
                                  "price": price}))
    return Setup(node=node, config=config, regular=regular, bold=bold, emoji=emoji)


def _install() -> None:
    lock = DIR / "package-lock.json"
    if STAMP.exists() and STAMP.stat().st_mtime >= lock.stat().st_mtime:
        return
    if not shutil.which("npm"):
        raise Skip("`npm` is not on PATH, so bench/satori could not be installed and the "
                   "Satori + resvg-js row was skipped (`apt-get install npm`)")
    try:
        done = subprocess.run(NPM_CI, cwd=DIR, capture_output=True, text=True, timeout=600,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Skip(f"`npm ci` in bench/satori did not finish ({exc}), so the Satori + "
                   "resvg-js row was skipped") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Skip(f"`npm ci` in bench/satori failed ({done.returncode}), so the Satori + "
                   f"resvg-js row was skipped: {' / '.join(tail)}")
    STAMP.touch()


def _font(pattern: str) -> str:
    if not shutil.which("fc-match"):
        raise Skip("`fc-match` (fontconfig) is missing, so no font could be found for Satori")
    found = subprocess.run(["fc-match", "-f", "%{family}\t%{file}", pattern],
                           capture_output=True, text=True, check=False).stdout
    family, _, path = found.partition("\t")
    if "Noto Sans" not in family.split(",") or not path.lower().endswith(FONT_SUFFIXES):
        raise Skip(f"no Noto Sans TTF/OTF/WOFF for {pattern!r} (fc-match gave {found!r}), so "
                   "the Satori row was skipped (`apt-get install fonts-noto-core`)")
    return path


def _emoji_png(path: Path) -> str:
    """The card's emoji drawn from Noto Color Emoji, or "" without that font."""
    found = subprocess.run(["fc-match", "-f", "%{family}\t%{file}", "Noto Color Emoji"],
                           capture_output=True, text=True, check=False).stdout
    family, _, font_path = found.partition("\t")
    if family != "Noto Color Emoji":
        return ""
    # 109 px is the font's only bitmap size (CBDT); Satori scales it to 1em.
    font = ImageFont.truetype(font_path, 109)
    image = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((0, 0), EMOJI, font=font, embedded_color=True)
    box = image.getbbox()
    if box is not None:
        image = image.crop(box)
    image.save(path)
    return str(path)


class Peer:
    """The long-lived ``node render.mjs`` process: one render per request, in order."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.versions: dict[str, str] = {}
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Peer:
        self._process = await asyncio.create_subprocess_exec(
            self.setup.node, str(SCRIPT), str(self.setup.config), cwd=DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        ready = await self._read()
        if not ready.get("ready"):
            raise Skip(f"the Satori process did not start: {ready}")
        self.versions = {"satori": str(ready["satori"]), "resvg-js": str(ready["resvg"])}
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def render(self, title: str, out: Path | None = None) -> dict[str, Any]:
        """One render; the times are measured inside node (``satoriMs``,
        ``resvgMs``, ``totalMs``), so the pipe between us is not counted."""
        assert self._process is not None and self._process.stdin is not None
        request = {"title": title, **({"out": str(out)} if out else {})}
        self._process.stdin.write(json.dumps(request).encode() + b"\n")
        await self._process.stdin.drain()
        reply = await self._read()
        if "error" in reply:
            raise RuntimeError(f"Satori render failed: {reply['error']}")
        return reply

    async def _read(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            code = await self._process.wait()
            raise Skip(f"the Satori process exited with {code}")
        reply: dict[str, Any] = json.loads(line)
        return reply
