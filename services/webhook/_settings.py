from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from litho import renders
from litho.config import BaseServiceSettings
from services.webhook._policy import parse_schedule

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"


class WebhookSettings(BaseServiceSettings):
    #: Where the gateway serves images: a render.completed delivery's ``url``
    #: is ``<this>/images/<renderId>.<ext>`` unless ``image_base_url`` is set.
    #: Unset, the gateway's own ``LITHO_PUBLIC_URL``, else
    #: ``http://127.0.0.1:8080`` (see :attr:`image_base`).
    webhook_public_url: str = Field(default="", max_length=1000)
    #: The gateway's ``LITHO_PUBLIC_URL``, read only as the fallback above.
    public_url: str = Field(default="", max_length=1000)
    #: The gateway's ``LITHO_IMAGE_BASE_URL``: set, a render.completed
    #: delivery's ``url`` is ``<this>/<blob key>``, as in the API's answers
    #: (:func:`litho.renders.image_url`), instead of the gateway's /images/.
    image_base_url: str = Field(default="")
    #: Seconds one delivery attempt may take (connect, send, answer); a target
    #: that takes longer is a failed attempt.
    webhook_timeout: float = Field(default=10.0, gt=0, le=120)
    #: Delays before each retry of a failed delivery, comma-separated, each a
    #: number with an optional unit ms, s, m, h or d: a delivery is attempted once
    #: plus once per entry, then it has failed.
    webhook_retry_schedule: str = "5s,5m,30m,2h,5h,10h,24h"
    #: Longest a target's ``Retry-After`` may push a retry out, in seconds (it
    #: never brings one forward: the later of the two is used).
    webhook_retry_after_max: float = Field(default=3600.0, ge=0, le=7 * 24 * 3600)
    #: Failed attempts in a row (across deliveries) that pause a subscription;
    #: a successful attempt resets the count.
    webhook_pause_after_failures: int = Field(default=15, ge=1, le=10_000)
    #: Most subscriptions one tenant may have.
    webhook_max_subscriptions: int = Field(default=100, ge=1, le=100_000)
    #: Longest description and target URL, in characters.
    webhook_max_description_chars: int = Field(default=500, ge=0, le=10_000)
    webhook_max_url_chars: int = Field(default=2048, ge=20, le=8192)
    #: Most bytes of a target's answer read (only its status matters); a
    #: longer answer is a failed attempt.
    webhook_response_max_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    #: Attempts running at once in this process.
    webhook_max_in_flight: int = Field(default=32, ge=1, le=1000)
    #: Attempt jobs queued or running at once across every replica (the
    #: delivery consumer's max_ack_pending). A delivery waiting for a retry
    #: holds no job: it is stored with its next attempt time, and the
    #: scheduler queues a job when that time comes.
    webhook_max_pending: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Attempts of one tenant's deliveries running at once in this process;
    #: a job past it goes back to the scheduler, to be queued again shortly.
    webhook_max_in_flight_per_tenant: int = Field(default=4, ge=1, le=1000)
    #: Deliveries one tenant may have pending (waiting for an attempt or a
    #: retry); past it, a new delivery is logged as failed at once and a
    #: redelivery is refused (429), so one tenant cannot flood the queue.
    webhook_max_pending_per_tenant: int = Field(default=1000, ge=1, le=1_000_000)
    #: Seconds between the scheduler's looks for deliveries whose next attempt
    #: is due (each is queued as one job).
    webhook_scheduler_interval: float = Field(default=1.0, gt=0, le=60)
    #: Seconds a queued job has to start its attempt; a delivery whose job was
    #: lost (terminated, or its worker died) is queued again after it.
    webhook_queue_lease: float = Field(default=300.0, ge=1, le=24 * 3600)
    #: Seconds a subscription's previous secret keeps signing (alongside the
    #: new one) after a rotation, so receivers can switch without a gap.
    webhook_rotation_overlap: float = Field(default=24 * 3600.0, ge=0, le=30 * 24 * 3600)
    #: Seconds a batch's registered webhook is kept waiting for its batch to finish.
    webhook_batch_retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: Seconds a delivery stays in the log.
    webhook_delivery_retention: float = Field(default=30 * 24 * 3600.0, gt=0)
    #: Seconds between sweeps of expired batch webhooks and old deliveries.
    webhook_sweep_interval: float = Field(default=3600.0, gt=0)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)  # raises ValueError with what is wrong
        return value

    @field_validator("webhook_public_url", "public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("image_base_url")
    @classmethod
    def _image_base_url(cls, value: str) -> str:
        return renders.check_image_base_url(value)

    @model_validator(mode="after")
    def _within_retention(self) -> Self:
        delays = self.retry_delays
        longest = sum(delays) + len(delays) * self.webhook_retry_after_max
        if longest >= self.webhook_delivery_retention:
            raise ValueError(
                f"LITHO_WEBHOOK_RETRY_SCHEDULE plus {len(delays)} x "
                f"LITHO_WEBHOOK_RETRY_AFTER_MAX can reach {longest:g} s; a delivery is "
                f"kept {self.webhook_delivery_retention:g} s "
                "(LITHO_WEBHOOK_DELIVERY_RETENTION), so shorten one of them")
        return self

    @property
    def attempt_lease(self) -> float:
        """Seconds an attempt holds its delivery: the timeout, and room to log it."""
        return self.webhook_timeout + 30.0

    @property
    def image_base(self) -> str:
        return self.webhook_public_url or self.public_url or DEFAULT_PUBLIC_URL

    @property
    def retry_delays(self) -> tuple[float, ...]:
        return parse_schedule(self.webhook_retry_schedule)
