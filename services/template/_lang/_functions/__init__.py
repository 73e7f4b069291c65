"""The built-in functions, gathered into one registry."""

from __future__ import annotations

from functools import cache

from services.template._lang._functions import (
    _arrays,
    _checks,
    _codes,
    _dates,
    _formatting,
    _numbers,
    _strings,
    _utilities,
)
from services.template._lang._functions._registry import Function, FunctionInfo, Registry

__all__ = ["Function", "FunctionInfo", "Registry", "default_registry"]


@cache
def default_registry() -> Registry:
    return Registry((
        *_strings.FUNCTIONS, *_numbers.FUNCTIONS, *_formatting.FUNCTIONS, *_dates.FUNCTIONS,
        *_arrays.FUNCTIONS, *_checks.FUNCTIONS, *_utilities.FUNCTIONS,
        *_codes.FUNCTIONS,
    ))
