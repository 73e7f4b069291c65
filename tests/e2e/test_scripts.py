"""Text in every script renders as real glyphs, not tofu, through the whole stack.

A character no installed font covers is drawn as the primary font's .notdef
box, the same box whatever the character. So a line of a script with no font
renders exactly as a line of the same number of U+10FFFD (a private-use code
point no font has) — the "tofu line". Each script's line must differ from its
tofu line in many pixels and carry ink of its own; emoji must be in colour.
The thresholds are fractions of the tofu line's ink, which a missing font
meets at 0 (see the controls), and which real glyphs exceed several times.
"""

from __future__ import annotations

import io
import subprocess

import pytest
from PIL import Image, ImageChops

from tests.e2e.conftest import Live
from tests.e2e.test_formats import fetch
from tests.e2e.test_render_path import create, render

LINE = """<!doctype html><html><head><meta charset="utf-8"><style>
  html, body { margin: 0; background: #ffffff; }
  div { font: 48px sans-serif; color: #000000; padding: 16px 24px; white-space: nowrap; }
</style></head><body><div lang="{{ lang }}" dir="{{ dir }}">{{ text }}</div></body></html>"""
WIDTH, HEIGHT = 900, 100

TOFU = "\U0010FFFD"

#: (script, lang, dir, a line of it).
SCRIPTS = [
    ("Latin", "en", "ltr", "The quick brown fox jumps"),
    ("Japanese", "ja", "ltr", "日本語のテキスト"),
    ("Chinese", "zh-CN", "ltr", "汉字显示测试简体中文"),
    ("Korean", "ko", "ltr", "한국어 텍스트 렌더링"),
    ("Arabic", "ar", "rtl", "مرحبا بالعالم"),
    ("Hebrew", "he", "rtl", "שלום עולם"),
    ("Devanagari", "hi", "ltr", "नमस्ते दुनिया"),
    ("Thai", "th", "ltr", "สวัสดีชาวโลก"),
    ("emoji", "und", "ltr", "😀🎉🚀🌈"),
]

#: A line must differ from its tofu line in at least this share of the tofu
#: line's ink (measured: 1.4-1.9 for every script; 0 for a missing one).
MIN_DIFFERENCE = 0.5
#: A line's own ink, as a share of its tofu line's (measured: 0.7-2.5).
MIN_INK = 0.3
#: Emoji's coloured pixels, as a share of their tofu line's ink (measured: 5.4).
MIN_COLOUR = 0.5


def tofu_of(text: str) -> str:
    """``text`` with every character but spaces replaced by the box, so the layout matches."""
    return "".join(c if c == " " else TOFU for c in text)


def ink(image: Image.Image) -> int:
    """Pixels clearly darker than the white background."""
    return sum(image.convert("L").histogram()[:160])


def difference(a: Image.Image, b: Image.Image) -> int:
    """Pixels whose grey level differs clearly (anti-aliasing alone stays under it)."""
    return sum(ImageChops.difference(a.convert("L"), b.convert("L")).histogram()[97:])


def coloured(image: Image.Image) -> int:
    """Pixels far from grey: colour emoji have many, black text and boxes none."""
    data = image.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3)
               if max(data[i:i + 3]) - min(data[i:i + 3]) > 60)


async def rendered(live: Live, template_id: str, text: str, lang: str, direction: str
                   ) -> Image.Image:
    result = await render(live, template_id, {
        "format": "png", "variables": {"text": text, "lang": lang, "dir": direction}})
    image = Image.open(io.BytesIO(await fetch(live, result["url"])))
    assert image.size == (WIDTH, HEIGHT)
    return image


async def line_and_tofu(live: Live, text: str, lang: str, direction: str
                        ) -> tuple[Image.Image, Image.Image]:
    template = await create(live, html=LINE, width=WIDTH, height=HEIGHT)
    return (await rendered(live, template["id"], text, lang, direction),
            await rendered(live, template["id"], tofu_of(text), lang, direction))


@pytest.mark.parametrize(("script", "lang", "direction", "text"), SCRIPTS,
                         ids=[s[0] for s in SCRIPTS])
async def test_each_script_renders_real_glyphs(live: Live, script: str, lang: str,
                                               direction: str, text: str) -> None:
    line, tofu = await line_and_tofu(live, text, lang, direction)
    boxes = ink(tofu)
    assert boxes > 500, "the tofu line itself drew nothing: the test measures nothing"
    assert difference(line, tofu) >= MIN_DIFFERENCE * boxes, f"{script} renders as tofu"
    assert ink(line) >= MIN_INK * boxes, f"{script} renders (almost) nothing"
    if script == "emoji":
        assert coloured(tofu) == 0
        assert coloured(line) >= MIN_COLOUR * boxes, "emoji render without colour"
    else:
        assert coloured(line) < MIN_COLOUR * boxes  # the colour check can fail


def _has_font_for(codepoint: int) -> bool:
    listed = subprocess.run(["fc-list", f":charset={codepoint:x}", "family"],
                            capture_output=True, text=True, check=True, timeout=10).stdout
    return bool(listed.strip())


@pytest.mark.parametrize("text", [
    "\U0010FFFC" * 4,  # another private-use code point
    "\U00010570\U00010571\U00010572\U00010573",  # Vithkuqi (Unicode 14), in no Debian 12 font
], ids=["private-use", "vithkuqi"])
async def test_the_check_sees_tofu_where_no_font_is(live: Live, text: str) -> None:
    # The control: a script with no font fails every threshold above.
    if _has_font_for(ord(text[0])):
        pytest.skip(f"a font covers U+{ord(text[0]):04X} here: no missing script to show")
    line, tofu = await line_and_tofu(live, text, "und", "ltr")
    boxes = ink(tofu)
    assert boxes > 500
    assert difference(line, tofu) < MIN_DIFFERENCE * boxes
