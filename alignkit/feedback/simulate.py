"""Simulated labelers: a gold judge plus Thurstone noise, tuned to human-like agreement.

Offline demos and tests need feedback without people. A simulated labeler ranks an
item's completions by ``u = logit(clip(g, 1e-4, 1 - 1e-4)) + N(0, sigma^2)`` where ``g`` is
the judge's goodness. Noise-free labelers would agree 100% of the time, which real
labelers never do (InstructGPT: ~73-77%), and a reward model trained on them would look
better than it will on human data; so ``sigma`` is chosen to hit a target agreement.

Their rankings go through the store's normal validation and are stored with
``kind="simulated"``: they are never reported as human.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alignkit.feedback.agreement import inter_labeler_agreement
from alignkit.feedback.store import FeedbackError, FeedbackStore, RankingInput

Goodness = Callable[[list[str]], np.ndarray]
CLIP = 1e-4


@dataclass(frozen=True)
class SimulationSummary:
    sigma: float  # the calibrated noise scale (in logit units)
    agreement: float  # pairwise inter-labeler agreement measured on the simulated rankings
    rankings: int  # rankings submitted by this call
    expected_agreement: float = math.nan  # what sigma predicts; differs from target if capped
    labelers: tuple[str, ...] = ()


def utilities(goodness_values: np.ndarray) -> np.ndarray:
    """Noise-free utility: the judge's goodness on the logit scale (clipped to stay finite)."""
    g = np.clip(np.asarray(goodness_values, dtype=np.float64), CLIP, 1.0 - CLIP)
    return np.log(g) - np.log1p(-g)


def _pair_gaps(item_utilities: Sequence[np.ndarray]) -> np.ndarray:
    """|u_i - u_j| for every completion pair of every item, flattened."""
    gaps = []
    for u in item_utilities:
        i, j = np.triu_indices(len(u), k=1)
        gaps.append(np.abs(u[i] - u[j]))
    return np.concatenate(gaps) if gaps else np.zeros(0)


_erf = np.frompyfunc(math.erf, 1, 1)


def expected_agreement(item_utilities: Sequence[np.ndarray], sigma: float) -> float:
    """Expected pairwise agreement of two independent labelers with noise ``sigma``.

    Each labeler prefers i over j with ``p = Phi(gap / (sigma * sqrt 2))`` (the difference
    of two N(0, sigma^2) noises has variance 2 sigma^2); two of them agree with probability
    ``p^2 + (1 - p)^2``. Averaged over every completion pair, as the agreement metric is.
    This is the exact value a Monte Carlo estimate converges to, without its noise.
    """
    gaps = _pair_gaps(item_utilities)
    if gaps.size == 0:
        return math.nan
    if sigma <= 0:
        p = np.where(gaps > 0, 1.0, 0.5)
    else:
        z = gaps / (sigma * math.sqrt(2.0)) / math.sqrt(2.0)
        p = 0.5 * (1.0 + _erf(z).astype(np.float64))
    return float(np.mean(p**2 + (1.0 - p) ** 2))


def calibrate_sigma(
    item_utilities: Sequence[np.ndarray],
    target_agreement: float = 0.75,
    lo: float = 1e-3,
    hi: float = 1e3,
    iters: int = 60,
) -> float:
    """Bisect (on log sigma) for the noise whose expected agreement equals the target.

    Agreement falls monotonically from its noise-free value to 0.5 as sigma grows. A target
    above the noise-free value (e.g. many completions the judge scores identically) gets
    ``lo``; one at or below 0.5 gets ``hi``: the caller sees the reachable value in
    :func:`expected_agreement`.
    """
    if not 0.0 < target_agreement < 1.0:
        raise FeedbackError(f"target_agreement {target_agreement} is outside (0, 1) — "
                            "use e.g. 0.75", field="target_agreement")
    if expected_agreement(item_utilities, lo) <= target_agreement:
        return lo
    if expected_agreement(item_utilities, hi) >= target_agreement:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = (a + b) / 2.0
        if expected_agreement(item_utilities, math.exp(mid)) > target_agreement:
            a = mid
        else:
            b = mid
    return math.exp((a + b) / 2.0)


