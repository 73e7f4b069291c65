"""The experiment statistics against values computed independently here: Evan
Miller's closed form for P(B > A) between Beta posteriors, the matching closed
form of the expected loss, Beta quantiles from closed forms and from numerical
integration of the Beta density, and P(best) of three arms by integrating
f_i · ∏ F_j. Monte Carlo results are held to five standard errors of their own
estimate; the seed is fixed by the counts, so each check is deterministic."""

from __future__ import annotations

import math
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from services.experiment._stats import (
    Arm,
    ArmStats,
    Summary,
    beta_quantile,
    largest_remainder,
    regularized_incomplete_beta,
    summarise,
    thompson_weights,
)

DRAWS = 100_000
Z975 = 1.959963984540054  # the standard normal's 97.5 % quantile


def _lbeta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def _p_b_beats_a(alpha_a: float, beta_a: float, alpha_b: int, beta_b: float) -> float:
    """P(p_B > p_A) for p_A ~ Beta(alpha_a, beta_a), p_B ~ Beta(alpha_b, beta_b)
    (Evan Miller, "Formulas for Bayesian A/B testing"; alpha_b an integer)."""
    return math.fsum(
        math.exp(
            _lbeta(alpha_a + i, beta_a + beta_b)
            - math.log(beta_b + i)
            - _lbeta(1 + i, beta_b)
            - _lbeta(alpha_a, beta_a)
        )
        for i in range(alpha_b)
    )


def _expected_loss_of_a(alpha_a: int, beta_a: float, alpha_b: int, beta_b: float) -> float:
    """E[max(p_A, p_B) - p_A] = E[(p_B - p_A)+]
    = E[p_B] P(Beta(alpha_b+1, beta_b) > p_A) - E[p_A] P(p_B > Beta(alpha_a+1, beta_a)),
    since p times the Beta(a, b) density is E[p] times the Beta(a+1, b) density."""
    mean_a = alpha_a / (alpha_a + beta_a)
    mean_b = alpha_b / (alpha_b + beta_b)
    return mean_b * _p_b_beats_a(alpha_a, beta_a, alpha_b + 1, beta_b) - mean_a * _p_b_beats_a(
        alpha_a + 1, beta_a, alpha_b, beta_b
    )


