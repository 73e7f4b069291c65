from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from litho.config import BaseServiceSettings
from litho.jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NUMBER_CHARS, JsonLimits
from litho.production import Secret

MIB = 1024 * 1024

#: JSON limits when a caller passes none (the defaults of
#: LITHO_BINDING_JSON_MAX_DEPTH and LITHO_BINDING_JSON_MAX_NUMBER_CHARS).
DEFAULT_JSON_LIMITS = JsonLimits(
    depth_setting="LITHO_BINDING_JSON_MAX_DEPTH",
    number_setting="LITHO_BINDING_JSON_MAX_NUMBER_CHARS",
)


class BindingSettings(BaseServiceSettings):
    #: What a production start requires set, and not a development value (litho.production).
    PRODUCTION_SECRETS: ClassVar[tuple[Secret, ...]] = (
        Secret("binding_secret_key", listed=True, dev_file="binding-secret-key"),)
    #: Comma-separated keys that seal credentials and push secrets, each at
    #: least 32 characters: the first seals, every one opens (add a new key in
    #: front to rotate, drop the old one once everything is re-sealed).
    #: Required: the service refuses to start without it.
    binding_secret_key: str = Field(default="", max_length=10_000, repr=False)
    #: Seconds one fetch of a data source may take, redirects included.
    binding_fetch_timeout: float = Field(default=10.0, gt=0, le=120)
    #: Largest answer of a data source read, in bytes; a longer one is a failed fetch.
    binding_max_data_bytes: int = Field(default=MIB, ge=1024, le=64 * MIB)
    #: Largest body pushed to ``/b/{id}/push``, in bytes (the gateway answers 413).
    binding_max_push_bytes: int = Field(default=MIB, ge=1024, le=64 * MIB)
    #: Shortest ``ttlSeconds`` a binding's refresh policy may ask for.
    binding_min_ttl_seconds: int = Field(default=10, ge=1, le=24 * 3600)
    #: Shortest gap, in seconds, between two fires of a binding's cron policy.
    binding_min_cron_interval: float = Field(default=300.0, ge=60, le=7 * 24 * 3600)
    #: Most bindings one tenant may have.
    binding_max_per_tenant: int = Field(default=1000, ge=1, le=1_000_000)
    #: Seconds between the scheduler's looks for cron bindings that are due.
    binding_scheduler_interval: float = Field(default=1.0, gt=0, le=60)
    #: Most data sources fetched for one render of a template.
    binding_max_template_sources: int = Field(default=5, ge=1, le=50)
    #: Seconds a template data source's cached answer is kept past its
    #: ``ttlSeconds`` (for revalidation with ETag / Last-Modified) before it is swept.
    binding_source_cache_retention: float = Field(default=3600.0, ge=0, le=30 * 24 * 3600)
    #: Most cached answers of template data sources kept for one tenant: past
    #: it, new answers are served but not stored (until the sweep frees room).
    binding_max_cache_entries_per_tenant: int = Field(default=10_000, ge=1, le=10_000_000)
    #: Largest answer of a template's data source read, in bytes (a template
    #: may fetch several per render, and for every page of a document).
    binding_max_source_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * MIB)
    #: Most fetches of data sources one tenant has under way at once (bindings,
    #: refreshes, tests, previews and template sources together); more wait
    #: their turn, first come first served.
    binding_tenant_fetches: int = Field(default=4, ge=1, le=1000)
    #: Most fetches one tenant may have waiting for a turn; past it a fetch is
    #: refused at once with 429.
    binding_tenant_fetch_queue: int = Field(default=64, ge=0, le=100_000)
    #: Most fetches of data sources under way at once for all tenants. Keep it
    #: below the outbound guard's connection pool (100 connections).
    binding_max_fetches: int = Field(default=32, ge=1, le=90)
    #: Deepest nesting of objects and arrays in a source's data, a push or
    #: defaults: the template service maps the data, and holds it to its own
    #: limit (``LITHO_TEMPLATE_JSON_MAX_DEPTH``), so keep the two equal.
    binding_json_max_depth: int = Field(default=DEFAULT_MAX_DEPTH, gt=0, le=90)
    #: Longest number literal accepted in that JSON, in characters.
    binding_json_max_number_chars: int = Field(default=DEFAULT_MAX_NUMBER_CHARS, gt=0, le=1000)

    def json_limits(self) -> JsonLimits:
        return JsonLimits(
            max_depth=self.binding_json_max_depth,
            max_number_chars=self.binding_json_max_number_chars,
            depth_setting="LITHO_BINDING_JSON_MAX_DEPTH",
            number_setting="LITHO_BINDING_JSON_MAX_NUMBER_CHARS",
        )
