"""Agreement metrics on examples small enough to compute by hand (worked in comments)."""

from __future__ import annotations

import math

import pytest

from alignkit.feedback.agreement import (
    inter_labeler_agreement,
    item_agreement,
    kendall_w,
    krippendorff_alpha,
    low_agreement_labelers,
    majority_agreement,
    majority_counts,
    midranks,
    pairwise_agreement,
    pairwise_counts,
)

A = {1: 1, 2: 2, 3: 3}
B = {1: 1, 2: 3, 3: 2}  # swaps completions 2 and 3
REV = {1: 3, 2: 2, 3: 1}
TIE = {1: 1, 2: 1, 3: 3}  # ties 1 and 2


def test_midranks_average_tied_positions():
    assert midranks(TIE) == {1: 1.5, 2: 1.5, 3: 3.0}
    assert midranks({5: 2, 6: 2, 7: 2}) == {5: 2.0, 6: 2.0, 7: 2.0}


def test_perfect_agreement_is_one():
    data = {"i1": {"x": A, "y": A, "z": A}, "i2": {"x": REV, "y": REV}}
    assert inter_labeler_agreement(data) == 1.0
    assert kendall_w(data["i1"]) == 1.0
    assert krippendorff_alpha(data) == 1.0
    assert krippendorff_alpha(data, "interval") == 1.0
    assert majority_agreement(data) == {"x": 1.0, "y": 1.0, "z": 1.0}


def test_pairwise_agreement_hand_computed():
    # Pairs (1,2) and (1,3) agree, (2,3) flips: 2/3.
    assert pairwise_counts(A, B) == (2, 3)
    assert pairwise_agreement(A, B) == pytest.approx(2 / 3)
    assert pairwise_agreement(A, REV) == 0.0
    # The tied pair (1,2) is not comparable: (1,3) and (2,3) both agree.
    assert pairwise_counts(A, TIE) == (2, 2)
    assert math.isnan(pairwise_agreement({1: 1, 2: 1}, A))
    # Pooled over items and labeler pairs: item 1 (A,B) 2/3, item 2 (A,REV) 0/3 -> 2/6.
    assert inter_labeler_agreement({1: {"a": A, "b": B}, 2: {"a": A, "b": REV}}) == 2 / 6
    # Three labelers A, A, REV: pairs (A,A) 3/3, (A,REV) 0/3 twice -> 3/9.
    assert item_agreement({"a": A, "b": A, "c": REV}) == pytest.approx(1 / 3)


def test_kendall_w_hand_computed():
    # Rank sums R = (2, 5, 5), mean 4, S = 4 + 1 + 1 = 6; W = 12*6 / (2^2 * (27 - 3)) = 0.75.
    assert kendall_w({"a": A, "b": B}) == pytest.approx(0.75)
    # Tie correction: mid-ranks (1.5, 1.5, 3) + (1, 2, 3): R = (2.5, 3.5, 6), S = 6.5,
    # T = 2^3 - 2 = 6; W = 12*6.5 / (4*24 - 2*6) = 78/84 = 13/14.
    assert kendall_w({"a": TIE, "b": A}) == pytest.approx(13 / 14)
    # Two opposite rankings: every rank sum is 4, S = 0.
    assert kendall_w({"a": A, "b": REV}) == 0.0
    assert math.isnan(kendall_w({"a": A}))


def test_krippendorff_alpha_hand_computed():
    # Units (completions) hold values (1,1), (2,3), (3,2); n = 6, each value twice.
    # Interval: D_o = (0 + 2 + 2)/6 = 2/3; D_e = 48/(6*5) = 1.6; alpha = 1 - (2/3)/1.6 = 7/12.
    # Ordinal distances (4, 4, 16) are 4x the interval ones here, so alpha is also 7/12.
    data = {0: {"a": A, "b": B}}
    assert krippendorff_alpha(data, "interval") == pytest.approx(7 / 12)
    assert krippendorff_alpha(data, "ordinal") == pytest.approx(7 / 12)
    # With a tie the marginals are uneven and the levels differ. Values 1, 1.5, 2, 3 with
    # n = (1, 2, 1, 2); units (1.5, 1), (1.5, 2), (3, 3).
    # Interval: observed sum o*d = 2*0.25 + 2*0.25 = 1; expected sum n_c n_k d = 42;
    # alpha = 1 - 5*1/42 = 37/42.
    # Ordinal: d(1,1.5) = (3 - 1.5)^2 = 2.25, d(1,2) = (4 - 1)^2 = 9, d(1,3) = (6 - 1.5)^2,
    # d(1.5,2) = 2.25, d(1.5,3) = (5 - 2)^2 = 9, d(2,3) = 2.25; observed 9, expected 198;
    # alpha = 1 - 5*9/198 = 17/22.
    tied = {0: {"a": TIE, "b": A}}
    assert krippendorff_alpha(tied, "interval") == pytest.approx(37 / 42)
    assert krippendorff_alpha(tied, "ordinal") == pytest.approx(17 / 22)
    # Missing labelers are allowed: an item ranked once adds nothing.
    tied[1] = {"a": A}
    assert krippendorff_alpha(tied, "ordinal") == pytest.approx(17 / 22)
    assert math.isnan(krippendorff_alpha({0: {"a": A}}))
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(data, "nominal")


def test_majority_agreement_singles_out_the_contrarian():
    # C reverses A and B on every pair: the majority is A/B's side on all 3 pairs.
    data = {0: {"a": A, "b": A, "c": REV}}
    assert majority_counts(data) == {"a": (3, 3), "b": (3, 3), "c": (0, 3)}
    # Two labelers who disagree split every disputed pair: those pairs are not comparable.
    assert majority_counts({0: {"a": A, "b": B}}) == {"a": (2, 2), "b": (2, 2)}
    scores = {"a": 0.8, "b": 0.78, "c": 0.75, "d": 0.4}
    assert low_agreement_labelers(scores) == ["d"]
    assert low_agreement_labelers({"a": 0.8, "d": 0.1}) == []  # too few to judge
