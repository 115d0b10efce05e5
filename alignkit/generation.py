"""Batched sampling with a KV cache, returning what PPO needs from the same pass.

One hidden state per step gives the next-token logits *and* the critic's value (the
value head shares the trunk), so a rollout needs no extra forward for old values; the
sampling log-probs at temperature τ are the "old" log-probs of PPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from alignkit.models.device import precision
from alignkit.models.policy import Policy, log_prob_from_softmax


@dataclass
class Generation:
    """A batch of sampled responses. Shapes: queries [B, P], responses [B, T]."""

    query_ids: Tensor
    query_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor  # 1 up to and including the first stop token
    logprobs: Tensor  # log π_old(token) at the sampling temperature
    values: Tensor  # V(state before each token)
    ended: Tensor  # [B] bool: a stop token was produced

    def texts(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        lengths = (self.response_mask.sum(1) - self.ended.to(self.response_mask.dtype)).tolist()
        return [tokenizer.decode(ids[: int(n)], skip_special_tokens=True)  # stop token: not text
                for ids, n in zip(self.response_ids.tolist(), lengths, strict=True)]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                   chat_template: bool = False, max_length: int = 128
                   ) -> tuple[Tensor, Tensor]:
    if chat_template:
        prompts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True)
            for p in prompts
        ]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                    max_length=max_length, padding_side="left", add_special_tokens=False)
    return enc.input_ids, enc.attention_mask


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p; −inf elsewhere."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


_BLOCK = 1024  # vocabulary block of the two-level inverse CDF


def _inverse_cdf_sample(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One uniform draw per row against the CDF of ``probs`` [B, V] (unnormalised is fine).

    torch.multinomial on CPU draws one random number per vocabulary entry (~10x slower at
    49k tokens), and a full-vocabulary cumsum is a sequential pass; instead block sums (a
    fast reduction) pick a 1024-token block and a cumsum inside that block picks the token.
    Tokens of probability 0 (top-p) are never drawn.
    """
    B, V = probs.shape
    pad = (-V) % _BLOCK
    blocks = (torch.nn.functional.pad(probs, (0, pad)) if pad else probs).view(B, -1, _BLOCK)
    cum_blocks = blocks.sum(-1).cumsum(-1)  # [B, nb]
    # Drawn on the CPU generator whatever the device: the same seed samples the same tokens
    # on a laptop and on a GPU (up to the float differences of the two devices).
    u = torch.rand(B, 1, generator=generator, dtype=probs.dtype).to(probs.device)
    u = u * cum_blocks[:, -1:]
    b = torch.searchsorted(cum_blocks, u, right=True).clamp_max(cum_blocks.size(1) - 1)
    before = torch.where(b > 0, cum_blocks.gather(1, (b - 1).clamp_min(0)), 0.0)
    cdf = blocks[torch.arange(B, device=probs.device), b.squeeze(1)].cumsum(-1)  # [B, block]
    # sums and cumsums round differently: stay strictly inside the chosen block's mass
    u_in = torch.minimum(u - before, cdf[:, -1:] * (1 - 2.0**-20))
    t = torch.searchsorted(cdf, u_in, right=True).clamp_max(_BLOCK - 1)
    return (b * _BLOCK + t).squeeze(1)


@torch.no_grad()
def sample(policy: Policy, query_ids: Tensor, query_mask: Tensor, max_new_tokens: int,
           stop_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
           generator: torch.Generator | None = None, reference: bool = False) -> Generation:
    """Sample up to ``max_new_tokens`` per row, stopping rows at their first stop token.

    Runs where the policy lives (inputs are moved there); the trunk under the device's
    precision (bf16 autocast on GPUs), the heads and the sampling maths in fp32.
    """
    trunk, head = policy.trunk(reference), policy.head(reference)
    dev = policy.device
    query_ids, query_mask = query_ids.to(dev), query_mask.to(dev)
    B = query_ids.size(0)
    stop = torch.tensor(stop_ids, dtype=torch.long, device=dev)
    attn = query_mask.clone()
    pos = (attn.long().cumsum(-1) - 1).clamp_min(0)

    def step(**inputs) -> tuple[object, Tensor]:
        with precision(dev):
            out = trunk(attention_mask=attn, use_cache=True, **inputs)
        h = out.last_hidden_state[:, -1]
        return out.past_key_values, h.to(getattr(head, "weight", h).dtype)

    cache, h = step(input_ids=query_ids, position_ids=pos)
    next_pos = pos[:, -1:] + 1
    tokens, logps, values = [], [], []
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    alive = torch.ones(B, dtype=torch.bool, device=dev)  # inside the response (before/at stop)
    masks = []
    for _ in range(max_new_tokens):
        logits = head(h).float()
        if temperature != 1.0:
            logits = logits / temperature
        values.append(policy.values(h))
        logits = top_p_filter(logits, top_p)
        probs = torch.softmax(logits, dim=-1)
        tok = _inverse_cdf_sample(probs, generator)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        logps.append(log_prob_from_softmax(logits, probs, tok))
        tokens.append(tok)
        masks.append(alive.clone())
        done = done | torch.isin(tok, stop)
        alive = ~done
        if bool(done.all()):
            break
        attn = torch.cat([attn, attn.new_ones(B, 1)], dim=1)
        cache, h = step(input_ids=tok[:, None], position_ids=next_pos, past_key_values=cache)
        next_pos = next_pos + 1
    mask = torch.stack(masks, 1).to(torch.float32)
    return Generation(
        query_ids=query_ids, query_mask=query_mask,
        response_ids=torch.stack(tokens, 1), response_mask=mask,
        logprobs=torch.stack(logps, 1) * mask, values=torch.stack(values, 1) * mask,
        ended=done,
    )
