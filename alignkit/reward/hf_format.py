"""A BERT reward model as a plain ``BertForSequenceClassification``: no alignkit to score.

alignkit's encoder reward model is ``(w · mean_valid(h) + b − mean) / std``: mean pooling of
the last hidden states ``h`` over the attended tokens, a linear head and the normalisation
of the reference set. ``BertForSequenceClassification`` instead reads the [CLS] state through
``tanh(W_p h_cls + b_p)`` and a classifier. This module writes one extra encoder layer, the
pooler and the classifier so that the standard class computes alignkit's score exactly up to
float32 rounding (~1e-6), with the normalisation folded into the classifier:

With ``u = w' · mean_valid(h)``, ``w' = w / std`` and ``b' = (b − mean) / std``:

1. attention of the extra layer: query = key = 0, so every score is 0 and the attention is
   uniform over the attended tokens (padding gets the mask's −∞): the context is
   ``mean_valid(V h)``. The value rows 0 and 1 are ``+S w'`` and ``−S w'``: the context
   holds ``±S u`` in dims 0 and 1, 0 elsewhere.
2. attention output: identity weight, bias ``B c`` (``c`` = +1/−1 alternating on dims
   2…D−1, 0 on dims 0, 1; sum 0), then the residual ``h_cls`` and LayerNorm (γ = 1, β = 0):
   ``a = (z − μ(z)) / σ(z)`` with ``z = ctx + B c + h_cls``. Since ``B ≫ S|u| ≫ |h|``,
   ``σ(z) = σ₀ (1 + O((S u / B)²))``, ``σ₀ = B·sqrt((D−2)/D)``, and μ cancels in
   ``a₀ − a₁ = (2 S u + h₀ − h₁) / σ(z)``.
3. feed-forward: all zero (GELU(0) = 0), so the second LayerNorm sees ``a`` (already zero
   mean, unit variance) and returns it.
4. pooler: row 0 = ``k (e₀ − e₁)``: ``p₀ = tanh(k (a₀ − a₁))``, linear to ``O((k a)²)``.
5. classifier: weight ``σ₀ / (2 S k)`` on dim 0, bias ``b'``: score = ``u + b'`` up to
   ``(h₀ − h₁)/(2S) + O((S u/B)²) + O((k·2Su/σ₀)²)``, each < 1e-5 for |u| < 100.

The folder must be run in float32 (``B`` overflows float16). The encoding is alignkit's:
the tokenizer's text-pair call ``tok(prompts, completions, truncation=True, padding=True)``
with the saved ``truncation_side='left'`` and ``model_max_length`` = the RM's max_length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel, PreTrainedModel

SCALE_S = 1e6  # readout gain over the [CLS] residual: its leak is |h|/(2S) < 1e-5
SCALE_B = 1e10  # LayerNorm anchor: keeps σ(z) constant to (S|u|/B)² < 1e-7
TANH_K = 1e-2  # keeps the pooler's tanh linear: argument < 2e-4·|u|·k
FORMAT = "sequence-classification"


def supports(backbone: nn.Module, pooling: str) -> bool:
    """Only a BERT encoder with mean pooling has this exact standard form (see module doc)."""
    return isinstance(backbone, BertModel) and pooling == "mean" \
        and backbone.config.hidden_size % 2 == 0 and backbone.config.hidden_size >= 4


def readout_layer_state(hidden: int, intermediate: int, w: Tensor, b: float, prefix: str
                        ) -> dict[str, Tensor]:
    """Weights of the extra layer (under ``prefix``), pooler and classifier for score u + b.

    ``w`` is the folded head (``head.weight / std``, shape [hidden]) and ``b`` the folded
    bias ``(head.bias − mean) / std``; the equations are in the module docstring. ``hidden``
    must be even (the anchor pattern ±1 on dims 2… sums to 0).
    """
    d, n = hidden, intermediate
    w = w.detach().to(torch.float64).flatten()
    if w.numel() != d or d % 2:
        raise ValueError(f"head weight has {w.numel()} entries for (even) hidden size {d}")
    z = torch.zeros
    value = z(d, d, dtype=torch.float64)
    value[0], value[1] = SCALE_S * w, -SCALE_S * w
    anchor = z(d, dtype=torch.float64)
    anchor[2:] = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat((d - 2) // 2)
    sigma0 = SCALE_B * math.sqrt((d - 2) / d)  # population std of B·anchor
    pooler = z(d, d)
    pooler[0, 0], pooler[0, 1] = TANH_K, -TANH_K
    classifier = z(1, d)
    classifier[0, 0] = sigma0 / (2 * SCALE_S * TANH_K)
    layer = {
        "attention.self.query.weight": z(d, d), "attention.self.query.bias": z(d),
        "attention.self.key.weight": z(d, d), "attention.self.key.bias": z(d),
        "attention.self.value.weight": value, "attention.self.value.bias": z(d),
        "attention.output.dense.weight": torch.eye(d),
        "attention.output.dense.bias": SCALE_B * anchor,
        "attention.output.LayerNorm.weight": torch.ones(d),
        "attention.output.LayerNorm.bias": z(d),
        "intermediate.dense.weight": z(n, d), "intermediate.dense.bias": z(n),
        "output.dense.weight": z(d, n), "output.dense.bias": z(d),
        "output.LayerNorm.weight": torch.ones(d), "output.LayerNorm.bias": z(d),
    }
    out = {f"{prefix}{k}": v.to(torch.float32).contiguous() for k, v in layer.items()}
    out.update({"bert.pooler.dense.weight": pooler, "bert.pooler.dense.bias": z(d),
                "classifier.weight": classifier,
                "classifier.bias": torch.tensor([b], dtype=torch.float32)})
    return out


def to_sequence_classification(backbone: BertModel, head: nn.Linear, norm_mean: float,
                               norm_std: float) -> tuple[BertConfig, dict[str, Tensor]]:
    """(config, state dict) of a ``BertForSequenceClassification`` scoring like the RM."""
    base = backbone.config
    layers = base.num_hidden_layers
    cfg = BertConfig.from_dict({
        **base.to_dict(), "num_hidden_layers": layers + 1,
        "architectures": ["BertForSequenceClassification"], "num_labels": 1,
        "id2label": {0: "reward"}, "label2id": {"reward": 0}, "problem_type": "regression",
        "alignkit_backbone_layers": layers,
    })
    state = {f"bert.{k}": v.detach().to(torch.float32).cpu().contiguous()
             for k, v in backbone.state_dict().items() if not k.startswith("pooler.")}
    w = head.weight.detach().cpu().double().flatten() / norm_std
    b = (float(head.bias.detach()) - norm_mean) / norm_std
    state.update(readout_layer_state(base.hidden_size, base.intermediate_size, w, b,
                                     f"bert.encoder.layer.{layers}."))
    return cfg, state


def backbone_from_sequence_classification(cfg: BertConfig, state: dict[str, Tensor],
                                          layers: int) -> PreTrainedModel:
    """The RM's own BERT trunk (``layers`` layers) back out of the standard folder's weights."""
    trunk_cfg = BertConfig.from_dict({**cfg.to_dict(), "num_hidden_layers": layers,
                                      "architectures": ["BertModel"]})
    model = BertModel(trunk_cfg, add_pooling_layer=False)
    drop = (f"encoder.layer.{layers}.", "pooler.")
    trunk = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")
             and not k[len("bert."):].startswith(drop)}
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"reward model weights do not match its config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return model.to(torch.float32).eval()
