"""The rules an experiment's fields must satisfy to be stored.

Every problem is a :class:`litho.errors.FieldError` naming its field by the
API's path (``variants[1].weight``, ``goal.destinationUrl``) and saying what
would be right; :func:`check_spec` gathers them all, so one 422 reports every
problem of a request. A bad value is a 422, never a crash, whatever it holds
(lone surrogates, NUL, megabytes). Whether a template exists is the domain's
to ask (:class:`services.experiment._ports.TemplateCatalog`): the check lists
the template ids it found well formed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from yarl import URL

from litho import formats, jsonlimits
from litho.errors import FieldError, InvalidArgument
from services.experiment._model import (
    ALGORITHMS,
    CLICK_THROUGH,
    DEFAULT_CONFIDENCE_THRESHOLD,
    DEFAULT_MINIMUM_SAMPLE_SIZE,
    GOAL_TYPES,
    IMPRESSIONS_ONLY,
    THOMPSON_SAMPLING,
    TOTAL_WEIGHT,
    BanditInput,
    ExperimentSpec,
    GoalInput,
    Limits,
    Output,
    VariantInput,
    canonical_json,
)

MAX_NAME_CHARS: Final = 200
MAX_TEMPLATE_ID_CHARS: Final = 200
MAX_URL_CHARS: Final = 2000
#: Largest count a sample size or a warm-up may ask for.
MAX_COUNT: Final = 1_000_000_000
MIN_CONFIDENCE: Final = 0.5
MAX_CONFIDENCE: Final = 0.999

SLUG: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
VARIANT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: C0 and C1 control characters and DEL.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Checked:
    """The stored fields a spec comes to, the problems found, and the
    template ids to look up (each with the field that names it)."""

    fields: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)
    templates: list[tuple[str, str]] = field(default_factory=list)


def fail(errors: Sequence[FieldError]) -> InvalidArgument:
    first = errors[0]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return InvalidArgument(f"{first.field}: {first.message}{more}", errors=list(errors))


def _text(value: Any, path: str, errors: list[FieldError], *, limit: int) -> str | None:
    """``value`` if it is valid Unicode of at most ``limit`` characters without
    control characters; else records why and answers None."""
    if not isinstance(value, str):
        errors.append(FieldError(path, "must be a string"))
        return None
    if len(value) > limit:
        errors.append(FieldError(path, f"must be at most {limit} characters, got {len(value)}"))
        return None
    problem = jsonlimits.describe_text(value)
    if problem:
        errors.append(FieldError(path, problem))
        return None
    if _CONTROL.search(value):
        errors.append(FieldError(path, "must not contain control characters (tab, CR, LF, NUL, …)"))
        return None
    return value


def check_name(value: Any, path: str, errors: list[FieldError]) -> str:
    """1–200 characters after stripping spaces at either end; answered stripped."""
    text = _text(value, path, errors, limit=10 * MAX_NAME_CHARS)
    if text is None:
        return ""
    text = text.strip()
    if not text:
        errors.append(FieldError(path, f"is required (1–{MAX_NAME_CHARS} characters)"))
    elif len(text) > MAX_NAME_CHARS:
        errors.append(FieldError(path, f"must be at most {MAX_NAME_CHARS} characters, "
                                       f"got {len(text)}"))
    return text


def check_slug(value: Any, errors: list[FieldError]) -> str:
    if not isinstance(value, str) or SLUG.fullmatch(value) is None:
        errors.append(FieldError("slug", (
            "must be 1–64 lowercase letters, digits and hyphens, starting and ending with a "
            "letter or digit (e.g. spring-sale)")))
        return ""
    return value


def check_template_id(value: Any, path: str, errors: list[FieldError], *,
                      required: bool) -> str:
    before = len(errors)
    text = _text(value, path, errors, limit=MAX_TEMPLATE_ID_CHARS)
    if len(errors) == before and not text and required:
        errors.append(FieldError(path, "is required: the id of one of this tenant's templates"))
    return text or "" if len(errors) == before else ""


def _whole(value: Any, path: str, errors: list[FieldError], *, low: int, high: int,
           what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(path, f"must be a whole number ({what})"))
        return low
    if not low <= value <= high:
        errors.append(FieldError(path, f"must be between {low} and {high} ({what}), "
                                       f"got {value}"))
    return value


def check_variables(text: Any, path: str, errors: list[FieldError], limits: Limits) -> str:
    """A JSON object (``""`` is ``{}``), stored as canonical text."""
    if not isinstance(text, str):
        errors.append(FieldError(path, "must be JSON object text"))
        return "{}"
    if not text.strip():
        return "{}"
    cap = limits.max_variables_bytes
    if len(text) > cap or len(text.encode("utf-8", "surrogatepass")) > cap:
        errors.append(FieldError(path, (
            f"must be at most {cap} bytes of JSON (LITHO_EXPERIMENT_MAX_VARIABLES_BYTES)")))
        return "{}"
    try:
        value = jsonlimits.loads(text, limits.json_limits)
    except jsonlimits.JsonLimitError as exc:
        errors.append(FieldError(path + exc.path.replace("/", "."), exc.problem))
        return "{}"
    except ValueError as exc:
        errors.append(FieldError(path, f"is not valid JSON ({str(exc)[:200]})"))
        return "{}"
    if not isinstance(value, dict):
        errors.append(FieldError(path, "must be a JSON object of the template's variables"))
        return "{}"
    stored = canonical_json(value)
    if len(stored.encode("utf-8", "surrogatepass")) > cap:  # numbers can grow when written
        errors.append(FieldError(path, (
            f"must be at most {cap} bytes of JSON (LITHO_EXPERIMENT_MAX_VARIABLES_BYTES)")))
        return "{}"
    return stored


def check_variants(variants: Sequence[VariantInput], errors: list[FieldError],
                   templates: list[tuple[str, str]], limits: Limits) -> list[dict[str, Any]]:
    """The variants as stored: names defaulted to ids, variables canonical,
    exactly one control (the first when none is named)."""
    if not 2 <= len(variants) <= limits.max_variants:
        errors.append(FieldError("variants", (
            f"must be 2 to {limits.max_variants} variants (LITHO_EXPERIMENT_MAX_VARIANTS), "
            f"got {len(variants)}")))
        return []
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    control_at: int | None = None
    weights_ok = True
    for i, v in enumerate(variants):
        path = f"variants[{i}]"
        variant_id = v.id if isinstance(v.id, str) else ""
        if VARIANT_ID.fullmatch(variant_id) is None:
            errors.append(FieldError(f"{path}.id", (
                "must be 1–64 letters, digits, _ or - (e.g. control, b)")))
        elif variant_id in seen:
            errors.append(FieldError(f"{path}.id", (
                f"{variant_id!r} is also variants[{seen[variant_id]}].id: ids must be unique")))
        else:
            seen[variant_id] = i
        name = check_name(v.name, f"{path}.name", errors) if v.name else variant_id
        template_id = check_template_id(v.template_id, f"{path}.templateId", errors,
                                        required=False)
        if template_id:
            templates.append((f"{path}.templateId", template_id))
        before = len(errors)
        weight = _whole(v.weight, f"{path}.weight", errors, low=0, high=TOTAL_WEIGHT,
                        what="basis points")
        weights_ok = weights_ok and len(errors) == before
        if v.control:
            if control_at is None:
                control_at = i
            else:
                errors.append(FieldError(f"{path}.control", (
                    f"variants[{control_at}] is the control already: at most one may be")))
        out.append({"id": variant_id, "name": name, "templateId": template_id or None,
                    "variables": check_variables(v.variables_json, f"{path}.variables",
                                                 errors, limits),
                    "weight": weight, "control": bool(v.control)})
    stored = sum(len(v["variables"].encode("utf-8", "surrogatepass")) for v in out)
    if stored > limits.max_total_variables_bytes:
        errors.append(FieldError("variants", (
            f"the variants' variables take {stored} bytes in all; at most "
            f"{limits.max_total_variables_bytes} (LITHO_EXPERIMENT_MAX_TOTAL_VARIABLES_BYTES)")))
    total = sum(v["weight"] for v in out)
    if weights_ok and total != TOTAL_WEIGHT:
        errors.append(FieldError("variants", (
            f"the weights must sum to {TOTAL_WEIGHT} basis points (100 %), got {total}")))
    if control_at is None:
        out[0]["control"] = True
    return out


def check_destination(value: Any, errors: list[FieldError]) -> str:
    """An absolute http(s) URL without user or password."""
    path = "goal.destinationUrl"
    before = len(errors)
    text = _text(value, path, errors, limit=MAX_URL_CHARS)
    if text is None or len(errors) > before:
        return ""
    if not text:
        errors.append(FieldError(path, "is required for a click_through goal: where a click "
                                       "goes (an http:// or https:// URL)"))
        return ""
    if any(c.isspace() for c in text):
        errors.append(FieldError(path, "must not contain spaces (percent-encode them as %20)"))
        return ""
    try:
        parsed = URL(text)
        scheme, host, authority = parsed.scheme.lower(), parsed.raw_host, parsed.raw_authority
        absolute = parsed.is_absolute()
        parsed.port  # noqa: B018 - a port out of range raises here
    except (ValueError, TypeError, UnicodeError):
        errors.append(FieldError(path, "is not a valid URL"))
        return ""
    if scheme not in ("http", "https") or not absolute:
        errors.append(FieldError(path, "must be an absolute http:// or https:// URL"))
    elif not host:
        errors.append(FieldError(path, "must name a host"))
    elif "@" in (authority or ""):
        errors.append(FieldError(path, "must not hold a user name or password (user:password@)"))
    else:
        return text
    return ""


def check_goal(goal: GoalInput, errors: list[FieldError], *, current_type: str) -> dict[str, Any]:
    """``{type, destinationUrl}``; an empty type keeps ``current_type``."""
    kind = goal.type or current_type
    if kind not in GOAL_TYPES:
        shown = kind[:50] if isinstance(kind, str) else ""
        errors.append(FieldError("goal.type", f"must be impressions_only or click_through, "
                                              f"not {shown!r}"))
        return {"type": IMPRESSIONS_ONLY, "destinationUrl": None}
    if kind == CLICK_THROUGH:
        return {"type": kind, "destinationUrl": check_destination(goal.destination_url, errors)}
    if goal.destination_url:
        errors.append(FieldError("goal.destinationUrl", (
            "is only for a click_through goal: an impressions_only experiment never "
            "redirects a click")))
    return {"type": kind, "destinationUrl": None}


def check_bandit(bandit: BanditInput, errors: list[FieldError]) -> dict[str, Any]:
    algorithm = bandit.algorithm or THOMPSON_SAMPLING
    if algorithm not in ALGORITHMS:
        shown = algorithm[:50] if isinstance(algorithm, str) else ""
        errors.append(FieldError("bandit.algorithm",
                                 f"must be thompson_sampling, not {shown!r}"))
    warmup = _whole(bandit.warmup_impressions, "bandit.warmupImpressions", errors, low=0,
                    high=MAX_COUNT, what="impressions")
    return {"enabled": bool(bandit.enabled), "algorithm": THOMPSON_SAMPLING,
            "warmupImpressions": warmup}


def check_threshold(value: Any, errors: list[FieldError]) -> float:
    path = "confidenceThreshold"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or not MIN_CONFIDENCE <= value <= MAX_CONFIDENCE:
        errors.append(FieldError(path, (
            f"must be between {MIN_CONFIDENCE} and {MAX_CONFIDENCE} (the probability to be "
            "best a variant needs to be recommended)")))
        return DEFAULT_CONFIDENCE_THRESHOLD
    return float(value)


def output_fields(output: Output, errors: list[FieldError]) -> dict[str, str]:
    """The stored output; a format Litho does not render is an error naming
    ``output.format``."""
    name = output.format or "png"
    if formats.by_name(name) is None:
        errors.append(FieldError("output.format", (
            f"{name[:60]!r} is not a format Litho renders: one of "
            + ", ".join(formats.names()))))
    return {"format": name, "options": output.options_json or "{}"}


def check_spec(spec: ExperimentSpec, *, current: Mapping[str, Any] | None,
               limits: Limits) -> Checked:
    """The fields ``spec`` gives, checked; on create (``current`` None) the
    required ones must be there and the rest take their defaults."""
    out = Checked()
    errors, fields = out.errors, out.fields
    creating = current is None
    if spec.name is not None:
        fields["name"] = check_name(spec.name, "name", errors)
    elif creating:
        errors.append(FieldError("name", f"is required (1–{MAX_NAME_CHARS} characters)"))
    if spec.slug is not None:
        fields["slug"] = check_slug(spec.slug, errors)
    elif creating:
        errors.append(FieldError("slug", "is required: 1–64 lowercase letters, digits and "
                                         "hyphens (e.g. spring-sale)"))
    if spec.template_id is not None or creating:
        template_id = check_template_id(spec.template_id or "", "templateId", errors,
                                        required=True)
        fields["templateId"] = template_id
        if template_id:
            out.templates.append(("templateId", template_id))
    if spec.variants is not None or creating:
        fields["variants"] = check_variants(spec.variants or (), errors, out.templates, limits)
    if spec.goal is not None or creating:
        current_type = str(((current or {}).get("goal") or {}).get("type") or IMPRESSIONS_ONLY)
        fields["goal"] = check_goal(spec.goal or GoalInput(), errors, current_type=current_type)
    if spec.bandit is not None or creating:
        fields["bandit"] = check_bandit(spec.bandit or BanditInput(), errors)
    if spec.minimum_sample_size is not None or creating:
        size = (DEFAULT_MINIMUM_SAMPLE_SIZE if spec.minimum_sample_size is None
                else spec.minimum_sample_size)
        fields["minimumSampleSize"] = _whole(size, "minimumSampleSize", errors, low=0,
                                             high=MAX_COUNT, what="impressions per variant")
    if spec.confidence_threshold is not None or creating:
        threshold = (DEFAULT_CONFIDENCE_THRESHOLD if spec.confidence_threshold is None
                     else spec.confidence_threshold)
        fields["confidenceThreshold"] = check_threshold(threshold, errors)
    if spec.output is not None or creating:
        fields["output"] = output_fields(spec.output or Output(), errors)
    return out
