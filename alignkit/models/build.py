"""One way to build the run's policy from its config, in every process that needs it.

The cycle, the CLI, export, the red team and the Ray actors all call ``build_policy``, so a
random tiny model and the LoRA layout are the same bit for bit wherever they are rebuilt;
trained weights come from a checkpoint (``alignkit.checkpoints``), not from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignkit.config import ModelConfig
from alignkit.models.loading import load_causal_lm, load_tokenizer, stop_token_ids
from alignkit.models.policy import Policy


@dataclass
class BuiltPolicy:
    """The policy with what sampling from it needs."""

    tokenizer: PreTrainedTokenizerBase
    policy: Policy
    stop_ids: list[int]


def build_base(m: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int
               ) -> PreTrainedModel:
    """The base causal LM of ``m`` (the random tiny one is a function of ``seed``)."""
    return load_causal_lm(m.name, tokenizer, m.dtype, m.tiny_layers, m.tiny_hidden, seed)


def build_policy(m: ModelConfig, seed: int) -> BuiltPolicy:
    """Base model + LoRA adapters + value head, initialised from ``seed``.

    torch's global RNG is seeded with ``seed`` first (the cycle always did this at start),
    so the adapters' initial values do not depend on what ran earlier in the process.
    """
    tok = load_tokenizer(m.name)
    torch.manual_seed(seed)
    lm = build_base(m, tok, seed)
    return BuiltPolicy(tok, Policy(lm, m), stop_token_ids(tok, lm))


WARM_START = "adapter_state.safetensors"


def save_warm_start(policy: Policy, folder: Path) -> None:
    """The SL-CAI adapters, before they are folded into the base (``absorb_adapters``)."""
    folder.mkdir(parents=True, exist_ok=True)
    lora = {k: v.contiguous() for k, v in policy.adapter_state().items() if "lora_" in k}
    save_file(lora, str(folder / WARM_START))


def apply_warm_start(policy: Policy, folder: Path) -> None:
    """Rebuild the SL-CAI model in a fresh policy: load its adapters, fold them into the base
    and start fresh adapters — what the sl_cai stage left in memory, in any process."""
    from alignkit.checkpoints import load_weights

    load_weights(policy, load_file(str(folder / WARM_START)), f"SL-CAI adapter {folder}")
    policy.absorb_adapters()
