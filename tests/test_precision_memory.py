"""The bf16 frozen base (model.dtype: bfloat16) and gradient checkpointing of the trunk, on
the tiny model: dtypes where they belong, PPO's first ratio exactly 1, the frozen weights
unmoved by an iteration, and checkpointing giving the same gradients while really
recomputing the layers."""

from __future__ import annotations

import pytest
import torch

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.rollout import response_forward
from alignkit.rl.scorers import token_share_scorer


def _trainer(tok, tmp_path, dtype: str = "float32", checkpointing: bool = False,
             minibatches: int = 1, epochs: int = 2) -> PPOTrainer:
    lm = load_causal_lm(TINY, tok, dtype)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=4, lora_alpha=8, dtype=dtype,
                                    device="cpu"))
    prompts = [f"Story number {i}: once upon a time" for i in range(16)]
    cfg = PPOConfig(steps=2, prompts_per_step=4, samples_per_prompt=2, epochs=epochs,
                    minibatches=minibatches, lr=1e-3, checkpoint_every=1000,
                    gradient_checkpointing=checkpointing)
    return PPOTrainer(policy, tok, prompts, token_share_scorer(torch.arange(0, len(tok), 2)),
                      cfg, GenerateConfig(max_new_tokens=6), tmp_path, stop_token_ids(tok, lm))


def test_bf16_base_keeps_heads_adapters_and_optimizer_fp32(tiny_tokenizer, tmp_path):
    trainer = _trainer(tiny_tokenizer, tmp_path, "bfloat16", epochs=1)
    policy = trainer.policy
    named = dict(policy.named_parameters())
    base = {k: v for k, v in named.items() if "base_layer.weight" in k}
    assert base and all(v.dtype == torch.bfloat16 for v in base.values())
    assert all(v.dtype == torch.float32 for k, v in named.items() if "lora_" in k)
    assert policy.head().weight.dtype == torch.float32
    assert policy.value_head.weight.dtype == torch.float32
    assert policy.low_precision_base
    frozen = {k: v.detach().clone() for k, v in base.items()}
    stats: list[dict] = []
    trainer.train(on_step=stats.append)
    # one minibatch, one epoch: every update starts from the sampling policy itself, so
    # π/π_old is exactly 1 — at the first iteration and after LoRA has moved
    assert [s["val/ratio"] for s in stats] == pytest.approx([1.0, 1.0], abs=1e-6)
    for state in trainer.optimizer.state.values():
        assert all(t.dtype == torch.float32 for t in state.values() if t.dim() > 0)
    # sampling never merges LoRA into bf16 weights (merge + unmerge would round them)
    assert all(torch.equal(frozen[k], v) for k, v in base.items())
    assert any(v.abs().sum() > 0 for k, v in named.items() if "lora_B" in k)  # it trained


def test_bf16_base_refuses_full_fine_tuning(tiny_tokenizer):
    lm = load_causal_lm(TINY, tiny_tokenizer, "bfloat16")
    with pytest.raises(ValueError, match="model.use_lora"):
        Policy(lm, ModelConfig(name=TINY, use_lora=False, dtype="bfloat16", device="cpu"))


def _grads_and_layer_calls(tok, tmp_path, checkpointing: bool):
    torch.manual_seed(0)  # LoRA's A is drawn from the global generator
    trainer = _trainer(tok, tmp_path, checkpointing=checkpointing)
    policy = trainer.policy
    roll, *_ = trainer.rollout(0)
    calls = []
    attn = next(m for n, m in policy.causal.named_modules() if n.endswith("layers.0.self_attn"))
    hook = attn.register_forward_hook(lambda *_: calls.append(1))
    logp, _, values = response_forward(policy, roll.query_ids, roll.query_mask,
                                       roll.response_ids, roll.response_mask, 1.0)
    ((logp * roll.response_mask).sum() + values.sum()).backward()
    hook.remove()
    return {k: p.grad.clone() for k, p in policy.named_parameters() if p.grad is not None}, len(
        calls)


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(
        tiny_tokenizer, tmp_path):
    plain, n_plain = _grads_and_layer_calls(tiny_tokenizer, tmp_path / "a", False)
    ckpt, n_ckpt = _grads_and_layer_calls(tiny_tokenizer, tmp_path / "b", True)
    assert (n_plain, n_ckpt) == (1, 2)  # forward, and once more in the backward
    assert plain.keys() == ckpt.keys() and any("lora_A" in k for k in plain)
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-7)


def test_ppo_runs_with_gradient_checkpointing_and_bf16_base(tiny_tokenizer, tmp_path):
    trainer = _trainer(tiny_tokenizer, tmp_path, "bfloat16", checkpointing=True, minibatches=2)
    stats: list[dict] = []
    trainer.train(on_step=stats.append)
    assert len(stats) == 2 and all(torch.isfinite(torch.tensor(s["loss/policy_avg"]))
                                   for s in stats)
    # sampling with checkpointing configured still uses the KV cache (no grad: off)
    layers = [m for m in trainer.policy.causal.modules() if hasattr(m, "gradient_checkpointing")
              and m.__class__.__name__.endswith("DecoderLayer")]
    assert layers and not any(m.gradient_checkpointing for m in layers)
