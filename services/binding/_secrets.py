"""Secrets of bindings: credentials sealed at rest, and push secrets.

Credentials and push secrets are stored as Fernet tokens (AES-128-CBC with an
HMAC-SHA256, from ``cryptography``) under keys derived from
``LITHO_BINDING_SECRET_KEY``. The setting is a comma-separated list so keys can
rotate: the first seals, every one opens (:class:`MultiFernet`).

A push is accepted when it carries either an HMAC of its body under the
binding's push secret (``X-Litho-Signature: sha256=<hex>``) or the secret
itself (``X-Litho-Push-Secret``); both compare in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from litho.errors import ConfigError

#: Shortest key entry accepted, in characters.
MIN_KEY_CHARS: Final = 32
#: Ties the derived keys to this one use: the same setting value used for
#: something else one day derives different keys.
_HKDF_INFO: Final = b"litho binding secrets v1"
PUSH_SECRET_PREFIX: Final = "lps_"
SIGNATURE_PREFIX: Final = "sha256="
_SETTING: Final = "LITHO_BINDING_SECRET_KEY"


class SecretBox:
    """Seals and opens short texts (credentials JSON, push secrets)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._fernet = MultiFernet([Fernet(_derive(key)) for key in keys])

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """Keys from ``LITHO_BINDING_SECRET_KEY``'s value; raises
        :class:`ConfigError` naming the setting when it is empty or any entry
        is too short."""
        entries = [item.strip() for item in value.split(",") if item.strip()]
        if not entries:
            raise ConfigError(
                f"{_SETTING} is not set: the binding service seals credentials and push "
                f"secrets with it; set it to a random text of at least {MIN_KEY_CHARS} "
                "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)")
        for position, entry in enumerate(entries, start=1):
            if len(entry) < MIN_KEY_CHARS:
                raise ConfigError(
                    f"{_SETTING}: key {position} of {len(entries)} has {len(entry)} characters; "
                    f"each comma-separated key needs at least {MIN_KEY_CHARS}")
        return cls([entry.encode("utf-8", "surrogatepass") for entry in entries])

    def seal(self, plain: str) -> str:
        """A token (URL-safe base64 text) that only these keys open."""
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        """The text sealed in ``token``; ``ValueError`` when no key opens it
        (a removed key, or a token that was changed)."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise ValueError(
                f"the sealed secret cannot be opened with any key in {_SETTING}") from exc

    def reseal(self, token: str) -> str:
        """``token`` sealed again under the first key (after a rotation)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise ValueError(
                f"the sealed secret cannot be opened with any key in {_SETTING}") from exc


def _derive(key: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(key))


def new_push_secret() -> str:
    return PUSH_SECRET_PREFIX + secrets.token_urlsafe(32)


def sign_push(secret: str, body: bytes) -> str:
    """The ``X-Litho-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def push_authorized(secret: str, body: bytes, *, signature: str, presented: str) -> bool:
    """Whether a push carries a valid signature of ``body`` or the secret itself.

    Either header suffices; neither (or an empty stored secret) is refused.
    """
    if not secret:
        return False
    ok = False
    if signature:
        ok = hmac.compare_digest(_bytes(signature), _bytes(sign_push(secret, body)))
    if presented:
        # Computed even when the signature matched, so timing says nothing of which one did.
        ok = hmac.compare_digest(_bytes(presented), _bytes(secret)) or ok
    return ok


def _bytes(text: str) -> bytes:
    # compare_digest refuses non-ASCII str, and header values from outside may be anything.
    return text.encode("utf-8", "surrogatepass")
