from __future__ import annotations

import re

from pydantic import Field, field_validator

from litho.config import BaseServiceSettings, BatchSettings
from litho.jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NUMBER_CHARS, JsonLimits
from services.gateway._image_urls import check_image_base_url
from services.gateway._ratelimit import Limits

#: Crawlers, search engines and link previewers (chat apps, social networks,
#: embedders) that fetch images without a person looking at them.
DEFAULT_BOT_USER_AGENTS = (
    r"(?<!cu)bot(?:[/;_ (-]|$)|crawler|spider|crawling|slurp|facebookexternalhit|"
    r"facebookcatalog|"
    r"meta-externalagent|slack-imgproxy|slackbot|twitterbot|linkedinbot|discordbot|"
    r"telegrambot|whatsapp|pinterest|redditbot|applebot|googlebot|google-pagerenderer|"
    r"googleother|bingbot|bingpreview|duckduckbot|yandex|baiduspider|embedly|iframely|"
    r"skypeuripreview|vkshare|mastodon|bluesky|headlesschrome|preview"
)


class GatewaySettings(BaseServiceSettings, BatchSettings):
    gateway_host: str = Field(default="127.0.0.1")
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    #: Base of the image URLs in responses; defaults to http://<host>:<port>.
    public_url: str = Field(default="")
    #: Where image URLs in responses point instead of the gateway's /images/:
    #: a CDN or the bucket's public endpoint, as ``<this>/<blob key>``
    #: (``LITHO_IMAGE_BASE_URL``; see services/gateway/_image_urls.py).
    image_base_url: str = Field(default="")
    #: Join the trace a client's ``traceparent`` names (and forward its
    #: ``tracestate`` and ``baggage``). Off: the edge is public, so a client
    #: could pick trace ids, switch tracing off or force sampling; each
    #: request then starts its own trace, linked to the client's.
    gateway_trust_client_trace: bool = Field(default=False)
    #: Largest request body accepted, in bytes.
    gateway_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Largest font upload read (``POST /v1/fonts``), in bytes. Keep it at or
    #: below the template service's LITHO_TEMPLATE_MAX_FONT_BYTES (both 10 MiB
    #: by default): that service accepts gRPC messages only up to its limit.
    gateway_max_font_bytes: int = Field(default=10 * 1024 * 1024, gt=0, le=64 * 1024 * 1024)
    #: max-age, in seconds, of images served at signed /r/ URLs.
    gateway_signed_url_max_age: int = Field(default=3600, ge=0)
    #: Largest body of a push to a binding (``POST /b/{id}/push``), in bytes;
    #: more is a 413 before the rest is read. The binding service refuses
    #: larger pushes too (the same setting name).
    binding_max_push_bytes: int = Field(default=1024 * 1024, gt=0, le=64 * 1024 * 1024)
    #: Seconds a replica keeps a verified API key in memory: the bound on how
    #: long a deleted key may still work on a replica that missed the
    #: deletion's note (a replica that gets it drops the key at once); 0
    #: reads the key store on every request.
    gateway_key_cache_ttl: float = Field(default=5.0, ge=0, le=300)
    #: Most API keys a tenant holds (``POST /v1/keys`` past it is a 429).
    gateway_max_keys_per_tenant: int = Field(default=100, ge=1, le=10_000)
    #: Seconds between two writes of a key's ``lastUsedTime`` by one replica.
    gateway_key_last_used_interval: float = Field(default=60.0, ge=1, le=86_400)
    #: Deepest nesting of objects and arrays accepted in a JSON body: every
    #: later layer (gRPC, the template service, the document store) must be
    #: able to read a stored value back, and Python's decoders stop near 1,000.
    gateway_json_max_depth: int = Field(default=DEFAULT_MAX_DEPTH, gt=0, le=100)
    #: Longest number literal accepted in a JSON body, in characters.
    gateway_json_max_number_chars: int = Field(default=DEFAULT_MAX_NUMBER_CHARS, gt=0, le=1000)

    #: Experiments' public images (``/s/``): a User-Agent this regular
    #: expression finds (case-insensitive) is a known crawler or link-preview
    #: bot, served the control and counted as ``botImpressions``, never as an
    #: impression, and given no cookie. Replace it whole to change the list.
    gateway_bot_user_agents: str = Field(default=DEFAULT_BOT_USER_AGENTS, min_length=1,
                                         max_length=10_000)
    #: Seconds a replica keeps an experiment for its public URLs (a change
    #: note from the experiment service drops it at once); 0 asks every time.
    gateway_experiment_memo_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: Bytes of experiments a replica keeps (their variants' variables).
    gateway_experiment_memo_bytes: int = Field(default=16 * 2**20, ge=0, le=2**32)
    #: Seconds a variant's render is reused before the renderer is asked again
    #: (a new template version shows after at most this long).
    gateway_experiment_render_seconds: float = Field(default=10.0, ge=0, le=3600)
    #: Bytes of experiment images a replica keeps in memory (by render id).
    gateway_experiment_image_bytes: int = Field(default=64 * 2**20, ge=0, le=2**34)

    #: The web pages (``/``, ``/docs``, ``/editor``) and the files under
    #: ``/assets/``; empty: the repository's ``web/``.
    gateway_web_dir: str = Field(default="")
    #: Where npm installed the browser libraries ``/assets/vendor/`` serves
    #: (an allow-list of their files, nothing else); empty: the repository's
    #: ``node_modules/``.
    gateway_node_modules_dir: str = Field(default="")
    #: Bytes of web files a replica keeps in memory once read (gzipped copies
    #: included); past it, a file is read from disk for each request; 0
    #: reads every time (edits show at once).
    gateway_web_max_bytes: int = Field(default=32 * 2**20, ge=0, le=2**32)
    #: max-age, in seconds, of files under ``/assets/`` (pages are
    #: ``no-cache``; both carry an ETag).
    gateway_web_asset_max_age: int = Field(default=3600, ge=0, le=31_536_000)


    # Rate limits and quotas (docs/architecture.md, "Rate limits"): 0 is no
    # limit. Per-tenant overrides: python -m services.gateway.limits set …
    #: Requests per second of a tenant, all its keys together (a token bucket
    #: shared by every replica), and its burst.
    gateway_rate_limit_per_second: float = Field(default=0.0, ge=0, le=1_000_000)
    gateway_rate_limit_burst: int = Field(default=100, ge=1, le=10_000_000)
    #: The same for each API key (so one leaked key cannot take the whole rate).
    gateway_key_rate_limit_per_second: float = Field(default=0.0, ge=0, le=1_000_000)
    gateway_key_rate_limit_burst: int = Field(default=100, ge=1, le=10_000_000)
    #: Renders a tenant may make per calendar month (UTC); batch items count.
    gateway_renders_per_month: int = Field(default=0, ge=0, le=10**12)
    #: Most tokens a replica takes from a shared bucket at once, as a share of
    #: the burst (more: fewer store calls, a looser shared limit), and seconds
    #: it may keep them.
    gateway_rate_limit_lease_fraction: float = Field(default=0.1, gt=0, le=1)
    gateway_rate_limit_lease_seconds: float = Field(default=1.0, gt=0, le=60)
    #: Seconds a replica keeps a tenant's limits (how long an override takes).
    gateway_rate_limit_overrides_ttl: float = Field(default=30.0, ge=0, le=3600)
    #: Seconds a counter update may take before the request goes through uncounted.
    gateway_rate_limit_store_timeout: float = Field(default=0.5, gt=0, le=30)
    # Idempotency-Key (docs/architecture.md, "Idempotency").
    #: Seconds a first response is kept and replayed.
    gateway_idempotency_seconds: float = Field(default=86_400.0, gt=0, le=604_800)
    #: Largest response body kept (a larger one is not run again: a 409).
    gateway_idempotency_max_response_bytes: int = Field(default=1024 * 1024, gt=0,
                                                        le=8 * 1024 * 1024)
    #: Seconds a duplicate waits for the first before a 409.
    gateway_idempotency_wait_seconds: float = Field(default=10.0, ge=0, le=60)
    #: Seconds a running request's claim lasts (renewed every third of it).
    gateway_idempotency_lock_seconds: float = Field(default=30.0, ge=1, le=600)
    #: Seconds between deletes of expired records.
    gateway_idempotency_sweep_seconds: float = Field(default=600.0, ge=1, le=86_400)
    #: Most records one tenant holds (each up to …_MAX_RESPONSE_BYTES); a new
    #: key past it is a 429 until older records expire.
    gateway_idempotency_max_keys_per_tenant: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Seconds a /readyz answer is kept (probes at any rate ask the backends
    #: at most once per this).
    gateway_ready_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    #: Seconds each /readyz check may take before its part counts as not ready.
    gateway_ready_timeout: float = Field(default=0.8, gt=0, le=30)

    def rate_limits(self) -> Limits:
        """The default limits of every tenant (overrides aside)."""
        return Limits(per_second=self.gateway_rate_limit_per_second,
                      burst=self.gateway_rate_limit_burst,
                      key_per_second=self.gateway_key_rate_limit_per_second,
                      key_burst=self.gateway_key_rate_limit_burst,
                      renders_per_month=self.gateway_renders_per_month)

    def bot_pattern(self) -> re.Pattern[str]:
        return re.compile(self.gateway_bot_user_agents, re.IGNORECASE)

    @field_validator("gateway_bot_user_agents")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("image_base_url")
    @classmethod
    def _image_base(cls, value: str) -> str:
        return check_image_base_url(value)

    def json_limits(self) -> JsonLimits:
        return JsonLimits(
            max_depth=self.gateway_json_max_depth,
            max_number_chars=self.gateway_json_max_number_chars,
            depth_setting="LITHO_GATEWAY_JSON_MAX_DEPTH",
            number_setting="LITHO_GATEWAY_JSON_MAX_NUMBER_CHARS",
        )

    def base_url(self, bound_port: int) -> str:
        return (self.public_url or f"http://{self.gateway_host}:{bound_port}").rstrip("/")
