"""What an uploaded font file is: its format, its declared sizes, and the
face it holds (family, full name, weight, style).

:func:`sniff` and :func:`check_declared_sizes` run in the service's process
and only read fixed-size headers, so they cost nothing whatever the upload.
:func:`read_face` decompresses and parses the font with fontTools: it runs
in a sandboxed worker process (``_sandbox``), because a hostile file can
make a parser allocate or loop far more than its size suggests. It never
raises for a bad font: it answers ``(None, message)``, which pickles cleanly
across the process boundary whatever went wrong inside.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Final

from litho.errors import FieldError, InvalidArgument

#: Formats accepted, as stored and as the renderer serves them.
FORMATS: Final = ("ttf", "otf", "woff", "woff2")
CONTENT_TYPES: Final = {"ttf": "font/ttf", "otf": "font/otf", "woff": "font/woff",
                        "woff2": "font/woff2"}
ALLOWED_TEXT: Final = "TrueType (.ttf), OpenType (.otf), WOFF (.woff) or WOFF2 (.woff2)"

#: Longest family name, in characters.
MAX_FAMILY_CHARS: Final = 100
#: Characters a family name may hold besides letters, combining marks and
#: digits. The name is written into CSS (``font-family: "…"``) inside a
#: ``<style>`` element, so quotes, backslashes, ``;{}<>``, control
#: characters and every kind of line break are out; the apostrophe too, in
#: case a name is ever written between single quotes.
FAMILY_PUNCTUATION: Final = frozenset(" -_.&+")
_FAMILY_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd"})
#: Names CSS reads as a generic family or a keyword when written without
#: quotes, as people write family names: such a font could never be picked.
_RESERVED_FAMILIES: Final = frozenset({
    "serif", "sans-serif", "monospace", "cursive", "fantasy", "system-ui", "emoji", "math",
    "fangsong", "ui-serif", "ui-sans-serif", "ui-monospace", "ui-rounded", "inherit",
    "initial", "unset", "revert", "revert-layer", "default",
})
FAMILY_RULE: Final = (
    f"1 to {MAX_FAMILY_CHARS} letters, digits, single spaces and - _ . & +, with no "
    "leading or trailing space, and not a CSS generic family or keyword")

_WOFF_HEADER: Final = struct.Struct(">4sIIHHIHHIIIII")
_WOFF_ENTRY: Final = struct.Struct(">4sIIII")
_WOFF2_HEADER: Final = struct.Struct(">4sIIHHIIHHIIIII")
_SFNT_HEADER: Final = struct.Struct(">4sHHHH")
_SFNT_ENTRY: Final = struct.Struct(">4sIII")
#: Tables that hold outlines or glyph images: a font needs one of them.
_GLYPH_TABLES: Final = ("glyf", "CFF ", "CFF2", "CBDT", "sbix", "SVG ")
#: Decompressed bytes produced per step while checking a stream's real size.
_CHUNK: Final = 1 << 20


def not_a_font(reason: str) -> InvalidArgument:
    message = f"file is not a font this API accepts ({reason}); upload {ALLOWED_TEXT}"
    return InvalidArgument(message, errors=[FieldError("file", message)])


def sniff(data: bytes) -> str:
    """The format of ``data`` from its first four bytes; InvalidArgument
    (field ``file``) for anything else, TrueType collections included."""
    magic = data[:4]
    if magic in (b"\x00\x01\x00\x00", b"true"):
        return "ttf"
    if magic == b"OTTO":
        return "otf"
    if magic == b"wOFF":
        return "woff"
    if magic == b"wOF2":
        if len(data) >= 8 and data[4:8] == b"ttcf":
            raise _collection()
        return "woff2"
    if magic == b"ttcf":
        raise _collection()
    return _unknown(magic)


def _unknown(magic: bytes) -> str:
    raise not_a_font("its first bytes are not a TrueType, OpenType, WOFF or WOFF2 signature"
                     if magic else "it is empty")


def _collection() -> InvalidArgument:
    message = ("file is a font collection (.ttc), which holds several fonts; upload each "
               f"face as its own {ALLOWED_TEXT} file (fontTools can split a collection)")
    return InvalidArgument(message, errors=[FieldError("file", message)])


def declared_decoded_size(data: bytes, fmt: str) -> int:
    """The bytes a WOFF or WOFF2 file says it decompresses to (the largest of
    the header's total and the sum of its tables, metadata included); the
    file's own size for TTF and OTF. Reads headers only."""
    try:
        if fmt == "woff":
            return _woff_declared(data)
        if fmt == "woff2":
            return _woff2_layout(data).declared
    except (struct.error, ValueError) as exc:
        raise not_a_font(f"its {fmt.upper()} header is truncated or malformed: {exc}") from None
    return len(data)


def _woff_declared(data: bytes) -> int:
    (_, _, _, num_tables, _, total_sfnt, _, _, _, _, meta_orig, _, _) = \
        _WOFF_HEADER.unpack_from(data, 0)
    tables = sum(_WOFF_ENTRY.unpack_from(data, _WOFF_HEADER.size + i * _WOFF_ENTRY.size)[3]
                 for i in range(num_tables))
    return int(max(total_sfnt, tables) + meta_orig)


def _base128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(5):
        byte = data[pos + i]
        if i == 0 and byte == 0x80:
            raise ValueError("a UIntBase128 with a leading zero")
        value = (value << 7) | (byte & 0x7F)
        if value > 0xFFFFFFFF:
            raise ValueError("a UIntBase128 over 32 bits")
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("a UIntBase128 longer than 5 bytes")


@dataclass(frozen=True)
class _Woff2Layout:
    stream_offset: int
    stream_length: int
    #: Bytes the table stream inflates to, by the table directory.
    stream_size: int
    total_sfnt: int
    meta_offset: int
    meta_length: int
    meta_orig: int

    @property
    def declared(self) -> int:
        return max(self.total_sfnt, self.stream_size) + self.meta_orig


def _woff2_layout(data: bytes) -> _Woff2Layout:
    (_, _, _, num_tables, _, total_sfnt, total_compressed, _, _, meta_offset, meta_length,
     meta_orig, _, _) = _WOFF2_HEADER.unpack_from(data, 0)
    pos = _WOFF2_HEADER.size
    stream = 0
    for _ in range(num_tables):
        flags = data[pos]
        pos += 1
        index, version = flags & 0x3F, flags >> 6
        if index == 0x3F:
            pos += 4  # an explicit tag; the transform rules only concern glyf and loca
        orig, pos = _base128(data, pos)
        # glyf and loca (known tags 10 and 11) are transformed at version 0,
        # every other table at any version but 0.
        if (version == 0) if index in (10, 11) else (version != 0):
            length, pos = _base128(data, pos)
            stream += length
        else:
            stream += orig
    if pos + total_compressed > len(data):
        raise ValueError("the compressed stream runs past the end of the file")
    if meta_length and meta_offset + meta_length > len(data):
        raise ValueError("the metadata block runs past the end of the file")
    return _Woff2Layout(pos, total_compressed, stream, total_sfnt, meta_offset, meta_length,
                        meta_orig)


def check_family(value: str) -> str | None:
    """None if ``value`` may be a CSS family name, else what is wrong with it."""
    if not value:
        return "is empty"
    if len(value) > MAX_FAMILY_CHARS:
        return f"is {len(value)} characters long; the limit is {MAX_FAMILY_CHARS}"
    if value != value.strip(" ") or "  " in value:
        return "has a leading, trailing or doubled space"
    for ch in value:
        if ch not in FAMILY_PUNCTUATION and unicodedata.category(ch) not in _FAMILY_CATEGORIES:
            return f"holds {ch!r}, which is not allowed"
    if value.lower() in _RESERVED_FAMILIES:
        return "is a CSS generic family or keyword"
    return None


@dataclass(frozen=True)
class Face:
    """One font face, as the font file describes it."""

    family: str
    full_name: str
    weight: int
    style: str


def read_face(data: bytes, fmt: str) -> tuple[Face | None, str]:
    """Parse ``data`` and read its face: ``(face, "")``, or ``(None, why)``.
    Runs in a sandboxed worker: a MemoryError is left to propagate (the
    caller names the memory setting), everything else becomes a message."""
    try:
        if fmt == "woff":
            _check_woff_streams(data)
        elif fmt == "woff2":
            _check_woff2_stream(data)
        elif fmt in ("ttf", "otf"):
            _check_sfnt_directory(data)
        return _face(data), ""
    except MemoryError:
        raise
    except _Refusal as exc:
        return None, str(exc)
    except Exception as exc:  # any parser failure means "not a valid font"
        return None, f"it cannot be parsed: {type(exc).__name__}: {str(exc)[:200]}"


class _Refusal(Exception):
    pass


def _check_sfnt_directory(data: bytes) -> None:
    """Every table lies inside the file: fontTools reads tables lazily and
    would not notice a truncated file until a table it reads is cut."""
    _, num_tables, _, _, _ = _SFNT_HEADER.unpack_from(data, 0)
    for i in range(num_tables):
        tag, _, offset, length = _SFNT_ENTRY.unpack_from(
            data, _SFNT_HEADER.size + i * _SFNT_ENTRY.size)
        if offset + length > len(data):
            raise _Refusal(f"it is truncated: table {tag.decode('latin-1')!r} ends at byte "
                           f"{offset + length} of a {len(data)}-byte file")


def _check_woff_streams(data: bytes) -> None:
    """Each zlib stream inflates to exactly the length its entry declares,
    inflating at most that much: fontTools inflates a whole table at once."""
    (_, _, _, num_tables, _, _, _, _, meta_offset, meta_length, meta_orig, _, _) = \
        _WOFF_HEADER.unpack_from(data, 0)
    streams = [_WOFF_ENTRY.unpack_from(data, _WOFF_HEADER.size + i * _WOFF_ENTRY.size)[:4]
               for i in range(num_tables)]
    if meta_length:
        streams.append((b"metadata", meta_offset, meta_length, meta_orig))
    for tag, offset, comp, orig in streams:
        name = tag.decode("latin-1")
        if offset + comp > len(data):
            raise _Refusal(f"it is truncated: {name!r} runs past the end of the file")
        if comp > orig and tag != b"metadata":
            raise _Refusal(f"{name!r} is stored in more bytes ({comp}) than it declares "
                           f"uncompressed ({orig}): a malformed file or a decompression bomb")
        if comp < orig or tag == b"metadata":
            _expect_size(name, _inflate(data[offset:offset + comp], orig), orig)


def _check_woff2_stream(data: bytes) -> None:
    """The brotli streams (tables, metadata) inflate to exactly the bytes
    declared, inflating at most that much: fontTools inflates them at once."""
    layout = _woff2_layout(data)
    start = layout.stream_offset
    _expect_size("tables", _unbrotli(data[start:start + layout.stream_length],
                                     layout.stream_size), layout.stream_size)
    if layout.meta_length:
        start = layout.meta_offset
        _expect_size("metadata", _unbrotli(data[start:start + layout.meta_length],
                                           layout.meta_orig), layout.meta_orig)


def _expect_size(name: str, produced: int | None, declared: int) -> None:
    if produced == -1:
        raise _Refusal(f"it is truncated: the compressed {name!r} data ends early")
    if produced != declared:
        raise _Refusal(f"{name!r} decompresses to "
                       f"{'more' if produced is None else produced} bytes, not the "
                       f"{declared} it declares (a malformed file or a decompression bomb)")


def _inflate(chunk: bytes, declared: int) -> int | None:
    """The bytes a zlib stream inflates to; None once past ``declared``, -1
    if it ends early."""
    inflater = zlib.decompressobj()
    produced = len(inflater.decompress(chunk, _CHUNK))
    while not inflater.eof:
        if produced > declared:
            return None
        tail = inflater.unconsumed_tail
        out = inflater.decompress(tail, _CHUNK)
        if not out and not tail:
            return -1
        produced += len(out)
    return None if produced > declared else produced


def _unbrotli(chunk: bytes, declared: int) -> int | None:
    """The bytes a brotli stream inflates to; None once past ``declared``, -1
    if it ends early."""
    import brotli  # type: ignore[import-untyped]

    inflater = brotli.Decompressor()
    produced = len(inflater.process(chunk, output_buffer_limit=_CHUNK))
    while not inflater.is_finished():
        if produced > declared:
            return None
        # All the input is in: a call that yields nothing means the stream
        # needs more than there is.
        out = inflater.process(b"", output_buffer_limit=_CHUNK)
        if not out:
            return -1
        produced += len(out)
    return None if produced > declared else produced


def _face(data: bytes) -> Face:
    from fontTools.ttLib import TTFont

    font = TTFont(io.BytesIO(data), lazy=True, fontNumber=-1)
    missing = [tag for tag in ("head", "name", "cmap", "maxp") if tag not in font]
    if missing:
        raise _Refusal(f"it has no {', '.join(repr(t) for t in missing)} "
                       f"table{'s' if len(missing) > 1 else ''}")
    if not any(tag in font for tag in _GLYPH_TABLES):
        raise _Refusal("it has no glyph table (glyf, CFF, CFF2, CBDT, sbix or SVG)")
    cmap = font.getBestCmap()
    if not cmap:
        raise _Refusal("it has no usable character map (cmap): no text could use it")
    if font["maxp"].numGlyphs < 2:
        raise _Refusal("it has no glyphs besides .notdef")
    names = font["name"]
    family = (names.getDebugName(16) or names.getDebugName(1) or "").strip()
    full_name = (names.getDebugName(4) or family).strip()
    weight, italic = 400, False
    if "OS/2" in font:
        os2 = font["OS/2"]
        weight = min(max(int(os2.usWeightClass), 1), 1000)
        italic = bool(os2.fsSelection & 1)
    italic = italic or bool(font["head"].macStyle & 2)
    if "post" in font:
        italic = italic or font["post"].italicAngle != 0
    return Face(family=family, full_name=full_name[:200], weight=weight,
                style="italic" if italic else "normal")
