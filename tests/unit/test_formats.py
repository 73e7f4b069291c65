"""``litho.formats`` is the one source of output formats: the OpenAPI document,
the proto enum, the renderer's option checks and the gateway's answers agree
with it, so a format added in one place only fails here."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from litho import formats, renders
from litho.errors import InvalidArgument
from litho.renderer.v1 import renderer_pb2 as pb
from services.gateway._formats import parse_format, render_json
from services.gateway._image_urls import image_url
from services.renderer._spec import GifSpec, Limits, PdfSpec, RenderOptions, check_options

OPENAPI = Path(__file__).parents[2] / "services" / "gateway" / "openapi.json"
LIMITS = Limits(max_dimension=5000, max_pixels=40_000_000, max_scale=4, max_gif_fps=30,
                max_gif_duration_ms=10_000, max_gif_frames=300, max_pdf_pages=20)
_GROUP = re.compile(r"\(([a-z0-9|]+)\)")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def _openapi() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OPENAPI.read_text())
    return doc


def test_every_format_enum_in_the_openapi_document_is_the_sources() -> None:
    spellings = set(formats.spellings())
    enums = {path: value for path, key, value in _walk(_openapi())
             if key == "enum" and spellings & set(value)}
    # Requests may use aliases; answers name the canonical format.
    assert enums.pop("/components/schemas/ImageFormat") == list(formats.spellings())
    assert enums.pop("/components/schemas/RenderResponse/properties/format") == list(
        formats.names())
    assert all(value in (list(formats.spellings()), list(formats.names()))
               for value in enums.values()), enums


def test_every_extension_pattern_in_the_openapi_document_is_the_sources() -> None:
    words = {s for f in formats.ALL for s in (*f.spellings, f.extension)}
    groups: dict[str, list[str]] = {}
    for path, key, value in _walk(_openapi()):
        if key == "pattern" and isinstance(value, str):
            for group in _GROUP.findall(value):
                if words & set(group.split("|")):
                    groups[path] = group.split("|")
    extensions = [f.extension for f in formats.ALL]
    # Stored images by extension; signed URLs by extension or alias.
    assert groups.pop("/paths//images/{imageFile}/parameters/0/schema") == extensions
    assert groups.pop("/paths//r/{file}/parameters/0/schema") == [
        s for f in formats.ALL for s in (f.extension, *f.aliases)]
    assert not groups, f"format patterns this test does not know: {groups}"


def test_every_image_response_in_the_openapi_document_has_the_sources_content_types() -> None:
    types = [f.content_type for f in formats.ALL]
    contents = {path: list(value) for path, key, value in _walk(_openapi())
                if key == "content" and isinstance(value, dict) and set(types) & set(value)}
    assert len(contents) >= 2, contents  # /images and /r at least
    assert all(value == types for value in contents.values()), contents


def test_every_proto_enum_value_is_one_format() -> None:
    values = [v for v in pb.ImageFormat.values() if v != pb.IMAGE_FORMAT_UNSPECIFIED]
    assert sorted(f.enum for f in formats.ALL) == sorted(values)
    for f in formats.ALL:
        assert pb.ImageFormat.Name(f.enum) == f"IMAGE_FORMAT_{f.name.upper()}"
        assert formats.by_enum(f.enum) is f
    assert formats.by_enum(pb.IMAGE_FORMAT_UNSPECIFIED) is None


def test_lookups() -> None:
    spellings = formats.spellings()
    assert len(spellings) == len(set(spellings))
    assert formats.parse("jpg") is formats.JPEG and formats.parse("jpeg") is formats.JPEG
    assert formats.by_name("jpg") is None and formats.by_extension("jpg") is None
    assert formats.parse("tiff") is None
    for f in formats.ALL:
        assert formats.by_name(f.name) is f and formats.by_extension(f.extension) is f
        assert renders.CONTENT_TYPES[f.extension] == f.content_type
        assert renders.blob_key("a" * 64, f.extension).endswith(f".{f.extension}")
    with pytest.raises(ValueError):
        renders.blob_key("a" * 64, "jpg")


@pytest.mark.parametrize("fmt", formats.ALL, ids=lambda f: f.name)
def test_the_renderer_takes_the_options_the_source_says_apply(fmt: formats.Format) -> None:
    cases: list[tuple[str, bool, RenderOptions]] = [
        ("quality", fmt.quality, RenderOptions(quality=80)),
        ("transparent", fmt.transparent, RenderOptions(transparent=True)),
        ("pdf", fmt.pdf, RenderOptions(pdf=PdfSpec(preset="A4"))),
        ("gif", fmt.gif, RenderOptions(gif=GifSpec(fps=10))),
    ]
    for option, applies, options in cases:
        if applies:
            check_options(fmt.name, options, LIMITS)
            continue
        with pytest.raises(InvalidArgument) as info:
            check_options(fmt.name, options, LIMITS)
        [error] = info.value.errors
        assert error.field == option
        takers = [f.name for f in formats.ALL if getattr(f, option)]
        assert all(name in error.message for name in takers), error.message


def test_the_gateway_parses_names_and_aliases_and_answers_the_canonical_name() -> None:
    for spelling in formats.spellings():
        f = formats.parse(spelling)
        assert f is not None and parse_format(spelling) is f
        answer = render_json(pb.RenderTemplateResponse(render_id="a" * 64, format=f.enum),
                             functools.partial(image_url, "", ""))
        assert answer["format"] == f.name
        assert answer["url"] == f"/images/{'a' * 64}.{f.extension}"
    with pytest.raises(InvalidArgument) as info:
        parse_format("tiff")
    [error] = info.value.errors
    assert error.field == "format" and all(s in error.message for s in formats.spellings())
