"""The actors of a distributed PPO run, as plain classes (Ray wraps them in runner.py).

- ``RolloutWorker``: a copy of the policy for sampling, its reference (adapters off) and,
  colocated, the scorer. It runs part 1 of a PPO step (``RolloutCollector.collect``, as
  the local trainer does) on a shard of the step's prompts with the LoRA weights of a
  given version, and records that version.
- ``Learner``: a ``PPOTrainer`` that owns an optimizer. It merges the shards, whitens
  advantages over the whole batch and runs parts 2 and 3 (``PPOTrainer.update`` and
  ``PPOTrainer.finish_step``), exactly as the local loop does. With several learners
  (data parallel) every rank does this on its slice of each minibatch and gradients are
  averaged; rank 0 alone logs metrics, writes checkpoints into the run directory and hands
  back the new adapter weights.
- ``RemoteScorer``: the reward model as an actor of its own (placement 'separate').

They stay plain classes so they can be tested in one process without Ray.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from alignkit import artifacts as A
from alignkit import checkpoints
from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.distributed.data_parallel import RayCollective
from alignkit.generation import Generation
from alignkit.generation_vllm import make_sampler
from alignkit.models.build import build_policy as build_model_policy
from alignkit.models.loading import configure_process, load_tokenizer
from alignkit.models.policy import Policy
from alignkit.rl import math as M
from alignkit.rl.collect import RolloutBatch, RolloutCollector
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.rollout import Rollout, Scorer

# Builds the scorer inside the process that uses it (a reward model is not shipped pickled).
ScorerFactory = Callable[[PreTrainedTokenizerBase], Scorer]


@dataclass
class ScorerSpec:
    """The cycle's score sources, rebuilt by name in each actor: 'synthetic' (share of even
    token ids, optimum 1.0), 'gold' (a judge's goodness) or 'model' (a trained RM folder)."""

    kind: str = "synthetic"
    judge: str = "profanity"
    reward_model: str | None = None
    device: str = "auto"  # where the reward model runs in the actor that builds it

    def __call__(self, tok: PreTrainedTokenizerBase) -> Scorer:
        from alignkit.rl.scorers import judge_scorer, token_share_scorer

        if self.kind == "synthetic":
            return token_share_scorer(torch.arange(0, len(tok), 2))
        if self.kind == "gold":
            from alignkit.safety.judges import get_judge

            return judge_scorer(get_judge(self.judge))
        if self.kind == "model":
            if self.reward_model is None:
                raise ValueError("ScorerSpec.reward_model: kind 'model' needs the reward model "
                                 "folder — pass the run's reward_model path")
            from alignkit.reward.model import RewardEnsemble

            # one model, or the mean of several
            rm = RewardEnsemble.load(self.reward_model, self.device)

            def score(prompts: list[str], texts: list[str], gen: Generation) -> torch.Tensor:
                return rm.score(prompts, texts)

            return score
        raise ValueError(f"ScorerSpec.kind '{self.kind}' is unknown — use synthetic, gold "
                         "or model")


@dataclass
class WorkerSpec:
    """Everything an actor needs to rebuild the same policy and trainer; picklable."""

    model: ModelConfig
    ppo: PPOConfig
    generate: GenerateConfig
    scorer: ScorerFactory = field(default_factory=ScorerSpec)
    gold_judge: str | None = None  # adds objective/gold to the metrics, as the cycle does
    seed: int = 0  # the seed the base model was built with (random tiny model)
    chat_template: bool = False
    threads: int = 1
    keep_freed_memory: bool = True  # run.keep_freed_memory, applied in every actor's process


@dataclass
class RolloutTask:
    """One shard of one step: its prompts (already repeated per sample) and RNG key."""

    step: int
    shard: int
    prompts: list[str]
    seed_key: int  # PPOTrainer.rollout(seed_key): shard 0 uses the step, like local


@dataclass
class RolloutMeta:
    """The small half of a rollout result: the driver reads it; the tensors go straight to
    the learner through Ray's object store."""

    step: int
    shard: int
    version: int  # learner updates the weights had when this rollout was sampled
    size: int
    stats: dict
    pid: int


@dataclass
class RolloutPayload:
    roll: Rollout
    prompts: list[str]
    texts: list[str]


def build_policy(spec: WorkerSpec) -> tuple[PreTrainedTokenizerBase, Policy, list[int]]:
    """``models.build.build_policy`` for an actor: (tokenizer, policy, stop ids), with the
    caller's RNG left as it was. Adapter values come from the learner's broadcast."""
    with torch.random.fork_rng():
        built = build_model_policy(spec.model, spec.seed)
    return built.tokenizer, built.policy, built.stop_ids


def _gold(spec: WorkerSpec):
    if spec.gold_judge is None:
        return None
    from alignkit.safety.judges import get_judge

    return get_judge(spec.gold_judge).goodness


class RolloutWorker:
    def __init__(self, spec: WorkerSpec, scorer_actor=None) -> None:
        configure_process(spec.threads, spec.keep_freed_memory)
        self.tok, self.policy, stop_ids = build_policy(spec)
        if scorer_actor is None:
            scorer = spec.scorer(self.tok)
        else:
            import ray

            def scorer(prompts: list[str], texts: list[str], gen: Generation) -> torch.Tensor:
                return ray.get(scorer_actor.score.remote(prompts, texts, gen))

        # Whitening needs the whole batch: the learner does it after merging the shards.
        cfg = spec.ppo.model_copy(update={"whiten_advantages": False})
        g = spec.generate
        sampler = make_sampler(g.engine, self.policy, spec.model.name,
                               Path(tempfile.gettempdir()) / f"alignkit-vllm-{os.getpid()}",
                               g.vllm_gpu_memory, spec.seed)
        self.collector = RolloutCollector(self.policy, self.tok, scorer, cfg, g, stop_ids,
                                          spec.chat_template, _gold(spec),
                                          sampler)
        self.version = -1

    def set_weights(self, weights: dict[str, torch.Tensor], version: int) -> None:
        checkpoints.load_weights(self.policy, weights, "rollout worker: the learner's weights")
        self.version = version

    def rollout(self, task: RolloutTask, weights: list, version: int, kl_coef: float
                ) -> tuple[RolloutMeta, RolloutPayload]:
        """Sample ``task`` with weights ``version``. ``weights`` is ``[ObjectRef or dict]``:
        boxed so Ray does not fetch it when this worker already holds that version."""
        if version != self.version:
            w = weights[0]
            if not isinstance(w, dict):
                import ray

                w = ray.get(w)
            self.set_weights(w, version)
        b = self.collector.collect(task.prompts, task.seed_key, kl_coef, self.version)
        meta = RolloutMeta(task.step, task.shard, self.version, len(b.prompts), b.stats,
                           os.getpid())
        # Tensors travel on the CPU: the learner may sit on another GPU, or on none.
        return meta, RolloutPayload(b.roll.to("cpu"), b.prompts, b.texts)

    def pid(self) -> int:
        return os.getpid()


class RemoteScorer:
    """The reward model (or judge) in one place, called by every worker (placement
    'separate'): one copy of the RM instead of one per worker."""

    def __init__(self, spec: WorkerSpec) -> None:
        configure_process(spec.threads, spec.keep_freed_memory)
        self.scorer = spec.scorer(load_tokenizer(spec.model.name))

    def score(self, prompts: list[str], texts: list[str], gen: Generation) -> torch.Tensor:
        return self.scorer(prompts, texts, gen)


def _no_scorer(prompts, texts, gen):  # noqa: ARG001
    raise RuntimeError("the learner does not sample: rollouts come from the workers")


class Learner:
    def __init__(self, spec: WorkerSpec, prompts: list[str], out_dir: str | Path,
                 rank: int = 0, world: int = 1, group: str | None = None) -> None:
        configure_process(spec.threads, spec.keep_freed_memory)
        self.tok, self.policy, stop_ids = build_policy(spec)
        self.trainer = PPOTrainer(self.policy, self.tok, prompts, _no_scorer, spec.ppo,
                                  spec.generate, Path(out_dir), stop_ids, spec.chat_template)
        self.rank = rank
        if world > 1:
            if group is None:
                raise ValueError("Learner: world > 1 needs the collective group's name")
            self.trainer.data_parallel = RayCollective(rank, world, group)

    def set_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Rank 0's weights at the start (ranks must agree bit for bit before the first
        step), or the guard's rollback target."""
        checkpoints.load_weights(self.policy, weights, "learner: the weights it was sent")

    def set_kl_coef(self, value: float) -> None:
        """The guard raised β on the driver."""
        self.trainer.set_kl_coef(value)

    def checkpoint(self) -> None:
        if self.rank == 0:
            self.trainer.save_checkpoint()

    def batch_prompts(self, steps: list[int]) -> dict[int, list[str]]:
        """The prompts of each step, drawn exactly as the local trainer draws them."""
        return {s: self.trainer.batch_prompts(s) for s in steps}

    def load_checkpoint(self) -> bool:
        # every rank restores weights and optimizer; only rank 0 owns (and cuts back) the logs
        return self.trainer.load_checkpoint(keep_logs=self.rank != 0)

    def state(self) -> tuple[int, float, dict[str, torch.Tensor]]:
        """(version = completed updates, current β, adapter weights)."""
        t = self.trainer
        return t.step, t.kl_ctl.value, self.policy.adapter_state()

    def learn(self, step: int, metas: list[RolloutMeta], rollout_wait: float, checkpoint: bool,
              *payloads: RolloutPayload
              ) -> tuple[dict, dict[str, torch.Tensor], tuple[list[str], list[str]]]:
        """One PPO update on the merged shards; rank 0 logs the step like
        ``PPOTrainer.train`` and returns the new weights and the batch's prompts and texts
        (for the guard); other ranks return only the statistics."""
        t = self.trainer
        if step != t.step:
            raise RuntimeError(f"learner is at step {t.step}, got rollouts for step {step}")
        t0 = time.perf_counter()
        roll = merge_rollouts([p.roll for p in payloads], self.tok.pad_token_id)
        roll = roll.to(self.policy.device)
        if t.cfg.whiten_advantages:
            roll.advantages = M.masked_whiten(roll.advantages, roll.response_mask)
        batch = RolloutBatch(roll, [x for p in payloads for x in p.prompts],
                             [x for p in payloads for x in p.texts],
                             merge_stats([m.stats for m in metas], [m.size for m in metas]))
        stats = {**batch.stats, **t.update(roll, step)}
        stats = t.finish_step(batch, stats, rollout_wait, time.perf_counter() - t0,
                              log=self.rank == 0)
        if self.rank != 0:
            return stats, {}, ([], [])
        if checkpoint:
            t.save_checkpoint()
        return stats, self.policy.adapter_state(), (batch.prompts, batch.texts)


