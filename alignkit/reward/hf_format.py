"""A reward model as a plain ``*ForSequenceClassification`` folder: no alignkit to score it.

Two backbones have an exact standard form: BERT (the default MiniLM, mean pooling) as
``BertForSequenceClassification`` and Llama (``reward.backbone: policy`` on the SmolLM2 or
tiny policies, last-token pooling) as ``LlamaForSequenceClassification``. Each gets one
extra, fixed layer whose weights reproduce alignkit's pooling, head and normalisation.

**BERT.**

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

**Llama.** alignkit scores ``s = (w · h + b − mean) / std`` with ``h = g ⊙ x / rms(x)``
the final RMSNorm of the last attended token's residual ``x``. The standard class reads
``score · norm(x_out)`` at the last non-pad token, with no bias. The extra decoder layer
(config ``attention_bias`` and ``mlp_bias`` on; the trunk's biases saved as zeros):

1. attention: q = k = v = o = 0, so it adds nothing; its post-attention RMSNorm has the
   trunk's final-norm weight ``g``, so the MLP sees exactly ``h``.
2. MLP ``down(silu(gate(h)) · up(h))``: gate weight 0, bias β → silu(β) = c₀ (a constant);
   up row 0 = ``(T/c₀) w'``, bias ``(T/c₀) b'`` → ``T s`` in row 0; down maps it to dim 0,
   and its bias adds ``K`` on every other dim: ``x_out = x + T s e₀ + K (1 − e₀)``.
3. final RMSNorm (weight 1): ``rms(x_out) = K·sqrt((D−1)/D)·(1 + O((T s/K)²) + O(|x|/K))``,
   so ``norm(x_out)₀ = (x₀ + T s) / rms``; ``score`` row 0 = ``rms₀ / T`` gives ``s`` up to
   ``x₀/T`` (< 1e-5 for |x₀| < 1e3) and the O(·) terms (< 1e-6).

The HF class picks the last token that is not ``pad_token_id`` (saved in the config); a
completion that itself ends in the pad token (the tokenizer's EOS) is read one token early.

Both folders must run in float32 (the constants overflow float16). The encoding is
alignkit's: the tokenizer's text-pair call ``tok(prompts, completions, truncation=True,
padding=True)`` with the saved ``truncation_side='left'`` and ``model_max_length`` = the
RM's max_length (right padding).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaModel,
    PretrainedConfig,
    PreTrainedModel,
)

SCALE_S = 1e6  # readout gain over the [CLS] residual: its leak is |h|/(2S) < 1e-5
SCALE_B = 1e10  # LayerNorm anchor: keeps σ(z) constant to (S|u|/B)² < 1e-7
TANH_K = 1e-2  # keeps the pooler's tanh linear: argument < 2e-4·|u|·k
LLAMA_T = 1e8  # Llama readout gain over the residual x₀: its leak is |x₀|/T
LLAMA_K = 1e13  # Llama RMSNorm anchor: keeps rms constant to (T|s|/K)² < 1e-6
LLAMA_BETA = 20.0  # gate bias: silu(20) = 20·(1 − 2e-9), a constant in fp32
FORMAT = "sequence-classification"


def supports(backbone: nn.Module, pooling: str, pad_token_id: int | None = None) -> bool:
    """Whether this RM has an exact standard form (see module doc)."""
    c = backbone.config
    if isinstance(backbone, BertModel):
        return pooling == "mean" and c.hidden_size % 2 == 0 and c.hidden_size >= 4
    if isinstance(backbone, LlamaModel):
        return pooling == "last" and pad_token_id is not None and c.hidden_act == "silu" \
            and c.hidden_size >= 2
    return False


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


def _bert_to_sequence_classification(backbone: BertModel, head: nn.Linear, norm_mean: float,
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


def _bert_backbone(cfg: BertConfig, state: dict[str, Tensor], layers: int) -> PreTrainedModel:
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


# --- Llama ------------------------------------------------------------------------------------

def _llama_to_sequence_classification(backbone: LlamaModel, head: nn.Linear, norm_mean: float,
                                      norm_std: float, pad_token_id: int
                                      ) -> tuple[LlamaConfig, dict[str, Tensor]]:
    """(config, state dict) of a ``LlamaForSequenceClassification`` scoring like the RM."""
    base = backbone.config
    layers, d = base.num_hidden_layers, base.hidden_size
    cfg = LlamaConfig.from_dict({
        **base.to_dict(), "num_hidden_layers": layers + 1, "attention_bias": True,
        "mlp_bias": True, "architectures": ["LlamaForSequenceClassification"],
        "num_labels": 1, "id2label": {0: "reward"}, "label2id": {"reward": 0},
        "problem_type": "regression", "pad_token_id": pad_token_id,
        "alignkit_backbone_layers": layers,
        "alignkit_backbone_bias": [bool(base.attention_bias), bool(base.mlp_bias)],
    })
    trunk = {k: v.detach().to(torch.float32).cpu().contiguous()
             for k, v in backbone.state_dict().items()}
    state = {f"model.{k}": v for k, v in trunk.items() if k != "norm.weight"}
    shapes = {k: v.shape for k, v in trunk.items()}
    for i in range(layers + 1):  # the biases the config now asks for, zero where absent
        for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            out_dim = shapes[f"layers.0.{proj}.weight"][0]
            state.setdefault(f"model.layers.{i}.{proj}.bias", torch.zeros(out_dim))
    w = head.weight.detach().cpu().double().flatten() / norm_std
    b = (float(head.bias.detach()) - norm_mean) / norm_std
    n = shapes["layers.0.mlp.up_proj.weight"][0]
    c0 = LLAMA_BETA / (1.0 + math.exp(-LLAMA_BETA))
    up = torch.zeros(n, d, dtype=torch.float64)
    up[0] = (LLAMA_T / c0) * w
    up_bias = torch.zeros(n, dtype=torch.float64)
    up_bias[0] = (LLAMA_T / c0) * b
    down = torch.zeros(d, n)
    down[0, 0] = 1.0
    anchor = torch.full((d,), LLAMA_K)
    anchor[0] = 0.0
    p = f"model.layers.{layers}."
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        state[f"{p}self_attn.{proj}.weight"] = torch.zeros(shapes[f"layers.0.self_attn.{proj}"
                                                                 ".weight"])
    state.update({
        f"{p}input_layernorm.weight": torch.ones(d),
        f"{p}post_attention_layernorm.weight": trunk["norm.weight"].clone(),
        f"{p}mlp.gate_proj.weight": torch.zeros(n, d),
        f"{p}mlp.gate_proj.bias": torch.full((n,), LLAMA_BETA),
        f"{p}mlp.up_proj.weight": up.to(torch.float32),
        f"{p}mlp.up_proj.bias": up_bias.to(torch.float32),
        f"{p}mlp.down_proj.weight": down, f"{p}mlp.down_proj.bias": anchor,
        "model.norm.weight": torch.ones(d),
    })
    score = torch.zeros(1, d)
    score[0, 0] = LLAMA_K * math.sqrt((d - 1) / d) / LLAMA_T
    state["score.weight"] = score
    return cfg, state


def _llama_backbone(cfg: LlamaConfig, state: dict[str, Tensor], layers: int) -> PreTrainedModel:
    """The RM's own Llama trunk back out of the folder: its layers, its final norm (kept as
    the extra layer's post-attention norm) and its own bias setting."""
    attention_bias, mlp_bias = getattr(cfg, "alignkit_backbone_bias", [False, False])
    trunk_cfg = LlamaConfig.from_dict({**cfg.to_dict(), "num_hidden_layers": layers,
                                       "attention_bias": attention_bias, "mlp_bias": mlp_bias,
                                       "architectures": ["LlamaModel"]})
    model = LlamaModel(trunk_cfg)
    keep = {}
    for k, v in state.items():
        if not k.startswith("model.") or k.startswith(f"model.layers.{layers}."):
            continue
        k = k[len("model."):]
        is_bias = k.endswith("_proj.bias")
        if is_bias and not (mlp_bias if ".mlp." in k else attention_bias):
            continue  # the zeros the standard config needed
        keep[k] = v
    keep["norm.weight"] = state[f"model.layers.{layers}.post_attention_layernorm.weight"]
    missing, unexpected = model.load_state_dict(keep, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"reward model weights do not match its config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return model.to(torch.float32).eval()


# --- either -----------------------------------------------------------------------------------

def to_sequence_classification(backbone: nn.Module, head: nn.Linear, norm_mean: float,
                               norm_std: float, pad_token_id: int | None = None
                               ) -> tuple[PretrainedConfig, dict[str, Tensor]]:
    """(config, state dict) of the standard classifier of a supported RM (``supports``)."""
    if isinstance(backbone, BertModel):
        return _bert_to_sequence_classification(backbone, head, norm_mean, norm_std)
    if isinstance(backbone, LlamaModel) and pad_token_id is not None:
        return _llama_to_sequence_classification(backbone, head, norm_mean, norm_std,
                                                 pad_token_id)
    raise ValueError(f"no standard sequence-classification form for {type(backbone).__name__}")


def backbone_from_sequence_classification(cfg: PretrainedConfig, state: dict[str, Tensor],
                                          layers: int) -> PreTrainedModel:
    """The RM's trunk out of a folder written by ``to_sequence_classification``."""
    if cfg.model_type == "bert":
        return _bert_backbone(cfg, state, layers)  # type: ignore[arg-type]
    if cfg.model_type == "llama":
        return _llama_backbone(cfg, state, layers)  # type: ignore[arg-type]
    raise ValueError(f"reward model folder of model_type '{cfg.model_type}' has no alignkit "
                     "trunk reader")
