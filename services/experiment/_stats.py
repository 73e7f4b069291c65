"""An experiment's statistics: each variant's conversion rate, the 95 % interval of
its posterior, and Monte Carlo comparisons between the variants.

The model is Beta-Bernoulli with a uniform Beta(1, 1) prior: after ``n``
impressions with ``s`` successes a variant's rate is distributed Beta(1 + s,
1 + n - s). The interval is that distribution's exact equal-tailed 95 % interval
(its regularized incomplete beta function inverted numerically). The comparisons
(probability to beat the control, to be the best, expected loss) are estimated
from ``draws`` joint draws of every arm's posterior.

The draws are reproducible: the generator's seed is a hash of the arms' counts,
so the same counts always give the same numbers, whatever order the arms come
in (they are drawn in a canonical order and answered in the order given). The
draws are made in chunks of at most :data:`_CHUNK_ELEMENTS` values, so memory
stays bounded whatever ``draws`` is.

Pure: no I/O, no work at import time. It is CPU work: call it from a thread.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: The basis points of a serving distribution: the weights always sum to this.
TOTAL_BASIS_POINTS = 10_000
#: The interval's coverage; its tails are each half of the rest.
INTERVAL_LEVEL = 0.95
#: Values drawn per chunk (arms × draws): 2 MiB of float64, whatever ``draws`` is.
_CHUNK_ELEMENTS = 1 << 18
#: Beta parameters from which log B(a, b) goes through Stirling's series.
_STIRLING_FROM = 10.0
#: Where the incomplete beta function goes through its series: the smaller
#: parameter at most this, and (a + b) x - a at most the excess (the series then
#: needs at most about a thousand terms and its sum stays below e^250).
_SERIES_MAX_PARAMETER = 1_000.0
_SERIES_MAX_EXCESS = 200.0
_EPSILON = sys.float_info.epsilon
#: Tags the seed's hash so that no other hash of the same counts collides with it.
_SEED_DOMAIN = b"litho-experiment-stats-v1"


@dataclass(frozen=True)
class Arm:
    """One variant's counts. ``successes`` are clicks or conversions, by the goal."""

    variant_id: str
    control: bool
    impressions: int
    successes: int

    def __post_init__(self) -> None:
        for name in ("impressions", "successes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(
                    f"arm {self.variant_id!r}: {name} must be an int, not {type(value).__name__}"
                )
            if value < 0:
                raise ValueError(f"arm {self.variant_id!r}: {name} is negative ({value})")
        if self.successes > self.impressions:
            raise ValueError(
                f"arm {self.variant_id!r}: {self.successes} successes exceed "
                f"{self.impressions} impressions"
            )


@dataclass(frozen=True)
class ArmStats:
    variant_id: str
    rate: float  # successes / impressions, 0.0 without impressions
    interval_low: float  # 95 % equal-tailed interval of Beta(1+s, 1+n-s)
    interval_high: float
    probability_to_beat_control: float  # 0.0 for the control itself
    probability_to_be_best: float
    expected_loss: float  # E[max_j p_j - p_i]


@dataclass(frozen=True)
class Summary:
    arms: tuple[ArmStats, ...]  # in the order given
    draws: int
    minimum_sample_reached: bool  # every arm has impressions >= minimum_sample_size
    confidence_reached: bool  # some arm's probability_to_be_best >= threshold
    recommended: str  # that arm's variant_id when BOTH are reached, else ""


