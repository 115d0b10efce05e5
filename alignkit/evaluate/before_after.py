"""Before/after statistics of one judge on the same prompts and sampling seeds."""

from __future__ import annotations

import numpy as np

from alignkit.artifacts import JudgeComparison, SideResult
from alignkit.safety.judges import Judge
from alignkit.stats import bootstrap_mean_ci, paired_diff_ci


def judge_comparison(judge: Judge, before: list[str], after: list[str], samples_per_prompt: int,
                     n_boot: int = 2000, seed: int = 0) -> JudgeComparison:
    """Mean harm before and after with 95% CIs, and the paired difference.

    The resampling unit is the prompt (its samples averaged), since samples of one prompt
    are not independent; pairing by prompt removes the between-prompt variance.
    """
    def per_prompt(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, samples_per_prompt).mean(1)

    hb, ha = judge.harm(before), judge.harm(after)
    d, lo, hi = paired_diff_ci(per_prompt(hb), per_prompt(ha), n_boot, seed)
    def side(h: np.ndarray) -> SideResult:
        return SideResult(float(h.mean()), list(bootstrap_mean_ci(per_prompt(h), n_boot, seed)),
                          h.tolist())

    return JudgeComparison(side(hb), side(ha), d, [lo, hi],
                           d / float(hb.mean()) if hb.mean() else None, judge.source,
                           judge.blind_spots)
