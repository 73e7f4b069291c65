"""qr, qrSvg, barcode and barcodeSvg: every code is rasterised (libvips'
SVG loader) and decoded with zxing-cpp, so a test passes only when the
pixels hold the value; then every refusal, each naming what is allowed."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import pytest
import pyvips  # type: ignore[import-untyped]
import segno
import zxingcpp
from PIL import Image

from litho.errors import InvalidArgument
from services.template._lang import Engine, Limits, list_functions
from services.template._lang._functions import _codes

ENGINE = Engine()
PREFIX = "data:image/svg+xml;base64,"


def ev(expr: str, engine: Engine = ENGINE, **variables: Any) -> Any:
    return engine.evaluate_expression(expr, variables)


def render(source: str, engine: Engine = ENGINE, max_output: int = 1 << 21,
           **variables: Any) -> str:
    return engine.compile(source).render(variables, max_output=max_output)


def fails(expr: str, *parts: str, engine: Engine = ENGINE, **variables: Any) -> str:
    """The message of the 422 a template using ``expr`` gets; it must hold every part."""
    with pytest.raises(InvalidArgument) as caught:
        render("{{ " + expr + " }}", engine, **variables)
    error = caught.value
    assert [e.field for e in error.errors] == ["html"]
    for part in parts:
        assert part in error.message, error.message
    return error.message


def svg_of(uri: str) -> str:
    assert uri.startswith(PREFIX), uri[:40]
    return base64.b64decode(uri[len(PREFIX):], validate=True).decode("utf-8")


def decode(svg: str) -> list[tuple[str, str]]:
    """(format, text) of every code in the SVG's pixels, drawn at 96 dpi on white."""
    image = pyvips.Image.svgload_buffer(svg.encode("utf-8"), dpi=96)
    flat = image.flatten(background=[255, 255, 255])
    picture = Image.open(io.BytesIO(flat.write_to_buffer(".png"))).convert("L")
    return [(found.format.name, found.text) for found in zxingcpp.read_barcodes(picture)]


def decoded_text(svg: str) -> str:
    found = decode(svg)
    assert len(found) == 1, found
    return found[0][1]


def view_box(svg: str) -> list[float]:
    match = re.search(r'viewBox="([^"]+)"', svg)
    assert match is not None
    return [float(part) for part in match.group(1).split()]


# QR codes ------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "https://litho.dev/p/42?utm_source=og&ref=\"card\"",
    "Grüße aus Köln",
    "日本語のテキスト 👋",
    "0123456789" * 20,
    "HELLO WORLD $%*+-./:",
])
def test_qr_decodes_to_its_value(value: str) -> None:
    assert decoded_text(svg_of(ev("qr(v)", v=value))) == value


def test_a_number_is_encoded_as_it_renders() -> None:
    assert decoded_text(svg_of(ev("qr(n)", n=1234.5))) == "1234.5"


def test_qr_in_an_img_src_survives_html_escaping() -> None:
    url = "https://litho.dev/?a=1&b='2'"
    html = render('<img src="{{ qr(url) }}">', url=url)
    uri = re.fullmatch(r'<img src="([^"]*)">', html)
    assert uri is not None
    # Base64 holds nothing HTML escaping changes: the attribute is the URI.
    assert uri.group(1) == ev("qr(url)", url=url)
    assert decoded_text(svg_of(uri.group(1))) == url


def test_qr_svg_is_inline_markup_with_raw_and_text_without() -> None:
    inline = render("<div>{{ raw qrSvg(url, 120) }}</div>", url="https://litho.dev")
    assert inline.startswith('<div><svg width="120" height="120"')
    assert inline.endswith("</svg></div>")
    assert decoded_text(inline[5:-6]) == "https://litho.dev"
    escaped = render("{{ qrSvg(url) }}", url="https://litho.dev")
    assert escaped.startswith("&lt;svg ")


def test_qr_options_positionally() -> None:
    svg = ev("qrSvg('hello', 300, 1, '#0a3', 'transparent', 'H')")
    assert 'width="300" height="300"' in svg
    assert 'stroke="#0a3"' in svg  # segno writes the shortest hex form
    assert "fill=" not in svg  # a transparent background draws nothing
    # Version 1 (21 modules) with one module of quiet zone each side.
    assert view_box(svg) == [0, 0, 23, 23]
    assert decoded_text(svg) == "hello"


