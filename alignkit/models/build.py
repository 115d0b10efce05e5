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


def save_aligned_adapter(policy: Policy, m: ModelConfig, seed: int, warm_start: Path,
                         out: Path) -> None:
    """PPO's adapters on top of the SL-CAI model as one PEFT adapter for the *base* model.

    In memory the SL-CAI delta sits in the base weights and PPO trained fresh adapters on
    top, so the PPO adapter alone is not the aligned model. Both low-rank deltas are joined
    by concatenation (rank r_sft + r_ppo: [A_sft; A_ppo], [s·B_sft, s·B_ppo]), which is exact:
    ΔW = s·B_sft·A_sft + s·B_ppo·A_ppo."""
    from alignkit.checkpoints import load_weights

    fresh = build_policy(m, seed).policy
    load_weights(fresh, load_file(str(warm_start / WARM_START)), "SL-CAI adapter")
    peft = fresh.lm
    peft.add_adapter("ppo", peft.peft_config["default"])
    ppo = {k.replace(".default.", ".ppo."): v for k, v in policy.adapter_state().items()
           if "lora_" in k}
    load_weights(fresh, ppo, "PPO adapter")
    peft.add_weighted_adapter(["default", "ppo"], [1.0, 1.0], "joined", combination_type="cat")
    for name in ("default", "ppo"):
        peft.delete_adapter(name)
    # PEFT writes an adapter not named "default" into a subfolder: copy it back under that name
    peft.add_weighted_adapter(["joined"], [1.0], "default", combination_type="cat")
    peft.delete_adapter("joined")
    peft.set_adapter("default")
    peft.save_pretrained(out)