def summarise(
    arms: Sequence[Arm],
    *,
    minimum_sample_size: int,
    confidence_threshold: float,
    draws: int = 100_000,
) -> Summary:
    """The statistics of ``arms`` (in their order). The control is the arm with
    ``control=True``, or the first arm when none is; more than one is a
    ValueError, as are an empty sequence, duplicate variant ids, ``draws < 1``,
    a negative minimum sample size and a threshold outside [0, 1]."""
    _check_arms(arms)
    _check_draws(draws)
    if not isinstance(minimum_sample_size, int) or minimum_sample_size < 0:
        raise ValueError(f"minimum_sample_size must be an int >= 0, not {minimum_sample_size!r}")
    if not 0.0 <= confidence_threshold <= 1.0:  # also refuses NaN
        raise ValueError(f"confidence_threshold must be in [0, 1], not {confidence_threshold!r}")

    control = _control_index(arms)
    simulation = _simulate(arms, control, draws)
    tail = (1.0 - INTERVAL_LEVEL) / 2.0
    stats: list[ArmStats] = []
    for i, arm in enumerate(arms):
        a, b = _posterior(arm)
        stats.append(
            ArmStats(
                variant_id=arm.variant_id,
                rate=arm.successes / arm.impressions if arm.impressions else 0.0,
                interval_low=beta_quantile(tail, a, b),
                interval_high=beta_quantile(1.0 - tail, a, b),
                probability_to_beat_control=(
                    0.0 if i == control else simulation.beats_control[i] / draws
                ),
                probability_to_be_best=simulation.best[i] / draws,
                expected_loss=simulation.loss_sums[i] / draws,
            )
        )

    minimum_sample_reached = all(arm.impressions >= minimum_sample_size for arm in arms)
    confident = [s for s in stats if s.probability_to_be_best >= confidence_threshold]
    recommended = ""
    if minimum_sample_reached and confident:
        # Only a threshold at or below one half lets two arms qualify; the most
        # probable wins, ties broken by id so that the order given never matters.
        recommended = min(
            confident, key=lambda s: (-s.probability_to_be_best, s.expected_loss, s.variant_id)
        ).variant_id
    return Summary(
        arms=tuple(stats),
        draws=draws,
        minimum_sample_reached=minimum_sample_reached,
        confidence_reached=bool(confident),
        recommended=recommended,
    )


def thompson_weights(
    arms: Sequence[Arm], *, floor_bp: int = 100, draws: int = 100_000
) -> dict[str, int]:
    """Thompson sampling's serving weights in basis points, keyed by variant id in
    the order given: ``floor_bp`` for every arm, the rest shared in proportion to
    each arm's probability to be best (the same draws as :func:`summarise`'s),
    rounded by largest remainder so that they sum to exactly 10,000. A floor that
    cannot fit (``floor_bp × arms > 10,000``) or is negative is a ValueError."""
    _check_arms(arms)
    _check_draws(draws)
    if not isinstance(floor_bp, int) or floor_bp < 0:
        raise ValueError(f"floor_bp must be an int >= 0, not {floor_bp!r}")
    if floor_bp * len(arms) > TOTAL_BASIS_POINTS:
        raise ValueError(
            f"a floor of {floor_bp} basis points for {len(arms)} arms exceeds "
            f"{TOTAL_BASIS_POINTS}; at most {TOTAL_BASIS_POINTS // len(arms)} fits"
        )
    simulation = _simulate(arms, _control_index(arms), draws)
    shares = largest_remainder(simulation.best, TOTAL_BASIS_POINTS - floor_bp * len(arms))
    return {arm.variant_id: floor_bp + share for arm, share in zip(arms, shares, strict=True)}


