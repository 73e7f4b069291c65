from __future__ import annotations

from pydantic import Field

from litho.config import BaseServiceSettings


class TemplateSettings(BaseServiceSettings):
    template_grpc_address: str = Field(default="127.0.0.1:50051")
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
    #: Longest text a variable's validation pattern is run on.
    template_max_pattern_input: int = Field(default=1000, gt=0)
