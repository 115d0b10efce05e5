"""Reward-hacking detectors: pure functions over metric histories.

Each takes plain sequences (one value per guard evaluation, oldest first) and the current
samples, and returns an ``Alarm`` carrying the numbers that made it fire and a few example
texts, or ``None``. They read no files and touch no model, so each can be tested on a
hand-built trajectory; ``Guard`` feeds them and acts on what they return.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from alignkit.artifacts import Alarm, GaoFitRecord


def _change(steps: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope × span: the change a noisy series made over its window.

    Endpoints alone would let one noisy evaluation decide; the fitted line uses them all.
    """
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    slope = np.polyfit(x, y, 1)[0]
    return float(slope * np.ptp(x))


def _corr(a: Sequence[float], b: Sequence[float]) -> float | None:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


# --- KL budget -------------------------------------------------------------------------------
def kl_budget(step: int, kl: Sequence[float], budget: float, samples: Sequence[str] = ()
              ) -> Alarm | None:
    """Fires when KL(π‖π_ref) (nats/sequence) at this evaluation exceeds the budget."""
    if not kl or kl[-1] <= budget:
        return None
    now = float(kl[-1])
    return Alarm("kl_budget", step, f"KL {now:.2f} nats/sequence is above the budget "
                 f"{budget:.2f}", {"kl": now, "budget": budget, "sqrt_kl": math.sqrt(now)},
                 list(samples[:3]))


# --- proxy vs gold ----------------------------------------------------------------------------
class GaoFit(GaoFitRecord):
    """gold − gold₀ ≈ d(α − β·ln d), d = √KL (Gao, Schulman & Hilton 2022, RL form).

    With β > 0 gold peaks at d* = exp(α/β − 1): optimising the proxy past d* lowers gold.
    """

    def predict(self, d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype=np.float64)
        dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return self.gold0 + self.alpha * d - self.beta * dlogd


