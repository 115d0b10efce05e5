"""The confidence intervals every report prints: bootstrap CIs of a mean and of a paired
difference, and the Wilson interval of a proportion.

Pure numbers (numpy and math only) in the lowest layer, because the layers that report
them sit on both sides of evaluate/: the red team (safety/) reports paired success-rate
differences and Wilson intervals, the before/after and helpful-and-harmless evaluations
(evaluate/) report the same kinds of interval, and one implementation must serve both.
"""

from __future__ import annotations

import math
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


def wilson_ci(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (nan, nan) for n = 0.

    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n). Exact enough for proportions
    near 0, where the bootstrap collapses to a point. At 0 or n successes the bound on that
    side is exactly 0 or 1; it is set so, since rounding would leave 1 − 1e-16 below the
    observed rate 1.
    """
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)
