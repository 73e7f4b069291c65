"""Every output format Litho writes, stated once.

The gateway reads a format's name or alias from a request body or a signed
URL and sends its proto enum; the renderer turns the enum back into a format,
checks which options apply to it and how large its encoder can go; the blob
layout (``litho.renders``) names outputs by extension and stores them with the
content type. All of them look the format up here. The OpenAPI document
spells the names, aliases, extensions and content types out for its readers;
``tests/unit/test_formats.py`` fails when it and this module disagree, and so
it does when the proto's ``ImageFormat`` has a value without a format here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from litho.renderer.v1 import renderer_pb2 as pb


@dataclass(frozen=True)
class Format:
    #: What the API answers in ``format`` (and the canonical spelling).
    name: str
    #: Of stored outputs and of their URLs (``/images/<id>.<ext>``).
    extension: str
    content_type: str
    enum: pb.ImageFormat.ValueType
    #: Other spellings a request may use for this format.
    aliases: tuple[str, ...] = ()
    #: Which render options apply: ``quality``, ``transparent``, ``pdf``, ``gif``.
    quality: bool = False
    transparent: bool = False
    pdf: bool = False
    gif: bool = False
    #: Longest side, in device pixels, its encoder can write (None: no limit of
    #: its own), so an output it would fail on is refused before rendering.
    max_side: int | None = None

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def still(self) -> bool:
        """One captured frame re-encoded (PNG, JPEG, WebP): not a document or an animation."""
        return not (self.pdf or self.gif)


PNG = Format("png", "png", "image/png", pb.IMAGE_FORMAT_PNG, transparent=True)
JPEG = Format("jpeg", "jpeg", "image/jpeg", pb.IMAGE_FORMAT_JPEG, aliases=("jpg",),
              quality=True, max_side=65_535)
WEBP = Format("webp", "webp", "image/webp", pb.IMAGE_FORMAT_WEBP, quality=True,
              transparent=True, max_side=16_383)
PDF = Format("pdf", "pdf", "application/pdf", pb.IMAGE_FORMAT_PDF, pdf=True)
GIF = Format("gif", "gif", "image/gif", pb.IMAGE_FORMAT_GIF, gif=True)

#: In the order the API documents them.
ALL: tuple[Format, ...] = (PNG, JPEG, WEBP, PDF, GIF)
#: What a render without a format gets.
DEFAULT = PNG


def names() -> tuple[str, ...]:
    return tuple(f.name for f in ALL)


def spellings() -> tuple[str, ...]:
    """Every name and alias a request may use, each name followed by its aliases."""
    return tuple(s for f in ALL for s in f.spellings)


def by_name(name: str) -> Format | None:
    """The format of a canonical name (no aliases): the renderer's own spelling."""
    return next((f for f in ALL if f.name == name), None)


def parse(text: str) -> Format | None:
    """The format a request means by ``text``: a name or an alias."""
    return next((f for f in ALL if text in f.spellings), None)


def by_extension(ext: str) -> Format | None:
    return next((f for f in ALL if f.extension == ext), None)


def by_enum(value: int) -> Format | None:
    """None for ``IMAGE_FORMAT_UNSPECIFIED`` and for values this build does not know."""
    return next((f for f in ALL if f.enum == value), None)


def spoken(formats: Iterable[Format]) -> str:
    """Names for a message: ``png``, ``jpeg and webp``, ``png, jpeg and webp``."""
    items = [f.name for f in formats]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]