def test_qr_options_as_an_object_match_the_positional_form() -> None:
    options = {"size": 300, "margin": 1, "color": "#0a3", "background": "transparent",
               "errorCorrection": "h"}
    assert ev("qrSvg('hello', o)", o=options) == ev(
        "qrSvg('hello', 300, 1, '#0a3', 'transparent', 'H')")
    # Missing and null options take their defaults.
    assert ev("qrSvg('hello', o)", o={"size": 256, "color": None}) == ev("qrSvg('hello')")


def test_qr_defaults() -> None:
    svg = ev("qrSvg('https://litho.dev')")
    assert 'width="256" height="256"' in svg
    assert 'fill="#fff"' in svg and 'stroke="#000"' in svg
    modules = segno.make_qr("https://litho.dev", error="M").symbol_size(border=0)[0]
    assert view_box(svg) == [0, 0, modules + 8, modules + 8]


def test_higher_error_correction_makes_a_bigger_symbol() -> None:
    value = "https://litho.dev/a/fairly/long/path/to/make/the/levels/differ"
    sizes = [view_box(ev(f"qrSvg(v, 256, 0, 'black', 'white', '{level}')", v=value))[2]
             for level in "LMQH"]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_colour_names_and_hex_forms_become_hex() -> None:
    svg = ev("qrSvg('x', 100, 4, 'RebeccaPurple', '#FFFA')")
    assert 'stroke="#639"' in svg
    # #rgba: white at two thirds opacity.
    assert 'fill="#fff" fill-opacity="0.67"' in svg
    assert 'stroke="#123" stroke-opacity="0.5"' in ev("qrSvg('x', 100, 4, '#11223380')")


# Barcodes ------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "value", "formats", "read"), [
    ("code128", "LITHO-42 <&> 'x'", {"Code128"}, "LITHO-42 <&> 'x'"),
    ("code128", "0123456789", {"Code128"}, "0123456789"),
    ("code39", "LITHO-42 $/+%.", {"Code39"}, "LITHO-42 $/+%."),
    ("ean13", "400638133393", {"EAN13"}, "4006381333931"),
    ("ean13", "4006381333931", {"EAN13"}, "4006381333931"),
    ("EAN-13", "5901234123457", {"EAN13"}, "5901234123457"),
    ("ean8", "9638507", {"EAN8"}, "96385074"),
    ("ean8", "96385074", {"EAN8"}, "96385074"),
    # zxing-cpp reads UPC-A as the EAN-13 it is a subset of (a leading 0).
    ("upca", "03600029145", {"UPCA", "EAN13"}, "036000291452"),
    ("upca", "036000291452", {"UPCA", "EAN13"}, "036000291452"),
    ("isbn13", "978-3-16-148410-0", {"EAN13"}, "9783161484100"),
    ("isbn13", "979-10-90636-07-1", {"EAN13"}, "9791090636071"),
    ("itf", "12345678", {"ITF"}, "12345678"),
    ("itf", "00012345678905", {"ITF"}, "00012345678905"),
])
def test_barcode_decodes_to_its_value(kind: str, value: str, formats: set[str],
                                      read: str) -> None:
    found = decode(svg_of(ev("barcode(v, t)", v=value, t=kind)))
    assert len(found) == 1, found
    format_name, text = found[0]
    assert format_name in formats
    assert (text[1:] if format_name == "EAN13" and kind == "upca" else text) == read


def test_barcode_text_is_escaped_in_the_svg() -> None:
    svg = ev("barcodeSvg(v, 'code128')", v="<b>&")
    assert "&lt;b&gt;&amp;</text>" in svg
    assert "<b>" not in svg


def test_barcode_options() -> None:
    default = ev("barcodeSvg('LITHO', 'code128')")
    assert "<text" in default and 'style="fill:#000000;"' in default
    plain = ev("barcodeSvg('LITHO', 'code128', 120, 3, false, 0, 'navy', 'transparent')")
    assert "<text" not in plain
    assert "fill:#000080" in plain
    assert "100%" not in plain  # no background rectangle
    width, height = view_box(plain)[2:]
    # Code 128 of five characters: start, five, check (11 modules each) and
    # stop (13) are 90 modules of 3 px, no quiet zone; the bars are 120 px
    # tall, with a module of margin above and below.
    assert width == 90 * 3
    assert height == 120 + 2 * 3
    assert 'width="270" height="126"' in plain
    assert decoded_text(ev("barcodeSvg('LITHO', 'code128', 120, 3, false, 10)")) == "LITHO"
    as_object = ev("barcodeSvg('LITHO', 'code128', o)",
                   o={"height": 120, "moduleWidth": 3, "showText": False, "margin": 0,
                      "color": "navy", "background": "transparent"})
    assert as_object == plain


