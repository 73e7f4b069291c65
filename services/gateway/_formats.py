"""Output format names of the public API and their proto enum values."""

from __future__ import annotations

from litho.renderer.v1 import renderer_pb2 as pb

_BY_NAME = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "jpg": pb.IMAGE_FORMAT_JPEG,
}
#: Enum value → canonical name (``jpg`` is an alias of ``jpeg``).
FORMATS: dict[int, str] = {pb.IMAGE_FORMAT_PNG: "png", pb.IMAGE_FORMAT_JPEG: "jpeg"}


def format_enum(name: str) -> pb.ImageFormat.ValueType:
    return _BY_NAME[name]
