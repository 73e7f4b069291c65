"""The identity of a template data source's request, shared by the template
service (which expands the request) and the renderer (which keeps the data
of fresh requests): two requests with one key are answered by the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable


def source_key(url: str, method: str, headers: Iterable[tuple[str, str]], body: str,
               ttl_seconds: int) -> str:
    """Hex SHA-256 of the request as it is sent (URL, method, headers in name
    order, body) and the freshness it asks for: a template that asks for
    fresher data than another never takes the other's data."""
    material = json.dumps([url, method.upper(), sorted(headers), body, int(ttl_seconds)],
                          ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()
