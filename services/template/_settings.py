from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from litho.config import BaseServiceSettings
from litho.jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NUMBER_CHARS
from litho.production import Secret


class TemplateSettings(BaseServiceSettings):
    #: What a production start requires set, and not a development value (litho.production).
    PRODUCTION_SECRETS: ClassVar[tuple[Secret, ...]] = (
        Secret("copilot_api_key", when="copilot_url"),)
    #: Largest template source accepted, in bytes.
    template_max_html_bytes: int = Field(default=512 * 1024, gt=0)
    #: Largest width or height a template may declare, in CSS pixels.
    template_max_dimension: int = Field(default=5000, gt=0, le=16384)
    #: Largest variables document accepted for one expansion, in bytes.
    template_max_variables_bytes: int = Field(default=256 * 1024, gt=0)
    #: Largest data accepted from data sources (and a binding's mapping), in bytes.
    template_max_data_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Largest expanded document, in bytes.
    template_max_output_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    #: Immutable versions kept in memory, by (tenant, template, version).
    template_version_cache_size: int = Field(default=1024, ge=0)
    #: Compiled template sources kept in memory (parsed once per version).
    template_compile_cache_size: int = Field(default=512, ge=1)
    #: Estimated memory the compile cache may hold (its text plus ~800 bytes
    #: a tag per compiled template); a source over a quarter of it is never cached.
    template_compile_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
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
    #: Most templates one tenant may hold (copies the copilot makes and
    #: ``litho templates push`` included); past it a create is a 429 until
    #: one is deleted.
    template_max_per_tenant: int = Field(default=10_000, ge=1, le=10_000_000)
    #: Most data sources one template declares (docs/architecture.md,
    #: "Template data sources"); the renderer fetches them all for a render.
    template_max_data_sources: int = Field(default=5, ge=0, le=50)
    # Uploaded fonts (docs/architecture.md, "Uploaded fonts").
    #: Largest font file accepted, in bytes; the gRPC server takes messages
    #: this large plus 64 KiB.
    template_max_font_bytes: int = Field(default=10 * 1024 * 1024, gt=0, le=256 * 1024 * 1024)
    #: Most bytes a WOFF or WOFF2 file may declare (or inflate to) once
    #: decompressed: refused from the header, before anything is inflated.
    template_max_font_decoded_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    #: Address space of the worker process that parses an upload (RLIMIT_AS);
    #: a started worker uses about 45 MB.
    template_font_parse_memory: int = Field(default=1024 * 1024 * 1024,
                                            ge=256 * 1024 * 1024)
    #: Seconds one upload may take to parse before its worker is killed.
    template_font_parse_timeout: float = Field(default=10.0, gt=0, le=300)
    #: Worker processes that parse uploads (one parse each at a time).
    template_font_parse_workers: int = Field(default=1, ge=1, le=8)
    #: Uploads that may wait for a worker before more are refused (429).
    template_font_parse_queue: int = Field(default=16, ge=0)
    #: Most fonts one tenant may store (and most declared in one render).
    template_max_fonts: int = Field(default=100, gt=0, le=1000)
    #: Seconds a tenant's font list is reused for expansions before it is
    #: read again (uploads and deletes in this process drop it at once).
    template_font_cache_ttl: float = Field(default=5.0, ge=0)
    #: Tenants whose font lists are kept in memory.
    template_font_cache_size: int = Field(default=4096, ge=1)

    # The copilot (docs/architecture.md, "The template copilot").
    #: An OpenAI-compatible chat-completions URL (``…/v1/chat/completions``)
    #: to plan with a language model, called through the outbound guard
    #: (LITHO_OUTBOUND_ALLOW lets a private address through); empty: the
    #: embedded, deterministic planner.
    copilot_url: str = Field(default="", max_length=2000)
    #: The model the chat-completions request names.
    copilot_model: str = Field(default="", max_length=200)
    #: Sent as ``Authorization: Bearer …`` to the model (never logged).
    copilot_api_key: str = Field(default="", max_length=10_000, repr=False)
    #: Ask the model for ``response_format: json_object`` (not every server has it).
    copilot_json_mode: bool = False
    #: Longest prompt, in UTF-8 bytes (a longer one is a 422).
    copilot_max_prompt_bytes: int = Field(default=4096, ge=64, le=1024 * 1024)
    #: Most earlier turns sent as ``history``, and their total UTF-8 bytes.
    copilot_max_history_entries: int = Field(default=20, ge=0, le=1000)
    copilot_max_history_bytes: int = Field(default=16 * 1024, ge=0, le=1024 * 1024)
    #: Most steps in one plan (and operations in one duplicate).
    copilot_max_steps: int = Field(default=20, ge=1, le=200)
    #: Most operations one preview or apply runs in all, those inside
    #: duplicate_template steps included.
    copilot_max_operations: int = Field(default=40, ge=1, le=2000)
    #: The copilot's worker processes (planning and applying parse the
    #: template; a hostile one can make that slow): how many, the seconds one
    #: piece of work may take before its worker is killed (a 422), each
    #: worker's address space, and the callers that may wait for a worker
    #: before more get a 429.
    copilot_workers: int = Field(default=1, ge=1, le=16)
    copilot_work_timeout: float = Field(default=10.0, gt=0, le=300)
    copilot_work_memory: int = Field(default=512 * 1024 * 1024, ge=128 * 1024 * 1024,
                                     le=64 * 1024 * 1024 * 1024)
    copilot_queue: int = Field(default=8, ge=0, le=1000)
    #: Most background variants one prompt may ask for.
    copilot_max_variants: int = Field(default=10, ge=1, le=50)
    #: How much of the template's HTML the model is shown, in UTF-8 bytes.
    copilot_max_model_html_bytes: int = Field(default=32 * 1024, ge=1024, le=4 * 1024 * 1024)
    #: Largest model reply read, in bytes, and seconds the model may take.
    copilot_max_reply_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    copilot_model_timeout: float = Field(default=30.0, gt=0, le=600)
    #: Seconds a plan is kept for preview and apply, and plans kept per
    #: template (older ones are dropped as new ones come).
    copilot_plan_seconds: float = Field(default=24 * 3600.0, gt=0, le=30 * 24 * 3600.0)
    copilot_max_plans_per_template: int = Field(default=20, ge=1, le=1000)

    @field_validator("copilot_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL of a chat-completions endpoint")
        return value
