"""Uploaded fonts in the template service: reading real font files, the
family rules, every hostile upload (not a font, truncated, collections,
decompression bombs, oversized), the worker sandbox's limits, storage
(dedupe, conflicts, the per-tenant cap, tenant isolation, pagination) and
the fonts an expansion names. Real SQLite, a real blob directory, real
worker processes and the real gRPC server; no mocks."""

from __future__ import annotations

import functools
import io
import os
import resource
import struct
import subprocess
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.t2CharStringPen import T2CharStringPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTCollection, TTFont
from fontTools.ttLib.tables.DefaultTable import DefaultTable

from litho import rpc
from litho.blobstore import BlobStore, open_blob_store, validate_key
from litho.config import S3Settings
from litho.docstore import DocumentStore, open_document_store
from litho.errors import Conflict, InvalidArgument, NotFound, ResourceExhausted
from litho.service import Endpoints, running
from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc
from services import _registry
from services.template._fonts import FontLibrary, FontLimits, Sandbox, SandboxLimit, blob_key
from services.template._fonts._reading import check_family, read_face
from services.template._settings import TemplateSettings

MiB = 1024 * 1024
LIMITS = FontLimits(max_bytes=10 * MiB, max_decoded_bytes=64 * MiB, max_fonts=100,
                    parse_memory=1024 * MiB, parse_timeout=30.0)


# ------------------------------------------------------------------ font files


def _system_font(pattern: str) -> bytes:
    """A font installed on this machine (``make install`` puts Noto and
    DejaVu there), found as Chromium would find it."""
    path = subprocess.run(["fc-match", "-f", "%{file}", pattern], capture_output=True,
                          text=True, check=True).stdout
    assert path.endswith(".ttf"), f"fc-match found no TrueType font for {pattern!r}: {path!r}"
    return Path(path).read_bytes()


@functools.cache
def _flavored(data: bytes, flavor: str | None) -> bytes:
    # Cached: fontTools takes seconds to write a WOFF2 of a large font.
    font = TTFont(io.BytesIO(data))
    font.flavor = flavor
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def _square(pen: Any) -> None:
    pen.moveTo((50, 0))
    pen.lineTo((50, 700))
    pen.lineTo((550, 700))
    pen.lineTo((550, 0))
    pen.closePath()


def _built(family: str, *, cff: bool = True, weight: int = 400, italic: bool = False,
           cmap: bool = True, extra: dict[str, bytes] | None = None) -> bytes:
    """A small font made here: CFF outlines (an .otf) or glyf (a .ttf)."""
    fb = FontBuilder(1000, isTTF=not cff)
    fb.setupGlyphOrder([".notdef", "A", "B"])
    fb.setupCharacterMap({0x41: "A", 0x42: "B"} if cmap else {})
    if cff:
        glyphs = {}
        for name in (".notdef", "A", "B"):
            pen = T2CharStringPen(600, None)
            _square(pen)
            glyphs[name] = pen.getCharString()
        fb.setupCFF("Built-Regular", {"FullName": f"{family} Regular"}, glyphs, {})
    else:
        outlines = {}
        for name in (".notdef", "A", "B"):
            tt = TTGlyphPen(None)
            _square(tt)
            outlines[name] = tt.glyph()
        fb.setupGlyf(outlines)
    fb.setupHorizontalMetrics({n: (600, 50) for n in (".notdef", "A", "B")})
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": family, "styleName": "Italic" if italic else "Regular"})
    fb.setupOS2(usWeightClass=weight, fsSelection=0x01 if italic else 0x40,
                sTypoAscender=800, sTypoDescender=-200, usWinAscent=800, usWinDescent=200)
    fb.setupPost()
    if italic:
        fb.font["head"].macStyle = 2
    for tag, blob in (extra or {}).items():
        fb.font[tag] = DefaultTable(tag)
        fb.font[tag].data = blob
    out = io.BytesIO()
    fb.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def noto() -> dict[str, bytes]:
    return {"regular": _system_font("Noto Sans:style=Regular"),
            "bold": _system_font("Noto Sans:style=Bold"),
            "italic": _system_font("Noto Sans:style=Italic"),
            "oblique": _system_font("DejaVu Sans:style=Oblique")}


