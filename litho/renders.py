"""Where rendered images live in the blob store.

The renderer writes ``outputs/<id[:2]>/<id>.<ext>`` (and its metadata beside
it as ``<id>.<ext>.json``), and the gateway serves it as ``/images/<id>.<ext>``;
this module is the one statement of that layout.

The prefix changed with per-tenant render ids: outputs stored before them
(under ``renders/``) had ids anyone could compute from a document, so they
are never served again, and can be deleted.
"""

from __future__ import annotations

import re

from litho import formats

_RENDER_ID = re.compile(r"^[0-9a-f]{64}$")

#: Extension → content type of stored outputs (from ``litho.formats``).
CONTENT_TYPES: dict[str, str] = {f.extension: f.content_type for f in formats.ALL}


def blob_key(render_id: str, ext: str) -> str:
    if not _RENDER_ID.match(render_id) or formats.by_extension(ext) is None:
        raise ValueError(f"not a render id and extension: {render_id!r}.{ext!r}")
    return f"outputs/{render_id[:2]}/{render_id}.{ext}"


def meta_key(render_id: str, ext: str) -> str:
    """The small JSON document beside each output: sizes, pages, frames."""
    return blob_key(render_id, ext) + ".json"


def is_render_id(value: str) -> bool:
    return bool(_RENDER_ID.match(value))
