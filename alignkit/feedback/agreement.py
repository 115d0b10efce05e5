"""Agreement between labelers: pure functions over rankings, no database, no I/O.

A ranking is a mapping ``completion_id -> rank`` (1 = best, ties share a rank). An item's
rankings are a mapping ``labeler -> ranking``; a whole data set is ``item -> that``.
Every function returns ``nan`` when the quantity is undefined (too few labelers, nothing
comparable) rather than a misleading 0 or 1.

Why several measures: pairwise agreement is what InstructGPT reported (~73-77%) and what
the simulated labelers are tuned to; agreement with the majority singles out a labeler;
Kendall's W says how concordant one item's rankings are; Krippendorff's alpha corrects
the whole data set for chance agreement and tolerates missing labels.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from itertools import combinations
from statistics import median
from typing import Literal, TypeVar

import numpy as np

L = TypeVar("L", bound=Hashable)
Ranks = Mapping[int, int | float]
ItemRankings = Mapping[L, Ranks]  # labeler -> ranking of one item
ByItem = Mapping[Hashable, Mapping[L, Ranks]]  # item -> labeler -> ranking


def midranks(ranks: Ranks) -> dict[int, float]:
    """Tied completions get the mean of the positions they occupy.

    ``{a: 1, b: 1, c: 3}`` -> ``{a: 1.5, b: 1.5, c: 3.0}``: the standard treatment of ties
    for rank statistics, so a labeler who ties everything is neutral, not 'all best'.
    """
    order = sorted(ranks, key=lambda k: ranks[k])
    out: dict[int, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and ranks[order[j + 1]] == ranks[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            out[k] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def preference(ranks: Ranks, a: int, b: int) -> int:
    """+1 if ``a`` is ranked better than ``b``, -1 if worse, 0 if tied."""
    ra, rb = ranks[a], ranks[b]
    return (ra < rb) - (ra > rb)


def pairwise_counts(r1: Ranks, r2: Ranks) -> tuple[int, int]:
    """(agreeing, comparable) completion pairs; a pair either labeler tied is not comparable."""
    keys = sorted(set(r1) & set(r2))
    agree = total = 0
    for a, b in combinations(keys, 2):
        p1, p2 = preference(r1, a, b), preference(r2, a, b)
        if p1 and p2:
            total += 1
            agree += p1 == p2
    return agree, total


def pairwise_agreement(r1: Ranks, r2: Ranks) -> float:
    """Share of completion pairs two labelers order the same way (ties excluded)."""
    agree, total = pairwise_counts(r1, r2)
    return agree / total if total else math.nan


def _item_pair_counts(item: Mapping[L, Ranks]) -> tuple[int, int]:
    agree = total = 0
    for l1, l2 in combinations(sorted(item, key=repr), 2):
        a, t = pairwise_counts(item[l1], item[l2])
        agree += a
        total += t
    return agree, total


def item_agreement(item: Mapping[L, Ranks]) -> float:
    """Pairwise agreement pooled over every pair of labelers who ranked this item."""
    agree, total = _item_pair_counts(item)
    return agree / total if total else math.nan


def inter_labeler_agreement(by_item: ByItem) -> float:
    """Pairwise agreement pooled over all items and all pairs of labelers on each item."""
    agree = total = 0
    for item in by_item.values():
        a, t = _item_pair_counts(item)
        agree += a
        total += t
    return agree / total if total else math.nan


def majority_counts(by_item: ByItem) -> dict[Hashable, tuple[int, int]]:
    """Per labeler: (agreeing, comparable) pairs against the item's majority vote.

    The majority counts every labeler of the item, the one scored included (with three
    labelers a leave-one-out 'majority' of two is often a split and says nothing). This
    inflates everyone's score alike, so it ranks labelers fairly; pairs the labeler tied,
    or where the votes split evenly, are not comparable.
    """
    out: dict[Hashable, list[int]] = {}
    for item in by_item.values():
        labelers = list(item)
        if len(labelers) < 2:
            continue
        keys = sorted(set.intersection(*(set(item[lab]) for lab in labelers)))
        for a, b in combinations(keys, 2):
            votes = {lab: preference(item[lab], a, b) for lab in labelers}
            total = sum(votes.values())
            majority = (total > 0) - (total < 0)
            if majority == 0:
                continue
            for lab, v in votes.items():
                if v:
                    c = out.setdefault(lab, [0, 0])
                    c[0] += v == majority
                    c[1] += 1
    return {lab: (c[0], c[1]) for lab, c in out.items()}


def majority_agreement(by_item: ByItem) -> dict[Hashable, float]:
    """Per labeler: share of their strict preferences that side with the item's majority."""
    return {lab: a / t if t else math.nan for lab, (a, t) in majority_counts(by_item).items()}


