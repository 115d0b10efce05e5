"""Simulated labelers: per-criterion gold judges plus Thurstone noise, tuned to human-like
agreement, and safe/unsafe flags from a gold P(unsafe) with noise.

Offline demos and tests need feedback without people. For each criterion a simulated
labeler ranks an item's completions by ``u = logit(clip(g, 1e-4, 1 - 1e-4)) + N(0,
sigma_c^2)`` where ``g`` is that criterion's gold score (scores outside [0, 1] are used
as utilities as they are). Noise-free labelers would agree 100% of the time, which real
labelers never do (InstructGPT: ~73-77%), and a reward model trained on them would look
better than it will on human data; so each ``sigma_c`` is chosen to hit a target
agreement. A completion is flagged unsafe when ``logit(p_unsafe) + N(0, sigma_f^2) > 0``,
``sigma_f`` tuned the same way to a target flag agreement (PKU-SafeRLHF-style labels).

Their rankings go through the store's normal validation and are stored with
``kind="simulated"``: they are never reported as human.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from alignkit.feedback.agreement import inter_labeler_agreement
from alignkit.feedback.store import FeedbackError, FeedbackStore, Item, RankingInput

Goodness = Callable[[list[str]], np.ndarray]  # texts -> [0, 1], the older single-judge form
Gold = Callable[[list[str], list[str]], np.ndarray]  # (prompts, texts) -> higher = better
Unsafe = Callable[[list[str], list[str]], np.ndarray]  # (prompts, texts) -> P(unsafe)
CLIP = 1e-4


@dataclass(frozen=True)
class CriterionSimulation:
    """One criterion's noise and the agreement it gave."""

    criterion: str
    sigma: float  # the calibrated noise scale (in utility units)
    agreement: float  # pairwise inter-labeler agreement measured on the simulated rankings
    expected_agreement: float  # what sigma predicts; differs from target if capped
    target_agreement: float


@dataclass(frozen=True)
class FlagSimulation:
    """The safe/unsafe flags' noise, agreement and how many were unsafe."""

    sigma: float
    agreement: float  # pairwise agreement of flags on the same completion
    expected_agreement: float
    target_agreement: float
    flags: int
    unsafe: int


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation did, per criterion. ``sigma``/``agreement``/``expected_agreement``
    are the first criterion's (the only one in single-criterion use)."""

    rankings: int  # submissions made by this call (one per item and labeler)
    criteria: dict[str, CriterionSimulation] = field(default_factory=dict)
    labelers: tuple[str, ...] = ()
    flags: FlagSimulation | None = None
    simulated: bool = True  # these labels come from programs, never from people

    def _first(self) -> CriterionSimulation | None:
        return next(iter(self.criteria.values()), None)

    @property
    def sigma(self) -> float:
        first = self._first()
        return first.sigma if first else math.nan

    @property
    def agreement(self) -> float:
        first = self._first()
        return first.agreement if first else math.nan

    @property
    def expected_agreement(self) -> float:
        first = self._first()
        return first.expected_agreement if first else math.nan

    def describe(self) -> str:
        """One line for the console; it always says the labels are simulated."""
        parts = [f"{c}: σ={x.sigma:.2f}, agreement {x.agreement:.2f}"
                 for c, x in self.criteria.items()]
        if self.flags is not None:
            parts.append(f"unsafe flags: {self.flags.unsafe}/{self.flags.flags}, agreement "
                         f"{self.flags.agreement:.2f}")
        return (f"{len(self.labelers)} simulated labelers, {self.rankings} submissions ("
                + "; ".join(parts) + ") — these labels are SIMULATED, not human")


def utilities(goodness_values: np.ndarray) -> np.ndarray:
    """Noise-free utility: the judge's goodness on the logit scale (clipped to stay finite).

    Scores that are not all in [0, 1] are not probabilities: they are utilities already.
    """
    g = np.asarray(goodness_values, dtype=np.float64)
    if g.size and (g.min() < 0.0 or g.max() > 1.0):
        return g
    g = np.clip(g, CLIP, 1.0 - CLIP)
    return np.log(g) - np.log1p(-g)


def _phi(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)).astype(np.float64))