# ------------------------------------------------------------- bombs, by hand

_ZEROS = bytes(MiB)


def _brotli_zeros(prefix: bytes, zero_mib: int) -> bytes:
    c = brotli.Compressor(quality=1)
    parts = [c.process(prefix)]
    for _ in range(zero_mib):
        parts.append(c.process(_ZEROS))
    parts.append(c.finish())
    return b"".join(parts)


def _base128(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _woff2_bomb(zero_mib: int, *, declared: int | None = None) -> bytes:
    """A WOFF2 of a real (CFF) font plus a ``ZERO`` table of ``zero_mib``
    MiB of zeros; ``declared`` is the length its directory claims for that
    table (the truth by default; a lie makes it a hidden bomb)."""
    font = TTFont(io.BytesIO(_built("Bomb")))
    tags = sorted(font.reader.keys())
    tables = {tag: font.reader[tag] for tag in tags}
    real = zero_mib * MiB
    stream = _brotli_zeros(b"".join(tables[t] for t in tags), zero_mib)
    directory = b""
    for tag in [*tags, "ZERO"]:
        length = len(tables[tag]) if tag != "ZERO" else (real if declared is None else declared)
        directory += bytes([0x3F]) + tag.encode("latin-1") + _base128(length)
    total_sfnt = 12 + 16 * (len(tags) + 1) + sum((len(v) + 3) & ~3 for v in tables.values())
    total_sfnt += real if declared is None else declared
    header_size = 48
    length = header_size + len(directory) + len(stream)
    header = struct.pack(">4s4sIHHIIHHIIIII", b"wOF2", b"OTTO", length, len(tags) + 1, 0,
                         min(total_sfnt, 0xFFFFFFFF), len(stream), 1, 0, 0, 0, 0, 0, 0)
    return header + directory + stream


def _woff_bomb(zero_mib: int, *, declared: int | None = None) -> bytes:
    """A WOFF of a real font plus a zlib-compressed ``ZERO`` table."""
    font = TTFont(io.BytesIO(_built("Bomb")))
    tags = sorted(font.reader.keys())
    datas = {t: font.reader[t] for t in tags}
    c = zlib.compressobj(1)
    zero = b"".join([*(c.compress(_ZEROS) for _ in range(zero_mib)), c.flush()])
    entries = [(t, d, d) for t, d in datas.items()] + [("ZERO", zero, None)]
    offset = 44 + 20 * len(entries)
    directory, body = b"", b""
    for tag, stored, orig in entries:
        orig_length = len(orig) if orig is not None else (
            zero_mib * MiB if declared is None else declared)
        directory += struct.pack(">4sIIII", tag.encode("latin-1"), offset + len(body),
                                 len(stored), orig_length, 0)
        body += stored + b"\0" * (-len(stored) % 4)
    total_sfnt = 12 + 16 * len(entries) + sum((len(d) + 3) & ~3 for d in datas.values())
    header = struct.pack(">4s4sIHHIHHIIIII", b"wOFF", b"OTTO", offset + len(body),
                         len(entries), 0, min(total_sfnt + zero_mib * MiB, 0xFFFFFFFF)
                         if declared is None else total_sfnt + declared, 1, 0, 0, 0, 0, 0, 0)
    return header + directory + body


# ------------------------------------------------------------------- fixtures


class Lib:
    def __init__(self, library: FontLibrary, store: DocumentStore, blobs: BlobStore,
                 blobs_dir: Path) -> None:
        self.library = library
        self.store = store
        self.blobs = blobs
        self.blobs_dir = blobs_dir

    def blob_files(self) -> list[Path]:
        return [p for p in self.blobs_dir.rglob("*") if p.is_file()
                and "fonts" in p.relative_to(self.blobs_dir).parts]

    async def documents(self) -> int:
        return await self.store.collection("fonts").count({})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    box = Sandbox(workers=1, memory_bytes=LIMITS.parse_memory, timeout=LIMITS.parse_timeout,
                  max_waiting=8)
    box.start()
    yield box
    box.close()


async def _open_lib(stack: AsyncExitStack, tmp: Path, sandbox: Sandbox,
                    limits: FontLimits = LIMITS, *, cache_ttl: float = 5.0) -> Lib:
    store = await open_document_store(f"sqlite:///{tmp / 'template.db'}", "litho")
    stack.push_async_callback(store.close)
    blobs = await open_blob_store(f"file://{tmp / 'blobs'}", S3Settings())
    stack.push_async_callback(blobs.close)
    library = FontLibrary(store, blobs, sandbox, limits, cache_ttl=cache_ttl, cache_size=64)
    await library.prepare()
    return Lib(library, store, blobs, tmp / "blobs")


@pytest_asyncio.fixture(loop_scope="session")
async def lib(tmp_path: Path, sandbox: Sandbox) -> AsyncIterator[Lib]:
    async with AsyncExitStack() as stack:
        yield await _open_lib(stack, tmp_path, sandbox)


def _field(exc: pytest.ExceptionInfo[InvalidArgument]) -> str:
    assert exc.value.errors, exc.value.message
    return exc.value.errors[0].field


# ----------------------------------------------------------------- naming


_FACES = {
    "regular": ("Noto Sans", 400, "normal"),
    "bold": ("Noto Sans", 700, "normal"),
    "italic": ("Noto Sans", 400, "italic"),
    "oblique": ("DejaVu Sans", 400, "italic"),
}


# fontTools takes seconds to write a WOFF2 of a large font: two faces cover
# the weight and the style in that format.
@pytest.mark.parametrize(("face", "flavor"), [
    *((face, flavor) for face in _FACES for flavor in (None, "woff")),
    ("bold", "woff2"), ("oblique", "woff2"),
])
async def test_real_fonts_are_named_from_their_tables(
    lib: Lib, noto: dict[str, bytes], face: str, flavor: str | None,
) -> None:
    family, weight, style = _FACES[face]
    data = noto[face] if flavor is None else _flavored(noto[face], flavor)
    fmt, read = await lib.library.inspect(data)
    assert fmt == (flavor or "ttf")
    assert (read.family, read.weight, read.style) == (family, weight, style)
    assert read.full_name.startswith(family)


async def test_an_otf_and_the_weight_is_clamped(lib: Lib) -> None:
    fmt, face = await lib.library.inspect(_built("Made Here", weight=1500))
    assert (fmt, face.family, face.weight, face.style) == ("otf", "Made Here", 1000, "normal")
    fmt, face = await lib.library.inspect(_built("Made Here", cff=False, weight=0,
                                                 italic=True))
    assert (fmt, face.weight, face.style) == ("ttf", 1, "italic")


@pytest.mark.parametrize("name", ["Inter", "Noto Sans JP", "Font-Name_2.0 & Co+", "源ノ角ゴシック",
                                  "नोटो", "A" * 100])
def test_family_names_that_are_allowed(name: str) -> None:
    assert check_family(name) is None


@pytest.mark.parametrize(("name", "why"), [
    ("", "empty"), ("A" * 101, "limit is 100"), (" Inter", "space"), ("Inter ", "space"),
    ("In  ter", "doubled"), ('Evil"', '\'"\''), ("Evil'", "\"'\""), ("a\\b", "\\\\"),
    ("a;b", "';'"), ("a{b", "'{'"), ("a}b", "'}'"), ("a<b", "'<'"), ("a>b", "'>'"),
    ("a\nb", "not allowed"), ("a\u2028b", "not allowed"), ("a\tb", "not allowed"),
    ("a/b", "'/'"), ("a\x00b", "not allowed"), ("a\u00a0b", "not allowed"),
    ("serif", "generic"), ("Sans-Serif", "generic"), ("inherit", "keyword"),
])
def test_family_names_that_are_refused(name: str, why: str) -> None:
    problem = check_family(name)
    assert problem is not None and why in problem, problem


async def test_a_bad_family_override_is_refused_before_parsing(
        lib: Lib, noto: dict[str, bytes]) -> None:
    with pytest.raises(InvalidArgument, match="family holds") as exc:
        await lib.library.create("t1", noto["regular"], family='x"}</style><script>')
    assert _field(exc) == "family"
    assert await lib.documents() == 0 and not lib.blob_files()


async def test_a_font_whose_own_family_is_unsafe_needs_an_override(lib: Lib) -> None:
    data = _built("Evil</style>")
    with pytest.raises(InvalidArgument, match="pass family to name it") as exc:
        await lib.library.create("t1", data)
    assert _field(exc) == "family"
    font = await lib.library.create("t1", data, family="Safe Name")
    assert font.family == "Safe Name" and font.format == "otf"


# ------------------------------------------------------------ hostile files


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "it is empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "signature"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "signature"),
    (b"\x00\x01\x00\x00" + bytes(8), "it has no 'head', 'name', 'cmap', 'maxp' tables"),
    (b"wOF2" + bytes(10), "WOFF2 header is truncated"),
    (b"wOFF" + bytes(10), "WOFF header is truncated"),
])
async def test_what_is_not_a_font_is_refused_naming_the_field_and_formats(
        lib: Lib, data: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as exc:
        await lib.library.create("t1", data)
    assert _field(exc) == "file"
    assert "TrueType (.ttf), OpenType (.otf), WOFF (.woff) or WOFF2 (.woff2)" in \
        exc.value.message
    assert await lib.documents() == 0 and not lib.blob_files()


@pytest.mark.parametrize("flavor", [None, "woff", "woff2"])
async def test_a_truncated_font_is_refused(lib: Lib, noto: dict[str, bytes],
                                           flavor: str | None) -> None:
    data = noto["bold"] if flavor is None else _flavored(noto["bold"], flavor)
    with pytest.raises(InvalidArgument, match="not a font") as exc:
        await lib.library.create("t1", data[: len(data) * 2 // 3])
    assert _field(exc) == "file"
    assert await lib.documents() == 0


async def test_a_collection_is_refused_with_advice(lib: Lib) -> None:
    collection = TTCollection()
    collection.fonts = [TTFont(io.BytesIO(_built("One"))), TTFont(io.BytesIO(_built("Two")))]
    out = io.BytesIO()
    collection.save(out)
    with pytest.raises(InvalidArgument, match=r"font collection \(\.ttc\).*each face") as exc:
        await lib.library.create("t1", out.getvalue())
    assert _field(exc) == "file"


async def test_a_font_without_a_usable_cmap_is_refused(lib: Lib) -> None:
    with pytest.raises(InvalidArgument, match="no usable character map"):
        await lib.library.create("t1", _built("Empty", cmap=False))
    font = TTFont(io.BytesIO(_built("No Cmap")))
    del font["cmap"]
    out = io.BytesIO()
    font.save(out)
    with pytest.raises(InvalidArgument, match="no 'cmap' table"):
        await lib.library.create("t1", out.getvalue())


async def test_a_file_over_the_size_limit_names_the_setting(
        tmp_path: Path, sandbox: Sandbox, noto: dict[str, bytes]) -> None:
    async with AsyncExitStack() as stack:
        small = await _open_lib(stack, tmp_path, sandbox, replace(LIMITS, max_bytes=100_000))
        with pytest.raises(InvalidArgument, match="LITHO_TEMPLATE_MAX_FONT_BYTES") as exc:
            await small.library.create("t1", noto["regular"])
        assert _field(exc) == "file"
        assert await small.documents() == 0


@pytest.mark.parametrize("kind", ["woff2", "woff"])
async def test_a_declared_decompression_bomb_is_refused_from_its_header(
        lib: Lib, kind: str) -> None:
    bomb = _woff2_bomb(500) if kind == "woff2" else _woff_bomb(500)
    assert len(bomb) < LIMITS.max_bytes
    with pytest.raises(InvalidArgument, match="LITHO_TEMPLATE_MAX_FONT_DECODED_BYTES") as exc:
        await lib.library.create("t1", bomb)
    assert _field(exc) == "file"
    assert "524288000" in exc.value.message or "5242" in exc.value.message
    assert await lib.documents() == 0 and not lib.blob_files()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("kind", ["woff2", "woff"])
async def test_a_bomb_that_lies_about_its_sizes_is_stopped_while_inflating(
        lib: Lib, kind: str) -> None:
    bomb = (_woff2_bomb(500, declared=4096) if kind == "woff2"
            else _woff_bomb(500, declared=4096))
    before = _peak_rss()
    with pytest.raises(InvalidArgument, match="decompression bomb") as exc:
        await lib.library.create("t1", bomb)
    assert _field(exc) == "file"
    # Nothing near the 500 MB it inflates to was ever held, here or there:
    # the worker stops one chunk past what the directory declared.
    assert _peak_rss() - before < 100 * MiB
    assert await lib.documents() == 0


async def test_the_memory_limit_stops_a_parser_that_allocates_too_much(
        tmp_path: Path) -> None:
    """Declared sizes within generous limits, so only the worker's address
    space limit stands between fontTools inflating 500 MB and the service."""
    box = Sandbox(workers=1, memory_bytes=256 * MiB, timeout=60, max_waiting=1)
    box.start()
    try:
        async with AsyncExitStack() as stack:
            limits = replace(LIMITS, max_decoded_bytes=1024 * MiB, parse_memory=256 * MiB)
            lib = await _open_lib(stack, tmp_path, box, limits)
            before = _peak_rss()
            with pytest.raises(InvalidArgument, match="could not be read within the limits") \
                    as exc:
                await lib.library.create("t1", _woff2_bomb(500))
            assert "LITHO_TEMPLATE_FONT_PARSE_MEMORY" in exc.value.message
            assert _field(exc) == "file"
            assert _peak_rss() - before < 100 * MiB
            assert await lib.documents() == 0
            # The worker was replaced: the next upload is read as usual.
            _, face = await lib.library.inspect(_built("After"))
            assert face.family == "After"
    finally:
        box.close()


# ------------------------------------------------------------------ sandbox


async def test_the_sandbox_kills_a_slow_or_crashed_or_greedy_worker_and_recovers() -> None:
    box = Sandbox(workers=1, memory_bytes=256 * MiB, timeout=1.0, max_waiting=4)
    box.start()
    try:
        address_space, resident = await box.baseline()
        assert address_space < 256 * MiB and resident < 128 * MiB
        with pytest.raises(SandboxLimit) as exc:
            await box.run(time.sleep, 60)  # killed after 1 s, not 60
        assert exc.value.kind == "time"
        with pytest.raises(SandboxLimit) as exc:
            await box.run(os._exit, 3)
        assert exc.value.kind == "crash"
        with pytest.raises(SandboxLimit) as exc:
            await box.run(bytearray, 1024 * MiB)
        assert exc.value.kind == "memory"
        face, why = await box.run(read_face, _built("Still Here"), "otf")
        assert face is not None and face.family == "Still Here", why
    finally:
        box.close()


async def test_the_wait_for_a_worker_is_bounded() -> None:
    import asyncio

    box = Sandbox(workers=1, memory_bytes=256 * MiB, timeout=30, max_waiting=1)
    box.start()
    try:
        await box.baseline()
        busy = asyncio.create_task(box.run(time.sleep, 2))
        await asyncio.sleep(0.2)
        waiting = asyncio.create_task(box.run(time.sleep, 0))
        await asyncio.sleep(0.2)
        with pytest.raises(ResourceExhausted, match="LITHO_TEMPLATE_FONT_PARSE_QUEUE"):
            await box.run(time.sleep, 0)
        await busy
        await waiting
    finally:
        box.close()


async def test_a_timed_out_upload_names_the_setting(tmp_path: Path) -> None:
    box = Sandbox(workers=1, memory_bytes=LIMITS.parse_memory, timeout=0.001, max_waiting=1)
    box.start()
    try:
        await box.baseline()
        async with AsyncExitStack() as stack:
            lib = await _open_lib(stack, tmp_path, box, replace(LIMITS, parse_timeout=0.001))
            with pytest.raises(InvalidArgument,
                               match="LITHO_TEMPLATE_FONT_PARSE_TIMEOUT") as exc:
                await lib.library.create("t1", _system_font("Noto Sans"))
            assert "could not be read within the limits" in exc.value.message
            assert await lib.documents() == 0
    finally:
        box.close()


# ------------------------------------------------------------------ storage


async def test_stored_blob_first_under_a_tenant_key_and_deduped(
        lib: Lib, noto: dict[str, bytes]) -> None:
    font = await lib.library.create("tenant/one", noto["bold"], file_name="NotoSans-Bold.ttf")
    assert font.id.startswith("fnt_") and len(font.id) == 4 + 24
    assert font.blob_key == validate_key(font.blob_key) == blob_key("tenant/one", font.id, "ttf")
    assert font.blob_key.startswith("fonts/") and "tenant" not in font.blob_key
    assert (font.size, font.weight, font.file_name) == (len(noto["bold"]), 700,
                                                          "NotoSans-Bold.ttf")
    assert len(lib.blob_files()) == 1
    stored = await lib.blobs.get(font.blob_key)
    assert stored is not None and stored.data == noto["bold"]
    assert stored.info.content_type == "font/ttf"
    again = await lib.library.create("tenant/one", noto["bold"])
    assert again.id == font.id and again.family == "Noto Sans"
    also = await lib.library.create("tenant/one", noto["bold"], family="noto sans")
    assert also.id == font.id
    # The same bytes under another name would answer the old name: refused.
    with pytest.raises(Conflict, match=f"stored as font {font.id!r}"):
        await lib.library.create("tenant/one", noto["bold"], family="Other Name")
    assert await lib.documents() == 1 and len(lib.blob_files()) == 1
    # Another tenant uploading the same bytes gets its own font and blob.
    theirs = await lib.library.create("tenant/two", noto["bold"])
    assert theirs.id != font.id and theirs.blob_key != font.blob_key
    assert len(lib.blob_files()) == 2


async def test_the_same_face_from_other_bytes_is_a_conflict_naming_the_font(
        lib: Lib, noto: dict[str, bytes]) -> None:
    first = await lib.library.create("t1", noto["bold"])
    with pytest.raises(Conflict, match=first.id):
        await lib.library.create("t1", _flavored(noto["bold"], "woff2"))
    # Named differently, it is another family.
    other = await lib.library.create("t1", _flavored(noto["bold"], "woff2"),
                                     family="Noto Sans Web")
    assert other.format == "woff2" and other.family == "Noto Sans Web"
    assert await lib.documents() == 2 and len(lib.blob_files()) == 2


async def test_a_tenant_may_store_at_most_the_limit(
        tmp_path: Path, sandbox: Sandbox) -> None:
    async with AsyncExitStack() as stack:
        lib = await _open_lib(stack, tmp_path, sandbox, replace(LIMITS, max_fonts=2))
        await lib.library.create("t1", _built("One"))
        await lib.library.create("t1", _built("Two"))
        with pytest.raises(InvalidArgument, match="LITHO_TEMPLATE_MAX_FONTS") as exc:
            await lib.library.create("t1", _built("Three"))
        assert _field(exc) == "file"
        await lib.library.create("t2", _built("Three"))  # per tenant
        assert await lib.documents() == 3 and len(lib.blob_files()) == 3


async def test_another_tenants_font_is_invisible(lib: Lib, noto: dict[str, bytes]) -> None:
    mine = await lib.library.create("t1", noto["italic"])
    with pytest.raises(NotFound) as theirs:
        await lib.library.get("t2", mine.id)
    with pytest.raises(NotFound) as missing:
        await lib.library.get("t2", "fnt_000000000000000000000000")
    assert str(theirs.value).replace(mine.id, "X") == \
        str(missing.value).replace("fnt_000000000000000000000000", "X")
    with pytest.raises(NotFound):
        await lib.library.delete("t2", mine.id)
    assert await lib.library.page("t2", page_size=10, page_token="") == ([], "")
    assert await lib.library.used_in("t2", "font-family: 'Noto Sans'") == []
    assert await lib.library.get("t1", mine.id) == mine


async def test_delete_removes_the_document_and_the_blob(lib: Lib) -> None:
    font = await lib.library.create("t1", _built("Gone"))
    assert await lib.library.used_in("t1", "Gone") == [font]
    await lib.library.delete("t1", font.id)
    assert await lib.documents() == 0 and not lib.blob_files()
    assert await lib.library.used_in("t1", "Gone") == []  # not from the cache
    with pytest.raises(NotFound):
        await lib.library.delete("t1", font.id)


async def test_listing_pages_through_a_tenants_fonts_in_upload_order(lib: Lib) -> None:
    made = [await lib.library.create("t1", _built(f"Family {i}")) for i in range(5)]
    await lib.library.create("t2", _built("Not Mine"))
    seen, token, pages = [], "", 0
    while True:
        fonts, token = await lib.library.page("t1", page_size=2, page_token=token)
        seen += fonts
        pages += 1
        if not token:
            break
    assert [f.id for f in seen] == [f.id for f in made] and pages == 3
    with pytest.raises(InvalidArgument, match="pageToken"):
        await lib.library.page("t1", page_size=2, page_token="%%%")


# ---------------------------------------------------------------- expansion


async def test_used_in_picks_named_families_in_a_stable_order(lib: Lib) -> None:
    bold = await lib.library.create("t1", _built("Brand Sans", weight=700))
    regular = await lib.library.create("t1", _built("Brand Sans"))
    italic = await lib.library.create("t1", _built("Brand Sans", italic=True))
    other = await lib.library.create("t1", _built("Accent"))
    html = "<p style=\"font-family: 'brand sans'\">x</p>"
    # By family, weight, style ("italic" before "normal"), id.
    assert await lib.library.used_in("t1", html) == [italic, regular, bold]
    assert await lib.library.used_in("t1", html + "<b style='font-family:ACCENT'>") == [
        other, italic, regular, bold]
    assert await lib.library.used_in("t1", "<p>Brand</p>") == []


async def test_the_font_list_is_cached_per_tenant_until_its_ttl(
        tmp_path: Path, sandbox: Sandbox) -> None:
    async with AsyncExitStack() as stack:
        here = await _open_lib(stack, tmp_path, sandbox, cache_ttl=3600)
        elsewhere = await _open_lib(stack, tmp_path, sandbox, cache_ttl=3600)
        assert await here.library.used_in("t1", "Shared") == []
        # Another replica's upload is not seen before the entry expires...
        await elsewhere.library.create("t1", _built("Shared"))
        assert await here.library.used_in("t1", "Shared") == []
        # ...while this replica's own upload is seen at once.
        mine = await here.library.create("t1", _built("Local"))
        assert [f.family for f in await here.library.used_in("t1", "Shared Local")] == [
            "Local", "Shared"]
        assert mine.family == "Local"
        fresh = await _open_lib(stack, tmp_path, sandbox, cache_ttl=0)
        assert len(await fresh.library.used_in("t1", "Shared Local")) == 2


# ------------------------------------------------------------ over gRPC


@pytest_asyncio.fixture(loop_scope="session")
async def service(tmp_path: Path) -> AsyncIterator[pb_grpc.TemplateServiceAsyncStub]:
    spec = _registry.registry()["template"]
    root = _registry.app(spec)
    settings = TemplateSettings(data_dir=tmp_path, template_max_font_bytes=8 * MiB)
    async with running(spec, settings, root.build,
                       endpoints=Endpoints(listen="127.0.0.1:0")) as host, \
            AsyncExitStack() as stack:
        channel = await rpc.open_channel(stack, f"127.0.0.1:{host.grpc_port}",
                                         default_deadline=60)
        yield pb_grpc.TemplateServiceStub(channel)


def _big_font(size: int) -> bytes:
    # Incompressible padding in a private table: a real font, just large.
    return _built("Big Font", cff=False, extra={"ZZZZ": os.urandom(size)})


async def test_the_service_takes_fonts_over_4_mib_and_refuses_past_its_limit(
        service: pb_grpc.TemplateServiceAsyncStub) -> None:
    big = _big_font(6 * MiB)
    made = await service.CreateFont(pb.CreateFontRequest(
        tenant_id="t1", data=big, file_name="big.ttf"))
    assert made.font.size_bytes == len(big) > 4 * MiB
    assert made.font.family == "Big Font" and made.font.format == "ttf"
    with pytest.raises(InvalidArgument, match="LITHO_TEMPLATE_MAX_FONT_BYTES"):
        await service.CreateFont(pb.CreateFontRequest(tenant_id="t1",
                                                      data=_big_font(8 * MiB + 1000)))


async def test_expansion_answers_the_fonts_the_document_names(
        service: pb_grpc.TemplateServiceAsyncStub, noto: dict[str, bytes]) -> None:
    bold = (await service.CreateFont(pb.CreateFontRequest(
        tenant_id="t1", data=noto["bold"], family="Brand"))).font
    await service.CreateFont(pb.CreateFontRequest(tenant_id="t1", data=_built("Unused")))
    await service.CreateFont(pb.CreateFontRequest(tenant_id="t2", data=noto["regular"],
                                                  family="Brand"))
    spec = pb.TemplateSpec(name="card", html="<h1 style=\"font-family: '{{ f }}'\">Hi</h1>",
                           width=100, height=50)
    made = await service.CreateTemplate(pb.CreateTemplateRequest(tenant_id="t1", spec=spec))
    expanded = await service.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=made.template.id, variables_json='{"f": "BRAND"}'))
    assert [f.id for f in expanded.fonts] == [bold.id]
    assert expanded.fonts[0].sha256 and expanded.fonts[0].blob_key == bold.blob_key
    none = await service.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=made.template.id, variables_json='{"f": "Inter"}'))
    assert list(none.fonts) == []
    inline = await service.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t2", inline=spec, variables_json='{"f": "brand"}'))
    assert [(f.tenant_id, f.weight) for f in inline.fonts] == [("t2", 400)]
    listed = await service.ListFonts(pb.ListFontsRequest(tenant_id="t1"))
    assert len(listed.fonts) == 2 and not listed.next_page_token
    with pytest.raises(NotFound):
        await service.DeleteFont(pb.DeleteFontRequest(tenant_id="t2", font_id=bold.id))
    await service.DeleteFont(pb.DeleteFontRequest(tenant_id="t1", font_id=bold.id))
    after = await service.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=made.template.id, variables_json='{"f": "Brand"}'))
    assert list(after.fonts) == []


_ORPHAN_SCRIPT = """
import asyncio, os, sys
from services.template._fonts import Sandbox
async def main():
    box = Sandbox(workers=1, memory_bytes=1024 * 1024 * 1024, timeout=30, max_waiting=1)
    box.start()
    await box.baseline()
    print(" ".join(str(p.pid) for p in __import__("multiprocessing").active_children()),
          flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_workers_end_when_the_service_is_killed() -> None:
    """A SIGKILLed service (or one the kernel killed for memory) must not
    leave its parser workers to PID 1."""
    import signal
    import subprocess
    import sys
    import time as clock

    service = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert service.stdout is not None
        workers = [int(p) for p in service.stdout.readline().split()]
        assert workers
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = clock.monotonic() + 30  # a backstop: the watcher checks every second
    while any(alive(p) for p in workers) and clock.monotonic() < deadline:
        clock.sleep(0.2)
    # The resource tracker may outlive it briefly; the parser workers may not.
    assert not any(alive(p) for p in workers if p != 0)
