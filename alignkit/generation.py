"""Batched sampling with a KV cache, returning what PPO needs from the same pass.

One hidden state per step gives the next-token logits *and* the critic's value (the
value head shares the trunk), so a rollout needs no extra forward for old values; the
sampling log-probs at temperature τ are the "old" log-probs of PPO.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import Cache, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from alignkit.models import llama_decode
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
    # log-probs and values from a sampler that rounds unlike the update's fp32 pass (a bf16
    # twin or trunk): tokens are exact samples of it, but PPO and KL must recompute both
    approximate: bool = False

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


class _PreallocatedLayer(DynamicLayer):
    """One layer's KV cache written in place into buffers sized for prompt + response.

    The growing cache concatenates keys and values at every step (2 × layers fresh copies
    of everything cached so far, per token); this one copies only the new position. It
    hands attention a view of the filled part, so attention sees exactly the keys of the
    growing cache — same shapes, same sums, same tokens (a view over the whole buffer with
    the tail masked would change the softmax's summation order and, rarely, a token).
    """

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.filled = 0

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        B, H, _, Dk = key_states.shape
        self._k = key_states.new_empty(B, H, self.max_len, Dk)
        self._v = value_states.new_empty(B, H, self.max_len, value_states.shape[-1])

    def update(self, key_states: Tensor, value_states: Tensor, *args: object,
               **kwargs: object) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self._k[:, :, self.filled : end].copy_(key_states)
        self._v[:, :, self.filled : end].copy_(value_states)
        self.filled = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values


def _static_cache(trunk: torch.nn.Module, max_len: int) -> Cache | None:
    """A preallocated KV cache of ``max_len`` positions for ``trunk``'s layers, or None for
    an architecture whose config does not say how many layers it has (then the growing
    cache is used)."""
    cfg = trunk.config.get_text_config(decoder=True)
    n = getattr(cfg, "num_hidden_layers", None)
    if not isinstance(n, int) or getattr(cfg, "add_cross_attention", False):
        return None
    return Cache(layers=[_PreallocatedLayer(max_len) for _ in range(n)])


# alignkit's own decoder of each trunk it has sampled (fused weights, refreshed per batch)
_OWN_DECODERS: weakref.WeakKeyDictionary[torch.nn.Module, llama_decode.LlamaDecoder] = (
    weakref.WeakKeyDictionary())


def _own_decoder(policy: Policy, trunk: torch.nn.Module, head: torch.nn.Module
                 ) -> llama_decode.LlamaDecoder | None:
    """alignkit's decoder for ``trunk`` when ``model.decode_kernel`` allows it and it covers the
    trunk as it is now, in the precision the trunk runs in (fp32 weights with fp32 compute,
    or the bf16 twin); None = transformers' forward."""
    if policy.decode_kernel != "auto" or not llama_decode.supports(trunk):
        return None
    weights = trunk.get_input_embeddings().weight.dtype
    if weights == torch.float32 and policy.compute_dtype != torch.float32:
        return None  # fp32 weights under bf16 autocast: transformers' autocast path
    decoder = _OWN_DECODERS.get(trunk)
    if decoder is None:
        decoder = _OWN_DECODERS[trunk] = llama_decode.LlamaDecoder(trunk)
    plain_head = type(head) is torch.nn.Linear and head.bias is None
    decoder.refresh(head.weight if plain_head else None)
    return decoder


class _Decoder:
    """The trunk's incremental forward over one batch: the KV cache and the attention mask
    live here, so each sampling step is one call with the new tokens.

    The whole mask is built up front and attention gets a view of its first P + t columns
    at step t: response positions are 1 (a stopped row keeps attending to its pad tokens,
    as it always did).
    """

    def __init__(self, policy: Policy, reference: bool, query_mask: Tensor,
                 max_new_tokens: int, static_cache: bool) -> None:
        self.trunk, self.head, self.approximate = policy.sampler_modules(reference)
        self.dev, self.dtype = policy.device, policy.compute_dtype
        B, P = query_mask.shape
        self.own = _own_decoder(policy, self.trunk, self.head)
        self.max_len = P + max_new_tokens
        self.cache = (_static_cache(self.trunk, self.max_len)
                      if static_cache and self.own is None else None)
        self.full_mask = torch.cat([query_mask, query_mask.new_ones(B, max_new_tokens)], dim=1)

    def logits(self, h: Tensor) -> Tensor:
        """Next-token logits in fp32 of hidden states ``h`` [B, D]."""
        if self.own is not None and self.own.head is not None:
            return self.own.logits(h).float()
        return self.head(h).float()

    def __call__(self, input_ids: Tensor, position_ids: Tensor, width: int) -> Tensor:
        """Feed ``input_ids`` at ``position_ids`` (attending to the first ``width``
        positions); the last position's hidden state, in the head's dtype."""
        if self.own is not None:
            first = input_ids.size(1) == width  # the prompt: a new batch in the cache
            h = self.own.forward(input_ids, position_ids, self.full_mask[:, :width],
                                 max_len=self.max_len if first else None)
            return h.to(getattr(self.head, "weight", h).dtype)
        with precision(self.dev, self.dtype):
            out = self.trunk(attention_mask=self.full_mask[:, :width], use_cache=True,
                             past_key_values=self.cache, input_ids=input_ids,
                             position_ids=position_ids)
        self.cache = out.past_key_values
        h = out.last_hidden_state[:, -1]
        return h.to(getattr(self.head, "weight", h).dtype)


def _draw(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None,
          done: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """(token, its log-prob at ``temperature``) per row, in fp32; stopped rows get ``pad_id``.

    The log-prob is taken under the same tempered, top-p filtered distribution the token
    was drawn from: PPO's "old" log-prob must be the sampling one.
    """
    if temperature != 1.0:
        logits.div_(temperature)
    logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    tok = _inverse_cdf_sample(probs, generator)
    tok.masked_fill_(done, pad_id)
    return tok, log_prob_from_softmax(logits, probs, tok)


class _Responses:
    """Per-step buffers of a batch being sampled, cut to the steps taken at the end."""

    def __init__(self, B: int, max_new_tokens: int, pad_id: int, dev: torch.device) -> None:
        self.tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
        self.logps = torch.zeros(B, max_new_tokens, device=dev)
        self.values = torch.zeros(B, max_new_tokens, device=dev)
        self.masks = torch.zeros(B, max_new_tokens, dtype=torch.bool, device=dev)

    def generation(self, query_ids: Tensor, query_mask: Tensor, n: int, ended: Tensor,
                   approximate: bool) -> Generation:
        """The first ``n`` steps; log-probs and values zeroed after each row's stop."""
        mask = self.masks[:, :n].to(torch.float32)
        return Generation(
            query_ids=query_ids, query_mask=query_mask,
            response_ids=self.tokens[:, :n].contiguous(), response_mask=mask,
            logprobs=self.logps[:, :n] * mask, values=self.values[:, :n] * mask,
            ended=ended, approximate=approximate,
        )


@torch.no_grad()
def sample(policy: Policy, query_ids: Tensor, query_mask: Tensor, max_new_tokens: int,
           stop_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
           generator: torch.Generator | None = None, reference: bool = False,
           static_cache: bool = True) -> Generation:
    """Sample up to ``max_new_tokens`` per row, stopping rows at their first stop token.

    Runs where the policy lives (inputs are moved there); the trunk under the device's
    precision (bf16 autocast on GPUs), the heads and the sampling maths in fp32.
    ``static_cache`` preallocates the KV cache and the attention mask for prompt + response
    (the same tokens as the growing cache for the same generator, without its per-step
    copies of every layer's keys and values).
    """
    dev = policy.device
    query_ids, query_mask = query_ids.to(dev), query_mask.to(dev)
    B, P = query_ids.shape
    stop = torch.tensor(stop_ids, dtype=torch.long, device=dev)
    pos = (query_mask.long().cumsum(-1) - 1).clamp_min(0)
    decode = _Decoder(policy, reference, query_mask, max_new_tokens, static_cache)
    h = decode(query_ids, pos, P)
    next_pos = pos[:, -1:] + 1
    out = _Responses(B, max_new_tokens, pad_id, dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    n = 0
    for t in range(max_new_tokens):
        logits = decode.logits(h)
        out.values[:, t] = policy.values(h)
        tok, logp = _draw(logits, temperature, top_p, generator, done, pad_id)
        out.tokens[:, t], out.logps[:, t] = tok, logp
        out.masks[:, t] = ~done
        done = done | torch.isin(tok, stop)
        n = t + 1
        if bool(done.all()) or n == max_new_tokens:
            break
        h = decode(tok[:, None], next_pos, P + n)
        next_pos = next_pos + 1
    return out.generation(query_ids, query_mask, n, done, decode.approximate)