def low_agreement_labelers(
    scores: Mapping[L, float], gap: float = 0.15, min_labelers: int = 3
) -> list[L]:
    """Labelers whose score is more than ``gap`` below the median of the *others*.

    The others' median (not everyone's) so one bad labeler cannot drag the reference down
    toward themself; needs ``min_labelers`` scored labelers to mean anything.
    """
    valid = {k: v for k, v in scores.items() if not math.isnan(v)}
    if len(valid) < min_labelers:
        return []
    return [
        k for k, v in valid.items()
        if v < median(x for j, x in valid.items() if j != k) - gap
    ]


def kendall_w(item: Mapping[L, Ranks]) -> float:
    """Kendall's coefficient of concordance W for one item, with the tie correction.

    ``W = 12 S / (m^2 (n^3 - n) - m sum_j T_j)`` with m labelers, n completions,
    ``S = sum_i (R_i - mean R)^2`` over the completions' rank sums (mid-ranks for ties) and
    ``T_j = sum over tie groups of labeler j of (t^3 - t)``. 1 = identical rankings,
    0 = no concordance. Only completions every labeler ranked are used.
    """
    labelers = list(item)
    m = len(labelers)
    if m < 2:
        return math.nan
    keys = sorted(set.intersection(*(set(item[lab]) for lab in labelers)))
    n = len(keys)
    if n < 2:
        return math.nan
    sums = np.zeros(n)
    ties = 0.0
    for lab in labelers:
        sub = {k: item[lab][k] for k in keys}
        mr = midranks(sub)
        sums += np.array([mr[k] for k in keys])
        _, group_sizes = np.unique([sub[k] for k in keys], return_counts=True)
        ties += float(np.sum(group_sizes.astype(float) ** 3 - group_sizes))
    s = float(np.sum((sums - sums.mean()) ** 2))
    denom = m * m * (n**3 - n) - m * ties
    return 12.0 * s / denom if denom > 0 else math.nan


def krippendorff_alpha(
    by_item: ByItem, level: Literal["ordinal", "interval"] = "ordinal"
) -> float:
    """Krippendorff's alpha over all items; units are (item, completion), values mid-ranks.

    ``alpha = 1 - (n - 1) * sum_ck o_ck d_ck / sum_ck n_c n_k d_ck`` from the coincidence
    matrix ``o`` (each unit with m_u >= 2 values adds every ordered pair of its values with
    weight 1/(m_u - 1)), its marginals ``n_c`` and ``n = sum n_c``. Interval distance:
    ``d_ck = (c - k)^2``; ordinal: ``d_ck = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2``.
    Labelers missing on an item are simply absent (alpha allows it). 1 = perfect.
    """
    units: list[list[float]] = []
    for item in by_item.values():
        per_comp: dict[int, list[float]] = {}
        for ranks in item.values():
            for cid, v in midranks(ranks).items():
                per_comp.setdefault(cid, []).append(v)
        units.extend(vals for vals in per_comp.values() if len(vals) >= 2)
    if not units:
        return math.nan
    values = np.array(sorted({v for u in units for v in u}))
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for u in units:
        c = np.zeros(len(values))
        for v in u:
            c[index[v]] += 1
        o += (np.outer(c, c) - np.diag(c)) / (len(u) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if level == "interval":
        d = (values[:, None] - values[None, :]) ** 2
    elif level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
        hi = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
        between = cum[hi + 1] - cum[lo]
        d = (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    else:
        raise ValueError(f"level '{level}' is unknown — use 'ordinal' or 'interval'")
    expected = float(np.sum(np.outer(n_c, n_c) * d))
    if expected == 0.0:
        return math.nan
    return 1.0 - (n - 1.0) * float(np.sum(o * d)) / expected