def test_barcode_svg_has_no_id_and_no_xml_declaration() -> None:
    html = render("{{ raw barcodeSvg('4006381333931', 'ean13') }}"
                  "{{ raw barcodeSvg('96385074', 'ean8') }}")
    assert html.startswith("<svg ") and "<?xml" not in html and "id=" not in html
    assert "mm" not in html.replace("python-barcode", "")


# Hostile input -------------------------------------------------------------

def test_a_value_too_long_for_any_qr_code_names_the_limit() -> None:
    message = fails("qr(v)", "qr: the value is too long for a QR code",
                    "at most 2331 bytes", "'L' holds up to 2953", v="x" * 2400)
    assert message.startswith("line 1, column 4: qr:")
    fails("qr(v, 256, 4, 'black', 'white', 'H')", "at most 1273 bytes", v="x" * 1300)
    fails("qr(v, 256, 4, 'black', 'white', 'L')", "at most 2953 bytes", v="😀" * 800)
    assert ev("qr(v, 256, 4, 'black', 'white', 'L')", v="é" * 1500)  # Latin-1: a byte each
    fails("qrSvg(v)", "qrSvg: the value is too long", v="1" * 7090)


def test_a_huge_value_is_refused_before_segno_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(segno, "make_qr", lambda *a, **k: calls.append("made"))
    fails("qr(v)", "too long for a QR code", v="x" * 1_000_000)
    assert calls == []


def test_qr_pays_before_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = segno.make_qr

    def counted(data: str, **options: Any) -> segno.QRCode:
        made.append(data)
        return real(data, **options)

    monkeypatch.setattr(segno, "make_qr", counted)
    small = Engine(Limits(max_steps=20_000))
    assert ev("qr(v)", small, v="https://litho.dev").startswith(PREFIX)
    assert made == ["https://litho.dev"]
    fails("qr(v)", "LITHO_TEMPLATE_MAX_STEPS", engine=small, v="x" * 300)
    assert made == ["https://litho.dev"]


def test_qr_steps_grow_with_the_value() -> None:
    def cheapest(value: str) -> int:
        low, high = 1, 1_000_000
        while low < high:
            middle = (low + high) // 2
            try:
                ev("qr(v)", Engine(Limits(max_steps=middle)), v=value)
            except InvalidArgument:
                low = middle + 1
            else:
                high = middle
        return low

    short, long = cheapest("x" * 10), cheapest("x" * 500)
    assert 3_000 < short < 10_000
    # Version 1 against version 16: the price follows the symbol's area.
    assert long > 8 * short


def test_a_loop_of_codes_is_stopped_by_the_budget() -> None:
    engine = Engine(Limits(max_steps=100_000))
    with pytest.raises(InvalidArgument) as caught:
        render("{{ for i in items }}{{ barcode('ITEM-' + i, 'code128') }}{{ end }}", engine,
               items=list(range(1000)))
    assert "LITHO_TEMPLATE_MAX_STEPS" in caught.value.message


def test_codes_count_against_the_output_limit() -> None:
    with pytest.raises(InvalidArgument) as caught:
        render("{{ for i in items }}<img src=\"{{ qr(i) }}\">{{ end }}", max_output=10_000,
               items=list(range(20)))
    assert "LITHO_TEMPLATE_MAX_OUTPUT_BYTES" in caught.value.message


@pytest.mark.parametrize("colour", [
    "red\" onload=\"alert(1)", "url(#a)", "rgb(0,0,0)", "#12", "#1234567", "notacolour",
    "black;stroke:red", "", "currentColor",
])
def test_colours_outside_hex_and_names_are_refused(colour: str) -> None:
    fails("qr('x', 256, 4, c)", "qr: color must be a CSS hex colour", c=colour)
    fails("barcode('x', 'code128', o)", "barcode: background must be a CSS hex colour",
          "or 'transparent'", o={"background": colour})


def test_transparent_is_only_a_background() -> None:
    fails("qr('x', 256, 4, 'transparent')", "color must be a CSS hex colour")


