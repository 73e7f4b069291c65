"""The experiment service's model: ids, statuses, the tenant's handle, the
domain's dataclasses, page tokens and how a stored document becomes an
:class:`Experiment`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litho import jsonlimits
from litho.errors import FieldError, InvalidArgument, NotFound
from services.experiment._settings import DEFAULT_JSON_LIMITS

COLLECTION = "experiments"
COUNTERS = "experiment_counters"
ID_PREFIX = "exp_"
#: An experiment id, whole: ``exp_`` + ``secrets.token_urlsafe(16)`` (22 characters).
ID_PATTERN = re.compile(r"exp_[A-Za-z0-9_-]{22}")

DRAFT, RUNNING, PAUSED, COMPLETED, ARCHIVED = (
    "draft", "running", "paused", "completed", "archived")
STATUSES = (DRAFT, RUNNING, PAUSED, COMPLETED, ARCHIVED)

IMPRESSIONS_ONLY, CLICK_THROUGH = "impressions_only", "click_through"
GOAL_TYPES = (IMPRESSIONS_ONLY, CLICK_THROUGH)
THOMPSON_SAMPLING = "thompson_sampling"
ALGORITHMS = (THOMPSON_SAMPLING,)

#: Basis points: the variants' weights sum to this.
TOTAL_WEIGHT = 10_000
DEFAULT_WARMUP_IMPRESSIONS = 1000
DEFAULT_MINIMUM_SAMPLE_SIZE = 1000
DEFAULT_CONFIDENCE_THRESHOLD = 0.95

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

Clock = Callable[[], float]


def new_experiment_id() -> str:
    """``exp_`` + 128 random bits: unguessable, so a later step can serve by id."""
    return ID_PREFIX + secrets.token_urlsafe(16)


def is_experiment_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def tenant_handle(tenant_id: str, key: bytes = b"") -> str:
    """The tenant's public handle (16 characters of ``[a-z2-7]``): images are
    served under ``/s/{handle}/{slug}``, so slugs of tenants never clash. With
    ``key`` (LITHO_EXPERIMENT_HANDLE_KEY) it is an HMAC, so nobody can compute
    a tenant's handle from its name or tell the name from the handle; without,
    a plain hash of the tenant id."""
    material = b"litho-tenant-handle:" + tenant_id.encode()
    digest = (hmac.new(key, material, hashlib.sha256).digest() if key
              else hashlib.sha256(material).digest())
    return base64.b32encode(digest[:10]).decode().lower()


def not_found(experiment_id: str) -> NotFound:
    return NotFound(f"experiment {experiment_id[:100]!r} not found")


def invalid(field_name: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field_name}: {message}", errors=[FieldError(field_name, message)])


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, Unicode kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


# ------------------------------------------------------------ page tokens ----

def encode_token(created_at: float, last_id: str) -> str:
    """Where the next page starts: the last experiment's creation time and id."""
    text = json.dumps({"t": created_at, "id": last_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, str]:
    """``(createdAt, id)`` of a token :func:`encode_token` made; anything else,
    however close, is a 422 naming ``pageToken``."""
    refused = invalid("pageToken", "is not a token this API issued")
    if len(token) > 200:
        raise refused
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise refused from None
    if not isinstance(value, dict) or set(value) != {"t", "id"}:
        raise refused
    created, last_id = value["t"], value["id"]
    if (isinstance(created, bool) or not isinstance(created, int | float)
            or not math.isfinite(created) or not isinstance(last_id, str)
            or not is_experiment_id(last_id)
            or encode_token(float(created), last_id) != token):
        raise refused
    return float(created), last_id


# ------------------------------------------------------------------ input ----

@dataclass(frozen=True)
class VariantInput:
    """A variant as received; empty values take their defaults."""

    id: str = ""
    name: str = ""
    template_id: str = ""
    variables_json: str = ""
    weight: int = 0
    control: bool = False


@dataclass(frozen=True)
class GoalInput:
    #: Empty: impressions_only on create, the stored type on update.
    type: str = ""
    destination_url: str = ""


@dataclass(frozen=True)
class BanditInput:
    enabled: bool = False
    #: Empty: thompson_sampling.
    algorithm: str = ""
    warmup_impressions: int = DEFAULT_WARMUP_IMPRESSIONS


@dataclass(frozen=True)
class Output:
    #: A format name of :mod:`litho.formats` (png, jpeg, webp, pdf, gif).
    format: str = "png"
    #: JSON text of the RenderOptions (``json_format.MessageToJson``).
    options_json: str = "{}"


@dataclass(frozen=True)
class ExperimentSpec:
    """The editable fields; None keeps the stored value on update."""

    name: str | None = None
    slug: str | None = None
    template_id: str | None = None
    #: Replaces every variant.
    variants: Sequence[VariantInput] | None = None
    goal: GoalInput | None = None
    bandit: BanditInput | None = None
    minimum_sample_size: int | None = None
    confidence_threshold: float | None = None
    output: Output | None = None

    def given(self) -> list[str]:
        """The API names of the fields present, in the order of the API."""
        names = {"name": self.name, "slug": self.slug, "templateId": self.template_id,
                 "variants": self.variants, "goal": self.goal, "bandit": self.bandit,
                 "minimumSampleSize": self.minimum_sample_size,
                 "confidenceThreshold": self.confidence_threshold, "output": self.output}
        return [name for name, value in names.items() if value is not None]


@dataclass(frozen=True)
class Limits:
    max_per_tenant: int = 1000
    max_variants: int = 10
    max_variables_bytes: int = 64 * 1024
    max_total_variables_bytes: int = 256 * 1024
    stats_draws: int = 100_000
    max_epochs: int = 1000
    json_limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS


# ---------------------------------------------------------------- answers ----

@dataclass(frozen=True)
class Variant:
    id: str
    name: str
    #: Empty: the experiment's template.
    template_id: str
    #: Canonical JSON object text.
    variables_json: str
    weight: int
    control: bool


@dataclass(frozen=True)
class Goal:
    type: str
    destination_url: str


@dataclass(frozen=True)
class Bandit:
    enabled: bool
    algorithm: str
    warmup_impressions: int


@dataclass(frozen=True)
class Experiment:
    id: str
    tenant_id: str
    tenant_handle: str
    name: str
    slug: str
    template_id: str
    variants: tuple[Variant, ...]
    goal: Goal
    bandit: Bandit
    minimum_sample_size: int
    confidence_threshold: float
    output: Output
    status: str
    winner_variant_id: str
    serving_weights: Mapping[str, int]
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    revision: int = 0


@dataclass(frozen=True)
class VariantStats:
    variant_id: str
    name: str
    control: bool
    impressions: int
    clicks: int
    conversions: int
    bot_impressions: int
    conversion_rate: float
    interval_low: float
    interval_high: float
    probability_to_beat_control: float
    probability_to_be_best: float
    expected_loss: float
    serving_weight: int


@dataclass(frozen=True)
class ExperimentStats:
    experiment_id: str
    status: str
    variants: tuple[VariantStats, ...]
    minimum_sample_size: int
    confidence_threshold: float
    minimum_sample_reached: bool
    confidence_reached: bool
    #: Empty unless both the minimum sample and the confidence are reached.
    recommended_winner_variant_id: str
    draws: int


# -------------------------------------------------------------- documents ----

def opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def variant_from_doc(v: Mapping[str, Any]) -> Variant:
    return Variant(id=str(v["id"]), name=str(v.get("name") or v["id"]),
                   template_id=str(v.get("templateId") or ""),
                   variables_json=str(v.get("variables") or "{}"),
                   weight=int(v.get("weight") or 0), control=bool(v.get("control")))


def experiment_from_doc(doc: Mapping[str, Any]) -> Experiment:
    goal = doc.get("goal") or {}
    bandit = doc.get("bandit") or {}
    output = doc.get("output") or {}
    return Experiment(
        id=doc["_id"], tenant_id=doc["tenantId"],
        tenant_handle=str(doc.get("tenantHandle") or ""),
        name=doc["name"], slug=doc["slug"], template_id=doc["templateId"],
        variants=tuple(variant_from_doc(v) for v in doc.get("variants") or ()),
        goal=Goal(type=str(goal.get("type") or IMPRESSIONS_ONLY),
                  destination_url=str(goal.get("destinationUrl") or "")),
        bandit=Bandit(enabled=bool(bandit.get("enabled")),
                      algorithm=str(bandit.get("algorithm") or THOMPSON_SAMPLING),
                      warmup_impressions=int(bandit.get("warmupImpressions") or 0)),
        minimum_sample_size=int(doc.get("minimumSampleSize") or 0),
        confidence_threshold=float(doc.get("confidenceThreshold")
                                   or DEFAULT_CONFIDENCE_THRESHOLD),
        output=Output(format=str(output.get("format") or "png"),
                      options_json=str(output.get("options") or "{}")),
        status=doc["status"], winner_variant_id=str(doc.get("winnerVariantId") or ""),
        serving_weights={str(k): int(v) for k, v in (doc.get("servingWeights") or {}).items()},
        created_at=float(doc["createdAt"]), updated_at=float(doc["updatedAt"]),
        started_at=opt_float(doc.get("startedAt")), ended_at=opt_float(doc.get("endedAt")),
        revision=int(doc.get("revision") or 0))
