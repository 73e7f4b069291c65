"""Where rendered images live in the blob store, and where the API says they
can be fetched.

The renderer writes ``outputs/<id[:2]>/<id>.<ext>`` (and its metadata beside
it as ``<id>.<ext>.json``), and the gateway serves it as ``/images/<id>.<ext>``;
this module is the one statement of that layout.

The prefix changed with per-tenant render ids: outputs stored before them
(under ``renders/``) had ids anyone could compute from a document, so they
are never served again, and can be deleted.

Image URLs (in API answers and webhook payloads alike, :func:`image_url`)
are the gateway's own ``/images/<renderId>.<ext>`` by default. With
``LITHO_IMAGE_BASE_URL`` set, they are ``<that base>/<blob key>``: the object
as the blob store keeps it, so a CDN in front of the bucket, or the bucket's
own public endpoint (``https://bucket.s3.amazonaws.com/<prefix>``), serves
the same bytes with the same ``Content-Type`` and
:data:`IMMUTABLE_CACHE_CONTROL` (the renderer stores both with each image).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from litho import formats

_RENDER_ID = re.compile(r"^[0-9a-f]{64}$")

#: Extension → content type of stored outputs (from ``litho.formats``).
CONTENT_TYPES: dict[str, str] = {f.extension: f.content_type for f in formats.ALL}

#: The ``Cache-Control`` of a stored output, wherever it is served from: the
#: gateway's ``/images/`` answers it, and the renderer stores it with each
#: output for whoever serves the bucket directly. An output never changes
#: under its id (its metadata beside it does, and gets none).
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"

#: The setting every service that writes image URLs reads.
IMAGE_BASE_URL_SETTING = "LITHO_IMAGE_BASE_URL"
MAX_IMAGE_BASE_URL_LENGTH = 1000
#: Printable ASCII without space, quotes, angle brackets or backslash: safe
#: in JSON, in HTML attributes and in a Location header.
_SAFE_URL = re.compile(r"[A-Za-z0-9\-._~:/?#%!$&'()*+,;=@\[\]]+")


def blob_key(render_id: str, ext: str) -> str:
    if not _RENDER_ID.match(render_id) or formats.by_extension(ext) is None:
        raise ValueError(f"not a render id and extension: {render_id!r}.{ext!r}")
    return f"outputs/{render_id[:2]}/{render_id}.{ext}"


def meta_key(render_id: str, ext: str) -> str:
    """The small JSON document beside each output: sizes, pages, frames."""
    return blob_key(render_id, ext) + ".json"


def is_render_id(value: str) -> bool:
    return bool(_RENDER_ID.match(value))


def check_image_base_url(value: str) -> str:
    """``value`` (``LITHO_IMAGE_BASE_URL``) without its trailing slashes, if
    it can prefix image URLs.

    Raises ``ValueError`` saying what is wrong (the settings loader adds the
    variable's name)."""
    if not value:
        return ""
    if len(value) > MAX_IMAGE_BASE_URL_LENGTH or _SAFE_URL.fullmatch(value) is None:
        raise ValueError(
            f"must be an http:// or https:// URL of at most {MAX_IMAGE_BASE_URL_LENGTH} "
            "characters without spaces, quotes or other characters a URL must escape")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, "
                         "such as https://cdn.example.com/litho")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not have a query string or a fragment: "
                         "image URLs are this base, a slash and the object's key")
    if parts.username is not None or parts.password is not None:
        # Every API answer and webhook payload carries the base: credentials
        # in it would be public.
        raise ValueError("must not carry a user name or password")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise ValueError(f"has an invalid port: {exc}") from None
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        raise ValueError("must not have . or .. path segments")
    return value.rstrip("/")


def image_url(gateway_url: str, image_base_url: str, render_id: str, extension: str) -> str:
    """The URL of a stored render: on the CDN or bucket when ``image_base_url``
    (checked by :func:`check_image_base_url`) is set, else on the gateway at
    ``gateway_url``."""
    if image_base_url:
        return f"{image_base_url}/{blob_key(render_id, extension)}"
    return f"{gateway_url}/images/{render_id}.{extension}"