def noisy_ranks(u: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Ranks 1..K (1 = best) of ``u + N(0, sigma^2)``; ties have probability zero."""
    noisy = u + rng.normal(0.0, sigma, size=len(u))
    ranks = np.empty(len(u), dtype=int)
    ranks[np.argsort(-noisy, kind="stable")] = np.arange(1, len(u) + 1)
    return ranks


def simulate_feedback(
    store: FeedbackStore,
    goodness: Goodness,
    n_labelers: int = 3,
    overlap: int = 3,
    target_agreement: float = 0.75,
    seed: int = 0,
    round: int | None = None,
    name_prefix: str = "simulated",
) -> SimulationSummary:
    """Rank every item (of ``round``, or all) by ``overlap`` of ``n_labelers`` simulated labelers.

    Labelers are registered once (``{name_prefix}-{i}``, kind ``simulated``) and reused
    across rounds; items are dealt round-robin so the load is even. Rankings a labeler
    already submitted are kept, so a re-run after an interruption only fills the gaps. All
    new rankings go in one transaction through the store's validation.
    """
    if n_labelers < 1 or not 1 <= overlap <= n_labelers:
        raise FeedbackError(f"overlap {overlap} must be between 1 and n_labelers "
                            f"({n_labelers}) — add labelers or lower overlap", field="overlap")
    labelers = []
    for i in range(n_labelers):
        name = f"{name_prefix}-{i}"
        existing = store.labeler_by_name(name)
        if existing is not None and existing.kind != "simulated":
            raise FeedbackError(f"labeler '{name}' exists and is {existing.kind}, not simulated "
                                "— choose another name_prefix", field="name_prefix")
        labelers.append(existing.id if existing else store.add_labeler(name, "simulated")[0])

    items = store.items(round)
    texts = [c.text for it in items for c in it.completions]
    g = np.asarray(goodness(texts), dtype=np.float64) if texts else np.zeros(0)
    if g.shape != (len(texts),):
        raise FeedbackError(f"goodness returned shape {g.shape} for {len(texts)} texts — it "
                            "must return one score per text", field="goodness")
    u_all = utilities(g)
    item_u, start = [], 0
    for it in items:
        item_u.append(u_all[start : start + len(it.completions)])
        start += len(it.completions)
    sigma = calibrate_sigma(item_u, target_agreement) if items else math.nan

    done = {(r.item_id, r.labeler_id) for r in store.rankings(round)}
    rng = np.random.default_rng([seed, 0 if round is None else round])
    batch: list[RankingInput] = []
    for j, (it, u) in enumerate(zip(items, item_u, strict=True)):
        for t in range(overlap):
            lab = labelers[(j + t) % n_labelers]
            ranks = noisy_ranks(u, sigma, rng)  # drawn even when skipped: stable streams
            if (it.id, lab) in done:
                continue
            batch.append(RankingInput(lab, it.id, dict(zip(it.completion_ids,
                                                           ranks.tolist(), strict=True))))
    store.submit_rankings(batch)

    ours = set(labelers)
    by_item: dict[int, dict[int, dict[int, int]]] = {}
    for r in store.rankings(round, include_skipped=False):
        if r.labeler_id in ours:
            by_item.setdefault(r.item_id, {})[r.labeler_id] = r.ranks
    return SimulationSummary(
        sigma=sigma,
        agreement=inter_labeler_agreement(by_item),
        rankings=len(batch),
        expected_agreement=expected_agreement(item_u, sigma) if items else math.nan,
        labelers=tuple(f"{name_prefix}-{i}" for i in range(n_labelers)),
    )
