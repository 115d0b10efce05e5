"""Data-parallel PPO learners: each rank takes its slice of every minibatch, gradients are
averaged across ranks before the optimizer step, so every rank holds the same weights.

The average is weighted by response tokens: PPO's losses are means over the minibatch's
tokens, and Σ_r n_r·∇L_r / Σ_r n_r is exactly the gradient of that mean over the whole
minibatch — N learners take the same step one learner would (up to float rounding).

The communication is torch.distributed's (gloo on CPUs, NCCL on GPUs); Ray sets the group up
(``ray.util.collective``: it places the learner actors and does the rendezvous,
``distributed.data_parallel.RayCollective``), nothing here opens a socket. ``PPOTrainer``
sees only the small ``DataParallel`` protocol, so the same update loop runs with one
learner, with Ray's group, or with a plain process group in tests.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class DataParallel(Protocol):
    """What the update loop needs from a group of learners."""

    rank: int
    world: int

    def all_reduce_sum(self, t: Tensor) -> None:
        """Replace ``t`` in place by its sum over the ranks."""


class TorchDistributed:
    """The default torch.distributed process group (any backend), already initialised."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def all_reduce_sum(self, t: Tensor) -> None:
        self._dist.all_reduce(t)


def rank_slice(indices: Tensor, dp: DataParallel | None) -> Tensor:
    """This rank's rows of a minibatch: every world-th row from its rank, so the ranks split
    it into disjoint parts of equal size (±1) that together cover it."""
    return indices if dp is None or dp.world == 1 else indices[dp.rank :: dp.world]


def average_gradients(params: list[torch.nn.Parameter], dp: DataParallel, tokens: float
                      ) -> None:
    """Gradients ← Σ_r tokens_r·grad_r / Σ_r tokens_r, in one all-reduce over all of them
    flattened into one buffer (one message instead of one per LoRA matrix) with the token
    count riding at its end; a parameter without a gradient on this rank counts as zeros."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_ones(1)]).mul_(tokens)
    dp.all_reduce_sum(flat)
    flat = flat[:-1] / flat[-1]
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def average_stats(stats: dict[str, float], dp: DataParallel, device: torch.device
                  ) -> dict[str, float]:
    """Per-rank update statistics → means over the ranks (same keys on every rank)."""
    keys = sorted(stats)
    t = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)
    dp.all_reduce_sum(t)
    return dict(zip(keys, (t / dp.world).tolist(), strict=True))
