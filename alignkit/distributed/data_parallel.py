"""The Ray side of data-parallel learners; the protocol and the averaging live in
``alignkit.rl.data_parallel`` (re-exported here for code written against the old path)."""

from __future__ import annotations

from torch import Tensor

from alignkit.rl.data_parallel import (
    DataParallel,
    TorchDistributed,
    average_gradients,
    average_stats,
    rank_slice,
)

__all__ = ["DataParallel", "RayCollective", "TorchDistributed", "average_gradients",
           "average_stats", "rank_slice"]


class RayCollective:
    """A ``ray.util.collective`` group of learner actors (declared by the driver with
    ``create_collective_group``); gloo runs on torch.distributed, NCCL on GPUs."""

    def __init__(self, rank: int, world: int, group: str) -> None:
        self.rank, self.world, self.group = rank, world, group

    def all_reduce_sum(self, t: Tensor) -> None:
        from ray.util import collective

        collective.allreduce(t, group_name=self.group)
