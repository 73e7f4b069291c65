"""The bench's peer row: Satori + resvg-js in a real node process, or a clear skip."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bench import _satori


def _avatar() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (240, 240), (250, 204, 21)).save(buf, format="PNG")
    return buf.getvalue()


def test_without_node_the_row_is_skipped_with_a_note(tmp_path: Path) -> None:
    with pytest.raises(_satori.Skip, match="`node` is not on PATH"):
        _satori.prepare(tmp_path, avatar_png=_avatar(), subtitle="s", price="1", node="")


def test_the_lockfile_pins_every_package_and_the_linux_binaries() -> None:
    lock = (_satori.DIR / "package-lock.json").read_text()
    for name in ("node_modules/satori", "node_modules/@resvg/resvg-js",
                 "node_modules/@resvg/resvg-js-linux-x64-gnu",
                 "node_modules/@resvg/resvg-js-linux-arm64-gnu"):
        assert f'"{name}"' in lock


@pytest.mark.skipif(not shutil.which("node") or not shutil.which("fc-match"),
                    reason="needs node and fontconfig")
async def test_the_peer_renders_the_card_with_each_title(tmp_path: Path) -> None:
    setup = _satori.prepare(tmp_path, avatar_png=_avatar(), subtitle="Ship faster",
                            price="49")
    assert setup.regular.endswith(_satori.FONT_SUFFIXES)
    async with _satori.Peer(setup) as node:
        assert node.versions["satori"].startswith("0.63.")
        first = await node.render("Launch week, day 1", out=tmp_path / "a.png")
        await node.render("A much longer and different title", out=tmp_path / "b.png")
    assert (first["width"], first["height"]) == (1200, 630)
    assert first["totalMs"] >= first["resvgMs"] > 0
    with Image.open(tmp_path / "a.png") as first_png, Image.open(tmp_path / "b.png") as second:
        a, b = first_png.convert("RGB"), second.convert("RGB")
    assert a.size == (1200, 630)
    # The avatar (yellow, inside its white ring) and the gradient's purple.
    assert a.getpixel((72 + 66, 630 - 72 - 66)) == (250, 204, 21)
    r, g, bl = a.crop((600, 400, 601, 401)).tobytes()
    assert bl > g and r > g
    # The title is drawn as text: white ink in its line, different per title.
    box = (72, 72, 1128, 142)
    title = a.crop(box)
    assert max(title.convert("L").tobytes()) > 240
    assert title.tobytes() != b.crop(box).tobytes()
    # The emoji is drawn from the colour emoji image: the rocket's red and
    # orange, which neither the white text nor the blue-purple gradient has.
    if setup.emoji:
        data = title.tobytes()
        pixels = zip(data[0::3], data[1::3], data[2::3], strict=True)
        assert any(r > 180 and bl < 110 for r, _, bl in pixels)


def test_a_skipped_row_is_a_note_in_the_report() -> None:
    from bench.__main__ import _markdown

    report = {"machine": {"cpus": 2, "python": "3.11", "platform": "linux"},
              "expansion": {"medianUs": 1.0, "p95Us": 2.0, "runs": 3},
              "peer": {"skipped": "`node` is not on PATH"}}
    text = _markdown(report)
    assert "| cold PNG / Satori + resvg-js | skipped: `node` is not on PATH | ≤ 1.0 |" in text
    assert "Skipped: `node` is not on PATH" in text
