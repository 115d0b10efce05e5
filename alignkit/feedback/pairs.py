"""Pairwise preference data: the unit the reward model trains on."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from alignkit.feedback.agreement import (
    inter_labeler_agreement,
    item_agreement,
    kendall_w,
    krippendorff_alpha,
    preference,
)

if TYPE_CHECKING:
    from alignkit.feedback.store import FeedbackStore, Ranking

Source = Literal["human", "simulated", "ai"]


@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` beat ``rejected`` for ``prompt``.

    ``margin`` is the vote strength in [0, 1] (1 = unanimous), ``source`` says who judged
    (simulated and AI labels are never reported as human), ``labelers`` how many voted.
    """

    prompt: str
    chosen: str
    rejected: str
    margin: float = 1.0
    source: Source = "human"
    labelers: int = 1


def write_pairs_jsonl(pairs: list[Pair], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")


def read_pairs_jsonl(path: str | Path) -> list[Pair]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            missing = {"prompt", "chosen", "rejected"} - rec.keys()
            if missing:
                raise ValueError(
                    f"{path}:{lineno}: pair is missing field(s) {sorted(missing)} — each line "
                    "needs prompt, chosen, rejected"
                )
            known = {k: rec[k] for k in Pair.__dataclass_fields__ if k in rec}
            pairs.append(Pair(**known))
    return pairs


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


def _by_item(rankings: Iterable[Ranking]) -> dict[int, list[Ranking]]:
    out: dict[int, list[Ranking]] = {}
    for r in rankings:
        if not r.skipped and r.ranks:
            out.setdefault(r.item_id, []).append(r)
    return dict(sorted(out.items()))


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
) -> list[Pair]:
    """Every item's K(K-1)/2 completion pairs, aggregated over its (non-skipped) rankings.

    Each labeler who ranked a pair strictly casts one vote; ties abstain, and a pair nobody
    ranked strictly is dropped. ``majority``: the pair goes to the side with more votes
    (an even split is dropped), ``margin = |votes_a - votes_b| / voters``. ``bradley_terry``:
    per item, strengths are fitted to all its votes and ``margin = |sigmoid(s_a - s_b) -
    0.5| * 2``, so a pair also borrows strength from the item's other comparisons.
    ``labelers`` is the number of voters on the pair, ``source`` their kind.
    """
    if aggregate not in ("majority", "bradley_terry"):
        raise ValueError(f"aggregate '{aggregate}' is unknown — use 'majority' or "
                         "'bradley_terry'")
    # Duck-typed so importing Pair does not pull in SQLAlchemy.
    rankings = source.rankings(round) if hasattr(source, "rankings") else list(source)
    pairs: list[Pair] = []
    for rs in _by_item(rankings).values():
        item = rs[0].item
        comps = item.completions
        votes = {
            (i, j): _votes(rs, comps[i].id, comps[j].id)
            for i, j in combinations(range(len(comps)), 2)
        }
        strengths = None
        if aggregate == "bradley_terry":
            wins = np.zeros((len(comps), len(comps)))
            for (i, j), (va, vb, _) in votes.items():
                wins[i, j], wins[j, i] = va, vb
            strengths = bradley_terry_strengths(wins)
        for (i, j), (va, vb, kinds) in votes.items():
            voters = va + vb
            if voters == 0:
                continue
            if strengths is None:
                if va == vb:
                    continue
                a_wins, margin = va > vb, abs(va - vb) / voters
            else:
                diff = float(strengths[i] - strengths[j])
                if abs(diff) < 1e-9:
                    continue
                a_wins = diff > 0
                margin = abs(1.0 / (1.0 + math.exp(-diff)) - 0.5) * 2.0
            win, lose = (comps[i], comps[j]) if a_wins else (comps[j], comps[i])
            pairs.append(Pair(
                prompt=item.prompt,
                chosen=win.text,
                rejected=lose.text,
                margin=float(margin),
                source=pair_source(kinds),
                labelers=voters,
            ))
    return pairs


# -- summary ---------------------------------------------------------------------------------


def rankings_by_item(rankings: Iterable[Ranking]) -> dict[int, dict[int, dict[int, int]]]:
    """item id -> labeler id -> ranks, for the agreement functions (skipped ones left out)."""
    return {
        item_id: {r.labeler_id: r.ranks for r in rs}
        for item_id, rs in _by_item(rankings).items()
    }


def _finite_mean(xs: Iterable[float]) -> float:
    vals = [x for x in xs if not math.isnan(x)]
    return float(np.mean(vals)) if vals else math.nan


def feedback_summary(store: FeedbackStore, round: int | None = None, top: int = 5) -> dict:
    """What a person checks before trusting the labels: volume, who, and how consistent.

    ``agreement`` is the mean pairwise inter-labeler agreement (pooled over all items),
    ``most_disputed`` the ``top`` items with the lowest agreement among those ranked by at
    least two labelers. NaN becomes None so the result is valid JSON.
    """
    rankings = store.rankings(round)
    kept = [r for r in rankings if not r.skipped]
    by_item = rankings_by_item(kept)
    multi = {i: labs for i, labs in by_item.items() if len(labs) >= 2}
    items = {r.item_id: r.item for r in kept}
    per_item = sorted(
        ((item_agreement(labs), i) for i, labs in multi.items()),
        key=lambda t: (math.inf if math.isnan(t[0]) else t[0], t[1]),
    )
    kinds = sorted({r.labeler.kind for r in kept})

    def clean(x: float) -> float | None:
        return None if x is None or math.isnan(x) else round_(x)

    return {
        "rankings": len(kept),
        "skipped": len(rankings) - len(kept),
        "flagged_unsafe": sum(r.flagged_unsafe for r in rankings),
        "labelers": len({r.labeler_id for r in kept}),
        "source": "+".join(kinds) if kinds else None,
        "items": len(store.items(round)),
        "items_ranked": len(by_item),
        "agreement": clean(inter_labeler_agreement(multi)),
        "kendall_w_mean": clean(_finite_mean(kendall_w(labs) for labs in multi.values())),
        "krippendorff_alpha": clean(krippendorff_alpha(multi)),
        "most_disputed": [
            {
                "item_id": i,
                "prompt": items[i].prompt[:120],
                "agreement": clean(a),
                "labelers": len(multi[i]),
            }
            for a, i in per_item[:top]
        ],
    }


def round_(x: float, digits: int = 4) -> float:
    return float(round(x, digits))