def largest_remainder(counts: Sequence[int], total: int) -> list[int]:
    """``total`` (>= 0) apportioned in proportion to ``counts`` (>= 0): each share
    is the floor of its exact quota, and the units left go one each to the largest
    remainders, ties to the earlier count. Exact integer arithmetic, so the shares
    always sum to ``total``; all counts zero is a ValueError unless ``total`` is 0."""
    whole = sum(counts)
    if total < 0 or any(count < 0 for count in counts) or (total and whole == 0):
        raise ValueError(f"cannot apportion {total} by {list(counts)}")
    if total == 0:
        return [0] * len(counts)
    quotas = [divmod(total * count, whole) for count in counts]
    shares = [share for share, _ in quotas]
    left = total - sum(shares)
    by_remainder = sorted(range(len(counts)), key=lambda i: (-quotas[i][1], i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


# The interval: the regularized incomplete beta function, inverted.


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b) for 0 < q < 1 and a, b > 0: the root of
    I_x(a, b) = q by Newton's method, kept inside a bisection bracket, to about
    1e-14 relative to the nearer of 0 and 1. Each evaluation of I costs a series
    or a continued fraction of tens to a few hundred terms in the tails, even for
    counts in the billions."""
    if not 0.0 < q < 1.0 or not a > 0.0 or not b > 0.0:
        raise ValueError(f"beta_quantile needs 0 < q < 1 and a, b > 0, not {q!r}, {a!r}, {b!r}")
    lo, hi = 0.0, 1.0
    # Start from the normal approximation; a skewed posterior (few successes)
    # can put it outside (0, 1), then the mean is a safe start.
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    x = mean + NormalDist().inv_cdf(q) * sd
    if not 0.0 < x < 1.0:
        x = mean
    for _ in range(400):
        error = regularized_incomplete_beta(x, a, b) - q
        if error == 0.0:
            return x
        if error < 0.0:
            lo = x
        else:
            hi = x
        log_pdf = _log_front(x, a, b) - math.log(x) - math.log1p(-x)
        pdf = math.exp(log_pdf) if log_pdf < 700.0 else math.inf
        candidate = x - error / pdf if pdf > 0.0 else math.nan
        if not lo < candidate < hi:  # also NaN: Newton left the bracket, bisect
            candidate = (lo + hi) / 2.0
        # Relative to the nearer end: near 1 the tail 1 - x is what must be
        # precise. Four ulps at least, where Newton's steps end in rounding.
        tolerance = max(1e-14 * min(candidate, 1.0 - candidate), 4.0 * _EPSILON * candidate)
        if abs(candidate - x) <= tolerance or hi - lo <= tolerance:
            return candidate
        x = candidate
    return x


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the CDF of Beta(a, b) at ``x``.

    Near the tail of a small parameter beside a large one (few successes in
    many impressions, or few failures) by the hypergeometric series, whose terms
    are all positive; elsewhere by the continued fraction of Numerical Recipes
    §6.4 (modified Lentz) on the side where it converges faster, using
    I_x(a, b) = 1 - I_{1-x}(b, a). The fraction alone would lose about
    eps × max(a, b) / min(a, b) there: 1e-7 relative at a billion impressions."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    y = 1.0 - x
    if x <= 0.5 and a <= _SERIES_MAX_PARAMETER and (a + b) * x - a <= _SERIES_MAX_EXCESS:
        return _beta_series(x, a, b)
    if y <= 0.5 and b <= _SERIES_MAX_PARAMETER and (a + b) * y - b <= _SERIES_MAX_EXCESS:
        return 1.0 - _beta_series(y, b, a)
    front = math.exp(_log_front(x, a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(x, a, b) / a
    return 1.0 - front * _beta_continued_fraction(y, b, a) / b


def _beta_series(x: float, a: float, b: float) -> float:
    """I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) · sum_n (a + b)_n / (a + 1)_n x^n.
    With x <= 1/2 and (a + b) x - a bounded, the terms peak within a few
    hundred and then fall at least geometrically; their sum cannot overflow."""
    term = total = 1.0
    n = 0
    while term > 1e-17 * total:
        term *= (a + b + n) * x / (a + 1.0 + n)
        total += term
        n += 1
    return math.exp(_log_front(x, a, b) + math.log(total)) / a


def _log_front(x: float, a: float, b: float) -> float:
    """log(x^a (1 - x)^b / B(a, b)), for 0 < x < 1.

    With counts in the millions, lgamma(a + b) - lgamma(a) - lgamma(b) loses
    digits to cancellation (each term is about (a + b) log(a + b)), so large
    parameters go through Stirling's series, whose big terms cancel analytically
    against a log x + b log(1 - x) (as DiDonato and Morris do, ACM TOMS 708)."""
    small, large = min(a, b), max(a, b)
    if large < _STIRLING_FROM:
        return (
            math.lgamma(a + b)
            - math.lgamma(a)
            - math.lgamma(b)
            + a * math.log(x)
            + b * math.log1p(-x)
        )
    if small < _STIRLING_FROM:
        # lgamma(s + L) - lgamma(L) by Stirling; s log L joins the small side's log.
        log_small_side, log_large_side = (
            (math.log(x), math.log1p(-x)) if a <= b else (math.log1p(-x), math.log(x))
        )
        return (
            (small + large - 0.5) * math.log1p(small / large)
            + small * (log_small_side + math.log(large))
            + large * log_large_side
            - small
            + _stirling_correction(small + large)
            - _stirling_correction(large)
            - math.lgamma(small)
        )
    # Both large: a log(x / mean) + b log((1 - x) / (1 - mean)) + the rest of Stirling.
    total = a + b
    mean, rest = a / total, b / total
    return (
        a * math.log1p((x - mean) / mean)
        + b * math.log1p((mean - x) / rest)
        + 0.5 * math.log(a * b / total)
        - 0.5 * math.log(2.0 * math.pi)
        + _stirling_correction(total)
        - _stirling_correction(a)
        - _stirling_correction(b)
    )


def _stirling_correction(z: float) -> float:
    """lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2), for z >= 10, by its
    asymptotic series to the z^-13 term (the next, 0.03 / z^15, is below 1e-16)."""
    r = 1.0 / (z * z)
    return (
        1.0 / 12.0
        - r
        * (
            1.0 / 360.0
            - r
            * (
                1.0 / 1260.0
                - r * (1.0 / 1680.0 - r * (1.0 / 1188.0 - r * (691.0 / 360360.0 - r / 156.0)))
            )
        )
    ) / z


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1_000_000):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + even * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + even / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + odd * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + odd / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"the incomplete beta fraction did not converge at {x}, {a}, {b}")


# The Monte Carlo.


@dataclass(frozen=True)
class _Simulation:
    """Counts and sums over the draws, per arm in the order given."""

    best: list[int]
    beats_control: list[int]
    loss_sums: list[float]


def _simulate(arms: Sequence[Arm], control: int, draws: int) -> _Simulation:
    order = sorted(range(len(arms)), key=lambda i: _canonical_key(arms[i]))
    k = len(arms)
    posteriors = [_posterior(arms[i]) for i in order]
    control_row = order.index(control)
    rng = np.random.default_rng(_seed(arms))
    chunk = max(1, _CHUNK_ELEMENTS // k)
    best = np.zeros(k, dtype=np.int64)
    beats = [0] * k
    loss = [0.0] * k
    samples = np.empty((k, min(chunk, draws)), dtype=np.float64)
    done = 0
    while done < draws:
        size = min(chunk, draws - done)
        block = samples[:, :size]
        for row, (a, b) in enumerate(posteriors):
            block[row] = rng.beta(a, b, size)
        best += np.bincount(np.argmax(block, axis=0), minlength=k)
        top = block.max(axis=0)
        for row in range(k):
            loss[row] += float(np.subtract(top, block[row]).sum())
            if row != control_row:
                beats[row] += int(np.count_nonzero(block[row] > block[control_row]))
        done += size
    # Back from the canonical order to the order given.
    result_best, result_beats, result_loss = [0] * k, [0] * k, [0.0] * k
    for row, i in enumerate(order):
        result_best[i] = int(best[row])
        result_beats[i] = beats[row]
        result_loss[i] = loss[row]
    return _Simulation(best=result_best, beats_control=result_beats, loss_sums=result_loss)


def _canonical_key(arm: Arm) -> tuple[int, int, bool, str]:
    return (arm.impressions, arm.successes, arm.control, arm.variant_id)


def _seed(arms: Sequence[Arm]) -> int:
    """128 bits of SHA-256 over the counts, sorted: the arms' order and ids
    play no part, so the same counts always draw the same numbers."""
    counts = sorted((arm.impressions, arm.successes, arm.control) for arm in arms)
    text = ";".join(f"{n},{s},{int(c)}" for n, s, c in counts)
    digest = hashlib.sha256(_SEED_DOMAIN + b"\0" + text.encode()).digest()
    return int.from_bytes(digest[:16], "big")


def _posterior(arm: Arm) -> tuple[float, float]:
    return 1.0 + arm.successes, 1.0 + arm.impressions - arm.successes


def _control_index(arms: Sequence[Arm]) -> int:
    controls = [i for i, arm in enumerate(arms) if arm.control]
    if len(controls) > 1:
        ids = ", ".join(arms[i].variant_id for i in controls)
        raise ValueError(f"more than one control arm: {ids}")
    return controls[0] if controls else 0


def _check_arms(arms: Sequence[Arm]) -> None:
    if not arms:
        raise ValueError("no arms: an experiment has at least one variant")
    seen: set[str] = set()
    for arm in arms:
        if arm.variant_id in seen:
            raise ValueError(f"duplicate variant id {arm.variant_id!r}")
        seen.add(arm.variant_id)


def _check_draws(draws: int) -> None:
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, not {draws!r}")
