"""Where the API says a stored image can be fetched.

By default that is the gateway's own ``/images/<renderId>.<ext>``. With
``LITHO_IMAGE_BASE_URL`` set, it is ``<that base>/<blob key>``: the object as
the blob store keeps it (``outputs/<id[:2]>/<id>.<ext>``, see
:mod:`litho.renders`), so a CDN in front of the bucket, or the bucket's own
public endpoint (``https://bucket.s3.amazonaws.com/<prefix>``), serves the
same bytes with the same ``Content-Type`` and immutable ``Cache-Control``
(the renderer stores both with each image).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from litho import renders

SETTING = "LITHO_IMAGE_BASE_URL"
MAX_LENGTH = 1000
#: Printable ASCII without space, quotes, angle brackets or backslash: safe
#: in JSON, in HTML attributes and in a Location header.
_SAFE = re.compile(r"[A-Za-z0-9\-._~:/?#%!$&'()*+,;=@\[\]]+")


def check_image_base_url(value: str) -> str:
    """``value`` without its trailing slashes, if it can prefix image URLs.

    Raises ``ValueError`` saying what is wrong (the settings loader adds the
    variable's name)."""
    if not value:
        return ""
    if len(value) > MAX_LENGTH or _SAFE.fullmatch(value) is None:
        raise ValueError(
            f"must be an http:// or https:// URL of at most {MAX_LENGTH} characters "
            "without spaces, quotes or other characters a URL must escape")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, "
                         "such as https://cdn.example.com/litho")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not have a query string or a fragment: "
                         "image URLs are this base, a slash and the object's key")
    if parts.username is not None or parts.password is not None:
        # Every API answer carries the base: credentials in it would be public.
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
    is set, else on the gateway at ``gateway_url``."""
    if image_base_url:
        return f"{image_base_url}/{renders.blob_key(render_id, extension)}"
    return f"{gateway_url}/images/{render_id}.{extension}"
