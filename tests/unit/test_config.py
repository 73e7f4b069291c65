"""Shared settings: the parts every service reads, and how a bad value is named."""

from __future__ import annotations

import pytest

from litho.config import BaseServiceSettings, OutboundSettings, load
from litho.errors import ConfigError


def test_parts_read_their_own_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # A whole-part JSON value is not a second spelling of the allow-list.
    monkeypatch.setenv("LITHO_OUTBOUND", '{"allow": "0.0.0.0/0"}')
    monkeypatch.setenv("LITHO_S3", "{not json")
    monkeypatch.setenv("LITHO_OUTBOUND_ALLOW", "10.0.0.1")
    settings = load(BaseServiceSettings)
    assert settings.outbound.allow == "10.0.0.1"
    assert settings.s3.region == "us-east-1"
    # A test (or a composition root) hands a part in directly.
    handed = BaseServiceSettings(outbound=OutboundSettings(allow="127.0.0.1:9"))
    assert handed.outbound.allow == "127.0.0.1:9"


@pytest.mark.parametrize(("name", "value"), [
    ("LITHO_S3_PATH_STYLE", "maybe"),
    ("LITHO_OUTBOUND_TIMEOUT", "-1"),
    ("LITHO_SHUTDOWN_GRACE", "0"),
])
def test_a_bad_value_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load(BaseServiceSettings)
