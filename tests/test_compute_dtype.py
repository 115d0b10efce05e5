"""bf16 autocast of the policy's trunk (model.compute_dtype): where it applies, what stays
fp32, and that PPO's first ratio is still exactly 1 because the old log-probs come from the
update's own pass."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import Linear as LoraLinear

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.generation import encode_prompts, sample
from alignkit.models import attention, sampling_twin
from alignkit.models.attention import FP32_SDPA, use_fp32_attention
from alignkit.models.device import describe, precision
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.models.sampling_twin import resolve_compute_dtype
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.rollout import response_forward
from alignkit.rl.scorers import token_share_scorer

CPU = torch.device("cpu")


def _policy(tok, compute: str, sampling: str = "float32") -> Policy:
    torch.manual_seed(0)
    lm = load_causal_lm(TINY, tok, "float32")
    return Policy(lm, ModelConfig(name=TINY, lora_r=4, lora_alpha=8, device="cpu",
                                  compute_dtype=compute, sampling_dtype=sampling))


def test_auto_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(sampling_twin, "cpu_has_fast_bf16", lambda: True)
    assert resolve_compute_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(sampling_twin, "cpu_has_fast_bf16", lambda: False)
    assert resolve_compute_dtype("auto", CPU) == torch.float32
    assert resolve_compute_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_compute_dtype("float32", CPU) == torch.float32
    assert describe(CPU, torch.bfloat16) == "cpu, torch.bfloat16 autocast"
    assert describe(CPU, torch.float32) == "cpu, fp32"


def test_precision_autocasts_only_below_fp32():
    x = torch.randn(4, 8)
    with precision(CPU, torch.bfloat16):
        assert (x @ x.T).dtype == torch.bfloat16
    with precision(CPU, torch.float32):
        assert (x @ x.T).dtype == torch.float32
    with precision(CPU):  # the device's default: no autocast on a CPU
        assert (x @ x.T).dtype == torch.float32


def test_bf16_trunk_keeps_heads_and_gradients_fp32_and_lora_fused(tiny_tokenizer,
                                                                   monkeypatch):
    tok = tiny_tokenizer
    fast, exact = _policy(tok, "bfloat16"), _policy(tok, "float32")
    assert fast.compute_dtype == torch.bfloat16 and exact.compute_dtype == torch.float32
    for p in (fast, exact):  # the same adapters on both, moved off zero
        torch.manual_seed(1)
        for name, w in p.named_parameters():
            if "lora_B" in name:
                w.data.normal_(0, 0.5)
    ids, mask = encode_prompts(tok, ["Story 1: once upon a time", "Story 22: then"])
    resp = torch.randint(0, len(tok), (2, 5))
    rmask = torch.ones(2, 5)
    seen: list[torch.dtype] = []
    layer = next(m for n, m in fast.causal.named_modules() if n.endswith("layers.0.mlp.up_proj"))
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    calls: list[int] = []  # PEFT's own forward: the fused one must take autocast itself
    peft_forward = LoraLinear.forward
    monkeypatch.setattr(LoraLinear, "forward",
                        lambda self, *a, **k: calls.append(1) or peft_forward(self, *a, **k))
    logp, _, values = response_forward(fast, ids, mask, resp, rmask, 1.0)
    monkeypatch.undo()
    hook.remove()
    assert seen == [torch.bfloat16] and not calls  # bf16 matmuls, LoRA in the fused kernel
    assert logp.dtype == values.dtype == torch.float32
    ref, _, _ = response_forward(exact, ids, mask, resp, rmask, 1.0)
    err = (logp - ref).abs()
    assert 0 < err.mean() < 0.01 * ref.abs().mean()  # rounded like bf16 (~1%), no more
    (logp.sum() + values.sum()).backward()
    grads = [w.grad for n, w in fast.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert all(w.dtype == torch.float32 for w in fast.trainable_parameters())


def test_fp32_attention_under_autocast_masks_padding_like_sdpa(tiny_tokenizer, monkeypatch):
    """The bf16 trunk's attention runs in fp32 through alignkit's registered function; on a
    left-padded batch in fp32 it must give transformers' SDPA results — bit for bit where
    it hands over to SDPA (long sequences), to float rounding where the grouped products
    run (without SDPA's mask builder the padding went unmasked: log-probs 4.6 apart)."""
    tok = tiny_tokenizer
    assert _policy(tok, "bfloat16").causal.config._attn_implementation == FP32_SDPA
    exact = _policy(tok, "float32")
    assert exact.causal.config._attn_implementation == "sdpa"
    ids, mask = encode_prompts(tok, ["Story 1: once upon a time", "Story 22: then"])
    assert not mask.all()  # a padded row
    resp, rmask = torch.randint(0, len(tok), (2, 5)), torch.ones(2, 5)
    want = response_forward(exact, ids, mask, resp, rmask, 1.0)[0]
    assert use_fp32_attention(exact.causal)
    got = response_forward(exact, ids, mask, resp, rmask, 1.0)[0]
    assert 0 < (got - want).abs().max() < 1e-5  # the grouped products: rounding only
    monkeypatch.setattr(attention, "GROUPED_MAX_POSITIONS", 0)
    assert torch.equal(response_forward(exact, ids, mask, resp, rmask, 1.0)[0], want)
    assert not use_fp32_attention(exact.causal)  # only SDPA models are switched


@pytest.mark.parametrize("heads, kv_heads", [(6, 2), (4, 4)])
def test_grouped_attention_is_sdpa_with_its_gradients(heads, kv_heads):
    """Query heads stacked per key/value head give SDPA's output and gradients (causal,
    and under a padding mask); a left pad's row, which may attend to nothing, stays finite
    where SDPA's −∞ mask would make it NaN."""
    torch.manual_seed(0)
    B, T, d = 3, 7, 8
    q = torch.randn(B, heads, T, d, requires_grad=True)
    k, v = (torch.randn(B, kv_heads, T, d, requires_grad=True) for _ in range(2))
    allowed = torch.ones(B, 1, T, T, dtype=torch.bool).tril()
    allowed[0, :, :, :2] = False  # row 0: two left pads
    g = torch.randn(B, T, heads, d)
    for mask in (None, allowed):
        got = attention.grouped_attention(q, k, v, mask, 0.3)
        rep = heads // kv_heads
        want = torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
            attn_mask=mask, is_causal=mask is None, scale=0.3).transpose(1, 2)
        rows = slice(None) if mask is None else (slice(None), slice(2, None))  # not pads
        want_grads = torch.autograd.grad((want[rows] * g[rows]).sum(), (q, k, v))
        got_grads = torch.autograd.grad((got[rows] * g[rows]).sum(), (q, k, v),
                                        retain_graph=True)
        grads = torch.autograd.grad((got * g).sum(), (q, k, v))  # pad rows included
        torch.testing.assert_close(got[rows], want[rows], atol=1e-6, rtol=1e-5)
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert all(torch.isfinite(x).all() for x in (got, *grads))