@pytest.mark.parametrize(("expr", "parts"), [
    ("qr('x', 5000)",
     ("qr: size must be a number between 16 and 4096 pixels, got the number 5000",)),
    ("qr('x', 0)", ("size must be a number between 16 and 4096",)),
    ("qr('x', 'big')", ("size must be a number between 16 and 4096",)),
    ("qr('x', true)", ("size must be a number between 16 and 4096 pixels, got true",)),
    ("qr('x', 256, 21)", ("margin must be a whole number between 0 and 20 modules",)),
    ("qr('x', 256, -1)", ("margin must be a whole number between 0 and 20 modules",)),
    ("qr('x', 256, 2.5)", ("margin must be a whole number between 0 and 20 modules",)),
    ("qr('x', 256, 4, 'black', 'white', 'X')",
     ("errorCorrection must be one of 'L', 'M', 'Q', 'H'",)),
    ("qr('x', o)", ("unknown option 'scale'", "qr takes size, margin, color")),
    ("qr('x', 256, o)", ("an options object must be the only argument after the value",)),
    ("barcode('x', 'code128', 1e6)", ("height must be a number between 10 and 2000 pixels",)),
    ("barcode('x', 'code128', 80, 100)",
     ("moduleWidth must be a number between 0.5 and 20 pixels",)),
    ("barcode('x', 'code128', 80, 2, 'yes')", ("showText must be true or false",)),
    ("barcode('x', 'code128', 80, 2, true, 51)",
     ("margin must be a number between 0 and 50 modules",)),
])
def test_options_out_of_range_are_refused(expr: str, parts: tuple[str, ...]) -> None:
    fails(expr, *parts, o={"scale": 3})


def test_an_unknown_barcode_type_lists_the_types() -> None:
    fails("barcode('x', 'qrcode')",
          "barcode: the string \"qrcode\" is not a barcode type; the types are 'code128', "
          "'code39', 'ean13', 'ean8', 'upca', 'isbn13', 'itf'")
    fails("barcodeSvg('x', null)", "barcodeSvg: null is not a barcode type")


@pytest.mark.parametrize(("kind", "value", "parts"), [
    ("ean13", "4006381333932", ("the check digit of an EAN-13 4006381333932 is wrong",
                                "it should be 1, not 2", "give 12 digits")),
    ("ean13", "40063813339", ("an EAN-13 takes 12 digits, or 13 ending in the check digit",)),
    ("ean13", "40063813339310", ("an EAN-13 takes 12 digits",)),
    ("ean13", "40063813339A", ("an EAN-13 takes 12 digits",)),
    # Fullwidth digits are decimal to Python, but no barcode holds them.
    ("ean13", "\uff14" * 12, ("an EAN-13 takes 12 digits",)),
    ("ean8", "96385075", ("the check digit of an EAN-8 96385075 is wrong",)),
    ("ean8", "123", ("an EAN-8 takes 7 digits, or 8",)),
    ("upca", "036000291453", ("the check digit of a UPC-A", "it should be 2")),
    ("upca", "0360002914", ("a UPC-A takes 11 digits, or 12",)),
    ("isbn13", "977-3-16-148410-0", ("an ISBN-13 starts with 978, 9791 or 9798",)),
    ("isbn13", "978-3-16-148410-1", ("the check digit of an ISBN-13",)),
    ("itf", "123", ("ITF (interleaved 2 of 5) takes an even number of digits",)),
    ("itf", "12a4", ("takes an even number of digits",)),
    ("code39", "litho", ("Code 39 holds capital letters", "'h', 'i', 'l', 'o', 't'",
                         "uppercase(value)")),
    ("code128", "café", ("Code 128 holds printable ASCII", "'é'")),
    ("code128", "a\nb", ("Code 128 holds printable ASCII", "'\\n'")),
    ("code128", "x" * 81, ("a barcode holds at most 80", "use qr() for long values")),
    ("code128", "", ("barcode: the value is empty",)),
])
def test_invalid_barcode_values_name_what_is_allowed(kind: str, value: str,
                                                     parts: tuple[str, ...]) -> None:
    fails("barcode(v, t)", *parts, v=value, t=kind)


def test_empty_and_missing_values_are_refused() -> None:
    fails("qr(missing)", "qr: the value is empty")
    fails("qr('')", "qr: the value is empty")
    fails("barcode(missing, 'ean13')", "barcode: the value is empty")


def test_the_functions_are_listed_with_working_examples() -> None:
    infos = {info.name: info for info in list_functions() if info.category == "codes"}
    assert set(infos) == {"qr", "qrSvg", "barcode", "barcodeSvg"}
    for info in infos.values():
        assert ev(info.example, **info.example_variables) == info.example_result
    assert ", ".join(_codes.BARCODE_TYPES) in infos["barcode"].description
