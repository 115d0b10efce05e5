"""DPO on exported pairs: the offline baseline that needs no reward model and no sampling.

The reference is the policy with adapters disabled, as in PPO, so its log-probs are
computed once, before training, on the same module.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from rich.progress import Progress
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from alignkit.config import DPOConfig
from alignkit.data.types import Pair
from alignkit.models.policy import Policy
from alignkit.rl.math import dpo_loss
from alignkit.rl.rollout import response_forward


@dataclass
class DPOReport:
    pairs: int
    steps: int
    loss: list[float]
    reward_accuracy: float  # share of pairs with a positive implicit reward margin at the end
    mean_margin: float


def _encode(tok: PreTrainedTokenizerBase, prompts: list[str], completions: list[str],
            cfg: DPOConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q = tok(prompts, return_tensors="pt", padding=True, truncation=True, padding_side="left",
            max_length=cfg.max_prompt_tokens, add_special_tokens=False)
    r = tok(completions, return_tensors="pt", padding=True, truncation=True,
            padding_side="right", max_length=cfg.max_completion_tokens, add_special_tokens=False)
    return q.input_ids, q.attention_mask, r.input_ids, r.attention_mask.float()


def sequence_logprobs(policy: Policy, tok: PreTrainedTokenizerBase, prompts: list[str],
                      completions: list[str], cfg: DPOConfig, reference: bool = False) -> Tensor:
    """Σ_t log π(completion_t | prompt, completion_<t), one number per pair side."""
    q, qm, r, rm = _encode(tok, prompts, completions, cfg)
    logp, _, _ = response_forward(policy, q, qm, r, rm, 1.0, reference=reference,
                                  with_values=False)
    return (logp * rm.to(logp.device)).sum(1)


@torch.no_grad()
def _reference(policy: Policy, tok, pairs: list[Pair], cfg: DPOConfig) -> tuple[Tensor, Tensor]:
    chosen, rejected = [], []
    with policy.reference():
        for i in range(0, len(pairs), cfg.batch_size):
            part = pairs[i : i + cfg.batch_size]
            prompts = [p.prompt for p in part]
            chosen.append(sequence_logprobs(policy, tok, prompts, [p.chosen for p in part], cfg,
                                            reference=True))
            rejected.append(sequence_logprobs(policy, tok, prompts,
                                              [p.rejected for p in part], cfg, reference=True))
    return torch.cat(chosen), torch.cat(rejected)


def train_dpo(policy: Policy, tok: PreTrainedTokenizerBase, pairs: list[Pair], cfg: DPOConfig,
              progress: bool = True) -> DPOReport:
    if not pairs:
        raise ValueError("dpo: no pairs — give a pairs JSONL with prompt, chosen, rejected")
    ref_c, ref_r = _reference(policy, tok, pairs, cfg)
    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, fused=True)
    order = list(range(len(pairs)))
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    steps = cfg.epochs * -(-len(pairs) // cfg.batch_size)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("DPO", total=steps)
        for _ in range(cfg.epochs):
            rng.shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                part = [pairs[j] for j in idx]
                prompts = [p.prompt for p in part]
                pc = sequence_logprobs(policy, tok, prompts, [p.chosen for p in part], cfg)
                pr = sequence_logprobs(policy, tok, prompts, [p.rejected for p in part], cfg)
                loss, _ = dpo_loss(pc, pr, ref_c[idx], ref_r[idx], cfg.beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                losses.append(loss.item())
                bar.update(task, advance=1, description=f"DPO loss {losses[-1]:.3f}")
    with torch.no_grad():
        margins = []
        for i in range(0, len(pairs), cfg.batch_size):
            part = pairs[i : i + cfg.batch_size]
            prompts = [p.prompt for p in part]
            pc = sequence_logprobs(policy, tok, prompts, [p.chosen for p in part], cfg)
            pr = sequence_logprobs(policy, tok, prompts, [p.rejected for p in part], cfg)
            margins.append(dpo_loss(pc, pr, ref_c[i : i + len(part)],
                                    ref_r[i : i + len(part)], cfg.beta)[1])
        h = torch.cat(margins)
    return DPOReport(pairs=len(pairs), steps=len(losses), loss=losses,
                     reward_accuracy=float((h > 0).float().mean()),
                     mean_margin=float(h.mean() / cfg.beta))
