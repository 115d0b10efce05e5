"""Scaled-dot-product attention in fp32 for a trunk that runs under CPU bf16 autocast.

Why: under autocast the q/k/v projections come out in bf16 and transformers' SDPA path
hands them to PyTorch's CPU flash-attention kernel in bf16, whose backward is ~4× slower
than the fp32 one at PPO's shapes (SmolLM2, 16 × 40 tokens: 10 ms a layer against 2.7 ms;
measured on a 2-core Zen 4, a 4-epoch update 7.3–9.1 s → 6.4–6.7 s with this). Attention
holds few of the FLOPs, so fp32 here costs nothing in the matmul rate the bf16 trunk gains,
and its softmax is the more exact one. Registered with transformers' attention interface
under ``FP32_SDPA`` (with SDPA's mask builder); ``use_fp32_attention`` switches a model
to it.

Short sequences skip the fused kernel: below ``GROUPED_MAX_POSITIONS`` positions the
explicit products with a key/value head's query heads stacked as the rows of one product
(no repeated keys) are ~2× faster forward and backward (SmolLM2, 16 × 40 tokens: 4.2–4.8
against 1.8–2.5 ms a layer; forward alone 1.0 against 0.5 ms); from ~160 positions on the
kernel is as fast.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

FP32_SDPA = "alignkit_fp32_sdpa"

# up to this many query positions (= key positions) the grouped explicit products run; from
# here on the fused kernel (2-core Zen 4, forward + backward a layer: 16 × 96 tokens 10.0
# against 12.4 ms, 16 × 160 29.5 against 31.7, 8 × 256 35.4 against 33.9)
GROUPED_MAX_POSITIONS = 128


def fp32_sdpa_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                        attention_mask: Tensor | None, dropout: float = 0.0,
                        scaling: float | None = None, **kwargs: object
                        ) -> tuple[Tensor, Tensor | None]:
    """transformers' SDPA attention on fp32 copies of q, k, v (and of an additive mask),
    outside autocast — for short sequences as ``grouped_attention``; the output back in
    the query's dtype."""
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        if _grouped_fits(module, q, k, attention_mask, dropout, kwargs):
            scale = q.size(-1) ** -0.5 if scaling is None else scaling
            out, weights = grouped_attention(q, k, v, attention_mask, scale), None
        else:
            out, weights = sdpa_attention_forward(module, q, k, v, attention_mask,
                                                  dropout=dropout, scaling=scaling, **kwargs)
    return out.to(query.dtype), weights


def _grouped_fits(module: nn.Module, query: Tensor, key: Tensor, mask: Tensor | None,
                  dropout: float, kwargs: dict) -> bool:
    """The plain case ``grouped_attention`` covers: a short causal self-attention (no
    cache), no dropout, no extras (softcap, position bias, sinks, paged cache…), a mask
    shared by the heads."""
    T, S = query.size(2), key.size(2)
    return (T == S <= GROUPED_MAX_POSITIONS and dropout == 0.0
            and query.size(1) % key.size(1) == 0
            and not any(v is not None and v is not False for k, v in kwargs.items()
                        if k not in ("position_ids", "is_causal"))
            and (kwargs.get("is_causal", getattr(module, "is_causal", True)) is not False)
            and (mask is None or (mask.dim() == 4 and mask.size(1) == 1
                                  and mask.shape[-2:] == (T, S))))


def grouped_attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None,
                      scale: float) -> Tensor:
    """softmax(q kᵀ · scale + mask) v for causal self-attention, q [B, H, T, d], k and v
    [B, KV, T, d] (H a multiple of KV), the H / KV query heads of a key/value head stacked
    as the rows of one product: [B, KV, (H/KV)·T, d] × [B, KV, d, T]. ``mask`` [B, 1, T, T]
    is bool (True = may attend) or additive; None = causal. A masked score gets the
    dtype's lowest value, not −∞, so a row with no key (a left pad's) stays finite.
    Returns [B, T, H, d], the layout transformers' attention functions hand back."""
    B, H, T, d = query.shape
    kv = key.size(1)
    low = torch.finfo(query.dtype).min
    if mask is None:
        mask = torch.ones(T, T, dtype=torch.bool, device=query.device).tril()
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device
                           ).masked_fill_(~mask, low)
    bias = mask.reshape(-1, 1, 1, T, T)  # broadcast over key/value heads and their groups
    scores = torch.matmul(query.reshape(B, kv, H // kv * T, d), key.transpose(-1, -2))
    scores = scores.mul_(scale).view(B, kv, H // kv, T, T) + bias
    out = torch.matmul(torch.softmax(scores, -1).view(B, kv, H // kv * T, T), value)
    return out.view(B, H, T, d).transpose(1, 2).contiguous()


AttentionInterface.register(FP32_SDPA, fp32_sdpa_attention)
# masks are built per implementation: without this one, padding would not be masked
AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)


def use_fp32_attention(model: nn.Module) -> bool:
    """Switch a transformers model that uses SDPA to ``FP32_SDPA``; True if it did. Other
    implementations (eager, flash-attention on a GPU, custom ones) are left alone."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" \
            or not hasattr(model, "set_attn_implementation"):
        return False
    model.set_attn_implementation(FP32_SDPA)
    return True
