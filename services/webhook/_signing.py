"""Standard Webhooks signatures (https://www.standardwebhooks.com), by its
reference library: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
#: Random bytes in a subscription secret (the specification asks for 24-64).
SECRET_BYTES = 24
USER_AGENT = "Litho-Webhooks/1"


def new_secret() -> str:
    """``whsec_`` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def subscription_signers(secrets_now: Sequence[str]) -> tuple[Webhook, ...]:
    """A subscription's ``whsec_…`` secrets, as receivers pass them to
    ``Webhook``: the current one, and the previous one during a rotation's overlap."""
    return tuple(Webhook(secret) for secret in secrets_now)


def check_batch_secret(secret: str) -> str:
    """A batch webhook's secret: ``whsec_`` and the base64 of at least one
    byte (the gateway derives it from the API key). ``ValueError`` if not."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("must be a Standard Webhooks secret (whsec_…)")
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError as exc:
        raise ValueError("must be whsec_ and base64") from exc
    if not key:
        raise ValueError("must not be empty")
    return secret


def batch_signer(secret: str) -> Webhook:
    """A batch webhook's ``whsec_…`` secret (derived from the API key by the
    gateway, shown by ``GET /v1/signing-key`` as ``webhookSecret``); receivers
    verify with ``Webhook("whsec_…")``."""
    return Webhook(check_batch_secret(secret))


def headers(signers: Sequence[Webhook], message_id: str, body: str,
            when: datetime) -> dict[str, str]:
    """Every header of one attempt (a new timestamp and signature each time):
    one ``v1,<signature>`` per signer, space-separated, as the specification
    allows during a secret rotation."""
    if not signers:
        raise ValueError("nothing to sign with")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": " ".join(s.sign(message_id, when, body) for s in signers),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
