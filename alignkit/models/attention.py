"""Scaled-dot-product attention in fp32 for a trunk that runs under CPU bf16 autocast.

Why: under autocast the q/k/v projections come out in bf16 and transformers' SDPA path
hands them to PyTorch's CPU flash-attention kernel in bf16, whose backward is ~4× slower
than the fp32 one at PPO's shapes (SmolLM2, 16 × 40 tokens: 10 ms a layer against 2.7 ms;
measured on a 2-core Zen 4, a 4-epoch update 7.3–9.1 s → 6.4–6.7 s with this). Attention
holds few of the FLOPs, so fp32 here costs nothing in the matmul rate the bf16 trunk gains,
and its softmax is the more exact one. Registered with transformers' attention interface
under ``FP32_SDPA`` (with SDPA's mask builder); ``use_fp32_attention`` switches a model
to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

FP32_SDPA = "alignkit_fp32_sdpa"


def fp32_sdpa_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                        attention_mask: Tensor | None, **kwargs: object
                        ) -> tuple[Tensor, Tensor | None]:
    """transformers' SDPA attention on fp32 copies of q, k, v (and of an additive mask),
    outside autocast; the output back in the query's dtype."""
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(),
                                              value.float(), attention_mask, **kwargs)
    return out.to(query.dtype), weights


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
