from __future__ import annotations

from pydantic import Field

from litho.config import BaseServiceSettings, BatchSettings
from litho.jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NUMBER_CHARS, JsonLimits


class GatewaySettings(BaseServiceSettings, BatchSettings):
    gateway_host: str = Field(default="127.0.0.1")
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    #: Base of the image URLs in responses; defaults to http://<host>:<port>.
    public_url: str = Field(default="")
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
    #: Seconds a verified API key stays cached in memory.
    gateway_key_cache_ttl: float = Field(default=30.0, ge=0)
    #: Deepest nesting of objects and arrays accepted in a JSON body: every
    #: later layer (gRPC, the template service, the document store) must be
    #: able to read a stored value back, and Python's decoders stop near 1,000.
    gateway_json_max_depth: int = Field(default=DEFAULT_MAX_DEPTH, gt=0, le=100)
    #: Longest number literal accepted in a JSON body, in characters.
    gateway_json_max_number_chars: int = Field(default=DEFAULT_MAX_NUMBER_CHARS, gt=0, le=1000)

    def json_limits(self) -> JsonLimits:
        return JsonLimits(
            max_depth=self.gateway_json_max_depth,
            max_number_chars=self.gateway_json_max_number_chars,
            depth_setting="LITHO_GATEWAY_JSON_MAX_DEPTH",
            number_setting="LITHO_GATEWAY_JSON_MAX_NUMBER_CHARS",
        )

    def base_url(self, bound_port: int) -> str:
        return (self.public_url or f"http://{self.gateway_host}:{bound_port}").rstrip("/")
