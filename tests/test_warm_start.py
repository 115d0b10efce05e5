"""SL-CAI's warm start: folding the adapters into the base keeps the model's outputs, moves
the reference to the SL-CAI model, and the exported adapter reproduces SL-CAI + PPO."""

import torch
from peft import PeftModel

from alignkit.config import ModelConfig
from alignkit.models.build import (
    apply_warm_start,
    build_base,
    build_policy,
    save_aligned_adapter,
    save_warm_start,
)
from alignkit.models.loading import TINY

CFG = ModelConfig(name=TINY, lora_r=4, lora_alpha=8)


def _perturb(policy, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.lm.named_parameters():
            if "lora_" in n:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def _logits(model, ids):
    return model(input_ids=ids).logits


def test_absorb_moves_the_reference_and_export_is_exact(tmp_path):
    built = build_policy(CFG, seed=0)
    pol, ids = built.policy, torch.tensor([[1, 5, 9, 13, 2, 7]])
    base = _logits(pol.lm, ids).detach()
    _perturb(pol, 1)  # "SFT"
    sft = _logits(pol.lm, ids).detach()
    assert not torch.allclose(base, sft, atol=1e-4)
    save_warm_start(pol, tmp_path / "warm")
    pol.absorb_adapters()
    assert torch.allclose(_logits(pol.lm, ids), sft, atol=1e-5)  # same model
    with pol.reference():  # the reference is now the SL-CAI model, not the base
        assert torch.allclose(_logits(pol.lm, ids), sft, atol=1e-5)
    # a fresh process rebuilds the same thing from the saved adapter
    again = build_policy(CFG, seed=0).policy
    apply_warm_start(again, tmp_path / "warm")
    assert torch.allclose(_logits(again.lm, ids), sft, atol=1e-5)
    _perturb(pol, 2)  # "PPO"
    aligned = _logits(pol.lm, ids).detach()
    save_aligned_adapter(pol, CFG, 0, tmp_path / "warm", tmp_path / "policy")
    plain = build_base(CFG, built.tokenizer, 0)
    loaded = PeftModel.from_pretrained(plain, tmp_path / "policy")
    assert torch.allclose(_logits(loaded, ids), aligned, atol=1e-4)
