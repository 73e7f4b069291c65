"""QR codes (segno) and barcodes (python-barcode) as SVG.

``qr`` and ``barcode`` give a ``data:image/svg+xml;base64,…`` URI for an
``<img src>`` or a CSS ``url()``: base64 holds no character that HTML
escaping changes, so the URI survives an ordinary output tag. ``qrSvg`` and
``barcodeSvg`` give the ``<svg>`` markup itself, for ``{{ raw … }}``.

Every option is checked before either library sees it: colours are CSS hex
or CSS colour names and are written out as hex, so nothing from a template
reaches an SVG attribute as it was given; numbers are held to fixed ranges.
Values are checked strictly too: python-barcode would silently trim an
over-long EAN or replace a wrong check digit, which would print a barcode
for another number.

Both libraries are pure Python, so a code's price in steps is set from
measurements of the work (see ``_QR_*`` and ``_BARCODE_*``) and paid before
the work is done, so the step budget bounds the time a render takes.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from xml.dom.minidom import Element

import segno
from barcode import get_barcode_class  # type: ignore[import-untyped]
from barcode.errors import BarcodeError  # type: ignore[import-untyped]
from barcode.writer import SVGWriter  # type: ignore[import-untyped]
from PIL import ImageColor

from services.template._lang._errors import ArgumentError
from services.template._lang._functions._args import text
from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, number_text, to_number, type_name

_DATA_URI = "data:image/svg+xml;base64,"

# Colours --------------------------------------------------------------------

_HEX = re.compile(r"#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})", re.ASCII | re.IGNORECASE)
_NAME = re.compile(r"[a-z]{3,20}", re.ASCII)
_COLOR_FORMS = "a CSS hex colour (#rgb, #rgba, #rrggbb, #rrggbbaa) or a CSS colour name"


def _color(value: Any, option: str, *, transparent: bool) -> str | None:
    """The colour as lowercase ``#rrggbb`` or ``#rrggbbaa``; None for transparent."""
    if not isinstance(value, str):
        raise ArgumentError(f"{option} must be {_COLOR_FORMS}, got {describe(value)}")
    colour = value.strip().lower()
    if colour == "transparent" and transparent:
        return None
    if _HEX.fullmatch(colour):
        digits = colour[1:]
        if len(digits) <= 4:
            digits = "".join(digit * 2 for digit in digits)
        return "#" + (digits[:6] if digits.endswith("ff") and len(digits) == 8 else digits)
    if _NAME.fullmatch(colour) and colour in ImageColor.colormap:
        red, green, blue = ImageColor.getrgb(colour)[:3]
        return f"#{red:02x}{green:02x}{blue:02x}"
    also = " or 'transparent'" if transparent else ""
    raise ArgumentError(f"{option} must be {_COLOR_FORMS}{also}, got {describe(value)}")


# Options --------------------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    low: float
    high: float
    unit: str
    whole: bool = False

    def read(self, value: Any, option: str) -> float:
        try:
            number = to_number(value) if type_name(value) in ("number", "string") else None
        except ArgumentError:
            number = None
        if (number is None or not math.isfinite(number) or not self.low <= number <= self.high
                or (self.whole and number != int(number))):
            kind = "a whole number" if self.whole else "a number"
            raise ArgumentError(
                f"{option} must be {kind} between {number_text(self.low)} and "
                f"{number_text(self.high)} {self.unit}, got {describe(value)}")
        return float(number)