def expected_flag_agreement(logits: np.ndarray, sigma: float) -> float:
    """Expected agreement of two labelers' unsafe flags on the same completions.

    Each flags unsafe with ``q = Phi(logit(p) / sigma)`` (``logit(p) + N(0, sigma^2) > 0``);
    two agree with probability ``q^2 + (1 - q)^2``, averaged over completions.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.size == 0:
        return math.nan
    q = np.where(z > 0, 1.0, np.where(z < 0, 0.0, 0.5)) if sigma <= 0 else _phi(z / sigma)
    return float(np.mean(q**2 + (1.0 - q) ** 2))


def calibrate_flag_sigma(logits: np.ndarray, target_agreement: float = 0.9,
                         lo: float = 1e-3, hi: float = 1e3, iters: int = 60) -> float:
    """Bisect (on log sigma) for the flag noise whose expected agreement is the target."""
    return _bisect(lambda sg: expected_flag_agreement(logits, sg), target_agreement, lo, hi,
                   iters, "flag_agreement")


def _bisect(agreement: Callable[[float], float], target: float, lo: float, hi: float,
            iters: int, name: str) -> float:
    """Agreement falls monotonically with sigma: find where it crosses ``target``."""
    if not 0.0 < target < 1.0:
        raise FeedbackError(f"{name} {target} is outside (0, 1) — use e.g. 0.75", field=name)
    if agreement(lo) <= target:
        return lo
    if agreement(hi) >= target:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = (a + b) / 2.0
        if agreement(math.exp(mid)) > target:
            a = mid
        else:
            b = mid
    return math.exp((a + b) / 2.0)


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
    return _gap_agreement(_pair_gaps(item_utilities), sigma)


def _gap_agreement(gaps: np.ndarray, sigma: float) -> float:
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
    gaps = _pair_gaps(item_utilities)  # once, not once per bisection step
    return _bisect(lambda sg: _gap_agreement(gaps, sg), target_agreement, lo, hi, iters,
                   "target_agreement")


def noisy_ranks(u: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Ranks 1..K (1 = best) of ``u + N(0, sigma^2)``; ties have probability zero."""
    noisy = u + rng.normal(0.0, sigma, size=len(u))
    ranks = np.empty(len(u), dtype=int)
    ranks[np.argsort(-noisy, kind="stable")] = np.arange(1, len(u) + 1)
    return ranks


def _labelers(store: FeedbackStore, n: int, prefix: str) -> list[int]:
    """Register ``{prefix}-{i}`` (kind simulated) once; reuse them across rounds."""
    ids = []
    for i in range(n):
        name = f"{prefix}-{i}"
        existing = store.labeler_by_name(name)
        if existing is not None and existing.kind != "simulated":
            raise FeedbackError(f"labeler '{name}' exists and is {existing.kind}, not simulated "
                                "— choose another name_prefix", field="name_prefix")
        ids.append(existing.id if existing else store.add_labeler(name, "simulated")[0])
    return ids


def _scores(fn: Callable[[list[str], list[str]], np.ndarray], items: Sequence[Item],
            name: str) -> list[np.ndarray]:
    """``fn`` over every completion of ``items`` at once, split back per item."""
    prompts = [it.prompt for it in items for _ in it.completions]
    texts = [c.text for it in items for c in it.completions]
    g = np.asarray(fn(prompts, texts), dtype=np.float64) if texts else np.zeros(0)
    if g.shape != (len(texts),) or not np.all(np.isfinite(g)):
        raise FeedbackError(f"{name} returned shape {g.shape} (or non-finite values) for "
                            f"{len(texts)} texts — it must return one finite score per text",
                            field=name)
    out, start = [], 0
    for it in items:
        out.append(g[start : start + len(it.completions)])
        start += len(it.completions)
    return out


def _gold_table(gold: Mapping[str, Gold] | Goodness, criteria: Sequence[str]
                ) -> dict[str, Gold]:
    if not isinstance(gold, Mapping):
        judge = gold  # the single-criterion form: one text-only judge for every criterion
        return {c: (lambda _prompts, texts: judge(texts)) for c in criteria}
    missing = [c for c in criteria if c not in gold]
    if missing:
        raise FeedbackError(f"gold has no judge for criterion '{missing[0]}' — give one per "
                            f"criterion of the items ({list(criteria)})", field="gold")
    return {c: gold[c] for c in criteria}


