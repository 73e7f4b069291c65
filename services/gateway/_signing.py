"""Signed on-the-fly render URLs: ``/r/{templateId}.{ext}?<variables>&kid=&exp=&sig=``.

``sig`` is the hex HMAC-SHA256, keyed with the signing secret of an API key
(never the key itself), over the canonical request::

    GET\\n/r/tpl_….png\\n<every query parameter except sig, percent-encoded
    (RFC 3986 unreserved characters kept), sorted by name then value, joined by &>

``kid`` names the signing key, ``exp`` (optional) is a unix time after which
the URL is refused. Nested variables travel as dotted names (``user.name=Ada``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from litho.errors import FieldError, InvalidArgument

RESERVED = frozenset({"kid", "exp", "sig"})
MAX_PARAMS = 100
MAX_DEPTH = 5


def batch_webhook_secret(signing_secret: str) -> str:
    """The Standard Webhooks secret (``whsec_…``) a batch's own ``webhookUrl``
    is signed with: derived from the key's signing secret (HMAC-SHA256 with a
    fixed label), so it is stable, belongs to the key, and is not the secret
    that signs image URLs."""
    key = hmac.new(signing_secret.encode(), b"litho-batch-webhook-v1", hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(key).decode()


def _enc(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Every parameter but ``sig``, encoded and sorted: also the query we hand out."""
    pairs = sorted((k, v) for k, v in params if k != "sig")
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in pairs)


def canonical_request(path: str, params: Iterable[tuple[str, str]]) -> str:
    return f"GET\n{path}\n{canonical_query(params)}"


def sign(secret: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    message = canonical_request(path, params).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_matches(secret: str, path: str, params: list[tuple[str, str]], sig: str) -> bool:
    return hmac.compare_digest(sign(secret, path, params), sig.lower())


def flatten(variables: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"user": {"name": "Ada"}, "n": 3}`` → ``[("user.name", "Ada"), ("n", "3")]``."""
    out: list[tuple[str, str]] = []
    for key, value in variables.items():
        name = f"{prefix}{key}"
        if name in RESERVED:
            raise InvalidArgument(
                f"variable {name!r} clashes with a signed-URL parameter",
                errors=[FieldError(f"variables.{name}", "kid, exp and sig are reserved")])
        if isinstance(value, dict):
            out += flatten(value, f"{name}.")
        elif isinstance(value, list):
            raise InvalidArgument(
                "signed URLs carry strings, numbers, booleans and nested objects, not lists",
                errors=[FieldError(f"variables.{name}", "lists are not supported in URLs")])
        elif value is None:
            out.append((name, ""))
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return out


def unflatten(params: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The inverse of :func:`flatten`; values stay strings."""
    result: dict[str, Any] = {}
    count = 0
    for name, value in params:
        if name in RESERVED:
            continue
        count += 1
        parts = name.split(".")
        if count > MAX_PARAMS or len(parts) > MAX_DEPTH or not all(parts):
            raise InvalidArgument(
                f"query parameter {name!r} is not a variable name",
                errors=[FieldError(name, f"at most {MAX_PARAMS} parameters, "
                                         f"{MAX_DEPTH} levels, no empty names")])
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidArgument(f"query parameter {name!r} conflicts with {part!r}",
                                      errors=[FieldError(name, "conflicts with another")])
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise InvalidArgument(f"query parameter {name!r} conflicts with a nested one",
                                  errors=[FieldError(name, "conflicts with another")])
        node[parts[-1]] = value
    return result
