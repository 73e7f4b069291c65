from __future__ import annotations

import os
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from litho.config import BaseServiceSettings, BatchSettings
from litho.production import Secret


def _default_concurrency() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class RendererSettings(BaseServiceSettings, BatchSettings):
    #: What a production start requires set, and not a development value (litho.production).
    PRODUCTION_SECRETS: ClassVar[tuple[Secret, ...]] = (
        Secret("renderer_render_id_secret", dev_file="render-id-secret"),)
    #: Chromium binary; empty means Playwright's own download, if installed.
    chromium_path: str = Field(default="")
    #: Pages rendering at once.
    renderer_concurrency: int = Field(default_factory=_default_concurrency, ge=1, le=64)
    #: Renders allowed to wait for a page; one more is refused (429).
    renderer_max_queue: int = Field(default=64, ge=0, le=10_000)
    #: Chromium is restarted after this many renders, to bound its memory.
    renderer_restart_after: int = Field(default=1000, ge=1)
    #: A page is swapped for a fresh one after this many renders (0: never),
    #: which bounds Chromium's per-page memory between restarts.
    renderer_page_recycle_after: int = Field(default=100, ge=0)
    #: Seconds one render may take, page load and capture together; a render
    #: also waits at most this long for a page. Keep twice this under
    #: LITHO_RPC_DEADLINE, so callers hear the renderer's own answer.
    renderer_timeout: float = Field(default=25.0, gt=0, le=300)
    #: Seconds a tenant's renders are refused (429) after one of its renders
    #: overran the timeout: an overrun restarts Chromium under every
    #: tenant's renders, so one tenant may cause that at most once a period.
    renderer_overrun_cooldown: float = Field(default=30.0, ge=0, le=3600)
    #: Largest output width or height, in device pixels.
    renderer_max_dimension: int = Field(default=5000, gt=0, le=16384)
    #: Largest width × height × deviceScaleFactor² of one output.
    renderer_max_pixels: int = Field(default=40_000_000, gt=0)
    renderer_max_scale: float = Field(default=4.0, ge=1, le=8)
    renderer_max_gif_fps: int = Field(default=30, ge=1, le=50)  # GIF delays: 20 ms at least
    #: Longest GIF, and the cap of "the longest animation" when no duration is given.
    renderer_max_gif_duration_ms: int = Field(default=10_000, ge=1)
    renderer_max_gif_frames: int = Field(default=300, ge=1)
    #: Most pages in one PDF, CSS page breaks included (pages past it are
    #: never printed: the render is a 422). ~30-65 ms a page on 2 busy cores.
    renderer_max_pdf_pages: int = Field(default=100, ge=1)
    #: Most variable sets in one multi-page PDF: each is a page load and a
    #: print of its own, 60-300 ms on 2 cores depending on their load.
    renderer_max_pdf_documents: int = Field(default=30, ge=1)
    #: Most frames × width × height × deviceScaleFactor² captured for one GIF;
    #: a GIF without a duration gets fewer frames (a longer delay) to fit.
    renderer_max_gif_pixels: int = Field(default=60_000_000, gt=0)
    #: Most pixels of one WebP: Chromium's WebP encoder is the slowest.
    renderer_max_webp_pixels: int = Field(default=16_000_000, gt=0)
    #: Most ``data-fit`` elements in one document (fit-to-box text); each
    #: takes up to ~13 layouts, ~0.1-1 ms each.
    renderer_fit_max_elements: int = Field(default=100, ge=0, le=10_000)
    #: Largest ``data-fit-min``/``data-fit-max``, in CSS px; it also bounds
    #: the binary search of one element (log2 of twice this, plus 2, layouts).
    renderer_fit_max_font_size: float = Field(default=1000.0, ge=1, le=100_000)
    #: Uploaded fonts one render declares, and their bytes in all: each is
    #: read whole and copied to Chromium, so a tenant naming a hundred large
    #: fonts in one document cannot fill the renderer's memory. Fonts past
    #: the budget are left out with a warning naming these settings.
    renderer_max_fonts_per_render: int = Field(default=20, ge=0, le=1000)
    renderer_max_font_bytes_per_render: int = Field(default=16 * 1024 * 1024, ge=0)
    #: Bytes of uploaded fonts kept in memory between renders (per tenant entries).
    renderer_font_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    #: A signed URL whose render had warnings (an asset did not load) serves
    #: that output for this many seconds before rendering again, so a hot URL
    #: is not a render on every GET; API renders always render again.
    renderer_warned_reuse_seconds: float = Field(default=10.0, ge=0, le=3600)
    #: Subresources (images, fonts, CSS) fetched through the guard are cached
    #: in memory for this many seconds, up to this many bytes in all.
    renderer_subresource_ttl: float = Field(default=300.0, ge=0)
    renderer_subresource_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    #: Every document is rendered at this URL, so relative URLs in templates
    #: resolve against it and nothing else; part of every cache key. Under
    #: ``.invalid`` (never resolvable) by default: relative URLs load nothing.
    #: Use http, not https, unless every subresource is https (mixed content).
    renderer_base_url: str = Field(default="http://document.invalid/",
                                   pattern=r"^https?://[^/?#@\s]+/[^?#\s]*$")
    #: Key of the keyed hash that makes render ids (and so image URLs): at
    #: least 32 bytes, kept secret, never changed (a new one orphans every
    #: stored output). No default: ``make run`` generates one in the data dir.
    renderer_render_id_secret: SecretStr = Field()
    #: Batch items this replica takes from the work queue at once (0: twice
    #: its pages, so an item is ready whenever a page frees). Interactive
    #: renders still get every free page first.
    renderer_batch_in_flight: int = Field(default=0, ge=0, le=256)
    #: Seconds JetStream waits for a batch item's ack before giving it to
    #: another replica (a running item renews it every third of this): how
    #: soon a replica's death is noticed.
    renderer_batch_ack_wait: float = Field(default=30.0, ge=1, le=3600)
    #: Deliveries a batch item gets for transient failures (the browser or the
    #: template service away) before it is recorded as failed.
    renderer_batch_max_deliver: int = Field(default=5, ge=1, le=100)
    #: For this many seconds after an interactive render asked for a page,
    #: batch items hold at most all pages but one (so the next interactive
    #: render need not wait for a batch item to finish); without interactive
    #: renders they use every page.
    renderer_batch_yield_seconds: float = Field(default=2.0, ge=0, le=3600)
    #: Seconds between sweeps for expired batches (LITHO_BATCH_RETENTION) and
    #: unsent batch events.
    renderer_batch_sweep_interval: float = Field(default=60.0, gt=0, le=86_400)

    #: Bindings this replica pre-renders at once after ``binding.updated``
    #: (at background priority, behind interactive renders).
    renderer_prerender_in_flight: int = Field(default=2, ge=1, le=64)
    #: Deliveries a ``binding.updated`` event gets for transient failures
    #: (the pool full, a peer away) before its pre-render is given up; the
    #: next GET of the image renders it then.
    renderer_prerender_max_deliver: int = Field(default=5, ge=1, le=100)
    #: Seconds a replica keeps a binding's resolved variables for
    #: ``GET /b/{id}.{ext}`` (never past the data's freshness; a change note
    #: from the binding service drops it at once); 0 asks every time.
    renderer_binding_memo_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: Bytes of resolved bindings a replica keeps (their variables' text).
    renderer_binding_memo_bytes: int = Field(default=16 * 2**20, ge=0, le=2**32)
    #: Bytes of templates' data sources a replica keeps while their data is
    #: fresh (within each source's ttlSeconds), so such a render needs no
    #: hop to the binding service; 0 asks it every time.
    renderer_data_source_memo_bytes: int = Field(default=32 * 2**20, ge=0, le=2**34)

    @field_validator("renderer_base_url")
    @classmethod
    def _canonical(cls, value: str) -> str:
        # Chromium navigates to the canonical form of a URL; the pool knows its
        # own navigation by the exact text, so anything else would never match.
        parts = urlsplit(value)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = -1
        default = 443 if parts.scheme == "https" else 80
        netloc = (f"[{host}]" if ":" in host else host) + (
            f":{port}" if port is not None and port != default else "")
        path_ok = all(segment not in (".", "..") for segment in parts.path.split("/"))
        if parts.netloc != netloc or port == -1 or not path_ok or not parts.path.endswith("/"):
            raise ValueError("must be a canonical URL: a lowercase host, no user, no "
                             "default port, no dot segments, and a path ending in '/', "
                             "such as http://document.invalid/")
        return value

    @field_validator("renderer_render_id_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (e.g. the output of "
                             "`python -c 'import secrets; print(secrets.token_hex(32))'`)")
        return value