# --- pure pieces ----------------------------------------------------------------------------
_LEFT_PADDED = ("query_ids", "query_mask")


def merge_rollouts(rolls: list[Rollout], pad_id: int) -> Rollout:
    """Concatenate shards along the batch: queries left-padded, responses right-padded to the
    longest shard (pad ids, zero masks and zero tensors elsewhere, so padding is inert)."""
    if len(rolls) == 1:
        return rolls[0]
    out = {}
    for f in fields(Rollout):
        parts = [getattr(r, f.name) for r in rolls]
        if parts[0].dim() == 2:
            width = max(p.size(1) for p in parts)
            fill = pad_id if f.name in ("query_ids", "response_ids") else 0
            padded = []
            for p in parts:
                pad = p.new_full((p.size(0), width - p.size(1)), fill)
                padded.append(torch.cat([pad, p] if f.name in _LEFT_PADDED else [p, pad], 1))
            parts = padded
        out[f.name] = torch.cat(parts, 0)
    return Rollout(**out)


def merge_stats(stats: list[dict], sizes: list[int]) -> dict:
    """Shard statistics → batch statistics: means weighted by shard size, counts summed,
    times as the slowest shard (they ran side by side)."""
    w = np.asarray(sizes, dtype=float) / sum(sizes)
    out = {}
    for k in stats[0]:
        vals = [s[k] for s in stats]
        if k.startswith(A.TIME_PREFIX):
            out[k] = max(vals)
        elif k == A.NUM_EOS:
            out[k] = int(sum(vals))
        else:
            out[k] = float(np.dot(w, vals))
    return out
