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