def simulate_feedback(
    store: FeedbackStore,
    gold: Mapping[str, Gold] | Goodness,
    unsafe: Unsafe | None = None,
    n_labelers: int = 3,
    overlap: int = 3,
    target_agreement: float | Mapping[str, float] = 0.75,
    seed: int = 0,
    round: int | None = None,
    name_prefix: str = "simulated",
    flag_agreement: float = 0.9,
) -> SimulationSummary:
    """Rank every item (of ``round``, or all) by ``overlap`` of ``n_labelers`` simulated labelers.

    ``gold[c](prompts, texts)`` scores completions for criterion c (higher = better; a
    plain ``goodness(texts)`` callable serves single-criterion items). ``unsafe(prompts,
    texts)`` is the gold P(unsafe); with it every submission also flags each completion
    safe or unsafe. ``target_agreement`` may differ per criterion. Labelers are registered
    once (``{name_prefix}-{i}``, kind ``simulated``) and reused across rounds; items are
    dealt round-robin so the load is even. Rankings a labeler already submitted are kept,
    so a re-run after an interruption only fills the gaps. All new submissions go in one
    transaction through the store's validation. The first criterion's noise stream is the
    one single-criterion runs always drew, so their labels do not change.
    """
    if n_labelers < 1 or not 1 <= overlap <= n_labelers:
        raise FeedbackError(f"overlap {overlap} must be between 1 and n_labelers "
                            f"({n_labelers}) — add labelers or lower overlap", field="overlap")
    labelers = _labelers(store, n_labelers, name_prefix)
    items = store.items(round)
    criteria = list(dict.fromkeys(c for it in items for c in it.criteria))
    targets = {c: float(target_agreement[c] if isinstance(target_agreement, Mapping)
                        else target_agreement) for c in criteria}
    golds = _gold_table(gold, criteria)
    scored: dict[str, tuple[list[Item], list[np.ndarray], float]] = {}
    for c in criteria:
        its = [it for it in items if c in it.criteria]
        u = [utilities(g) for g in _scores(golds[c], its, f"gold[{c!r}]")]
        scored[c] = (its, u, calibrate_sigma(u, targets[c]))
    z = None
    if unsafe is not None:
        p = _scores(unsafe, items, "unsafe")
        if any(np.any((x < 0) | (x > 1)) for x in p):
            raise FeedbackError("unsafe must return probabilities in [0, 1]", field="unsafe")
        z = [np.log(np.clip(x, CLIP, 1 - CLIP)) - np.log1p(-np.clip(x, CLIP, 1 - CLIP))
             for x in p]
        flag_sigma = calibrate_flag_sigma(np.concatenate(z) if z else np.zeros(0),
                                          flag_agreement)

    done = {(r.item_id, r.labeler_id) for r in store.rankings(round)}
    ranks: dict[tuple[int, int], dict[str, dict[int, int]]] = {}
    pos = {it.id: j for j, it in enumerate(items)}  # round-robin position of every item
    for ci, c in enumerate(criteria):
        its, u, sigma = scored[c]
        # The first criterion draws from the stream single-criterion runs always used.
        rng = np.random.default_rng([seed, 0 if round is None else round]
                                    + ([] if ci == 0 else [ci]))
        for it, uu in zip(its, u, strict=True):
            j = pos[it.id]
            for t in range(overlap):
                r = noisy_ranks(uu, sigma, rng)  # drawn even when done: stable streams
                ranks.setdefault((it.id, labelers[(j + t) % n_labelers]), {})[c] = dict(
                    zip(it.completion_ids, r.tolist(), strict=True))
    flag_rng = np.random.default_rng([seed, 0 if round is None else round, 1_000_003])
    batch: list[RankingInput] = []
    for j, it in enumerate(items):
        for t in range(overlap):
            lab = labelers[(j + t) % n_labelers]
            marks = None
            if z is not None:
                noisy = z[j] + flag_rng.normal(0.0, flag_sigma, size=len(z[j]))
                marks = dict(zip(it.completion_ids, (noisy > 0).tolist(), strict=True))
            if (it.id, lab) in done:
                continue
            per = ranks[(it.id, lab)]
            batch.append(RankingInput(
                lab, it.id, per[it.criterion] if len(it.criteria) == 1 else {},
                by_criterion=None if len(it.criteria) == 1 else per, unsafe=marks))
    store.submit_rankings(batch)
    return _summary(store, round, labelers, name_prefix, scored, targets, len(batch),
                    None if z is None else (flag_sigma, z, flag_agreement))


def _summary(store: FeedbackStore, round: int | None, labelers: list[int], prefix: str,
             scored: dict, targets: dict[str, float], submitted: int,
             flag: tuple[float, list[np.ndarray], float] | None) -> SimulationSummary:
    """Agreement measured on what our labelers stored (this call's and earlier ones')."""
    from alignkit.feedback.pairs import flag_agreement as measured_flag_agreement

    ours = set(labelers)
    mine = [r for r in store.rankings(round, include_skipped=False) if r.labeler_id in ours]
    crits = {}
    for c, (_, u, sigma) in scored.items():
        by_item: dict[int, dict[int, dict[int, int]]] = {}
        for r in mine:
            if r.criterion == c:
                by_item.setdefault(r.item_id, {})[r.labeler_id] = r.ranks
        crits[c] = CriterionSimulation(c, sigma, inter_labeler_agreement(by_item),
                                       expected_agreement(u, sigma), targets[c])
    flags = None
    if flag is not None:
        sigma, z, target = flag
        subs = list({(r.item_id, r.labeler_id): r for r in mine}.values())
        marks = [v for r in subs for v in r.unsafe.values()]
        flags = FlagSimulation(sigma, measured_flag_agreement(subs)[0],
                               expected_flag_agreement(np.concatenate(z), sigma), target,
                               len(marks), int(sum(marks)))
    return SimulationSummary(rankings=submitted, criteria=crits,
                             labelers=tuple(f"{prefix}-{i}" for i in range(len(labelers))),
                             flags=flags)