def _flag(value: Any, option: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ArgumentError(f"{option} must be true or false, got {describe(value)}")


#: How each option is read, by name: each reader gets the value and the name.
_Reader = Callable[[Any, str], Any]


def _options(
    name: str, given: tuple[Any, ...], names: tuple[str, ...], readers: Mapping[str, _Reader],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The options of a call, given one by one in order or as one object."""
    chosen: dict[str, Any] = {}
    if len(given) == 1 and isinstance(given[0], dict):
        unknown = [key for key in given[0] if key not in readers]
        if unknown:
            raise ArgumentError(
                f"unknown option {unknown[0]!r} in the options object; {name} takes "
                + ", ".join(names))
        chosen = {key: item for key, item in given[0].items() if item is not None}
    else:
        for key, item in zip(names, given, strict=False):
            if isinstance(item, dict):
                raise ArgumentError(
                    f"an options object must be the only argument after the "
                    f"{'value' if name == 'qr' else 'type'}; got one in place of {key}")
            if item is not None:
                chosen[key] = item
    return {key: readers[key](chosen.get(key, defaults[key]), key) for key in names}


def _data_uri(svg: str) -> str:
    return _DATA_URI + base64.b64encode(svg.encode("utf-8")).decode("ascii")


# QR codes -------------------------------------------------------------------

_ERROR_LEVELS = ("L", "M", "Q", "H")
#: What a version 40 QR code (the largest) holds at each level: bytes of
#: text, digits, and characters of 0-9 A-Z space $%*+-./: (ISO/IEC 18004).
_QR_CAPACITY: Final = {
    "L": (2953, 7089, 4296), "M": (2331, 5596, 3391),
    "Q": (1663, 3993, 2420), "H": (1273, 3057, 1852),
}
#: No QR code holds more characters than this, whatever they are.
_QR_MAX_CHARACTERS = 7089
#: segno's time is mostly the search for the best of eight masks, which grows
#: with the symbol's area, and the area with the data it holds: measured in
#: CPU time against the engine's own steps (1.5 µs each on the machine that
#: measured), a version 1 code costs as much as 4,300 steps and a version 40
#: code (the largest) 235,000, about 80 steps per byte of capacity at level L
#: and 185 at H. The price below is that with half as much again to spare,
#: charged per byte of the value (UTF-8: never fewer bits than segno uses) at
#: the level's density, so it is paid before the work is done.
_QR_BASE_STEPS = 6_000
_QR_MAX_STEPS = 350_000

_QR_NAMES = ("size", "margin", "color", "background", "errorCorrection")
_QR_SIZE = _Range(16, 4096, "pixels")
_QR_MARGIN = _Range(0, 20, "modules", whole=True)


def _level(value: Any, option: str) -> str:
    level = value.strip().upper() if isinstance(value, str) else None
    if level not in _ERROR_LEVELS:
        raise ArgumentError(f"{option} must be one of 'L', 'M', 'Q', 'H' (7%, 15%, 25% or "
                            f"30% of the code may be damaged), got {describe(value)}")
    return level


_QR_READERS: Final[Mapping[str, _Reader]] = {
    "size": _QR_SIZE.read,
    "margin": lambda value, option: int(_QR_MARGIN.read(value, option)),
    "color": lambda value, option: _color(value, option, transparent=False),
    "background": lambda value, option: _color(value, option, transparent=True),
    "errorCorrection": _level,
}
_QR_DEFAULTS: Final[Mapping[str, Any]] = {
    "size": 256, "margin": 4, "color": "black", "background": "white",
    "errorCorrection": "M",
}


def _overflow(data: str, level: str) -> ArgumentError:
    most_bytes, most_digits, most_alnum = _QR_CAPACITY[level]
    other = "" if level == "L" else f"; error correction 'L' holds up to {_QR_CAPACITY['L'][0]}"
    return ArgumentError(
        f"the value is too long for a QR code ({len(data)} characters): at error correction "
        f"'{level}' the largest QR code (version 40) holds at most {most_bytes} bytes of text "
        f"(a byte for each ASCII or Latin-1 character, up to four for others), {most_digits} "
        f"digits or {most_alnum} capital letters and digits{other}. Shorten the value, for "
        f"example by linking to a page that holds it")


def _qr_svg(rt: Runtime, value: Any, given: tuple[Any, ...]) -> str:
    options = _options("qr", given, _QR_NAMES, _QR_READERS, _QR_DEFAULTS)
    data = text(rt, value)
    if data == "":
        raise ArgumentError("the value is empty; a QR code needs text to hold")
    level: str = options["errorCorrection"]
    if len(data) > _QR_MAX_CHARACTERS:
        raise _overflow(data, level)
    size = len(data.encode("utf-8"))
    per_byte = (_QR_MAX_STEPS - _QR_BASE_STEPS) // _QR_CAPACITY[level][0]
    rt.charge(min(_QR_MAX_STEPS, _QR_BASE_STEPS + per_byte * size))
    try:
        code = segno.make_qr(data, error=level)
    except segno.DataOverflowError:
        raise _overflow(data, level) from None
    out = io.BytesIO()
    code.save(out, kind="svg", xmldecl=False, svgns=True, omitsize=True, nl=False,
              border=options["margin"], dark=options["color"], light=options["background"],
              svgclass=None, lineclass=None)
    svg = out.getvalue().decode("utf-8")
    # segno writes a viewBox in modules; the width and height place it on the
    # page, and crisp edges keep modules sharp at sizes that are not a whole
    # number of pixels per module.
    side = number_text(options["size"])
    return svg.replace("<svg ", f'<svg width="{side}" height="{side}" '
                                 'shape-rendering="crispEdges" ', 1)


def qr(rt: Runtime, value: Any, *given: Any) -> str:
    return _data_uri(_qr_svg(rt, value, given))


def qr_svg(rt: Runtime, value: Any, *given: Any) -> str:
    return _qr_svg(rt, value, given)


# Barcodes -------------------------------------------------------------------

_MM_PER_PX = 25.4 / 96
#: Longest value a barcode may hold: no symbology here is read reliably past
#: this, and GS1 caps Code 128 data at 48 characters.
MAX_BARCODE_CHARACTERS = 80
#: python-barcode builds the SVG through xml.dom.minidom, an element per bar:
#: measured as for QR codes, 800 steps and 80 a bar (an EAN-13 has 30 bars,
#: 80 characters of Code 39 about 400); charged with half as much again to
#: spare, before the SVG is built.
_BARCODE_BASE_STEPS = 1_500
_BARCODE_STEPS_PER_BAR = 120
_BAR = re.compile(r"[1G]+")


def _digits_with_check(kind: str, value: str, digits: int) -> str:
    """``digits`` digits, or those and their EAN/UPC check digit (verified)."""
    if not value.isdecimal() or not value.isascii() or len(value) not in (digits, digits + 1):
        raise ArgumentError(
            f"{kind} takes {digits} digits, or {digits + 1} ending in the check digit; got "
            f"{describe(value)}")
    # The rightmost data digit weighs 3, the next 1, and so on (EAN, UPC, ISBN).
    weighted = sum(int(digit) * (3 if place % 2 == 0 else 1)
                   for place, digit in enumerate(reversed(value[:digits])))
    check = str((10 - weighted % 10) % 10)
    if len(value) == digits + 1 and value[-1] != check:
        raise ArgumentError(
            f"the check digit of {kind} {value} is wrong: it should be {check}, not "
            f"{value[-1]} (give {digits} digits to have it computed)")
    return value[:digits]


def _ean13(value: str) -> str:
    return _digits_with_check("an EAN-13", value, 12)


def _ean8(value: str) -> str:
    return _digits_with_check("an EAN-8", value, 7)


def _upca(value: str) -> str:
    return _digits_with_check("a UPC-A", value, 11)


def _isbn13(value: str) -> str:
    digits = value.replace("-", "").replace(" ", "")
    if not (digits.startswith("978") or digits.startswith(("9791", "9798"))):
        raise ArgumentError(
            f"an ISBN-13 starts with 978, 9791 or 9798; got {describe(value)}")
    return _digits_with_check("an ISBN-13", digits, 12)


def _itf(value: str) -> str:
    if not value.isdecimal() or not value.isascii() or len(value) % 2:
        raise ArgumentError(
            f"ITF (interleaved 2 of 5) takes an even number of digits (add a leading 0 to an "
            f"odd number); got {describe(value)}")
    return value


_CODE39_CHARACTERS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. $/+%")


def _code39(value: str) -> str:
    wrong = sorted({c for c in value if c not in _CODE39_CHARACTERS})
    if wrong:
        raise ArgumentError(
            f"Code 39 holds capital letters A-Z, digits 0-9, space and - . $ / + %; "
            f"{describe(value)} has {', '.join(repr(c) for c in wrong[:5])} "
            f"(uppercase(value) fixes small letters)")
    return value


def _code128(value: str) -> str:
    wrong = sorted({c for c in value if not " " <= c <= "~"})
    if wrong:
        raise ArgumentError(
            f"Code 128 holds printable ASCII (letters, digits, space and punctuation, "
            f"characters 32-126); {describe(value)} has "
            f"{', '.join(repr(c) for c in wrong[:5])}")
    return value


@dataclass(frozen=True)
class _Symbology:
    #: python-barcode's name of the type.
    library: str
    check: Callable[[str], str]
    #: Passed to the barcode's constructor.
    settings: Mapping[str, Any]


_TYPES: Final[Mapping[str, _Symbology]] = {
    "code128": _Symbology("code128", _code128, {}),
    # Without a check character, so the code reads back as the value given.
    "code39": _Symbology("code39", _code39, {"add_checksum": False}),
    "ean13": _Symbology("ean13", _ean13, {}),
    "ean8": _Symbology("ean8", _ean8, {}),
    "upca": _Symbology("upca", _upca, {}),
    "isbn13": _Symbology("isbn13", _isbn13, {}),
    "itf": _Symbology("itf", _itf, {}),
}
BARCODE_TYPES = tuple(_TYPES)

_BARCODE_NAMES = ("height", "moduleWidth", "showText", "margin", "color", "background")
_BARCODE_HEIGHT = _Range(10, 2000, "pixels")
_BARCODE_MODULE = _Range(0.5, 20, "pixels")
_BARCODE_MARGIN = _Range(0, 50, "modules")
_BARCODE_READERS: Final[Mapping[str, _Reader]] = {
    "height": _BARCODE_HEIGHT.read,
    "moduleWidth": _BARCODE_MODULE.read,
    "showText": _flag,
    "margin": _BARCODE_MARGIN.read,
    "color": lambda value, option: _color(value, option, transparent=False),
    "background": lambda value, option: _color(value, option, transparent=True),
}
_BARCODE_DEFAULTS: Final[Mapping[str, Any]] = {
    "height": 80, "moduleWidth": 2, "showText": True, "margin": 10, "color": "black",
    "background": "white",
}


def _px(mm: float) -> str:
    return number_text(round(mm / _MM_PER_PX, 2))


_LENGTHS = ("x", "y", "width", "height")
_POINTS = re.compile(r"font-size:([0-9.]+)pt")


class _PixelSvgWriter(SVGWriter):  # type: ignore[misc]
    """python-barcode's SVG writer, with every length in CSS pixels and a
    viewBox. It writes millimetres, which renderers turn into pixels at
    different resolutions (Chromium at 96 dpi, librsvg at 72 by default);
    pixels mean the same everywhere, and the viewBox lets the image scale
    when CSS sizes it. The fixed id of its group goes too: two inline
    barcodes would share it."""

    def _finish(self) -> bytes:
        root: Element = self._root
        for element in (root, *root.getElementsByTagName("rect"),
                        *root.getElementsByTagName("text")):
            for name in _LENGTHS:
                length = element.getAttribute(name)
                if length.endswith("mm"):
                    element.setAttribute(name, _px(float(length[:-2])))
        for element in root.getElementsByTagName("text"):
            element.setAttribute("style", _POINTS.sub(
                lambda m: f"font-size:{number_text(round(float(m[1]) * 4 / 3, 2))}px",
                element.getAttribute("style")))
        root.setAttribute(
            "viewBox", f"0 0 {root.getAttribute('width')} {root.getAttribute('height')}")
        root.setAttribute("shape-rendering", "crispEdges")
        group: Element = self._group
        group.removeAttribute("id")
        group.setAttribute("font-family", "DejaVu Sans Mono, monospace")
        result: bytes = super()._finish()
        return result


def _kind(value: Any) -> _Symbology:
    kind = value.strip().lower().replace("-", "").replace("_", "") if isinstance(
        value, str) else None
    symbology = _TYPES.get(kind or "")
    if symbology is None:
        raise ArgumentError(f"{describe(value)} is not a barcode type; the types are "
                            + ", ".join(f"'{name}'" for name in BARCODE_TYPES))
    return symbology


def _barcode_svg(rt: Runtime, value: Any, kind: Any, given: tuple[Any, ...]) -> str:
    symbology = _kind(kind)
    options = _options("barcode", given, _BARCODE_NAMES, _BARCODE_READERS, _BARCODE_DEFAULTS)
    data = text(rt, value)
    if data == "":
        raise ArgumentError("the value is empty; a barcode needs a value to hold")
    if len(data) > MAX_BARCODE_CHARACTERS:
        raise ArgumentError(
            f"the value is {len(data)} characters long; a barcode holds at most "
            f"{MAX_BARCODE_CHARACTERS} (longer barcodes cannot be scanned reliably: use qr() "
            f"for long values)")
    code = symbology.check(data)
    try:
        symbol = get_barcode_class(symbology.library)(
            code, writer=_PixelSvgWriter(), **symbology.settings)
        # The bars are known in microseconds; drawing them is the work to pay for.
        bars = len(_BAR.findall(symbol.build()[0]))
    except BarcodeError as exc:  # the checks above should leave python-barcode nothing
        raise ArgumentError(f"{symbology.library} cannot hold {describe(data)}: {exc}") from None
    rt.charge(_BARCODE_BASE_STEPS + _BARCODE_STEPS_PER_BAR * bars)
    module_mm = options["moduleWidth"] * _MM_PER_PX
    show_text: bool = options["showText"]
    font_pt = 4.5 * options["moduleWidth"]
    rendered: bytes = symbol.render({
        "module_width": module_mm,
        "module_height": options["height"] * _MM_PER_PX,
        "quiet_zone": options["margin"] * module_mm,
        "font_size": font_pt,
        "text_distance": font_pt * 0.35,
        "margin_top": module_mm,
        "margin_bottom": module_mm,
        "write_text": show_text,
        "foreground": options["color"],
        "background": options["background"],
        "compress": True,
        "with_doctype": False,
    })
    svg = rendered.decode("utf-8")
    # The XML declaration is not allowed inside HTML.
    return svg[svg.index("<svg"):]


def barcode(rt: Runtime, value: Any, kind: Any, *given: Any) -> str:
    return _data_uri(_barcode_svg(rt, value, kind, given))


def barcode_svg(rt: Runtime, value: Any, kind: Any, *given: Any) -> str:
    return _barcode_svg(rt, value, kind, given)


_QR_SIGNATURE = ("(value, size = 256, margin = 4, color = 'black', background = 'white', "
                 "errorCorrection = 'M')")
_BARCODE_SIGNATURE = ("(value, type, height = 80, moduleWidth = 2, showText = true, "
                      "margin = 10, color = 'black', background = 'white')")

FUNCTIONS = (
    Function(
        "qr", qr, 1, 6, "codes", "qr" + _QR_SIGNATURE,
        "A QR code of the value as an SVG data URI, for <img src> or CSS url(): size in "
        "pixels (16-4096, quiet zone included), margin (the quiet zone) in whole modules "
        "(0-20), colours as CSS hex or names (background may be 'transparent'), error correction "
        "'L', 'M', 'Q' or 'H'. The options may instead be one object with those names. A "
        "value longer than the largest QR code holds is an error.",
        "slice(qr(url), 0, 26)", _DATA_URI, {"url": "https://litho.dev"},
    ),
    Function(
        "qrSvg", qr_svg, 1, 6, "codes", "qrSvg" + _QR_SIGNATURE,
        "The QR code of qr() as <svg> markup, to place inline with {{ raw qrSvg(…) }}.",
        "slice(qrSvg('hello', 100), 0, 29)", '<svg width="100" height="100"',
    ),
    Function(
        "barcode", barcode, 2, 8, "codes", "barcode" + _BARCODE_SIGNATURE,
        "A barcode as an SVG data URI: type is one of " + ", ".join(BARCODE_TYPES)
        + "; height (10-2000) and moduleWidth (the narrowest bar, 0.5-20) in pixels, margin "
        "(the quiet zone) in modules (0-50), showText writes the value under the bars, "
        "colours as for qr. EAN, UPC and ISBN values may leave out the check digit; one "
        "given is verified. At most 80 characters.",
        "slice(barcode(sku, 'code128'), 0, 26)", _DATA_URI, {"sku": "LITHO-42"},
    ),
    Function(
        "barcodeSvg", barcode_svg, 2, 8, "codes", "barcodeSvg" + _BARCODE_SIGNATURE,
        "The barcode of barcode() as <svg> markup, to place inline with "
        "{{ raw barcodeSvg(…) }}.",
        "slice(barcodeSvg('4006381333931', 'ean13'), 0, 4)", "<svg",
    ),
)
