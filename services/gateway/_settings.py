from __future__ import annotations

from pydantic import Field

from litho.config import BaseServiceSettings


class GatewaySettings(BaseServiceSettings):
    gateway_host: str = Field(default="127.0.0.1")
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    #: Base of the image URLs in responses; defaults to http://<host>:<port>.
    public_url: str = Field(default="")
    template_grpc_target: str = Field(default="127.0.0.1:50051")
    renderer_grpc_target: str = Field(default="127.0.0.1:50052")
    #: Largest request body accepted, in bytes.
    gateway_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: max-age, in seconds, of images served at signed /r/ URLs.
    gateway_signed_url_max_age: int = Field(default=3600, ge=0)
    #: Seconds a verified API key stays cached in memory.
    gateway_key_cache_ttl: float = Field(default=30.0, ge=0)

    def base_url(self, bound_port: int) -> str:
        return (self.public_url or f"http://{self.gateway_host}:{bound_port}").rstrip("/")
