"""The production gate (``litho/production.py``): with ``LITHO_PRODUCTION`` on,
every problem is named in one ConfigError; a complete configuration passes;
with it off nothing is refused; and the start-up every service shares calls it
before building anything."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from litho import production
from litho.config import BaseServiceSettings, GrpcSettings
from litho.errors import ConfigError
from litho.production import Secret, declared_secrets
from litho.service import Endpoints, Host, ServiceSpec, running
from services import _registry
from services.binding._settings import BindingSettings
from services.experiment._settings import ExperimentSettings
from services.renderer._settings import RendererSettings
from services.template._settings import TemplateSettings


def _secret() -> str:
    return secrets.token_hex(32)


def _fit(tmp_path: Path) -> dict[str, Any]:
    """What every service shares in a production configuration."""
    return {
        "production": True,
        "data_dir": tmp_path,
        "docstore_url": "mongodb://litho:pw@mongo-0.mongo:27017/?replicaSet=rs0",
        "blobstore_url": "s3://litho-images/prod",
        "grpc": GrpcSettings(token=SecretStr(_secret())),
    }


def _complete(cls: type[BaseServiceSettings], tmp_path: Path, **extra: Any
              ) -> BaseServiceSettings:
    """``cls`` with every secret it declares set to a fresh random value."""
    values: dict[str, Any] = {**_fit(tmp_path), **extra}
    for secret in getattr(cls, "PRODUCTION_SECRETS", ()):
        values.setdefault(secret.field, _secret())
    return cls(**values)


def _problems(settings: BaseServiceSettings) -> str:
    with pytest.raises(ConfigError) as refused:
        production.check(settings)
    return str(refused.value)


def _settings_classes() -> list[type[BaseServiceSettings]]:
    return [_registry.app(spec).settings for spec in _registry.registry().values()]


def test_embedded_parts_and_a_bare_grpc_are_each_named(tmp_path: Path) -> None:
    message = _problems(BaseServiceSettings(production=True, data_dir=tmp_path))
    for variable in ("LITHO_DOCSTORE_URL", "LITHO_BLOBSTORE_URL", "LITHO_GRPC_TOKEN",
                     "LITHO_GRPC_TLS"):
        assert variable in message
    # Explicit embedded URLs are embedded too.
    message = _problems(BaseServiceSettings(**{
        **_fit(tmp_path), "docstore_url": f"sqlite:///{tmp_path}/x.db",
        "blobstore_url": f"file://{tmp_path}/blobs"}))
    assert "LITHO_DOCSTORE_URL" in message and "LITHO_BLOBSTORE_URL" in message
    assert "LITHO_GRPC" not in message


def test_a_token_or_mutual_tls_authenticates_callers_and_tls_alone_does_not(
        tmp_path: Path) -> None:
    production.check(BaseServiceSettings(**_fit(tmp_path)))
    files = {"tls": True, "tls_cert": tmp_path / "c.pem", "tls_key": tmp_path / "k.pem"}
    mutual = GrpcSettings.model_validate(
        {**files, "tls_ca": tmp_path / "ca.pem", "tls_client_auth": True})
    production.check(BaseServiceSettings(**{**_fit(tmp_path), "grpc": mutual}))
    # TLS alone encrypts, but anyone with the CA certificate may call.
    message = _problems(BaseServiceSettings(**{**_fit(tmp_path),
                                               "grpc": GrpcSettings.model_validate(files)}))
    assert "LITHO_GRPC_TOKEN" in message and "LITHO_GRPC_TLS_CLIENT_AUTH" in message


def test_the_previous_token_and_the_charts_published_token_are_checked_too(
        tmp_path: Path) -> None:
    good = "9f2c" + "a1b2c3d4e5f6" * 4
    published = GrpcSettings(token=SecretStr("test-grpc-token-test-grpc-token-00000"))
    assert "LITHO_GRPC_TOKEN" in _problems(BaseServiceSettings(**{**_fit(tmp_path),
                                                                   "grpc": published}))
    rolling = GrpcSettings(token=SecretStr(good), previous_token=SecretStr("a" * 40))
    assert "LITHO_GRPC_PREVIOUS_TOKEN" in _problems(BaseServiceSettings(
        **{**_fit(tmp_path), "grpc": rolling}))


def test_a_placeholder_token_is_refused(tmp_path: Path) -> None:
    weak = GrpcSettings(token=SecretStr("0" * 64))
    assert "LITHO_GRPC_TOKEN" in _problems(BaseServiceSettings(**{**_fit(tmp_path),
                                                                   "grpc": weak}))


@pytest.mark.parametrize("cls", [RendererSettings, BindingSettings, ExperimentSettings,
                                 TemplateSettings])
def test_a_complete_production_config_passes(cls: type[BaseServiceSettings],
                                              tmp_path: Path) -> None:
    production.check(_complete(cls, tmp_path))


def test_the_copilot_key_is_needed_only_with_a_copilot_url(tmp_path: Path) -> None:
    production.check(_complete(TemplateSettings, tmp_path, copilot_api_key=""))
    with_url = _complete(TemplateSettings, tmp_path, copilot_api_key="",
                         copilot_url="https://models.example.net/v1/chat/completions")
    message = _problems(with_url)
    assert "LITHO_COPILOT_API_KEY" in message and "LITHO_COPILOT_URL" in message
    production.check(_complete(TemplateSettings, tmp_path,
                               copilot_url="https://models.example.net/v1/chat/completions"))


@pytest.mark.parametrize(("cls", "field"), [
    (BindingSettings, "binding_secret_key"),
    (ExperimentSettings, "experiment_handle_key"),
])
def test_a_missing_secret_is_named(cls: type[BaseServiceSettings], field: str,
                                   tmp_path: Path) -> None:
    message = _problems(_complete(cls, tmp_path, **{field: ""}))
    assert f"LITHO_{field.upper()}: missing" in message


@pytest.mark.parametrize("value", [
    "0" * 64,                                      # the chart's CI value
    "test-binding-key-test-binding-key-0000",      # published in the repository
    "s" * 32,                                      # tests' placeholder
    "please-changeme-before-going-live-0123456789",
])
def test_well_known_development_values_are_refused(value: str, tmp_path: Path) -> None:
    settings = _complete(RendererSettings, tmp_path,
                         renderer_render_id_secret=SecretStr(value))
    assert "LITHO_RENDERER_RENDER_ID_SECRET" in _problems(settings)


def test_each_key_of_a_listed_secret_is_checked(tmp_path: Path) -> None:
    fine = f"{_secret()},{_secret()}"
    production.check(_complete(BindingSettings, tmp_path, binding_secret_key=fine))
    weak = f"{_secret()},{'0' * 64}"
    assert "LITHO_BINDING_SECRET_KEY" in _problems(
        _complete(BindingSettings, tmp_path, binding_secret_key=weak))


def test_the_dev_stacks_generated_secret_is_refused(tmp_path: Path) -> None:
    generated = _secret()
    (tmp_path / "experiment-handle-key").write_text(generated + "\n")
    message = _problems(_complete(ExperimentSettings, tmp_path,
                                  experiment_handle_key=generated))
    assert "LITHO_EXPERIMENT_HANDLE_KEY" in message and "dev stack" in message
    # Another value, with that file still there, is fine.
    production.check(_complete(ExperimentSettings, tmp_path))


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    settings = BindingSettings(production=True, data_dir=tmp_path)
    message = _problems(settings)
    for variable in ("LITHO_DOCSTORE_URL", "LITHO_BLOBSTORE_URL", "LITHO_GRPC_TOKEN",
                     "LITHO_BINDING_SECRET_KEY"):
        assert variable in message


@pytest.mark.parametrize("cls", [BaseServiceSettings, BindingSettings, ExperimentSettings,
                                 TemplateSettings])
def test_production_off_never_refuses(cls: type[BaseServiceSettings], tmp_path: Path) -> None:
    settings = cls(data_dir=tmp_path, copilot_url="https://m.example.net/v1")  # type: ignore[call-arg]
    assert not settings.production
    production.check(settings)
    assert list(production.problems_of(settings))  # it would be refused in production


def test_every_secret_looking_field_is_declared() -> None:
    """A field typed SecretStr or hidden from repr in a service's settings is a
    production secret, or this test fails: declare it in PRODUCTION_SECRETS."""
    base = set(BaseServiceSettings.model_fields)
    for cls in _settings_classes():
        declared = {s.field for s in getattr(cls, "PRODUCTION_SECRETS", ())}
        for name in declared | {s.when for s in getattr(cls, "PRODUCTION_SECRETS", ())
                                if s.when}:
            assert name in cls.model_fields, (cls.__name__, name)
        for name, info in cls.model_fields.items():
            if name in base:
                continue
            looks_secret = info.annotation is SecretStr or info.repr is False
            assert not looks_secret or name in declared, (
                f"{cls.__name__}.{name} looks secret: declare it in PRODUCTION_SECRETS")


def test_the_declarations_are_read_from_the_settings_class(tmp_path: Path) -> None:
    settings = BindingSettings(data_dir=tmp_path)
    assert declared_secrets(settings) == (
        Secret("binding_secret_key", listed=True, dev_file="binding-secret-key"),)
    assert declared_secrets(BaseServiceSettings(data_dir=tmp_path)) == ()


async def test_the_start_up_refuses_before_building(tmp_path: Path) -> None:
    built: list[str] = []

    async def build(host: Host[BaseServiceSettings]) -> None:
        built.append(host.spec.name)

    spec = ServiceSpec(name="toy", module="tests.unit.toy", summary="toy")
    with pytest.raises(ConfigError, match="LITHO_DOCSTORE_URL"):
        async with running(spec, BaseServiceSettings(production=True, data_dir=tmp_path),
                           build, endpoints=Endpoints()):
            pass
    assert built == []
    async with running(spec, BaseServiceSettings(data_dir=tmp_path), build,
                       endpoints=Endpoints()):
        pass
    assert built == ["toy"]


def test_a_stray_comma_in_a_key_list_is_named_as_such(tmp_path: Path) -> None:
    settings = _complete(BindingSettings, tmp_path,
                         binding_secret_key="9f2ca1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6,")
    assert "stray comma" in _problems(settings)
