"""Property-based tests (hypothesis): rankings -> pairs and the agreement metrics hold their
invariants on any input, and Krippendorff's alpha equals the `krippendorff` package's."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from itertools import combinations

import krippendorff
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignkit.feedback.agreement import (
    inter_labeler_agreement,
    item_agreement,
    kendall_w,
    krippendorff_alpha,
    majority_agreement,
    midranks,
    pairwise_agreement,
)
from alignkit.feedback.pairs import rankings_to_pairs
from alignkit.feedback.store import Completion, Item, Labeler, Ranking

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def make_item(texts: list[str], item_id: int = 1, criteria=("helpfulness",)) -> Item:
    return Item(id=item_id, round=0, prompt=f"prompt {item_id}", criteria=tuple(criteria),
                created=NOW, completions=tuple(Completion(id=10 * item_id + k, position=k,
                                                          text=t) for k, t in enumerate(texts)))


def make_ranking(item: Item, ranks: list[int], labeler: int = 1, kind: str = "human",
                 criterion: str = "helpfulness") -> Ranking:
    return Ranking(id=labeler, item=item, labeler=Labeler(labeler, f"l{labeler}", kind, NOW),
                   ranks=dict(zip(item.completion_ids, ranks, strict=True)), skipped=False,
                   flagged_unsafe=False, created=NOW, criterion=criterion)


@st.composite
def one_ranking(draw, distinct: bool = True):
    k = draw(st.integers(2, 7))
    alphabet = st.sampled_from(["a", "b", "c", "x", "same"]) if not distinct else st.text(
        min_size=1, max_size=6)
    texts = draw(st.lists(alphabet, min_size=k, max_size=k, unique=distinct))
    ranks = draw(st.lists(st.integers(1, k), min_size=k, max_size=k))
    return texts, ranks


@SETTINGS
@given(one_ranking(distinct=True))
def test_one_ranking_gives_k_choose_2_minus_ties_pairs_chosen_ranked_better(case):
    texts, ranks = case
    item = make_item(texts)
    r = make_ranking(item, ranks)
    for aggregate in ("majority", "bradley_terry"):
        pairs = rankings_to_pairs([r], aggregate=aggregate)
        k = len(texts)
        ties = sum(ranks[i] == ranks[j] for i, j in combinations(range(k), 2))
        assert len(pairs) == k * (k - 1) // 2 - ties
        rank_of = dict(zip(texts, ranks, strict=True))
        for p in pairs:
            assert p.chosen != p.rejected
            assert rank_of[p.chosen] < rank_of[p.rejected]
            assert 0.0 < p.vote_strength <= 1.0 and p.labelers == 1


@SETTINGS
@given(one_ranking(distinct=False), st.lists(st.lists(st.integers(1, 7), min_size=7,
                                                      max_size=7), max_size=4))
def test_no_pair_ever_has_equal_texts(case, more):
    texts, ranks = case
    item = make_item(texts)
    rs = [make_ranking(item, ranks)]
    rs += [make_ranking(item, [min(x, len(texts)) for x in m[: len(texts)]], labeler=2 + i)
           for i, m in enumerate(more)]
    for aggregate in ("majority", "bradley_terry"):
        assert all(p.chosen != p.rejected for p in rankings_to_pairs(rs, aggregate=aggregate))


@SETTINGS
@given(st.integers(2, 5), st.lists(st.lists(st.integers(1, 5), min_size=5, max_size=5),
                                   min_size=1, max_size=6))
def test_majority_pairs_side_with_more_votes(k, votes):
    item = make_item([f"t{j}" for j in range(k)])
    rs = [make_ranking(item, [min(v, k) for v in vs[:k]], labeler=i)
          for i, vs in enumerate(votes)]
    for p in rankings_to_pairs(rs):
        c, r = int(p.chosen[1:]), int(p.rejected[1:])
        for_c = sum(x.ranks[item.completion_ids[c]] < x.ranks[item.completion_ids[r]] for x in rs)
        for_r = sum(x.ranks[item.completion_ids[c]] > x.ranks[item.completion_ids[r]] for x in rs)
        assert for_c > for_r and p.labelers == for_c + for_r
        assert p.vote_strength == pytest.approx((for_c - for_r) / (for_c + for_r))


# -- agreement metrics ---------------------------------------------------------------------

ranks_k = st.integers(2, 6).flatmap(
    lambda k: st.lists(st.integers(1, k), min_size=k, max_size=k))


def as_ranks(xs: list[int]) -> dict[int, int]:
    return dict(enumerate(xs))


@SETTINGS
@given(ranks_k, st.data())
def test_pairwise_agreement_bounds_symmetry_and_extremes(xs, data):
    other = data.draw(st.lists(st.integers(1, len(xs)), min_size=len(xs), max_size=len(xs)))
    a, b = as_ranks(xs), as_ranks(other)
    ab = pairwise_agreement(a, b)
    assert math.isnan(ab) or 0.0 <= ab <= 1.0
    ba = pairwise_agreement(b, a)
    assert ab == ba or (math.isnan(ab) and math.isnan(ba))
    if len(set(xs)) > 1:  # some strict pair exists
        assert pairwise_agreement(a, a) == 1.0
        reverse = {k: len(xs) + 1 - v for k, v in a.items()}
        assert pairwise_agreement(a, reverse) == 0.0
    else:
        assert math.isnan(pairwise_agreement(a, a))


@SETTINGS
@given(st.lists(ranks_k, min_size=2, max_size=5))
def test_item_metrics_do_not_depend_on_labeler_names(rankings):
    k = min(len(r) for r in rankings)
    item = {f"lab{i}": as_ranks(r[:k]) for i, r in enumerate(rankings)}
    renamed = {f"z{len(item) - i}": v for i, v in enumerate(item.values())}
    for f in (item_agreement, kendall_w):
        x, y = f(item), f(renamed)
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)
    w = kendall_w(item)
    assert math.isnan(w) or -1e-9 <= w <= 1.0 + 1e-9
    for score in majority_agreement({0: item}).values():
        assert math.isnan(score) or 0.0 <= score <= 1.0


@SETTINGS
@given(st.integers(2, 6).flatmap(lambda k: st.permutations(list(range(1, k + 1)))),
       st.integers(2, 5))
def test_identical_strict_rankings_agree_perfectly(perm, m):
    item = {lab: as_ranks(list(perm)) for lab in range(m)}
    assert item_agreement(item) == 1.0
    assert kendall_w(item) == pytest.approx(1.0)
    assert krippendorff_alpha({0: item}) == pytest.approx(1.0)
    assert inter_labeler_agreement({0: item, 1: item}) == 1.0


def reliability_matrix(by_item: dict, labelers: int, k: int) -> np.ndarray:
    """The `krippendorff` package's input: labelers x units (item, completion), NaN missing."""
    units = [(i, c) for i in sorted(by_item) for c in range(k)]
    data = np.full((labelers, len(units)), np.nan)
    for u, (i, c) in enumerate(units):
        for lab, ranks in by_item[i].items():
            data[lab, u] = midranks(ranks)[c]
    return data


