"""A rollout: sampled responses with everything the update needs, as typed tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from alignkit.generation import Generation
from alignkit.models.policy import Policy, token_logprobs

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

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.query_mask, self.response_mask.to(self.query_mask.dtype)], 1)


def response_forward(policy: Policy, query_ids: Tensor, query_mask: Tensor,
                     response_ids: Tensor, response_mask: Tensor, temperature: float,
                     reference: bool = False, with_values: bool = True
                     ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Log-probs, entropies and values at response positions only.

    The LM head (49k-wide for SmolLM2) runs on the T response positions instead of all
    P + T: prompt logits are never needed.
    """
    ids = torch.cat([query_ids, response_ids], 1)
    mask = torch.cat([query_mask, response_mask.to(query_mask.dtype)], 1)
    P, T = query_ids.size(1), response_ids.size(1)
    hidden = policy.hidden_states(ids, mask, reference=reference)[:, P - 1 : P - 1 + T]
    logits = policy.head(reference)(hidden)
    logp, entropy = token_logprobs(logits, response_ids, temperature, with_entropy=not reference)
    values = policy.values(hidden) if with_values else None
    return logp, entropy, values
