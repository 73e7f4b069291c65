"""Standard Webhooks signatures (https://www.standardwebhooks.com), by its
reference library: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
#: Random bytes in a subscription secret (the specification asks for 24-64).
SECRET_BYTES = 24
USER_AGENT = "Litho-Webhooks/1"


def new_secret() -> str:
    """``whsec_`` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def subscription_signer(secret: str) -> Webhook:
    """A subscription's ``whsec_…`` secret, as receivers pass it to ``Webhook``."""
    return Webhook(secret)


def batch_signer(signing_secret: str) -> Webhook:
    """A batch webhook's key: the UTF-8 of the API key's signing secret
    (``lss_…``); receivers verify with ``Webhook("lss_…".encode())``."""
    return Webhook(signing_secret.encode())


def headers(signer: Webhook, message_id: str, body: str, when: datetime) -> dict[str, str]:
    """Every header of one attempt (a new timestamp and signature each time)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signer.sign(message_id, when, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
