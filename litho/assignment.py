"""Visitors' assignment to an experiment's variants: one function, shared by
the gateway (which serves ``/s/`` URLs and counts their views and clicks)
and the experiment service (which counts events a backend reports with a
``vid``), so that both always name the same variant.

A visitor id and the experiment id are hashed (SHA-256) into one of 10,000
buckets, and the buckets are split by the weights (basis points, in the
variants' order) of the epoch the visitor was first seen in. The same
visitor so always gets the same variant, and a bandit's reweighting (a new
epoch) only moves visitors first seen after it. A cookie id carries the
time it was issued (``v1.<unix seconds>.<22 random characters>``); an id
given by the caller (``?vid=``) carries none and is assigned with the first
epoch's weights, the variants' own.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

BUCKETS: Final = 10_000
#: The longest visitor id a caller may give.
MAX_VID_CHARS: Final = 128
_COOKIE_VID: Final = re.compile(r"v1\.([0-9]{1,12})\.[A-Za-z0-9_-]{22}", re.ASCII)
#: C0 and C1 controls, and the line and paragraph separators.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Epoch:
    #: Visitors first seen at or after this time (seconds since the epoch).
    since: float
    #: (variant id, basis points) in the variants' order; they sum to 10,000.
    weights: tuple[tuple[str, int], ...]


def new_cookie_vid(now: float) -> str:
    """A new visitor's id, carrying when it was issued."""
    return f"v1.{int(now)}.{secrets.token_urlsafe(16)}"


def is_cookie_vid(vid: str) -> bool:
    return _COOKIE_VID.fullmatch(vid) is not None


def vid_problem(vid: str) -> str:
    """Why ``vid`` cannot be a visitor id ("" when it can)."""
    if not vid.strip():
        return "must not be empty or blank"
    if len(vid) > MAX_VID_CHARS:
        return f"must be at most {MAX_VID_CHARS} characters"
    if _CONTROL.search(vid):
        return "must not hold control characters"
    try:
        vid.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode"
    return ""


def first_seen(vid: str) -> float | None:
    """When a cookie id was issued; None for an id a caller gave."""
    match = _COOKIE_VID.fullmatch(vid)
    return float(match.group(1)) if match else None


def bucket(experiment_id: str, vid: str) -> int:
    material = f"{experiment_id}\x00{vid}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") % BUCKETS


def choose(position: int, weights: Sequence[tuple[str, int]]) -> str:
    """The variant whose share of the buckets holds ``position``."""
    if not weights:
        raise ValueError("an experiment has variants")
    total = 0
    for variant_id, weight in weights:
        total += weight
        if position < total:
            return variant_id
    return weights[-1][0]  # weights that sum short of 10,000: the last takes the rest


def epoch_of(vid: str, epochs: Sequence[Epoch]) -> Epoch:
    """The epoch whose weights assign ``vid`` (epochs oldest first)."""
    if not epochs:
        raise ValueError("an experiment has at least one epoch")
    seen = first_seen(vid)
    if seen is None:
        return epochs[0]
    chosen = epochs[0]
    for epoch in epochs:
        if epoch.since <= seen:
            chosen = epoch
    return chosen


def assign(experiment_id: str, vid: str, epochs: Sequence[Epoch]) -> str:
    """The variant ``vid`` sees in the experiment."""
    return choose(bucket(experiment_id, vid), epoch_of(vid, epochs).weights)
