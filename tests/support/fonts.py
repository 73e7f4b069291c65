"""Fonts made in the test: one glyph, a solid square, so a page drawn in the
font is unmistakable (a box where the fallback font draws a thin letter)."""

from __future__ import annotations

import io

from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen

#: 2026-01-01 in the head table's clock (seconds since 1904): fixed, so the
#: same arguments give the same bytes.
_EPOCH_2026 = 3_849_984_000


def box_font(family: str = "Litho Box", *, chars: str = "iI", weight: int = 400,
             italic: bool = False, flavor: str | None = None) -> bytes:
    """A TrueType font (or WOFF/WOFF2 with ``flavor``) whose ``chars`` are
    each a full-em black square."""
    fb = FontBuilder(1000, isTTF=True)
    names = [".notdef", "box"]
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({ord(c): "box" for c in chars})
    pen = TTGlyphPen(None)
    pen.moveTo((0, -200))
    pen.lineTo((0, 800))
    pen.lineTo((1000, 800))
    pen.lineTo((1000, -200))
    pen.closePath()
    box = pen.glyph()
    fb.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "box": box})
    fb.setupHorizontalMetrics({".notdef": (500, 0), "box": (1000, 0)})
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    style = ("Bold " if weight >= 700 else "") + ("Italic" if italic else "")
    style = style.strip() or "Regular"
    fb.setupNameTable({"familyName": family, "styleName": style,
                       "fullName": f"{family} {style}", "psName": family.replace(" ", "")})
    fb.setupOS2(usWeightClass=weight, fsSelection=0x01 if italic else 0x40,
                sTypoAscender=800, sTypoDescender=-200, usWinAscent=800, usWinDescent=200)
    fb.setupPost(italicAngle=-10 if italic else 0)
    fb.setupHead(macStyle=(0x02 if italic else 0) | (0x01 if weight >= 700 else 0),
                 created=_EPOCH_2026, modified=_EPOCH_2026)
    if flavor:
        fb.font.flavor = flavor
    out = io.BytesIO()
    fb.save(out)
    return out.getvalue()
