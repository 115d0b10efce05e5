"""The PPO loop (and its critic-free variants RLOO and GRPO) over LoRA adapters.

Per iteration: sample with LoRA merged → reference log-probs with adapters off → score
→ per-token KL shaping → advantages → ``epochs`` passes of clipped updates over
minibatches. Every formula lives in ``rl.math``; this file only orders the calls,
logs TRL-named metrics and checkpoints.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from alignkit.config import GenerateConfig, PPOConfig
from alignkit.distributed.data_parallel import (
    DataParallel,
    average_gradients,
    average_stats,
    rank_slice,
)
from alignkit.generation import encode_prompts, sample
from alignkit.models.policy import Policy
from alignkit.rl import math as M
from alignkit.rl.kl_control import FixedKL, make_kl_controller
from alignkit.rl.rollout import Rollout, Scorer, response_forward, with_policy_logprobs

GoldFn = Callable[[list[str]], np.ndarray]

if TYPE_CHECKING:
    from alignkit.generation_vllm import VLLMSampler


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
    def __init__(self, policy: Policy, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                 scorer: Scorer, cfg: PPOConfig, gen: GenerateConfig, out_dir: Path,
                 stop_ids: list[int], chat_template: bool = False,
                 gold: GoldFn | None = None, sampler: VLLMSampler | None = None) -> None:
        if not prompts:
            raise ValueError("ppo: no training prompts — check data.prompts")
        if cfg.algorithm != "ppo" and cfg.samples_per_prompt < 2:
            raise ValueError(f"ppo.samples_per_prompt must be >= 2 for {cfg.algorithm}")
        self.policy, self.tok, self.prompts = policy, tokenizer, prompts
        policy.gradient_checkpointing = cfg.gradient_checkpointing  # the update's forwards
        self.scorer, self.cfg, self.gen_cfg, self.gold = scorer, cfg, gen, gold
        self.stop_ids, self.chat_template = stop_ids, chat_template
        self.sampler = sampler  # None = alignkit's own sampler (generate.engine native)
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.samples_path = self.out_dir / "samples.jsonl"
        params = policy.trainable_parameters()
        # fused: one pass per tensor instead of ~8 temporaries (9x faster step on CPU).
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5, fused=True)
        self.kl_ctl: FixedKL = make_kl_controller(cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl,
                                                  cfg.kl_horizon)
        self.step = 0  # completed iterations
        # Set by a data-parallel learner: this rank updates on its slice of each minibatch
        # and gradients are averaged over the ranks before every optimizer step.
        self.data_parallel: DataParallel | None = None

    # --- rollout ------------------------------------------------------------------------
    def _batch_prompts(self, step: int) -> list[str]:
        """Prompts of iteration ``step``: a deterministic function of (seed, step) so a
        resumed run samples exactly what the uninterrupted run would have."""
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        chosen = rng.sample(self.prompts, min(self.cfg.prompts_per_step, len(self.prompts)))
        return [p for p in chosen for _ in range(self.cfg.samples_per_prompt)]

    @torch.no_grad()
    def rollout(self, step: int) -> tuple[Rollout, list[str], list[str], dict]:
        cfg, g = self.cfg, self.gen_cfg
        prompts = self._batch_prompts(step)
        q, qm = encode_prompts(self.tok, prompts, self.chat_template)
        gen_rng = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        t0 = time.perf_counter()
        if self.sampler is not None:  # vLLM picks tokens; log-probs/values are the policy's
            self.sampler.sync(self.policy, self.step)
            gen = self.sampler.sample(self.policy, q, qm, g.max_new_tokens, self.stop_ids,
                                      self.tok.pad_token_id, g.temperature, g.top_p,
                                      seed=cfg.seed * 7919 + step)
        else:
            with self.policy.merged():
                gen = sample(self.policy, q, qm, g.max_new_tokens, self.stop_ids,
                             self.tok.pad_token_id, g.temperature, g.top_p, gen_rng)
            if self.policy.low_precision_base:  # bf16: decoding rounds unlike the update
                gen = with_policy_logprobs(self.policy, gen, g.temperature)
        t1 = time.perf_counter()
        mask = gen.response_mask
        with self.policy.reference():
            ref_logp, _, _ = response_forward(self.policy, q, qm, gen.response_ids, mask,
                                              g.temperature, reference=True, with_values=False)
        ref_logp = ref_logp * mask
        t2 = time.perf_counter()
        texts = gen.texts(self.tok)
        scores = self.scorer(prompts, texts, gen).float().to(mask.device)
        raw_scores = scores.clone()
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~gen.ended).float()
        if cfg.score_clip is not None:
            scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
        t3 = time.perf_counter()

        kl = M.kl_per_token(gen.logprobs, ref_logp, cfg.kl_estimator) * mask
        beta = self.kl_ctl.value if cfg.kl_in_reward else 0.0
        if cfg.algorithm == "ppo":
            rewards = M.shape_rewards(scores, kl, mask, beta)
            adv, returns = M.gae(rewards, gen.values, mask, cfg.gamma, cfg.lam)
        else:
            seq_reward = (scores - beta * kl.sum(1)).view(-1, cfg.samples_per_prompt)
            seq_adv = (M.rloo_advantages(seq_reward) if cfg.algorithm == "rloo"
                       else M.grpo_advantages(seq_reward)).view(-1)
            adv = seq_adv[:, None] * mask
            returns = torch.zeros_like(adv)
        if cfg.whiten_advantages:
            adv = M.masked_whiten(adv, mask)
        roll = Rollout(gen.query_ids, gen.query_mask, gen.response_ids, mask, gen.logprobs,
                       ref_logp, gen.values,
                       scores, kl, adv, returns)
        kl_sum = kl.sum(1)
        stats = {
            "objective/kl": kl_sum.mean().item(),
            "objective/entropy": (-gen.logprobs * mask).sum(1).mean().item(),
            "objective/non_score_reward": (-self.kl_ctl.value * kl_sum).mean().item(),
            "objective/rlhf_reward": (scores - self.kl_ctl.value * kl_sum).mean().item(),
            "objective/scores": raw_scores.mean().item(),
            "val/num_eos_tokens": int(gen.ended.sum()),
            "response/length": mask.sum(1).mean().item(),
            "time/generation": t1 - t0,
            "time/reference": t2 - t1,
            "time/scoring": t3 - t2,
        }
        if self.gold is not None:
            stats["objective/gold"] = float(np.mean(self.gold(texts)))
        return roll, prompts, texts, stats

    # --- update -------------------------------------------------------------------------
    def update(self, roll: Rollout, step: int) -> dict:
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

    # --- loop ---------------------------------------------------------------------------
    def train(self, steps: int | None = None, on_step: Callable[[dict], None] | None = None,
              guard: Callable[[dict, list[str], list[str]], str | None] | None = None) -> str:
        """Run until ``steps`` iterations are complete; returns why it stopped."""
        total = self.cfg.steps if steps is None else steps
        reason = "steps done"
        with StopRequest() as stop:
            while self.step < total:
                t0 = time.perf_counter()
                roll, prompts, texts, stats = self.rollout(self.step)
                t1 = time.perf_counter()
                stats.update(self.update(roll, self.step))
                self.kl_ctl.update(stats["objective/kl"], roll.query_ids.size(0))
                self.step += 1
                stats.update({"step": self.step, "kl_coef": self.kl_ctl.value,
                              "episodes": self.step * roll.query_ids.size(0),
                              "time/rollout": t1 - t0, "time/update": time.perf_counter() - t1,
                              "time/step": time.perf_counter() - t0})
                self._log(stats, prompts, texts, roll)
                if on_step:
                    on_step(stats)
                verdict = guard(stats, prompts, texts) if guard else None
                if self.step % self.cfg.checkpoint_every == 0 or self.step == total or verdict \
                        or stop.requested:
                    self.save_checkpoint()
                if verdict:
                    return verdict
                if stop.requested:
                    return "interrupted"
        return reason

    def _log(self, stats: dict, prompts: list[str], texts: list[str], roll: Rollout) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(stats) + "\n")
        with open(self.samples_path, "a") as f:
            for p, t, s in list(zip(prompts, texts, roll.scores.tolist(), strict=True))[:4]:
                f.write(json.dumps({"step": self.step, "prompt": p, "response": t,
                                    "score": s}) + "\n")

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write step_N atomically, then point ``latest`` at it; keep the last two."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_dir / f"step_{self.step:05d}"
        tmp = self.ckpt_dir / f".tmp_step_{self.step:05d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save({"weights": self.policy.adapter_state(),
                    "optimizer": self.optimizer.state_dict(),
                    "kl_ctl": self.kl_ctl.state_dict(), "step": self.step,
                    "metrics_lines": _count_lines(self.metrics_path),
                    "samples_lines": _count_lines(self.samples_path)}, tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        latest_tmp = self.ckpt_dir / "latest.tmp"
        latest_tmp.write_text(final.name)
        latest_tmp.replace(self.ckpt_dir / "latest")
        for old in sorted(self.ckpt_dir.glob("step_*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, path: Path | None = None, keep_logs: bool = False) -> bool:
        """Restore the latest checkpoint (if any); logs are cut back to match it unless
        ``keep_logs`` (loading a finished run's weights, not resuming it)."""
        if path is None:
            pointer = self.ckpt_dir / "latest"
            if not pointer.exists():
                return False
            path = self.ckpt_dir / pointer.read_text().strip()
        # map to CPU: a checkpoint written on a GPU resumes on a laptop; load_state_dict
        # copies into the policy's device, the optimizer moves its state to its params'.
        state = torch.load(path / "state.pt", weights_only=False, map_location="cpu")
        missing = self.policy.load_state_dict(state["weights"], strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"checkpoint {path} does not match the policy: "
                               f"{missing.unexpected_keys[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.step = state["step"]
        if not keep_logs:
            _truncate_lines(self.metrics_path, state["metrics_lines"])
            _truncate_lines(self.samples_path, state["samples_lines"])
        return True


def _count_lines(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.exists() else 0


def _truncate_lines(path: Path, n: int) -> None:
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)[:n]
        path.write_text("".join(lines))