def gao_fit(kl: Sequence[float], gold: Sequence[float]) -> GaoFit | None:
    """Least-squares fit of gold ≈ gold₀ + d(α − β·ln d) over the evaluations.

    gold₀ is fitted too: the first evaluation comes after an update, not at d = 0. Needs
    four points with at least three distinct KLs; negative KL estimates (k1 is unbiased, so
    noisy near 0) are clamped to 0.
    """
    d = np.sqrt(np.clip(np.asarray(kl, dtype=np.float64), 0.0, None))
    y = np.asarray(gold, dtype=np.float64)
    if d.size < 4 or np.unique(d).size < 3:
        return None
    dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    X = np.stack([np.ones_like(d), d, -dlogd], axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    gold0, alpha, beta = (float(c) for c in coef)
    resid = y - X @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else None
    d_peak = gold_peak = None
    if beta > 0:
        d_peak = float(math.exp(min(alpha / beta - 1.0, 50.0)))
        gold_peak = gold0 + alpha * d_peak - beta * d_peak * math.log(d_peak)
    return GaoFit(alpha, beta, gold0, d_peak, gold_peak, r2, int(d.size))


def proxy_gold_divergence(step: int, steps: Sequence[int], proxy: Sequence[float],
                          gold: Sequence[float], kl: Sequence[float], window: int,
                          proxy_rise: float, gold_stall: float, samples: Sequence[str] = ()
                          ) -> Alarm | None:
    """Fires when, over the last ``window`` evaluations, the proxy reward rose by at least
    ``proxy_rise`` while gold changed by at most ``gold_stall``: the proxy is being
    optimised in a direction the gold judge does not reward (Goodhart).

    The evidence carries the Gao et al. fit over the whole history, and whether the current
    √KL is past the fitted gold peak.
    """
    if len(proxy) < window or len(gold) < window:
        return None
    s = list(steps)[-window:]
    dp = _change(s, list(proxy)[-window:])
    dg = _change(s, list(gold)[-window:])
    if dp < proxy_rise or dg > gold_stall:
        return None
    best = int(np.argmax(gold))
    fit = gao_fit(kl, gold)
    d_now = math.sqrt(max(float(kl[-1]), 0.0))
    evidence: dict = {
        "proxy_change": dp, "gold_change": dg, "window_steps": [int(s[0]), int(s[-1])],
        "proxy_now": float(proxy[-1]), "gold_now": float(gold[-1]),
        "gold_best": float(gold[best]), "gold_best_step": int(steps[best]),
        "sqrt_kl": d_now,
    }
    if fit is not None:
        evidence.update(gao_alpha=fit.alpha, gao_beta=fit.beta, gao_d_peak=fit.d_peak,
                        gao_r2=fit.r2, past_gold_peak=bool(fit.d_peak is not None
                                                            and d_now > fit.d_peak))
    return Alarm("proxy_gold", step, f"proxy reward rose {dp:+.3f} over steps {s[0]}-{s[-1]} "
                 f"while gold changed {dg:+.3f} (best gold {gold[best]:.3f} at step "
                 f"{steps[best]})", evidence, list(samples[:3]))


# --- length exploitation ------------------------------------------------------------------------
def length_exploitation(step: int, rewards: Sequence[float], lengths: Sequence[float],
                        corr_threshold: float, drift_threshold: float, baseline: int = 2,
                        sample_rewards: Sequence[float] | None = None,
                        sample_lengths: Sequence[float] | None = None,
                        samples: Sequence[str] = ()) -> Alarm | None:
    """Fires when reward tracks response length and the length has drifted.

    Correlation is taken over evaluations (mean reward vs mean length) and, when given,
    over the current samples (per-response reward vs length, as in Singhal et al. 2023);
    either reaching ``corr_threshold`` counts. Drift is the relative change of the mean
    length from the first ``baseline`` evaluations; both must hold, so a reward that merely
    rises while length wobbles stays quiet.
    """
    if len(lengths) <= baseline:
        return None
    base = float(np.mean(lengths[:baseline]))
    now = float(lengths[-1])
    drift = (now - base) / base if base > 0 else (math.inf if now > 0 else 0.0)
    c_steps = _corr(rewards, lengths)
    c_samples = (_corr(sample_rewards, sample_lengths)
                 if sample_rewards is not None and sample_lengths is not None else None)
    corr = max((c for c in (c_steps, c_samples) if c is not None), default=None)
    if corr is None or corr < corr_threshold or abs(drift) < drift_threshold:
        return None
    ordered = sorted(samples, key=len, reverse=drift > 0)
    return Alarm("length", step, f"reward correlates with length (r = {corr:.2f}) and mean "
                 f"length moved {100 * drift:+.0f}% ({base:.1f} → {now:.1f} tokens)",
                 {"corr_over_steps": c_steps, "corr_over_samples": c_samples,
                  "length_baseline": base, "length_now": now, "length_drift": drift},
                 ordered[:3])


# --- collapse ----------------------------------------------------------------------------------
def distinct2(texts: Sequence[str]) -> float | None:
    """Unique word bigrams / all bigrams; None when the texts have no bigram at all."""
    total, seen = 0, set()
    for t in texts:
        w = t.split()
        grams = list(zip(w, w[1:], strict=False))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def one_answer_per_prompt(prompts: Sequence[str], texts: Sequence[str]) -> list[str]:
    """The first answer to each distinct prompt: similarity is judged *across* prompts,
    since several samples of one prompt may legitimately agree."""
    seen: dict[str, str] = {}
    for p, t in zip(prompts, texts, strict=True):
        seen.setdefault(p, t)
    return list(seen.values())


def collapse(step: int, prompts: Sequence[str], texts: Sequence[str],
             entropy_per_token: Sequence[float], eos_rate: Sequence[float],
             entropy_floor: float, distinct_floor: float, same_answer_share: float,
             eos_rate_change: float, baseline: int = 2) -> Alarm | None:
    """Fires on any sign of mode collapse, naming each one found:

    - sampled entropy per token (last evaluation) below ``entropy_floor``;
    - distinct-2 of the answers to different prompts below ``distinct_floor``;
    - one identical answer given to ≥ ``same_answer_share`` of the distinct prompts (≥ 2);
    - EOS rate moved by ≥ ``eos_rate_change`` from the first ``baseline`` evaluations.
    """
    answers = one_answer_per_prompt(prompts, texts)
    reasons: list[str] = []
    ev: dict = {}
    if entropy_per_token:
        ev["entropy_per_token"] = h = float(entropy_per_token[-1])
        if h < entropy_floor:
            reasons.append(f"entropy {h:.3f} nats/token < floor {entropy_floor}")
    d2 = distinct2(answers)
    ev["distinct2"] = d2
    if d2 is not None and len(answers) >= 2 and d2 < distinct_floor:
        reasons.append(f"distinct-2 across prompts {d2:.2f} < floor {distinct_floor}")
    top_text, top_count = (Counter(answers).most_common(1)[0] if answers else ("", 0))
    share = top_count / len(answers) if answers else 0.0
    ev.update(same_answer_share=share, distinct_prompts=len(answers))
    if top_count >= 2 and share >= same_answer_share:
        reasons.append(f"{top_count}/{len(answers)} prompts got the same answer")
    if len(eos_rate) > baseline:
        base = float(np.mean(eos_rate[:baseline]))
        ev.update(eos_rate_baseline=base, eos_rate=float(eos_rate[-1]))
        if abs(eos_rate[-1] - base) >= eos_rate_change:
            reasons.append(f"EOS rate {base:.2f} → {eos_rate[-1]:.2f}")
    if not reasons:
        return None
    examples = [top_text] if top_count >= 2 else []
    examples += [a for a in answers if a not in examples][: 3 - len(examples)]
    return Alarm("collapse", step, "collapse: " + "; ".join(reasons), ev, examples)


# --- reward-model ensemble -------------------------------------------------------------------
def ensemble_disagreement(step: int, disagreement: Sequence[float], rise: float,
                          baseline: int = 2, samples: Sequence[str] = ()) -> Alarm | None:
    """Fires when the RM ensemble's disagreement on policy samples reaches ``rise`` × its
    value at the first ``baseline`` evaluations: the members agree on what they were trained
    on and diverge out of distribution, which is where the policy is exploiting them."""
    if len(disagreement) <= baseline:
        return None
    base = float(np.mean(disagreement[:baseline]))
    now = float(disagreement[-1])
    if base <= 0 or now < rise * base:
        return None
    return Alarm("ensemble", step, f"RM ensemble disagreement rose {now / base:.1f}× "
                 f"({base:.3f} → {now:.3f})", {"baseline": base, "now": now,
                                                  "ratio": now / base}, list(samples[:3]))
