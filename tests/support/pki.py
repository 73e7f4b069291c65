"""The internal certificate of a production-mode stack, as the Helm chart's
TLS Secret holds it (``ca.crt``, ``tls.crt``, ``tls.key``): one certificate
for every service, named :data:`INTERNAL_NAME` (and 127.0.0.1), good for
serving and for presenting as a client under mutual TLS; from a throwaway
CA (trustme)."""

from __future__ import annotations

import secrets
from pathlib import Path

import trustme

INTERNAL_NAME = "litho-grpc.internal"


def internal_grpc_env(root: Path) -> dict[str, str]:
    """Write the CA, certificate and key under ``root``; the ``LITHO_GRPC_*``
    settings of TLS, mutual TLS and a fresh token that use them."""
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert(INTERNAL_NAME, "127.0.0.1")
    files = {"ca.crt": ca.cert_pem.bytes(), "tls.crt": issued.cert_chain_pems[0].bytes(),
             "tls.key": issued.private_key_pem.bytes()}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "tls.key").chmod(0o600)
    return {
        "LITHO_GRPC_TLS": "true",
        "LITHO_GRPC_TLS_CA": str(root / "ca.crt"),
        "LITHO_GRPC_TLS_CERT": str(root / "tls.crt"),
        "LITHO_GRPC_TLS_KEY": str(root / "tls.key"),
        "LITHO_GRPC_TLS_CLIENT_AUTH": "true",
        "LITHO_GRPC_TLS_SERVER_NAME": INTERNAL_NAME,
        "LITHO_GRPC_TOKEN": secrets.token_urlsafe(32),
        # Each process its own free port: what the chart's probes would ask.
        "LITHO_GRPC_HEALTH_ADDRESS": "127.0.0.1:0",
    }