def _beta_pdf(x: npt.NDArray[np.float64], a: float, b: float) -> npt.NDArray[np.float64]:
    log_pdf = (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - _lbeta(a, b)
    return np.exp(log_pdf)


def _numeric_cdf(
    a: float, b: float, lo: float, hi: float, points: int = 200_001
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The Beta(a, b) CDF on a grid over [lo, hi] (which must hold all but a
    negligible part of the mass), by the cumulative trapezoid rule."""
    x = np.linspace(lo, hi, points)
    pdf = _beta_pdf(x, a, b)
    steps = (pdf[1:] + pdf[:-1]) / 2.0 * np.diff(x)
    return x, np.concatenate(([0.0], np.cumsum(steps)))


def _numeric_quantile(q: float, a: float, b: float) -> float:
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    x, cdf = _numeric_cdf(a, b, max(1e-12, mean - 20 * sd), min(1 - 1e-12, mean + 20 * sd))
    assert cdf[-1] == pytest.approx(1.0, abs=1e-9)  # the grid holds the mass
    return float(np.interp(q, cdf, x))


def _bisect(f: Callable[[float], float], target: float) -> float:
    """The root of the increasing ``f(x) = target`` on [0, 1], to the last bit."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _mc_tolerance(p: float, draws: int = DRAWS) -> float:
    """Five standard errors of a Monte Carlo proportion (at least 1e-4)."""
    return max(1e-4, 5.0 * math.sqrt(p * (1.0 - p) / draws))


def _by_id(summary: Summary) -> dict[str, ArmStats]:
    return {arm.variant_id: arm for arm in summary.arms}


def _summarise(arms: Sequence[Arm], **kwargs: int | float) -> Summary:
    options: dict[str, int | float] = {"minimum_sample_size": 0, "confidence_threshold": 0.95}
    options.update(kwargs)
    return summarise(
        arms,
        minimum_sample_size=int(options["minimum_sample_size"]),
        confidence_threshold=float(options["confidence_threshold"]),
        draws=int(options.get("draws", DRAWS)),
    )


A = Arm("a", True, 1_000, 100)
B = Arm("b", False, 1_000, 130)


# Monte Carlo comparisons against closed forms.


def test_probability_to_beat_control_matches_evan_millers_closed_form() -> None:
    exact = _p_b_beats_a(101, 901, 131, 871)
    assert exact == pytest.approx(0.982, abs=0.001)  # the brief's figure, independently
    summary = _summarise([A, B])
    stats = _by_id(summary)
    assert stats["b"].probability_to_beat_control == pytest.approx(exact, abs=_mc_tolerance(exact))
    assert stats["a"].probability_to_beat_control == 0.0  # the control itself
    # Two arms: B is best exactly when it beats A.
    assert stats["b"].probability_to_be_best == pytest.approx(exact, abs=_mc_tolerance(exact))
    assert stats["a"].probability_to_be_best == pytest.approx(1.0 - exact, abs=_mc_tolerance(exact))
    assert stats["a"].probability_to_be_best + stats["b"].probability_to_be_best == 1.0
    assert summary.draws == DRAWS


def test_beating_a_better_control_is_unlikely() -> None:
    stats = _by_id(_summarise([replace(A, control=False), replace(B, control=True)]))
    exact = 1.0 - _p_b_beats_a(101, 901, 131, 871)
    assert stats["a"].probability_to_beat_control == pytest.approx(exact, abs=_mc_tolerance(exact))
    assert stats["b"].probability_to_beat_control == 0.0


def test_expected_loss_matches_its_closed_form() -> None:
    loss_a = _expected_loss_of_a(101, 901, 131, 871)
    loss_b = _expected_loss_of_a(131, 871, 101, 901)
    mean_a, mean_b = 101 / 1002, 131 / 1002
    # The identity loss_a - loss_b = E[p_B - p_A] checks the two closed forms.
    assert loss_a - loss_b == pytest.approx(mean_b - mean_a, abs=1e-12)
    assert loss_a == pytest.approx(0.03, abs=0.002)
    # Standard error bound: sd((p_B - p_A)+) <= sqrt(E[(p_B - p_A)^2]).
    second_moment = (
        101 * 901 / (1002**2 * 1003) + 131 * 871 / (1002**2 * 1003) + (mean_b - mean_a) ** 2
    )
    tolerance = 5.0 * math.sqrt(second_moment / DRAWS)
    stats = _by_id(_summarise([A, B]))
    assert stats["a"].expected_loss == pytest.approx(loss_a, abs=tolerance)
    assert stats["b"].expected_loss == pytest.approx(loss_b, abs=tolerance)
    assert stats["b"].expected_loss < 1e-3 < stats["a"].expected_loss


def test_equal_arms_are_a_coin_toss() -> None:
    arms = [Arm("a", True, 2_000, 300), Arm("b", False, 2_000, 300)]
    stats = _by_id(_summarise(arms))
    tolerance = _mc_tolerance(0.5)
    assert stats["b"].probability_to_beat_control == pytest.approx(0.5, abs=tolerance)
    assert stats["a"].probability_to_be_best == pytest.approx(0.5, abs=tolerance)
    assert stats["b"].probability_to_be_best == pytest.approx(0.5, abs=tolerance)
    assert stats["a"].expected_loss == pytest.approx(stats["b"].expected_loss, rel=0.05)
    assert stats["a"].interval_low == stats["b"].interval_low
    assert stats["a"].rate == stats["b"].rate == 0.15


def test_probability_to_be_best_of_three_matches_numerical_integration() -> None:
    counts = {"a": (1_000, 100), "b": (1_000, 110), "c": (1_000, 120)}
    arms = [Arm(i, i == "a", n, s) for i, (n, s) in counts.items()]
    x = np.linspace(0.02, 0.3, 200_001)  # the grid of _numeric_cdf below
    pdfs = {i: _beta_pdf(x, 1.0 + s, 1.0 + n - s) for i, (n, s) in counts.items()}
    cdfs = {i: _numeric_cdf(1.0 + s, 1.0 + n - s, 0.02, 0.3)[1] for i, (n, s) in counts.items()}
    stats = _by_id(_summarise(arms))
    total = 0.0
    for i in counts:
        integrand = pdfs[i] * np.prod([cdfs[j] for j in counts if j != i], axis=0)
        exact = float(np.trapezoid(integrand, x))
        total += exact
        assert stats[i].probability_to_be_best == pytest.approx(exact, abs=_mc_tolerance(exact))
    assert total == pytest.approx(1.0, abs=1e-8)
    # P(c beats a) in the same run, against the closed form.
    exact_c = _p_b_beats_a(101, 901, 121, 881)
    assert stats["c"].probability_to_beat_control == pytest.approx(
        exact_c, abs=_mc_tolerance(exact_c)
    )


def test_huge_counts_stay_sane() -> None:
    """A billion impressions: a difference of 1e-4 in the rates is z = 4.47
    (sd 1.58e-5 each). The symmetric posterior's quantiles are its normal ones
    corrected by the Cornish-Fisher kurtosis term (excess kurtosis -6/(a+b+3)),
    exact to O(1/n^2) standard deviations."""
    control = Arm("a", True, 10**9, 5 * 10**8)
    better = Arm("b", False, 10**9, 5 * 10**8 + 10**5)
    stats = _by_id(_summarise([control, better]))
    assert stats["b"].probability_to_beat_control > 0.999
    a = 5e8 + 1
    sd = math.sqrt(a * a / ((2 * a) ** 2 * (2 * a + 1)))
    w = Z975 + (Z975**3 - 3 * Z975) * (-6 / (2 * a + 3)) / 24
    assert stats["a"].interval_low == pytest.approx(0.5 - w * sd, abs=1e-8 * sd)
    assert stats["a"].interval_high == pytest.approx(0.5 + w * sd, abs=1e-8 * sd)


# The interval.


@pytest.mark.parametrize("n", [0, 1, 10, 1_000, 10**9])
def test_interval_without_successes_is_the_closed_form(n: int) -> None:
    """Beta(1, 1 + n): F(x) = 1 - (1 - x)^(n + 1), so x_q = 1 - (1 - q)^(1/(n+1))."""
    stats = _summarise([Arm("a", True, n, 0), Arm("b", False, n, 0)]).arms[0]
    for q, value in ((0.025, stats.interval_low), (0.975, stats.interval_high)):
        exact = -math.expm1(math.log1p(-q) / (n + 1))
        assert value == pytest.approx(exact, rel=1e-10, abs=0.0)


@pytest.mark.parametrize("n", [1, 10, 1_000, 10**6, 10**9])
def test_interval_with_only_successes_is_the_closed_form(n: int) -> None:
    """Beta(1 + n, 1): F(x) = x^(n + 1), so 1 - x_q = -expm1(log(q) / (n + 1)),
    compared as the distance to 1 (to within the 1e-12 relative the quantile
    promises, or a few spacings of the floats below 1)."""
    stats = _summarise([Arm("a", True, n, n), Arm("b", False, n, 0)]).arms[0]
    for q, value in ((0.025, stats.interval_low), (0.975, stats.interval_high)):
        exact_tail = -math.expm1(math.log(q) / (n + 1))
        assert abs((1.0 - value) - exact_tail) <= 1e-12 * exact_tail + 8 * 2.0**-53
    assert stats.rate == 1.0


def test_zero_impressions_interval_is_uniform() -> None:
    stats = _summarise([Arm("a", True, 0, 0), Arm("b", False, 0, 0)]).arms[1]
    assert stats.rate == 0.0
    assert stats.interval_low == pytest.approx(0.025, abs=1e-13)
    assert stats.interval_high == pytest.approx(0.975, abs=1e-13)


@pytest.mark.parametrize(
    ("n", "s"), [(1_000, 100), (1_000, 130), (50, 3), (20_000, 19_000), (100, 50)]
)
def test_interval_matches_numerical_integration(n: int, s: int) -> None:
    a, b = 1.0 + s, 1.0 + n - s
    stats = _summarise([Arm("x", True, n, s), Arm("y", False, 10, 1)]).arms[0]
    assert stats.interval_low == pytest.approx(_numeric_quantile(0.025, a, b), abs=1e-8)
    assert stats.interval_high == pytest.approx(_numeric_quantile(0.975, a, b), abs=1e-8)
    assert stats.interval_low < stats.rate < stats.interval_high


def test_interval_of_two_trials_one_success_is_the_cubics_root() -> None:
    """Beta(2, 2): F(x) = 3x^2 - 2x^3, a polynomial solved here by bisection."""
    stats = _summarise([Arm("a", True, 2, 1), Arm("b", False, 2, 0)]).arms[0]

    def cdf(x: float) -> float:
        return 3 * x**2 - 2 * x**3

    assert stats.interval_low == pytest.approx(_bisect(cdf, 0.025), abs=1e-12)
    assert stats.interval_high == pytest.approx(_bisect(cdf, 0.975), abs=1e-12)
    assert stats.interval_low + stats.interval_high == pytest.approx(1.0, abs=1e-12)


def test_interval_of_one_success_in_a_billion_is_the_closed_form() -> None:
    """Beta(2, b): F(x) = 1 - (1 - x)^b (1 + b x), bisected here in log space."""
    b = 10**9
    stats = _summarise([Arm("a", True, b, 1), Arm("b", False, 1, 0)]).arms[0]

    def cdf(x: float) -> float:
        return -math.expm1(b * math.log1p(-x) + math.log1p(b * x))

    assert stats.interval_low == pytest.approx(_bisect(cdf, 0.025), rel=1e-12, abs=0.0)
    assert stats.interval_high == pytest.approx(_bisect(cdf, 0.975), rel=1e-12, abs=0.0)


def test_incomplete_beta_and_quantile_are_inverse_and_symmetric() -> None:
    for a, b in ((1.5, 7.0), (101.0, 901.0), (3.0, 3.0), (5e5, 2e3)):
        for q in (0.001, 0.025, 0.5, 0.975, 0.999):
            x = beta_quantile(q, a, b)
            assert regularized_incomplete_beta(x, a, b) == pytest.approx(q, rel=1e-10, abs=0.0)
            assert beta_quantile(1.0 - q, b, a) == pytest.approx(1.0 - x, rel=1e-9, abs=1e-15)
    with pytest.raises(ValueError):
        beta_quantile(0.0, 1.0, 1.0)


# Determinism.


def test_the_same_counts_give_identical_numbers() -> None:
    arms = [A, B, Arm("c", False, 900, 95)]
    assert _summarise(arms) == _summarise(arms)
    assert thompson_weights(arms) == thompson_weights(arms)


def test_the_order_of_the_arms_does_not_change_the_numbers() -> None:
    arms = [A, B, Arm("c", False, 900, 95), Arm("d", False, 1_100, 120)]
    forward = _summarise(arms)
    backward = _summarise(arms[::-1])
    assert [s.variant_id for s in backward.arms] == ["d", "c", "b", "a"]  # order given
    assert _by_id(forward) == _by_id(backward)
    assert forward.recommended == backward.recommended
    weights = thompson_weights(arms)
    assert list(weights) == ["a", "b", "c", "d"]
    assert thompson_weights(arms[::-1]) == weights


def test_the_ids_do_not_change_the_numbers_but_the_counts_do() -> None:
    renamed = [replace(A, variant_id="x"), replace(B, variant_id="y")]
    original = _summarise([A, B]).arms
    again = _summarise(renamed).arms
    assert [replace(s, variant_id="") for s in original] == [
        replace(s, variant_id="") for s in again
    ]
    moved = _summarise([A, replace(B, impressions=1_001)]).arms
    assert moved[1].probability_to_be_best != original[1].probability_to_be_best


def test_draws_across_chunk_boundaries_add_up() -> None:
    for draws in (1, 2, 131_071, 131_073):
        summary = _summarise([A, B], draws=draws)
        best = [s.probability_to_be_best * draws for s in summary.arms]
        assert all(abs(v - round(v)) < 1e-6 for v in best)  # whole counts of draws
        assert round(sum(best)) == draws


# The recommendation.


def test_recommends_only_when_the_sample_and_the_confidence_are_reached() -> None:
    both = _summarise([A, B], minimum_sample_size=1_000, confidence_threshold=0.95)
    assert both.minimum_sample_reached and both.confidence_reached
    assert both.recommended == "b"

    small = _summarise([A, B], minimum_sample_size=1_001, confidence_threshold=0.95)
    assert not small.minimum_sample_reached and small.confidence_reached
    assert small.recommended == ""

    strict = _summarise([A, B], minimum_sample_size=1_000, confidence_threshold=0.99)
    assert strict.minimum_sample_reached and not strict.confidence_reached
    assert strict.recommended == ""


def test_minimum_sample_means_every_arm() -> None:
    arms = [Arm("a", True, 5_000, 500), Arm("b", False, 999, 300)]
    summary = _summarise(arms, minimum_sample_size=1_000)
    assert summary.confidence_reached  # 30 % against 10 %
    assert not summary.minimum_sample_reached
    assert summary.recommended == ""
    assert _summarise(arms, minimum_sample_size=999).recommended == "b"


def test_equal_arms_never_reach_confidence() -> None:
    arms = [Arm("a", True, 10_000, 1_000), Arm("b", False, 10_000, 1_000)]
    summary = _summarise(arms, minimum_sample_size=100)
    assert summary.minimum_sample_reached and not summary.confidence_reached
    assert summary.recommended == ""


def test_the_control_can_be_the_winner() -> None:
    arms = [Arm("a", True, 1_000, 150), Arm("b", False, 1_000, 90), Arm("c", False, 1_000, 95)]
    summary = _summarise(arms, minimum_sample_size=1_000)
    assert summary.recommended == "a"


def test_a_low_threshold_recommends_the_most_probable() -> None:
    summary = _summarise([A, B], minimum_sample_size=0, confidence_threshold=0.0)
    assert summary.confidence_reached
    assert summary.recommended == "b"


def test_zero_impressions_everywhere() -> None:
    arms = [Arm("a", True, 0, 0), Arm("b", False, 0, 0), Arm("c", False, 0, 0)]
    summary = _summarise(arms, minimum_sample_size=0)
    assert summary.minimum_sample_reached
    assert not summary.confidence_reached
    assert summary.recommended == ""
    for stats in summary.arms:
        assert stats.rate == 0.0
        assert stats.probability_to_be_best == pytest.approx(1 / 3, abs=_mc_tolerance(1 / 3))
    assert not _summarise(arms, minimum_sample_size=1).minimum_sample_reached


def test_without_a_marked_control_the_first_arm_is_the_control() -> None:
    stats = _summarise([replace(A, control=False), B]).arms
    assert stats[0].probability_to_beat_control == 0.0
    assert stats[1].probability_to_beat_control > 0.9


# Refusals.


@pytest.mark.parametrize(("impressions", "successes"), [(10, 11), (-1, 0), (10, -1), (0, 1)])
def test_impossible_counts_are_value_errors(impressions: int, successes: int) -> None:
    with pytest.raises(ValueError, match="arm 'a'"):
        Arm("a", True, impressions, successes)


def test_counts_must_be_ints() -> None:
    with pytest.raises(TypeError, match="impressions"):
        Arm("a", True, 10.0, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arms", "kwargs", "message"),
    [
        ([], {}, "no arms"),
        ([A, replace(B, variant_id="a")], {}, "duplicate"),
        ([A, replace(B, control=True)], {}, "more than one control"),
        ([A, B], {"draws": 0}, "draws"),
        ([A, B], {"minimum_sample_size": -1}, "minimum_sample_size"),
        ([A, B], {"confidence_threshold": 1.5}, "confidence_threshold"),
        ([A, B], {"confidence_threshold": math.nan}, "confidence_threshold"),
    ],
)
def test_summarise_refuses_bad_input(
    arms: list[Arm], kwargs: dict[str, int | float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _summarise(arms, **kwargs)


# Thompson sampling's weights.


def test_weights_sum_to_ten_thousand_with_the_floor() -> None:
    arms = [A, B, Arm("c", False, 900, 95), Arm("d", False, 1_100, 120)]
    for floor in (0, 1, 100, 2_500):
        weights = thompson_weights(arms, floor_bp=floor)
        assert sum(weights.values()) == 10_000
        assert min(weights.values()) >= floor
    assert thompson_weights(arms, floor_bp=2_500) == dict.fromkeys("abcd", 2_500)


def test_a_clear_winner_takes_all_but_the_floor() -> None:
    arms = [Arm("a", True, 1_000, 10), Arm("b", False, 1_000, 500), Arm("c", False, 1_000, 20)]
    assert thompson_weights(arms, floor_bp=100) == {"a": 100, "b": 9_800, "c": 100}
    assert thompson_weights(arms, floor_bp=0) == {"a": 0, "b": 10_000, "c": 0}


def test_weights_follow_the_probability_to_be_best() -> None:
    arms = [A, B, Arm("c", False, 1_000, 120)]
    weights = thompson_weights(arms, floor_bp=200)
    stats = _summarise(arms).arms
    for s in stats:
        share = (10_000 - 3 * 200) * s.probability_to_be_best
        assert abs(weights[s.variant_id] - 200 - share) < 1.0
    equal = thompson_weights([Arm(i, i == "a", 500, 50) for i in "abc"], floor_bp=100)
    tolerance = 9_700 * _mc_tolerance(1 / 3)
    assert all(abs(w - 100 - 9_700 / 3) <= tolerance for w in equal.values())


def test_a_floor_that_cannot_fit_is_a_value_error() -> None:
    arms = [Arm(str(i), i == 0, 10, 1) for i in range(3)]
    with pytest.raises(ValueError, match="exceeds 10000; at most 3333 fits"):
        thompson_weights(arms, floor_bp=3_334)
    with pytest.raises(ValueError, match="floor_bp"):
        thompson_weights(arms, floor_bp=-1)
    with pytest.raises(ValueError, match="no arms"):
        thompson_weights([])


def test_largest_remainder_rounding() -> None:
    assert largest_remainder([1, 1, 1], 10_000) == [3_334, 3_333, 3_333]
    assert largest_remainder([2, 1, 2], 10) == [4, 2, 4]
    assert largest_remainder([1, 1, 1, 3], 7) == [1, 1, 1, 4]  # remainders 1/6, 1/6, 1/6, 3/6
    assert largest_remainder([0, 0, 5], 7) == [0, 0, 7]
    assert largest_remainder([0, 0], 0) == [0, 0]
    with pytest.raises(ValueError):
        largest_remainder([0, 0], 1)
    rng = random.Random(12)
    for _ in range(200):
        counts = [rng.randrange(0, 100_000) for _ in range(rng.randrange(1, 11))]
        counts[0] += 1
        total = rng.randrange(0, 10_001)
        shares = largest_remainder(counts, total)
        assert sum(shares) == total
        for count, share in zip(counts, shares, strict=True):
            assert abs(share - total * count / sum(counts)) < 1.0


# Bounded memory.


def test_ten_arms_by_a_million_draws_stay_small_and_quick() -> None:
    arms = [Arm(f"v{i}", i == 0, 10_000, 1_000 + 10 * i) for i in range(10)]
    tracemalloc.start()
    try:
        # tracemalloc sees numpy's buffers: without that the bound below proves nothing.
        np.ones(2 * 1024 * 1024)
        _, seen = tracemalloc.get_traced_memory()
        assert seen >= 16 * 1024 * 1024
        tracemalloc.reset_peak()
        started = time.perf_counter()
        summary = _summarise(arms, draws=1_000_000)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # All the draws at once would be 10 × 1e6 × 8 bytes = 80 MB.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert elapsed < 30.0
    assert summary.draws == 1_000_000
    assert sum(s.probability_to_be_best for s in summary.arms) == pytest.approx(1.0, abs=1e-9)
    assert summary.arms[-1].probability_to_be_best > summary.arms[0].probability_to_be_best
