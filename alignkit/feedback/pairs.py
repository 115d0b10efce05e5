"""Rankings -> pairwise preferences (the unit the reward model trains on), per criterion."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import combinations
from typing import TYPE_CHECKING, Literal

import numpy as np

from alignkit.data.types import Pair, Source
from alignkit.feedback.agreement import (
    inter_labeler_agreement,
    item_agreement,
    kendall_w,
    krippendorff_alpha,
    preference,
)

if TYPE_CHECKING:
    from alignkit.feedback.store import FeedbackStore, Ranking


# -- rankings -> pairs ---------------------------------------------------------------------

Aggregate = Literal["majority", "bradley_terry"]


def pair_source(kinds: Iterable[str]) -> Source:
    """One honest source for a pair judged by several labelers.

    'human' only when every voter is human; any simulated voter makes it 'simulated'
    (the weakest claim), otherwise 'ai'.
    """
    kinds = set(kinds)
    if not kinds or kinds == {"human"}:
        return "human"
    return "simulated" if "simulated" in kinds else "ai"


def _by_item(rankings: Iterable[Ranking]) -> dict[tuple[int, str], list[Ranking]]:
    """(item id, criterion) -> its non-skipped rankings; a criterion's rankings stand alone."""
    out: dict[tuple[int, str], list[Ranking]] = {}
    for r in rankings:
        if not r.skipped and r.ranks:
            out.setdefault((r.item_id, r.criterion or r.item.criterion), []).append(r)
    return dict(sorted(out.items()))


def majority_unsafe(rs: Iterable[Ranking], completion_id: int) -> bool | None:
    """The labelers' verdict on one completion: True if at least half of those who flagged
    it either way called it unsafe (a split errs toward caution), None if nobody did."""
    votes = [r.unsafe[completion_id] for r in _one_per_labeler(rs)
             if completion_id in r.unsafe]
    return None if not votes else 2 * sum(votes) >= len(votes)


def _one_per_labeler(rs: Iterable[Ranking]) -> list[Ranking]:
    seen: dict[int, Ranking] = {}
    for r in rs:
        seen.setdefault(r.labeler_id, r)
    return list(seen.values())


def _votes(rs: list[Ranking], a: int, b: int) -> tuple[int, int, set[str]]:
    """Votes for a over b, for b over a, and the kinds of those who voted (ties abstain)."""
    va = vb = 0
    kinds: set[str] = set()
    for r in rs:
        if a not in r.ranks or b not in r.ranks:
            continue
        p = preference(r.ranks, a, b)
        va += p > 0
        vb += p < 0
        if p:
            kinds.add(r.labeler.kind)
    return va, vb, kinds


def bradley_terry_strengths(
    wins: np.ndarray, prior: float = 1.0, iters: int = 50
) -> np.ndarray:
    """Bradley-Terry strengths from a win matrix (``wins[i, j]`` = votes for i over j).

    Maximises ``sum_ij wins_ij log sigmoid(s_i - s_j) - prior/2 * sum_i s_i^2`` by Newton's
    method. The Gaussian prior keeps strengths finite when votes are unanimous (the plain
    maximum-likelihood estimate runs off to infinity) and lets more votes mean more
    confidence: one unanimous vote gives P(a > b) ~ 0.66, three give ~ 0.79.
    """
    k = wins.shape[0]
    s = np.zeros(k)
    n = wins + wins.T
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))
        grad = (wins - n * p).sum(axis=1) - prior * s
        w = n * p * (1.0 - p)
        hess = w - np.diag(w.sum(axis=1)) - prior * np.eye(k)
        step = np.linalg.solve(hess, grad)
        s = s - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return s


def rankings_to_pairs(
    source: FeedbackStore | Iterable[Ranking],
    aggregate: Aggregate = "majority",
    round: int | None = None,
    criterion: str | None = None,
) -> list[Pair]:
    """Every item's completion pairs per criterion, aggregated over its (non-skipped) rankings.

    Each labeler who ranked a pair strictly casts one vote; ties abstain, and a pair nobody
    ranked strictly is dropped. ``majority``: the pair goes to the side with more votes
    (an even split is dropped), ``vote_strength = |votes_a - votes_b| / voters``.
    ``bradley_terry``: per item and criterion, strengths are fitted to all its votes and
    ``vote_strength = |sigmoid(s_a - s_b) - 0.5| * 2``, so a pair also borrows strength
    from the item's other comparisons. ``labelers`` is the number of voters on the pair,
    ``source`` their kind, ``criterion`` the criterion ranked (``criterion=`` keeps only
    that one). Two completions with the same text never make a pair: "x beats x" teaches
    the reward model nothing but noise. ``chosen_unsafe``/``rejected_unsafe`` come from
    :func:`majority_unsafe` over the item's labelers.
    """
    if aggregate not in ("majority", "bradley_terry"):
        raise ValueError(f"aggregate '{aggregate}' is unknown — use 'majority' or "
                         "'bradley_terry'")
    # Duck-typed so importing this module does not pull in SQLAlchemy.
    rankings = (source.rankings(round, criterion=criterion) if hasattr(source, "rankings")
                else [r for r in source if criterion is None
                      or (r.criterion or r.item.criterion) == criterion])
    all_by_item: dict[int, list[Ranking]] = {}
    for r in rankings:
        all_by_item.setdefault(r.item_id, []).append(r)
    pairs: list[Pair] = []
    for (item_id, crit), rs in _by_item(rankings).items():
        pairs += _item_pairs(rs, crit, aggregate, all_by_item[item_id])
    return pairs


