"""Sampling with the reference KL, and PPO's rollout (part 1 of a PPO step).

``reference_kl`` is the one place that runs the reference forward and the per-token KL;
PPO's rollouts, the guard's held-out evaluation and the evaluate stage all call it (or
``sample_with_reference``), so "KL" means the same number everywhere.
``RolloutCollector`` turns prompts into a scored, advantage-ready ``Rollout``: the local
trainer and the Ray rollout workers use the same object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from alignkit import artifacts as A
from alignkit.config import GenerateConfig, PPOConfig
from alignkit.generation import Generation, encode_prompts, sample
from alignkit.models.policy import Policy
from alignkit.rl import math as M
from alignkit.rl.rollout import Rollout, Scorer, response_forward, with_policy_logprobs

if TYPE_CHECKING:
    from alignkit.generation_vllm import VLLMSampler
    from alignkit.rl.lagrangian import SafetyObjective

GoldFn = Callable[[list[str]], np.ndarray]


@torch.no_grad()
def reference_kl(policy: Policy, gen: Generation, temperature: float, estimator: str
                 ) -> tuple[Tensor, Tensor]:
    """(reference log-probs, per-token KL estimate) of ``gen``'s responses, both [B, T] and
    0 outside the response mask: KL_t = k(log π(y_t) − log π_ref(y_t)) (``rl.math``)."""
    if gen.approximate:  # a low-precision sampler's log-probs would bias every KL
        gen = with_policy_logprobs(policy, gen, temperature)
    mask = gen.response_mask
    with policy.reference():
        ref, _, _ = response_forward(policy, gen.query_ids, gen.query_mask, gen.response_ids,
                                     mask, temperature, reference=True, with_values=False)
    ref = ref * mask
    return ref, M.kl_per_token(gen.logprobs, ref, estimator) * mask


@dataclass
class Sampled:
    """Responses of the current policy with their reference log-probs and KL.
    ``seconds_reference`` counts every fp32 pass over the sampled tokens: the reference's,
    and the policy's own when a low-precision sampler drew them."""

    gen: Generation
    ref_logprobs: Tensor
    kl: Tensor
    seconds_generation: float
    seconds_reference: float


@torch.no_grad()
def sample_with_reference(policy: Policy, tok: PreTrainedTokenizerBase, prompts: list[str],
                          gen_cfg: GenerateConfig, stop_ids: list[int], estimator: str,
                          seed: int, chat_template: bool = False,
                          sampler: VLLMSampler | None = None, version: int = 0) -> Sampled:
    """Sample ``prompts`` with LoRA merged (or with ``sampler``, vLLM, at weights
    ``version``), then the reference forward and the per-token KL."""
    g = gen_cfg
    q, qm = encode_prompts(tok, prompts, chat_template)
    t0 = time.perf_counter()
    if sampler is not None:  # vLLM picks tokens; log-probs/values are the policy's
        sampler.sync(policy, version)
        gen = sampler.sample(policy, q, qm, g.max_new_tokens, stop_ids, tok.pad_token_id,
                             g.temperature, g.top_p, seed=seed)
    else:
        with policy.merged():
            gen = sample(policy, q, qm, g.max_new_tokens, stop_ids, tok.pad_token_id,
                         g.temperature, g.top_p, torch.Generator().manual_seed(seed))
    t1 = time.perf_counter()
    if gen.approximate:  # a bf16 sampler: PPO's old log-probs and values from fp32
        gen = with_policy_logprobs(policy, gen, g.temperature)
    ref, kl = reference_kl(policy, gen, g.temperature, estimator)
    return Sampled(gen, ref, kl, t1 - t0, time.perf_counter() - t1)


@dataclass
class RolloutBatch:
    """Part 1's output: the rollout, the prompts and texts it was sampled for, its stats."""

    roll: Rollout
    prompts: list[str]
    texts: list[str]
    stats: A.MetricsRow


