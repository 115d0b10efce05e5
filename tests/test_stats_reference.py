"""The intervals the reports print, checked against scipy and statsmodels on random data.

The bootstrap CIs (``alignkit.stats``: before/after and paired differences) and the Wilson
interval of the red-team success rates (``alignkit.stats.wilson_ci``) are our own few lines;
a reference implementation nobody here wrote must agree with them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from alignkit.stats import bootstrap_mean_ci, paired_diff_ci, wilson_ci

N_BOOT = 20_000  # Monte-Carlo error of a 2.5% quantile ≈ 0.03 standard errors of the mean


def _samples(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.3, 1.0, n)
    if kind == "bernoulli":
        return rng.binomial(1, 0.2, n).astype(float)
    return rng.exponential(0.1, n)  # skewed, like P(offensive) scores


@pytest.mark.parametrize("kind", ["normal", "bernoulli", "skewed"])
@pytest.mark.parametrize("n", [12, 60, 400])
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_bootstrap_ci_matches_scipy_percentile_bootstrap(kind, n, level):
    rng = np.random.default_rng(n * 7 + len(kind))
    x = _samples(kind, n, rng)
    lo, hi = bootstrap_mean_ci(x, n_boot=N_BOOT, seed=1, level=level)
    ref = stats.bootstrap((x,), np.mean, n_resamples=N_BOOT, confidence_level=level,
                          method="percentile",
                          random_state=np.random.default_rng(2)).confidence_interval
    # 0/1 data: resampled means live on a grid of step 1/n; two seeds may land one step apart
    tol = 0.1 * x.std(ddof=1) / math.sqrt(n) + (1.0 / n if kind == "bernoulli" else 0.0)
    assert abs(lo - ref.low) <= tol and abs(hi - ref.high) <= tol, (lo, hi, ref)
    assert lo <= x.mean() <= hi


@pytest.mark.parametrize("n", [20, 200])
def test_paired_difference_ci_matches_scipy_paired_bootstrap(n):
    rng = np.random.default_rng(n)
    before = rng.exponential(0.2, n)
    after = before * 0.6 + rng.normal(0.0, 0.02, n)  # correlated, as the same prompts are
    d, lo, hi = paired_diff_ci(before, after, n_boot=N_BOOT, seed=3)
    ref = stats.bootstrap((before, after), lambda b, a: np.mean(a - b), paired=True,
                          n_resamples=N_BOOT, method="percentile",
                          random_state=np.random.default_rng(4)).confidence_interval
    se = (after - before).std(ddof=1) / math.sqrt(n)
    assert d == pytest.approx(float(np.mean(after - before)))
    assert abs(lo - ref.low) < 0.1 * se and abs(hi - ref.high) < 0.1 * se, (lo, hi, ref)
    # pairing matters: the unpaired interval of the difference is several times wider
    unpaired = stats.bootstrap((before, after), lambda b, a: np.mean(a) - np.mean(b),
                               n_resamples=4000, method="percentile",
                               random_state=np.random.default_rng(5)).confidence_interval
    assert (hi - lo) * 2 < unpaired.high - unpaired.low


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_matches_statsmodels(kn):
    k, n = kn
    lo, hi = wilson_ci(k, n)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert lo == pytest.approx(ref_lo, abs=1e-7) and hi == pytest.approx(ref_hi, abs=1e-7)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
