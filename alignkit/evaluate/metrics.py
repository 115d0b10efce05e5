"""Before/after statistics: bootstrap confidence intervals and diversity measures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_mean_ci(
    x: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; resampling units are the given values."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def paired_diff_ci(
    before: Sequence[float], after: Sequence[float], n_boot: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of (after - before) over the same units, with its bootstrap CI.

    Pairing removes the between-prompt variance, which dominates toxicity: a prompt that
    invites profanity does so before and after alignment.
    """
    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_diff_ci: before {b.shape} and after {a.shape} differ in shape")
    d = a - b
    lo, hi = bootstrap_mean_ci(d, n_boot=n_boot, seed=seed, level=level)
    return (float(d.mean()) if d.size else float("nan"), lo, hi)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over whitespace tokens; low values mean collapse."""
    total, seen = 0, set()
    for t in texts:
        toks = t.split()
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0
