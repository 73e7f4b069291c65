"""Every numeric limit of every service is a setting with a lower bound (and
most with an upper one): its default lies within them, a value at a bound is
taken, and a value past one is refused with an error that names the
``LITHO_*`` variable to fix."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import annotated_types
import pytest
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from litho.cli._settings import CliSettings
from litho.config import load
from litho.errors import ConfigError
from services.binding._settings import BindingSettings
from services.experiment._settings import ExperimentSettings
from services.gateway._settings import GatewaySettings
from services.renderer._settings import RendererSettings
from services.template._settings import TemplateSettings
from services.webhook._settings import WebhookSettings

SERVICES: tuple[type[BaseSettings], ...] = (
    GatewaySettings, TemplateSettings, BindingSettings, RendererSettings, ExperimentSettings,
    WebhookSettings, CliSettings)


def _bounds(info: FieldInfo) -> tuple[float | None, bool, float | None, bool]:
    """(lower, inclusive, upper, inclusive) of a numeric field."""
    low: float | None = None
    high: float | None = None
    low_inclusive = high_inclusive = True
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = float(m.ge)  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Gt):
            low, low_inclusive = float(m.gt), False  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Le):
            high = float(m.le)  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Lt):
            high, high_inclusive = float(m.lt), False  # type: ignore[arg-type]
    return low, low_inclusive, high, high_inclusive


def _numeric_fields() -> Iterator[tuple[type[BaseSettings], str, FieldInfo]]:
    for cls in SERVICES:
        for name, info in cls.model_fields.items():
            if info.annotation in (int, float):
                yield cls, name, info


#: Settings that a rule across settings also bounds (at an extreme of their
#: own range, another default may make them refused): only their refusals
#: are checked here.
CROSS_CHECKED = frozenset({"webhook_retry_after_max", "webhook_delivery_retention"})

CASES = [pytest.param(cls, name, info, id=f"{cls.__name__}.{name}")
         for cls, name, info in _numeric_fields()]


def test_every_numeric_setting_is_bounded_below() -> None:
    unbounded = [f"{cls.__name__}.{name}" for cls, name, info in _numeric_fields()
                 if _bounds(info)[0] is None]
    assert unbounded == []
    assert len(CASES) > 100  # every service's limits, not a handful


def _env_value(value: float, annotation: Any) -> str:
    return str(int(value)) if annotation is int else repr(value)


@pytest.mark.parametrize(("cls", "name", "info"), CASES)
def test_a_numeric_setting_takes_its_bounds_and_refuses_what_is_past_them(
        cls: type[BaseSettings], name: str, info: FieldInfo,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for required, field in cls.model_fields.items():
        if field.is_required():  # a secret or the like: any valid value
            monkeypatch.setenv(f"LITHO_{required.upper()}", "s" * 64)
    low, low_inclusive, high, high_inclusive = _bounds(info)
    assert low is not None
    default = info.get_default(call_default_factory=True)
    assert (low <= default if low_inclusive else low < default), default
    variable = f"LITHO_{name.upper()}"
    step = 1.0 if info.annotation is int else 1e-3
    taken = [low if low_inclusive else low + step]
    refused = [low - step if low_inclusive else low]
    if high is not None:
        assert (default <= high if high_inclusive else default < high), default
        taken.append(high if high_inclusive else high - step)
        refused.append(high + step if high_inclusive else high)
    for value in taken if name not in CROSS_CHECKED else ():
        monkeypatch.setenv(variable, _env_value(value, info.annotation))
        assert math.isclose(float(getattr(load(cls), name)), value)
    for value in refused:
        monkeypatch.setenv(variable, _env_value(value, info.annotation))
        with pytest.raises(ConfigError, match=variable):
            load(cls)
