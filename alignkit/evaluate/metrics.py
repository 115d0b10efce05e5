"""Diversity measures of before/after samples (the CIs live in :mod:`alignkit.stats`)."""

from __future__ import annotations

from collections.abc import Sequence


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over whitespace tokens; low values mean collapse."""
    total, seen = 0, set()
    for t in texts:
        toks = t.split()
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0
