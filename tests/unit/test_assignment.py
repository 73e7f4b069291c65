"""Visitors' assignment: sticky, split by the weights, and moved by a new
epoch only for visitors first seen after it."""

from __future__ import annotations

from collections import Counter

import pytest

from litho.assignment import (
    BUCKETS,
    MAX_VID_CHARS,
    Epoch,
    assign,
    bucket,
    choose,
    epoch_of,
    first_seen,
    is_cookie_vid,
    new_cookie_vid,
    vid_problem,
)

EVEN = Epoch(0.0, (("a", 5000), ("b", 5000)))


def test_the_same_visitor_always_gets_the_same_variant() -> None:
    vids = [f"visitor-{i}" for i in range(1000)]
    first = [assign("exp_1", v, [EVEN]) for v in vids]
    assert first == [assign("exp_1", v, [EVEN]) for v in vids]
    # Another experiment hashes the same visitors apart.
    other = [assign("exp_2", v, [EVEN]) for v in vids]
    assert 350 < sum(x != y for x, y in zip(first, other, strict=True)) < 650


@pytest.mark.parametrize("weights", [(("a", 5000), ("b", 5000)), (("a", 2000), ("b", 8000)),
                                     (("a", 1000), ("b", 3000), ("c", 6000))])
def test_the_split_follows_the_weights(weights: tuple[tuple[str, int], ...]) -> None:
    n = 20_000
    seen = Counter(assign("exp_split", f"v{i}", [Epoch(0.0, weights)]) for i in range(n))
    for variant, weight in weights:
        share = weight / BUCKETS
        # Within five standard deviations of a binomial share.
        assert abs(seen[variant] / n - share) < 5 * (share * (1 - share) / n) ** 0.5


def test_choose_splits_the_buckets_in_order() -> None:
    weights = (("a", 100), ("b", 0), ("c", 9900))
    assert choose(0, weights) == "a" and choose(99, weights) == "a"
    assert choose(100, weights) == "c" and choose(BUCKETS - 1, weights) == "c"
    assert 0 <= bucket("e", "v") < BUCKETS


def test_a_new_epoch_moves_only_visitors_first_seen_after_it() -> None:
    later = Epoch(1000.0, (("a", 100), ("b", 9900)))
    old = [f"v1.{500 + i}.{'A' * 21}{i % 10}" for i in range(10)]
    assert all(is_cookie_vid(v) for v in old)
    for vid in old:
        assert assign("e", vid, [EVEN, later]) == assign("e", vid, [EVEN])
    new = [new_cookie_vid(2000.0 + i) for i in range(400)]
    shares = Counter(assign("e", v, [EVEN, later]) for v in new)
    assert shares["b"] > 380
    # Ids a caller gave carry no time: the first epoch's weights.
    assert epoch_of("customer-42", [EVEN, later]) is EVEN
    assert epoch_of(new[0], [EVEN, later]) is later


def test_cookie_ids_carry_their_issue_time_and_caller_ids_do_not() -> None:
    vid = new_cookie_vid(1_800_000_000.7)
    assert first_seen(vid) == 1_800_000_000.0 and is_cookie_vid(vid)
    assert first_seen("v1.123.short") is None and first_seen("anything") is None


@pytest.mark.parametrize(("vid", "problem"), [
    ("", "empty"), ("  ", "blank"), ("x" * (MAX_VID_CHARS + 1), "at most"), ("a\nb", "control"),
    ("a\x85b", "control"), ("a\u2028b", "control"),
    ("\ud800", "Unicode"), ("x" * 10_000, "at most")])
def test_bad_visitor_ids_are_named(vid: str, problem: str) -> None:
    assert problem in vid_problem(vid)


def test_good_visitor_ids_pass() -> None:
    for vid in ("customer-42", "x" * MAX_VID_CHARS, "émile@example.com", new_cookie_vid(1.0)):
        assert vid_problem(vid) == ""