def _item_pairs(rs: list[Ranking], criterion: str, aggregate: Aggregate,
                everyone: list[Ranking]) -> list[Pair]:
    """One item's pairs under one criterion (see :func:`rankings_to_pairs`)."""
    item = rs[0].item
    comps = item.completions
    votes = {
        (i, j): _votes(rs, comps[i].id, comps[j].id)
        for i, j in combinations(range(len(comps)), 2)
        if comps[i].text != comps[j].text
    }
    strengths = None
    if aggregate == "bradley_terry":
        wins = np.zeros((len(comps), len(comps)))
        for (i, j), (va, vb, _) in votes.items():
            wins[i, j], wins[j, i] = va, vb
        strengths = bradley_terry_strengths(wins)
    unsafe = {c.id: majority_unsafe(everyone, c.id) for c in comps}
    pairs = []
    for (i, j), (va, vb, kinds) in votes.items():
        voters = va + vb
        if voters == 0:
            continue
        if strengths is None:
            if va == vb:
                continue
            a_wins, strength = va > vb, abs(va - vb) / voters
        else:
            diff = float(strengths[i] - strengths[j])
            if abs(diff) < 1e-9:
                continue
            a_wins = diff > 0
            strength = abs(1.0 / (1.0 + math.exp(-diff)) - 0.5) * 2.0
        win, lose = (comps[i], comps[j]) if a_wins else (comps[j], comps[i])
        pairs.append(Pair(
            prompt=item.prompt,
            chosen=win.text,
            rejected=lose.text,
            vote_strength=float(strength),
            source=pair_source(kinds),
            labelers=voters,
            criterion=criterion,
            chosen_unsafe=unsafe[win.id],
            rejected_unsafe=unsafe[lose.id],
        ))
    return pairs


# -- summary ---------------------------------------------------------------------------------


def rankings_by_item(rankings: Iterable[Ranking]
                     ) -> dict[tuple[int, str], dict[int, dict[int, int]]]:
    """(item id, criterion) -> labeler id -> ranks, for the agreement functions (skipped
    ones left out). Criteria are separate units: a labeler's helpfulness and harmlessness
    rankings of one item are two judgements, not one."""
    return {key: {r.labeler_id: r.ranks for r in rs} for key, rs in _by_item(rankings).items()}


def flag_agreement(rankings: Iterable[Ranking]) -> tuple[float, int]:
    """Pairwise agreement of safe/unsafe flags: over completions flagged by >= 2 labelers,
    the share of labeler pairs giving the same verdict; and how many such completions."""
    per: dict[int, dict[int, bool]] = {}
    for r in rankings:
        for cid, u in r.unsafe.items():
            per.setdefault(cid, {})[r.labeler_id] = u
    agree = total = 0
    units = 0
    for votes in per.values():
        vs = list(votes.values())
        if len(vs) < 2:
            continue
        units += 1
        for a, b in combinations(vs, 2):
            total += 1
            agree += a == b
    return (agree / total if total else math.nan), units


def _finite_mean(xs: Iterable[float]) -> float:
    vals = [x for x in xs if not math.isnan(x)]
    return float(np.mean(vals)) if vals else math.nan


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round_(x)


def _agreement_block(kept: list[Ranking], top: int) -> dict:
    by_item = rankings_by_item(kept)
    multi = {k: labs for k, labs in by_item.items() if len(labs) >= 2}
    items = {r.item_id: r.item for r in kept}
    per_item = sorted(
        ((item_agreement(labs), k) for k, labs in multi.items()),
        key=lambda t: (math.inf if math.isnan(t[0]) else t[0], t[1]),
    )
    return {
        "rankings": len(kept),
        "items_ranked": len({k[0] for k in by_item}),
        "agreement": _clean(inter_labeler_agreement(multi)),
        "kendall_w_mean": _clean(_finite_mean(kendall_w(labs) for labs in multi.values())),
        "krippendorff_alpha": _clean(krippendorff_alpha(multi)),
        "most_disputed": [
            {
                "item_id": k[0],
                "criterion": k[1],
                "prompt": items[k[0]].prompt[:120],
                "agreement": _clean(a),
                "labelers": len(multi[k]),
            }
            for a, k in per_item[:top]
        ],
    }


def feedback_summary(store: FeedbackStore, round: int | None = None, top: int = 5) -> dict:
    """What a person checks before trusting the labels: volume, who, and how consistent.

    ``agreement`` is the pairwise inter-labeler agreement pooled over all items and
    criteria, ``criteria`` the same numbers per criterion (helpfulness and harmlessness
    labels are judged separately), ``most_disputed`` the ``top`` (item, criterion) units
    with the lowest agreement among those ranked by at least two labelers; ``flags``
    counts per-completion safe/unsafe flags and how often labelers agree on them. NaN
    becomes None so the result is valid JSON.
    """
    rankings = store.rankings(round)
    kept = [r for r in rankings if not r.skipped]
    kinds = sorted({r.labeler.kind for r in kept})
    criteria = sorted({r.criterion for r in kept})
    submissions = {(r.item_id, r.labeler_id): r for r in rankings}
    f_agree, f_units = flag_agreement(submissions.values())
    marks = [u for r in submissions.values() for u in r.unsafe.values()]
    block = _agreement_block(kept, top)
    return {
        **block,
        "skipped": len(rankings) - len(kept),
        "flagged_unsafe": sum(r.flagged_unsafe for r in submissions.values()),
        "labelers": len({r.labeler_id for r in kept}),
        "source": "+".join(kinds) if kinds else None,
        "items": len(store.items(round)),
        "criteria": {c: _agreement_block([r for r in kept if r.criterion == c], top)
                     for c in criteria},
        "flags": {"flags": len(marks), "unsafe": sum(marks),
                  "completions_multiply_flagged": f_units, "agreement": _clean(f_agree)},
    }


def round_(x: float, digits: int = 4) -> float:
    return float(round(x, digits))
