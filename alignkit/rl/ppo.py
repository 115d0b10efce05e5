"""The PPO loop (and its critic-free variants RLOO and GRPO) over LoRA adapters.

A step is three parts, each a method the Ray learner calls too:

1. ``rollout(step)`` — sample with LoRA merged → reference log-probs with adapters off →
   score → per-token KL shaping → advantages (``rl.collect.RolloutCollector``);
2. ``update(roll, step)`` — ``epochs`` passes of clipped updates over minibatches;
3. ``finish_step(...)`` — β update, step count, TRL-named metrics to metrics.jsonl.

Every formula lives in ``rl.math``; this file only orders the calls, logs and checkpoints
(``alignkit.checkpoints``).
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from alignkit import artifacts as A
from alignkit import checkpoints
from alignkit.config import GenerateConfig, PPOConfig
from alignkit.models.policy import Policy
from alignkit.rl import math as M
from alignkit.rl.collect import GoldFn, RolloutBatch, RolloutCollector
from alignkit.rl.data_parallel import (
    DataParallel,
    average_gradients,
    average_stats,
    rank_slice,
)
from alignkit.rl.kl_control import FixedKL, make_kl_controller
from alignkit.rl.lagrangian import SafetyObjective
from alignkit.rl.rollout import Rollout, Scorer, response_forward
from alignkit.rundir import RunDir

if TYPE_CHECKING:
    from alignkit.generation_vllm import VLLMSampler

__all__ = ["GoldFn", "PPOTrainer", "StopRequest"]


@dataclass
class StopRequest:
    """Set by Ctrl-C: the loop finishes the current step, checkpoints, and returns."""

    requested: bool = False
    _previous: object = field(default=None, repr=False)

    def __enter__(self) -> StopRequest:
        def handler(signum, frame):  # noqa: ARG001
            if self.requested:  # second Ctrl-C: the user means it
                raise KeyboardInterrupt
            self.requested = True
            print("\nCtrl-C: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no signal handling, nothing to restore
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class PPOTrainer:
    """PPO (or RLOO/GRPO) over the policy's LoRA adapters, one step at a time."""

    def __init__(self, policy: Policy, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                 scorer: Scorer, cfg: PPOConfig, gen: GenerateConfig, out_dir: Path,
                 stop_ids: list[int], chat_template: bool = False,
                 gold: GoldFn | None = None, sampler: VLLMSampler | None = None,
                 cost_scorer: Scorer | None = None) -> None:
        if not prompts:
            raise ValueError("ppo: no training prompts — check data.prompts")
        if cfg.algorithm != "ppo" and cfg.samples_per_prompt < 2:
            raise ValueError(f"ppo.samples_per_prompt must be >= 2 for {cfg.algorithm}")
        self.policy, self.tok, self.prompts, self.cfg, self.gen_cfg = (policy, tokenizer,
                                                                       prompts, cfg, gen)
        policy.gradient_checkpointing = cfg.gradient_checkpointing  # the update's forwards
        self.collector = RolloutCollector(policy, tokenizer, scorer, cfg, gen, stop_ids,
                                          chat_template, gold, sampler, cost_scorer)
        # Safe RLHF: λ of the reward–cost trade-off, moved by dual ascent in finish_step.
        self.safety = (SafetyObjective(cfg.cost_objective, cfg.cost_limit, cfg.lambda_lr,
                                       cfg.lambda_init, cfg.cost_unsafe_only,
                                       cfg.unsafe_threshold)
                       if cost_scorer is not None else None)
        run = RunDir(out_dir)
        self.out_dir, self.ckpt_dir = run.path, run.checkpoints
        self.metrics_path, self.samples_path = run.metrics, run.samples
        params = policy.trainable_parameters()
        # fused: one pass per tensor instead of ~8 temporaries (9x faster step on CPU).
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5, fused=True)
        self.kl_ctl: FixedKL = make_kl_controller(cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl,
                                                  cfg.kl_horizon)
        self.step = 0  # completed iterations
        # Set by a data-parallel learner: this rank updates on its slice of each minibatch
        # and gradients are averaged over the ranks before every optimizer step.
        self.data_parallel: DataParallel | None = None
        self._clock: tuple[float, int] | None = None  # (start, episode) of this process

    # The collector's pieces, read by the guard's held-out evaluation and benchmarks.
    scorer = property(lambda self: self.collector.scorer)
    gold = property(lambda self: self.collector.gold)
    stop_ids = property(lambda self: self.collector.stop_ids)
    chat_template = property(lambda self: self.collector.chat_template)

    @property
    def sampler(self) -> VLLMSampler | None:
        return self.collector.sampler

    @sampler.setter
    def sampler(self, value: VLLMSampler | None) -> None:
        self.collector.sampler = value

    # --- 1. rollout -----------------------------------------------------------------------
    def batch_prompts(self, step: int) -> list[str]:
        """Prompts of iteration ``step``: a deterministic function of (seed, step) so a
        resumed run samples exactly what the uninterrupted run would have."""
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        chosen = rng.sample(self.prompts, min(self.cfg.prompts_per_step, len(self.prompts)))
        return [p for p in chosen for _ in range(self.cfg.samples_per_prompt)]

    def rollout(self, step: int) -> tuple[Rollout, list[str], list[str], dict]:
        """Part 1: the step's batch, sampled with the current weights and β."""
        b = self.collector.collect(self.batch_prompts(step), step, self.kl_ctl.value,
                                   self.step, self.safety)
        return b.roll, b.prompts, b.texts, b.stats

    # --- 2. update -----------------------------------------------------------------------
    def update(self, roll: Rollout, step: int) -> dict:
        """Part 2: clipped policy (and value) updates over minibatches of ``roll``."""
        cfg = self.cfg
        B = roll.query_ids.size(0)
        mb = max(1, B // cfg.minibatches)
        rng = torch.Generator().manual_seed(cfg.seed * 104729 + step)  # same on every rank
        dp = self.data_parallel
        if dp is not None and mb < dp.world:
            raise ValueError(f"distributed.num_learners ({dp.world}) exceeds the minibatch size "
                             f"({mb} = {B} rollouts / ppo.minibatches) — use fewer learners or "
                             "fewer minibatches")
        params = self.policy.trainable_parameters()
        logs: dict[str, list[float]] = {k: [] for k in (
            "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg",
            "val/clipfrac_avg", "policy/entropy_avg", "val/ratio")}
        self.policy.train(False)  # dropout stays off: the ratio must be exactly 1 at start
        for _ in range(cfg.epochs):
            order = torch.randperm(B, generator=rng).to(roll.response_mask.device)
            for start in range(0, B, mb):
                part = roll.select(rank_slice(order[start : start + mb], dp))
                logp, entropy, values = response_forward(
                    self.policy, part.query_ids, part.query_mask, part.response_ids,
                    part.response_mask, self.gen_cfg.temperature,
                    with_values=cfg.algorithm == "ppo")
                m = part.response_mask
                pg_loss, clipfrac, approxkl = M.clipped_policy_loss(
                    logp, part.logprobs, part.advantages, m, cfg.cliprange)
                loss = pg_loss
                if values is not None:
                    vf_loss, vf_clip = M.clipped_value_loss(
                        values, part.values, part.returns, m, cfg.cliprange_value)
                    loss = loss + cfg.vf_coef * vf_loss
                    logs["loss/value_avg"].append(vf_loss.item())
                    logs["val/clipfrac_avg"].append(vf_clip.item())
                if not cfg.kl_in_reward:
                    kl_now = M.kl_per_token(logp, part.ref_logprobs, cfg.kl_estimator)
                    loss = loss + self.kl_ctl.value * M.masked_mean(kl_now, m)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if dp is not None:  # token-weighted: the step one learner would take
                    average_gradients(params, dp, float(m.sum()))
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    ratio = M.masked_mean(torch.exp(logp - part.logprobs), m)
                logs["policy/approxkl_avg"].append(approxkl.item())
                logs["policy/clipfrac_avg"].append(clipfrac.item())
                logs["loss/policy_avg"].append(pg_loss.item())
                logs["policy/entropy_avg"].append(M.masked_mean(entropy, m).item())
                logs["val/ratio"].append(ratio.item())
        stats = {k: float(np.mean(v)) for k, v in logs.items() if v}
        return stats if dp is None else average_stats(stats, dp, roll.response_mask.device)

    # --- 3. finish the step ----------------------------------------------------------------
    def finish_step(self, batch: RolloutBatch, stats: A.MetricsRow, seconds_rollout: float,
                    seconds_update: float, log: bool = True) -> A.MetricsRow:
        """Part 3: β from the step's KL, the step count, and the step's metrics row (appended
        to metrics.jsonl with 4 samples to samples.jsonl unless ``log`` is False)."""
        n = batch.roll.query_ids.size(0)
        self.kl_ctl.update(stats[A.KL], n)
        if self.safety is not None:
            self.safety.update(stats[A.COST])
        self.step += 1
        now = time.perf_counter()
        episode = self.step * n
        if self._clock is None:  # this process's first step: eps counts from its start
            self._clock = (now - seconds_rollout - seconds_update, episode - n)
        start, start_episode = self._clock
        stats.update({A.STEP: self.step, A.KL_COEF: self.kl_ctl.value, A.EPISODE: episode,
                      A.LR: self.optimizer.param_groups[0]["lr"],
                      A.EPS: (episode - start_episode) / max(now - start, 1e-9),
                      A.TIME_ROLLOUT: seconds_rollout, A.TIME_UPDATE: seconds_update,
                      A.TIME_STEP: seconds_rollout + seconds_update})
        if log:
            self._log(stats, batch)
        return stats

    def set_kl_coef(self, value: float) -> None:
        """β from outside the loop: the guard raised it, or the driver told a learner."""
        self.kl_ctl.set(value)

    # --- the loop -------------------------------------------------------------------------
    def train(self, steps: int | None = None, on_step: Callable[[dict], None] | None = None,
              guard: Callable[[dict, list[str], list[str]], str | None] | None = None) -> str:
        """Run until ``steps`` iterations are complete; returns why it stopped."""
        total = self.cfg.steps if steps is None else steps
        with StopRequest() as stop:
            while self.step < total:
                t0 = time.perf_counter()
                batch = self.collector.collect(self.batch_prompts(self.step), self.step,
                                               self.kl_ctl.value, self.step, self.safety)
                t1 = time.perf_counter()
                stats = {**batch.stats, **self.update(batch.roll, self.step)}
                stats = self.finish_step(batch, stats, t1 - t0, time.perf_counter() - t1)
                if on_step:
                    on_step(stats)
                verdict = guard(stats, batch.prompts, batch.texts) if guard else None
                if self.step % self.cfg.checkpoint_every == 0 or self.step == total or verdict \
                        or stop.requested:
                    self.save_checkpoint()
                if verdict:
                    return verdict
                if stop.requested:
                    return "interrupted"
        return "steps done"

    def _log(self, stats: A.MetricsRow, batch: RolloutBatch) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(stats) + "\n")
        with open(self.samples_path, "a") as f:
            rows = zip(batch.prompts, batch.texts, batch.roll.scores.tolist(), strict=True)
            for p, t, s in list(rows)[:4]:
                f.write(json.dumps({"step": self.step, "prompt": p, "response": t,
                                    "score": s}) + "\n")

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """step_N (weights, optimizer, β, log lengths), then ``latest``; keeps the last two."""
        return checkpoints.save(self.ckpt_dir, checkpoints.TrainState(
            self.policy.adapter_state(), self.step, self.optimizer.state_dict(),
            self.kl_ctl.state_dict(), _count_lines(self.metrics_path),
            _count_lines(self.samples_path),
            self.safety.state_dict() if self.safety is not None else {}))

    def load_checkpoint(self, path: Path | None = None, keep_logs: bool = False,
                        log: Callable[[str], None] | None = print) -> bool:
        """Restore ``path`` or the latest checkpoint that reads back (a corrupted newest one
        falls back to the one before, told through ``log``); logs are cut back to match it
        unless ``keep_logs`` (loading a finished run's weights, not resuming it)."""
        if path is None:
            found = checkpoints.load_latest(self.ckpt_dir, log)
            if found is None:
                return False
            path, state = found
        else:
            state = checkpoints.load_state(path)
        # load_state_dict copies into the policy's device; the optimizer moves its state to
        # its params'.
        checkpoints.load_weights(self.policy, state.weights, f"checkpoint {path}")
        self.optimizer.load_state_dict(state.optimizer)
        self.kl_ctl.load_state_dict(state.kl_ctl)
        if self.safety is not None and state.safety:
            self.safety.load_state_dict(state.safety)
        self.step = state.step
        if not keep_logs:
            _truncate_lines(self.metrics_path, state.metrics_lines)
            _truncate_lines(self.samples_path, state.samples_lines)
        return True


def _count_lines(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.exists() else 0


def _truncate_lines(path: Path, n: int) -> None:
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)[:n]
        path.write_text("".join(lines))
