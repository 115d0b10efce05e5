"""Before/after statistics: the bootstrap CIs (from :mod:`alignkit.stats`, where the red
team below this layer shares them) and diversity measures."""

from __future__ import annotations

from collections.abc import Sequence

from alignkit.stats import bootstrap_mean_ci, paired_diff_ci

__all__ = ["bootstrap_mean_ci", "distinct_n", "paired_diff_ci"]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over whitespace tokens; low values mean collapse."""
    total, seen = 0, set()
    for t in texts:
        toks = t.split()
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0
