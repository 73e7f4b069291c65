"""Render ids: keyed per tenant by a server secret that the renderer requires."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from litho.config import load
from litho.errors import ConfigError
from services.renderer._pipeline import CaptureSpec, make_render_id, tenant_key
from services.renderer._settings import RendererSettings
from services.renderer._spec import GifSpec, PdfSpec

SECRET = b"0123456789abcdef0123456789abcdef"
SPEC = CaptureSpec(documents=("<p>Certificate for Ada</p>",), base_url="http://document.invalid/",
                   format="png", width=100, height=50, scale=1.0, quality=0, transparent=False,
                   selector="", pdf=PdfSpec(), gif=GifSpec())


def test_one_tenant_one_id_other_tenants_other_ids() -> None:
    assert make_render_id(SECRET, "alice", SPEC) == make_render_id(SECRET, "alice", SPEC)
    ids = {make_render_id(SECRET, t, SPEC) for t in ("alice", "bob", "Alice", "")}
    assert len(ids) == 4


def test_the_id_needs_the_secret() -> None:
    other = b"x" * 32
    assert make_render_id(SECRET, "alice", SPEC) != make_render_id(other, "alice", SPEC)


def test_tenant_keys_are_derived_as_documented() -> None:
    expected = hmac.new(SECRET, b"render-id:alice", hashlib.sha256).digest()
    assert tenant_key(SECRET, "alice") == expected
    # Tenant ids cannot collide by concatenation with the label.
    assert tenant_key(SECRET, "alice") != tenant_key(SECRET, "render-id:alice")


def test_the_renderer_does_not_start_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LITHO_RENDERER_RENDER_ID_SECRET", raising=False)
    with pytest.raises(ConfigError, match="LITHO_RENDERER_RENDER_ID_SECRET"):
        load(RendererSettings)
    monkeypatch.setenv("LITHO_RENDERER_RENDER_ID_SECRET", "too short")
    with pytest.raises(ConfigError, match=r"LITHO_RENDERER_RENDER_ID_SECRET.*32 bytes"):
        load(RendererSettings)
    monkeypatch.setenv("LITHO_RENDERER_RENDER_ID_SECRET", SECRET.decode())
    settings = load(RendererSettings)
    assert settings.renderer_render_id_secret.get_secret_value().encode() == SECRET
    assert SECRET.decode() not in repr(settings)


def test_the_base_url_must_be_an_absolute_http_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITHO_RENDERER_RENDER_ID_SECRET", SECRET.decode())
    for bad in ("about:blank", "file:///etc/", "http://x.example", "http://u@x.example/",
                "javascript:alert(1)//"):
        monkeypatch.setenv("LITHO_RENDERER_BASE_URL", bad)
        with pytest.raises(ConfigError, match="LITHO_RENDERER_BASE_URL"):
            load(RendererSettings)
    monkeypatch.setenv("LITHO_RENDERER_BASE_URL", "https://cdn.example/assets/")
    assert load(RendererSettings).renderer_base_url == "https://cdn.example/assets/"