@st.composite
def rated_items(draw):
    k = draw(st.integers(2, 5))
    labelers = draw(st.integers(2, 4))
    n = draw(st.integers(1, 6))
    by_item = {}
    for i in range(n):
        who = draw(st.lists(st.booleans(), min_size=labelers, max_size=labelers))
        by_item[i] = {lab: as_ranks(draw(st.lists(st.integers(1, k), min_size=k, max_size=k)))
                      for lab in range(labelers) if who[lab]}
    return by_item, labelers, k


@SETTINGS
@given(rated_items(), st.sampled_from(["ordinal", "interval"]))
def test_krippendorff_alpha_equals_the_krippendorff_package(case, level):
    by_item, labelers, k = case
    ours = krippendorff_alpha(by_item, level)
    data = reliability_matrix(by_item, labelers, k)
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2).any()
    values = np.unique(data[:, np.sum(~np.isnan(data), axis=0) >= 2])
    values = values[~np.isnan(values)]
    if not pairable or len(values) < 2:
        assert math.isnan(ours)  # nothing to agree on: undefined, not a misleading number
        return
    theirs = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_krippendorff_alpha_cross_check_on_random_data():
    """The same check on larger random sets (missing labels included), seeded."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        k, labelers, n = int(rng.integers(2, 6)), int(rng.integers(2, 6)), int(rng.integers(5, 40))
        by_item = {i: {lab: as_ranks(rng.integers(1, k + 1, size=k).tolist())
                       for lab in range(labelers) if rng.random() > 0.25} for i in range(n)}
        data = reliability_matrix(by_item, labelers, k)
        for level in ("ordinal", "interval"):
            assert krippendorff_alpha(by_item, level) == pytest.approx(
                krippendorff.alpha(reliability_data=data, level_of_measurement=level), abs=1e-9)