def test_sampler_marks_autocast_generations_approximate(tiny_tokenizer):
    tok = tiny_tokenizer
    policy = _policy(tok, "bfloat16")
    q, m = encode_prompts(tok, [f"Story {i}: once upon a time" for i in range(4)])
    with policy.merged():
        gen = sample(policy, q, m, 6, stop_token_ids(tok, policy.causal), tok.pad_token_id,
                     1.0, 1.0, torch.Generator().manual_seed(0))
    assert gen.approximate  # incremental decoding under autocast rounds unlike the update
    exact = _policy(tok, "float32")
    with exact.merged():
        assert not exact.sampler_modules()[2]  # fp32 sampling, fp32 update: exact


@pytest.mark.parametrize("sampling", ["float32", "bfloat16"])
def test_first_ppo_ratio_is_exactly_one_under_bf16_autocast(tiny_tokenizer, tmp_path,
                                                            sampling):
    tok = tiny_tokenizer
    policy = _policy(tok, "bfloat16", sampling)
    prompts = [f"Story number {i}: once upon a time" for i in range(16)]
    cfg = PPOConfig(steps=2, prompts_per_step=4, samples_per_prompt=2, epochs=1,
                    minibatches=1, lr=1e-3, checkpoint_every=1000)
    trainer = PPOTrainer(policy, tok, prompts, token_share_scorer(torch.arange(0, len(tok), 2)),
                         cfg, GenerateConfig(max_new_tokens=6), tmp_path,
                         stop_token_ids(tok, policy.causal))
    stats: list[dict] = []
    trainer.train(on_step=stats.append)
    # one epoch, one minibatch: each update starts at the sampling policy, π/π_old = 1
    assert [s["val/ratio"] for s in stats] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert stats[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # policy = reference
    assert any(w.abs().sum() > 0 for n, w in policy.named_parameters() if "lora_B" in n)
