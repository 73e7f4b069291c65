"""Sealed binding secrets (Fernet under HKDF-derived keys, rotation) and
push authentication."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from litho.errors import ConfigError
from services.binding._secrets import (
    SecretBox,
    new_push_secret,
    push_authorized,
    sign_push,
)

OLD = "o" * 32
NEW = "n" * 40


def test_seal_and_open_round_trip_and_tokens_differ() -> None:
    box = SecretBox.from_setting(OLD)
    first, second = box.seal('{"token":"s3cr€t"}'), box.seal('{"token":"s3cr€t"}')
    assert first != second and "s3cr" not in first
    assert box.open(first) == box.open(second) == '{"token":"s3cr€t"}'


def test_rotation_new_key_first_opens_old_tokens_and_seals_with_the_new() -> None:
    old_token = SecretBox.from_setting(OLD).seal("x")
    rotated = SecretBox.from_setting(f"{NEW}, {OLD}")
    assert rotated.open(old_token) == "x"
    new_token = rotated.seal("y")
    assert SecretBox.from_setting(NEW).open(new_token) == "y"
    with pytest.raises(ValueError, match="LITHO_BINDING_SECRET_KEY"):
        SecretBox.from_setting(OLD).open(new_token)
    assert SecretBox.from_setting(NEW).open(rotated.reseal(old_token)) == "x"


def test_the_key_is_derived_not_used_raw() -> None:
    # Two settings that differ only after the 32nd character give other keys.
    token = SecretBox.from_setting("k" * 32 + "a").seal("x")
    with pytest.raises(ValueError):
        SecretBox.from_setting("k" * 32 + "b").open(token)


@pytest.mark.parametrize("token", ["", "not a token", "gAAAAA" + "x" * 80, "é"])
def test_a_bad_token_is_a_value_error(token: str) -> None:
    with pytest.raises(ValueError):
        SecretBox.from_setting(OLD).open(token)


@pytest.mark.parametrize("setting", ["", " , ", "short", f"{OLD},short"])
def test_empty_or_short_keys_refuse_to_start(setting: str) -> None:
    with pytest.raises(ConfigError, match="LITHO_BINDING_SECRET_KEY"):
        SecretBox.from_setting(setting)


def test_push_secrets_are_prefixed_and_unique() -> None:
    a, b = new_push_secret(), new_push_secret()
    assert a.startswith("lps_") and len(a) >= 40 and a != b


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"price": 3}'
    expected = hmac.new(b"lps_abc", body, hashlib.sha256).hexdigest()
    assert sign_push("lps_abc", body) == "sha256=" + expected


def test_push_authorized_by_signature_or_by_secret() -> None:
    secret, body = new_push_secret(), b'{"a":1}'
    good = sign_push(secret, body)
    assert push_authorized(secret, body, signature=good, presented="")
    assert push_authorized(secret, body, signature="", presented=secret)
    assert push_authorized(secret, body, signature="sha256=00", presented=secret)
    assert push_authorized(secret, body, signature=good, presented="wrong")


@pytest.mark.parametrize(("signature", "presented"), [
    ("", ""),
    ("sha256=" + "0" * 64, ""),
    ("", "lps_wrong"),
    ("sha256=é\ud800", "é\ud800"),
])
def test_push_refused_without_a_valid_proof(signature: str, presented: str) -> None:
    secret, body = new_push_secret(), b'{"a":1}'
    assert not push_authorized(secret, body, signature=signature, presented=presented)
    # The signature of another body does not carry over.
    assert not push_authorized(secret, body, signature=sign_push(secret, b"{}"), presented="")


def test_an_empty_stored_secret_authorizes_nothing() -> None:
    assert not push_authorized("", b"", signature=sign_push("", b""), presented="")
