"""Sequence scores for PPO: a trained reward model, a gold judge, or a known-optimum task."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from alignkit.generation import Generation
from alignkit.rl.rollout import Scorer
from alignkit.safety.judges import Judge


def token_share_scorer(token_ids: Tensor) -> Scorer:
    """Share of response tokens that belong to ``token_ids``: optimum 1.0, known in advance.

    Used by the learning tests and the benchmarks: PPO must drive this up.
    """

    def score(prompts: list[str], texts: list[str], gen: Generation) -> Tensor:
        hits = torch.isin(gen.response_ids, token_ids.to(gen.response_ids.device)).float()
        hits = hits * gen.response_mask
        return hits.sum(1) / gen.response_mask.sum(1).clamp_min(1.0)

    return score


def judge_scorer(judge: Judge) -> Scorer:
    """Gold-as-reward: the judge's goodness (1 − harm). An upper bound for the RM loop."""

    def score(prompts: list[str], texts: list[str], gen: Generation) -> Tensor:
        return torch.as_tensor(np.asarray(judge.goodness(texts)), dtype=torch.float32)

    return score