class RolloutCollector:
    """Sample → reference KL → score → shaped rewards → advantages, for one batch."""

    def __init__(self, policy: Policy, tokenizer: PreTrainedTokenizerBase, scorer: Scorer,
                 cfg: PPOConfig, gen: GenerateConfig, stop_ids: list[int],
                 chat_template: bool = False, gold: GoldFn | None = None,
                 sampler: VLLMSampler | None = None, cost_scorer: Scorer | None = None
                 ) -> None:
        self.policy, self.tok, self.scorer, self.cfg, self.gen_cfg = (policy, tokenizer, scorer,
                                                                      cfg, gen)
        self.cost_scorer = cost_scorer  # Safe RLHF: scores become (R − λC)/(1 + λ)
        self.stop_ids, self.chat_template, self.gold = stop_ids, chat_template, gold
        self.sampler = sampler  # None = alignkit's own sampler (generate.engine native)

    def sample(self, prompts: list[str], seed: int, version: int = 0) -> Sampled:
        return sample_with_reference(self.policy, self.tok, prompts, self.gen_cfg,
                                     self.stop_ids, self.cfg.kl_estimator, seed,
                                     self.chat_template, self.sampler, version)

    @torch.no_grad()
    def collect(self, prompts: list[str], seed_key: int, kl_coef: float, version: int = 0,
                safety: SafetyObjective | None = None) -> RolloutBatch:
        """One batch for ``prompts``; ``seed_key`` fixes the draw (the step, locally);
        ``safety`` combines reward and cost when there is a cost scorer."""
        cfg = self.cfg
        s = self.sample(prompts, cfg.seed * 7919 + seed_key, version)
        gen, mask, kl = s.gen, s.gen.response_mask, s.kl
        t2 = time.perf_counter()
        texts = gen.texts(self.tok)
        scores = self.scorer(prompts, texts, gen).float().to(mask.device)
        safe_stats: A.MetricsRow = {}
        if self.cost_scorer is not None:
            if safety is None:
                raise ValueError("ppo.cost: a cost scorer needs the trainer's SafetyObjective")
            cost = safety.cost(self.cost_scorer(prompts, texts, gen).float().to(mask.device))
            safe_stats = {A.REWARD: scores.mean().item(), A.COST: cost.mean().item(),
                          A.LAMBDA: safety.lam}
            scores = safety.score(scores, cost)
        raw_scores = scores.clone()
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~gen.ended).float()
        if cfg.score_clip is not None:
            scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
        t3 = time.perf_counter()
        adv, returns = self._advantages(scores, kl, gen, kl_coef)
        roll = Rollout(gen.query_ids, gen.query_mask, gen.response_ids, mask, gen.logprobs,
                       s.ref_logprobs, gen.values, scores, kl, adv, returns)
        kl_sum = kl.sum(1)
        stats = {
            A.KL: kl_sum.mean().item(),
            A.ENTROPY: (-gen.logprobs * mask).sum(1).mean().item(),
            A.NON_SCORE_REWARD: (-kl_coef * kl_sum).mean().item(),
            A.RLHF_REWARD: (scores - kl_coef * kl_sum).mean().item(),
            A.SCORES: raw_scores.mean().item(),
            A.NUM_EOS: int(gen.ended.sum()),
            A.LENGTH: mask.sum(1).mean().item(),
            A.TIME_GENERATION: s.seconds_generation,
            A.TIME_REFERENCE: s.seconds_reference,
            A.TIME_SCORING: t3 - t2,
            **safe_stats,
        }
        if self.gold is not None:
            stats[A.GOLD] = float(np.mean(self.gold(texts)))
        return RolloutBatch(roll, prompts, texts, stats)

    def _advantages(self, scores: Tensor, kl: Tensor, gen: Generation, kl_coef: float
                    ) -> tuple[Tensor, Tensor]:
        """GAE over KL-shaped rewards (PPO), or group-relative sequence advantages."""
        cfg, mask = self.cfg, gen.response_mask
        beta = kl_coef if cfg.kl_in_reward else 0.0
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
        return adv, returns
