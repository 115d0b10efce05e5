"""A rollout: sampled responses with everything the update needs, as typed tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from alignkit.generation import Generation
from alignkit.models.policy import Policy, head_logprobs

# (prompts, response texts, generation) -> one score per response
Scorer = Callable[[list[str], list[str], Generation], Tensor]


@dataclass
class Rollout:
    query_ids: Tensor  # [B, P] left-padded
    query_mask: Tensor
    response_ids: Tensor  # [B, T]
    response_mask: Tensor
    logprobs: Tensor  # π_old at sampling temperature
    ref_logprobs: Tensor
    values: Tensor
    scores: Tensor  # [B] after penalties and clipping
    kl: Tensor  # [B, T] per-token KL estimate
    advantages: Tensor
    returns: Tensor

    def select(self, idx: Tensor) -> Rollout:
        return Rollout(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout on ``device`` (CPU to ship it between processes)."""
        return Rollout(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.query_mask, self.response_mask.to(self.query_mask.dtype)], 1)


def response_forward(policy: Policy, query_ids: Tensor, query_mask: Tensor,
                     response_ids: Tensor, response_mask: Tensor, temperature: float,
                     reference: bool = False, with_values: bool = True,
                     with_entropy: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Log-probs, entropies and values at response positions only ([B, T] each).

    The LM head (49k-wide for SmolLM2) runs only on the response positions inside the
    mask (after the first stop token nothing is needed), through the fused head log-prob,
    so no [B, T, vocab] logits live for backward; its products run in the trunk's
    precision (``head_logprobs``' ``product_dtype``). Log-probs and entropies are 0
    outside the mask; entropies only for the policy (never the reference).
    """
    dev = policy.device
    query_ids, query_mask = query_ids.to(dev), query_mask.to(dev)
    response_ids, response_mask = response_ids.to(dev), response_mask.to(dev)
    ids = torch.cat([query_ids, response_ids], 1)
    mask = torch.cat([query_mask, response_mask.to(query_mask.dtype)], 1)
    P, T = query_ids.size(1), response_ids.size(1)
    hidden = policy.hidden_states(ids, mask, reference=reference)[:, P - 1 : P - 1 + T]
    flat = hidden.reshape(-1, hidden.size(-1))
    keep = response_mask.reshape(-1) > 0
    rows = keep.nonzero().squeeze(1)
    lp, ent = head_logprobs(policy.head(reference), flat.index_select(0, rows),
                            response_ids.reshape(-1).index_select(0, rows), temperature,
                            with_entropy=with_entropy and not reference,
                            product_dtype=policy.compute_dtype)
    logp = lp.new_zeros(keep.numel()).index_copy(0, rows, lp).view_as(response_mask)
    entropy = None
    if ent is not None:
        entropy = ent.new_zeros(keep.numel()).index_copy(0, rows, ent).view_as(response_mask)
    values = policy.values(hidden) if with_values else None
    return logp, entropy, values


def with_policy_logprobs(policy: Policy, gen: Generation, temperature: float) -> Generation:
    """``gen`` with its old log-probs and values recomputed by the update's own pass.

    PPO's first ratio π/π_old is exactly 1 only when π_old comes from the computation the
    update repeats; a sampler whose arithmetic differs (a bf16 trunk's incremental
    decoding, another engine) hands over tokens only."""
    logp, _, values = response_forward(policy, gen.query_ids, gen.query_mask, gen.response_ids,
                                       gen.response_mask, temperature, with_entropy=False)
    return replace(gen, logprobs=logp * gen.response_mask, values=values * gen.response_mask,
                   approximate=False)
