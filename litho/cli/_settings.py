"""The command's settings: flags first, then ``LITHO_*`` variables."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from litho.cli._errors import UsageError


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LITHO_", frozen=True, extra="ignore")

    #: The gateway's base URL (``LITHO_URL``), e.g. ``https://litho.example.com``.
    url: str = ""
    #: The API key (``LITHO_API_KEY``); it decides the tenant.
    api_key: str = Field(default="", repr=False)
    #: Seconds one API call may take (a render included).
    cli_timeout: float = Field(default=120.0, gt=0, le=3600)
    #: Most templates ``pull`` and ``push`` read from the server.
    cli_max_templates: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Largest ``template.html`` or ``template.json`` read, in bytes.
    cli_max_file_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: Largest JSON answer read from the API, in bytes.
    cli_max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: Largest rendered file ``render`` downloads, in bytes.
    cli_max_download_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    #: API calls in flight at once (push validates templates concurrently).
    cli_concurrency: int = Field(default=4, ge=1, le=64)
    #: Times a call answered 429 or 503 is retried, after its Retry-After.
    cli_retries: int = Field(default=3, ge=0, le=20)
    #: Longest wait for one retry, in seconds, whatever Retry-After says.
    cli_max_retry_wait: float = Field(default=30.0, ge=0, le=600)


def load_settings(url: str | None, key: str | None) -> CliSettings:
    """Flags win over the environment; a missing URL or key is a usage error
    that says what to set."""
    overrides = {name: value for name, value in (("url", url), ("api_key", key))
                 if value is not None}
    try:
        settings = CliSettings().model_copy(update=overrides)
    except ValidationError as exc:
        problems = ["LITHO_" + "_".join(str(p) for p in e["loc"]).upper() + f": {e['msg']}"
                    for e in exc.errors()]
        raise UsageError("invalid settings: " + "; ".join(problems)) from exc
    if not settings.url:
        raise UsageError("no Litho URL: pass --url or set LITHO_URL "
                         "(for example http://127.0.0.1:8080)")
    parts = urlsplit(settings.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--url / LITHO_URL must be an http(s) URL, not {settings.url!r}")
    if not settings.api_key:
        raise UsageError("no API key: pass --key or set LITHO_API_KEY")
    return settings
