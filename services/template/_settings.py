from __future__ import annotations

from pydantic import Field

from litho.config import BaseServiceSettings
from litho.jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NUMBER_CHARS


class TemplateSettings(BaseServiceSettings):
    #: Largest template source accepted, in bytes.
    template_max_html_bytes: int = Field(default=512 * 1024, gt=0)
    #: Largest width or height a template may declare, in CSS pixels.
    template_max_dimension: int = Field(default=5000, gt=0, le=16384)
    #: Largest variables document accepted for one expansion, in bytes.
    template_max_variables_bytes: int = Field(default=256 * 1024, gt=0)
    #: Largest expanded document, in bytes.
    template_max_output_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    #: Immutable versions kept in memory, by (tenant, template, version).
    template_version_cache_size: int = Field(default=1024, ge=0)
    #: Compiled template sources kept in memory (parsed once per version).
    template_compile_cache_size: int = Field(default=512, ge=1)
    # Limits of the template language (docs/template-language.md, "Limits").
    template_max_loop_iterations: int = Field(default=10_000, gt=0)
    template_max_depth: int = Field(default=64, gt=0, le=100)
    template_max_steps: int = Field(default=500_000, gt=0)
    template_max_string_length: int = Field(default=1_000_000, gt=0)
    template_max_array_length: int = Field(default=10_000, gt=0)
    template_max_errors: int = Field(default=100, gt=0)
    #: Seconds one expansion (or expression test) may run before it is ended
    #: with a 422: a backstop behind the step budget, which bounds the work.
    template_expand_timeout: float = Field(default=5.0, gt=0, le=60)
    #: Longest text a variable's validation pattern is run on.
    template_max_pattern_input: int = Field(default=10_000, gt=0)
    #: Characters × pattern instructions matched in one render (RE2's worst
    #: case is a few ns each): bounds the time validation patterns may take.
    template_max_pattern_work: int = Field(default=100_000_000, gt=0)
    #: Deepest nesting of objects and arrays in any JSON value received
    #: (sample variables, variable definitions, render variables): what is
    #: stored must be readable back by every layer (MongoDB stops at 100).
    template_json_max_depth: int = Field(default=DEFAULT_MAX_DEPTH, gt=0, le=90)
    #: Longest number literal accepted in those JSON values, in characters.
    template_json_max_number_chars: int = Field(default=DEFAULT_MAX_NUMBER_CHARS, gt=0, le=1000)
