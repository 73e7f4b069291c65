"""The production gate: what a service refuses to start with when
``LITHO_PRODUCTION`` is on.

:func:`check` runs in the start-up every service shares
(:func:`litho.service.serve`), before anything is built. With production off
it does nothing; with it on, it refuses, in one :class:`~litho.errors.ConfigError`
naming each variable to fix:

- an embedded document store (``LITHO_DOCSTORE_URL`` not ``mongodb://`` or
  ``mongodb+srv://``): a SQLite file in the pod is neither shared by replicas
  nor kept across restarts;
- an embedded blob store (``LITHO_BLOBSTORE_URL`` not ``s3://``), for the same reasons;
- internal gRPC with neither TLS (``LITHO_GRPC_TLS``) nor a token
  (``LITHO_GRPC_TOKEN``);
- a secret of the service that is missing, a well-known development value (one
  published in this repository, or a placeholder such as 64 zeros), or the one
  the dev stack (``make run``) generated into the data directory.

Each service declares its own secrets, next to their fields, in its settings
class: ``PRODUCTION_SECRETS``, a tuple of :class:`Secret` (a class variable,
so pydantic leaves it alone). The declaration lives with the fields rather than
in a list here, so a service that adds a secret declares it where it adds it,
and ``tests/unit/test_production.py`` fails for a field that looks secret
(``SecretStr``, or ``repr=False``) in a service's settings but is not declared.
Reading secrets off their type alone was not enough: only one of them is a
``SecretStr``, and the copilot's key is required only when its URL is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from litho.config import BaseServiceSettings
from litho.errors import ConfigError

#: Values published in this repository (the chart's CI values, tests' keys):
#: whoever reads the repository knows them.
WELL_KNOWN = frozenset({
    "0" * 64,
    "test-binding-key-test-binding-key-0000",
    "test-handle-key-test-handle-key-00000",
    "test-grpc-token-test-grpc-token-00000",
    "0123456789abcdef" * 2,
})
#: Words of a value someone meant to replace.
_PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "replace-me", "replaceme",
                      "placeholder", "example", "password", "dummy")
#: A generated secret of 32 characters or more has far more distinct characters
#: (``openssl rand -hex 32`` has about 16).
_MIN_DISTINCT_CHARS = 8
#: A dev stack's kept secret is one line; a larger file is not one of them.
_MAX_DEV_FILE_BYTES = 4096
_HOW_TO_GENERATE = "generate one with `openssl rand -hex 32`"


@dataclass(frozen=True)
class Secret:
    """A settings field that a production start requires."""

    #: The field's name; its variable is ``LITHO_`` + the name in upper case.
    field: str
    #: Another field: the secret is required only when that one is set (the
    #: copilot's key only with a copilot URL). Empty: always required.
    when: str = ""
    #: The value is a comma-separated list of keys (each is checked).
    listed: bool = False
    #: The file under ``LITHO_DATA_DIR`` where the dev stack keeps the value it
    #: generated (``services/_stack.py``); a production start must not use it.
    dev_file: str = ""

    @property
    def variable(self) -> str:
        return "LITHO_" + self.field.upper()


def declared_secrets(settings: BaseServiceSettings) -> tuple[Secret, ...]:
    """The secrets the settings' class declares (none for the base class)."""
    declared: tuple[Secret, ...] = getattr(type(settings), "PRODUCTION_SECRETS", ())
    return declared


def check(settings: BaseServiceSettings) -> None:
    """Raise a :class:`ConfigError` naming every problem that makes
    ``settings`` unfit for production, when ``LITHO_PRODUCTION`` is on."""
    if not settings.production:
        return
    problems = list(problems_of(settings))
    if problems:
        raise ConfigError("LITHO_PRODUCTION is on and this start is not fit for production; "
                          "fix " + "; ".join(problems))


def problems_of(settings: BaseServiceSettings) -> Iterable[str]:
    """What :func:`check` refuses, one sentence each, naming the variable."""
    if not settings.docstore_url.strip().lower().startswith(("mongodb://", "mongodb+srv://")):
        yield ("LITHO_DOCSTORE_URL: the embedded document store (SQLite) is not shared by "
               "replicas; set a mongodb:// URL")
    if not settings.blobstore_url.strip().lower().startswith("s3://"):
        yield ("LITHO_BLOBSTORE_URL: the embedded blob store (local files) is not shared by "
               "replicas; set an s3://bucket[/prefix] URL")
    grpc = settings.grpc
    if grpc.token is None and not (grpc.tls and grpc.tls_client_auth):
        # TLS alone encrypts but authenticates no caller: anyone holding the
        # (public) CA certificate could act for every tenant.
        yield ("LITHO_GRPC_TOKEN, LITHO_GRPC_TLS_CLIENT_AUTH: internal gRPC authenticates no "
               "caller; set LITHO_GRPC_TOKEN (at least 32 characters), or mutual TLS "
               "(LITHO_GRPC_TLS=true, LITHO_GRPC_TLS_CLIENT_AUTH=true, with "
               "LITHO_GRPC_TLS_CA, LITHO_GRPC_TLS_CERT and LITHO_GRPC_TLS_KEY)")
    for variable, token in (("LITHO_GRPC_TOKEN", grpc.token),
                            ("LITHO_GRPC_PREVIOUS_TOKEN", grpc.previous_token)):
        weak = _weakness(token.get_secret_value()) if token is not None else ""
        if weak:
            yield f"{variable}: {weak}; {_HOW_TO_GENERATE}"
    for secret in declared_secrets(settings):
        problem = _secret_problem(settings, secret)
        if problem:
            yield f"{secret.variable}: {problem}"


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return "" if value is None else str(value)


def _secret_problem(settings: BaseServiceSettings, secret: Secret) -> str:
    if secret.when and not _text(getattr(settings, secret.when)):
        return ""
    value = _text(getattr(settings, secret.field)).strip()
    if not value:
        needed = (f" while LITHO_{secret.when.upper()} is set" if secret.when else "")
        return f"missing; it is required in production{needed}; {_HOW_TO_GENERATE}"
    if secret.dev_file and value == _dev_value(settings.data_dir / secret.dev_file):
        return (f"the value the dev stack generated into {secret.dev_file} under "
                f"LITHO_DATA_DIR; set one of your own ({_HOW_TO_GENERATE}) and keep it")
    keys = [k.strip() for k in value.split(",")] if secret.listed else [value]
    for key in keys:
        if not key:
            return "an empty entry in its comma-separated list (a stray comma?)"
        weak = _weakness(key)
        if weak:
            return f"{weak}; {_HOW_TO_GENERATE}"
    return ""


def _weakness(value: str) -> str:
    """Why ``value`` is no secret, or empty."""
    if value in WELL_KNOWN:
        return "a well-known development value (published in this repository)"
    lowered = value.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return "a placeholder, not a secret"
    if len(set(value)) < _MIN_DISTINCT_CHARS:
        return f"a placeholder, not a secret (fewer than {_MIN_DISTINCT_CHARS} distinct characters)"
    return ""


def _dev_value(path: Path) -> str | None:
    """The secret the dev stack kept in ``path``, if there is one."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_DEV_FILE_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
