"""Where PPO runs: in this process (local) or on a Ray cluster (rollout workers + learner).

The same run config drives both backends; this section only says how the work is spread.
Unknown keys are errors, like every other section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DistributedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    backend: Literal["local", "ray"] = Field(
        "local", description="'local' runs PPO in this process; 'ray' runs rollout workers and "
        "the learner as Ray actors (pip install 'alignkit[ray]').",
    )
    ray_address: str | None = Field(
        None, description="Cluster to join ('auto', 'ray://head:10001', 'host:6379'); None "
        "starts a private local cluster for this run and stops it afterwards.",
    )
    num_rollout_workers: int = Field(
        2, ge=1, description="Rollout actors, each with its own copy of the policy; every PPO "
        "batch is split between them by prompt.",
    )
    num_learners: int = Field(
        1, ge=1, description="Data-parallel learner actors: each updates on its slice of every "
        "minibatch and gradients are averaged with torch.distributed (gloo on CPUs, NCCL on "
        "GPUs) through a ray.util.collective group; 1 = a single learner, no group.",
    )
    learner_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Collective backend of the learners; 'auto' = NCCL when they "
        "reserve GPUs (learner_gpus > 0, placement 'separate'), else gloo.",
    )
    max_weight_lag: int = Field(
        1, ge=0, description="Updates a rollout's weights may trail the learner by; 0 = "
        "strictly on-policy (same maths as local), 1 lets the next rollout overlap the "
        "current update. Older rollouts are dropped and resampled.",
    )
    placement: Literal["colocated", "separate"] = Field(
        "colocated", description="'colocated': reference and reward model live in each rollout "
        "worker and the learner shares their CPUs/GPUs; 'separate': the reward model is one "
        "actor of its own and the learner reserves its own CPUs/GPUs (OpenRLHF-style).",
    )
    worker_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per rollout worker "
                               "(also its torch threads, at least 1).")
    worker_gpus: float = Field(0.0, ge=0, description="GPUs per rollout worker; 0 on CPU "
                               "clusters, fractions let workers share a GPU.")
    learner_cpus: float = Field(1.0, gt=0, description="CPUs the learner reserves when "
                                "placement is 'separate' (colocated: it reserves none).")
    learner_gpus: float = Field(0.0, ge=0, description="GPUs the learner reserves when "
                                "placement is 'separate'.")
    max_restarts: int = Field(3, ge=0, description="Times Ray restarts a dead rollout worker; "
                              "its in-flight rollout is resampled, the run goes on.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the private local cluster "
                                 "(ray_address None); None = all cores.")
    temp_dir: str | None = Field(None, description="Session folder of the private local "
                                 "cluster; None = a fresh folder under /tmp, removed at the end.")
