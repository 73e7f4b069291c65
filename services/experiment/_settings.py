from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from litho.config import BaseServiceSettings
from litho.jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NUMBER_CHARS, JsonLimits
from litho.production import Secret

KIB = 1024
MIB = 1024 * KIB

#: JSON limits when a caller passes none (the defaults of
#: LITHO_EXPERIMENT_JSON_MAX_DEPTH and LITHO_EXPERIMENT_JSON_MAX_NUMBER_CHARS).
DEFAULT_JSON_LIMITS = JsonLimits(
    depth_setting="LITHO_EXPERIMENT_JSON_MAX_DEPTH",
    number_setting="LITHO_EXPERIMENT_JSON_MAX_NUMBER_CHARS",
)


class ExperimentSettings(BaseServiceSettings):
    """Every number of the experiment service, ``LITHO_EXPERIMENT_*`` in the
    environment (each field's comment says what it bounds)."""

    #: What a production start requires set, and not a development value (litho.production).
    PRODUCTION_SECRETS: ClassVar[tuple[Secret, ...]] = (
        Secret("experiment_handle_key", dev_file="experiment-handle-key"),)

    #: Most experiments one tenant may have, archived ones included.
    experiment_max_per_tenant: int = Field(default=1000, ge=1, le=1_000_000)
    #: Most variants of one experiment (at least two make an experiment).
    experiment_max_variants: int = Field(default=10, ge=2, le=100)
    #: Largest ``variables`` of one variant, in UTF-8 bytes of JSON.
    experiment_max_variables_bytes: int = Field(default=64 * KIB, ge=KIB, le=MIB)
    #: Largest sum of all variants' ``variables``, in UTF-8 bytes: a listing
    #: page of 100 experiments stays well under gRPC's message limits, and a
    #: document under MongoDB's 16 MB.
    experiment_max_total_variables_bytes: int = Field(default=256 * KIB, ge=KIB, le=2 * MIB)
    #: Monte Carlo draws per variant behind the statistics' probabilities.
    experiment_stats_draws: int = Field(default=100_000, ge=1000, le=1_000_000)
    #: Deepest nesting of objects and arrays in a variant's variables: the
    #: template service renders them and holds them to its own limit
    #: (``LITHO_TEMPLATE_JSON_MAX_DEPTH``), so keep the two equal.
    experiment_json_max_depth: int = Field(default=DEFAULT_MAX_DEPTH, gt=0, le=90)
    #: Longest number literal accepted in that JSON, in characters.
    experiment_json_max_number_chars: int = Field(default=DEFAULT_MAX_NUMBER_CHARS, gt=0,
                                                  le=1000)

    #: Most weight epochs one experiment keeps (each bandit reweighting adds
    #: one); past it the second and third merge (the second's start, the
    #: third's weights). The first is never merged: visitor ids a caller gives
    #: (``?vid=``) are assigned with it for as long as the experiment runs.
    experiment_max_epochs: int = Field(default=1000, ge=2, le=10_000)
    #: Seconds from a bandit reweighting to the start of its epoch, so that
    #: every gateway has learnt of the epoch before visitors are first seen in
    #: it. Keep it above LITHO_GATEWAY_EXPERIMENT_MEMO_SECONDS (how long a
    #: gateway keeps a resolved experiment, 30 s by default).
    experiment_epoch_delay: float = Field(default=60.0, ge=0, le=24 * 3600.0)
    #: Key of the tenants' public handles (/s/{handle}/…): an HMAC of the
    #: tenant id, so nobody can compute a tenant's handle from its name. Set it
    #: once (at least 32 characters; the dev stack generates one into the data
    #: directory) and keep it: an experiment keeps the handle it was created with,
    #: so after a new key a tenant's new experiments live under another handle.
    #: Empty: plain hashes (logged as a warning).
    experiment_handle_key: str = Field(default="", max_length=10_000, repr=False)

    @field_validator("experiment_handle_key")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters")
        return value
    #: Seconds the counter gathers deliveries before one flush stores them
    #: (a delivery is acked only once its flush stored it).
    experiment_count_flush_seconds: float = Field(default=0.05, gt=0, le=10.0)
    #: Deliveries that make a flush at once, before its time is up.
    experiment_count_flush_events: int = Field(default=1000, ge=1, le=100_000)
    #: Deliveries one counter replica holds at once (handled, not yet acked).
    experiment_counter_max_in_flight: int = Field(default=1000, ge=1, le=100_000)
    #: Deliveries not yet acked across every counter replica (the server
    #: stops delivering at this bound); keep it above replicas x max_in_flight.
    experiment_counter_max_ack_pending: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Seconds JetStream waits for a counter's ack before delivering again.
    experiment_counter_ack_wait: float = Field(default=30.0, gt=0, le=3600.0)
    #: Seconds between reads of the counter consumer's ack floor (what every
    #: counter document forgets of the deliveries it applied).
    experiment_counter_floor_seconds: float = Field(default=1.0, gt=0, le=600.0)
    #: Seconds between bandit rounds: each running experiment with the bandit
    #: on and its warm-up reached gets a new epoch of Thompson sampling weights.
    experiment_bandit_interval: float = Field(default=300.0, gt=0, le=7 * 24 * 3600.0)
    #: Basis points the bandit leaves every variant at least (lowered to fit
    #: when variants x this would pass 10,000).
    experiment_bandit_min_weight: int = Field(default=100, ge=0, le=5000)
    #: Seconds between two checks of one running experiment for a winner
    #: (after flushes that counted for it); the first recommendation publishes
    #: ``litho.events.v1.experiment.winner_ready`` once.
    experiment_winner_check_seconds: float = Field(default=10.0, ge=0, le=24 * 3600.0)

    def json_limits(self) -> JsonLimits:
        return JsonLimits(
            max_depth=self.experiment_json_max_depth,
            max_number_chars=self.experiment_json_max_number_chars,
            depth_setting="LITHO_EXPERIMENT_JSON_MAX_DEPTH",
            number_setting="LITHO_EXPERIMENT_JSON_MAX_NUMBER_CHARS",
        )
