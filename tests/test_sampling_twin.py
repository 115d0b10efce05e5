"""The bf16 sampling twin (model.sampling_dtype): it holds exactly the weights the sampler
must read (LoRA folded in when merged, the reference's with adapters off, new weights after
an update), its generations are marked approximate, and PPO still starts from a ratio of
exactly 1 because old log-probs and values are recomputed in fp32."""

from __future__ import annotations

import pytest
import torch

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.generation import encode_prompts, sample
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.models.sampling_twin import cpu_has_fast_bf16, plain_state, resolve_bf16_choice
from alignkit.rl.collect import sample_with_reference
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.rollout import response_forward
from alignkit.rl.scorers import token_share_scorer


def _policy(tok, sampling: str = "bfloat16") -> Policy:
    torch.manual_seed(0)
    lm = load_causal_lm(TINY, tok, "float32")
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=4, lora_alpha=8, device="cpu",
                                    sampling_dtype=sampling, compute_dtype="float32"))
    for name, p in policy.named_parameters():  # adapters that really change the output
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return policy


def test_cpu_flags_decide_auto(tmp_path):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor : 0\nflags : fpu avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor : 0\nflags : fpu avx2 avx512f\n")
    assert cpu_has_fast_bf16(with_bf16) and not cpu_has_fast_bf16(without)
    assert not cpu_has_fast_bf16(tmp_path / "missing")
    assert resolve_bf16_choice("float32", torch.device("cpu")) == torch.float32
    assert resolve_bf16_choice("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert resolve_bf16_choice("auto", torch.device("cuda")) == torch.float32


def _twin_weights(policy: Policy, reference: bool) -> dict[str, torch.Tensor]:
    trunk, head, approximate = policy.sampler_modules(reference)
    assert approximate and head.weight.dtype == torch.bfloat16
    return {k: v.detach().clone() for k, v in trunk.state_dict().items()}


def _folded(policy: Policy) -> dict[str, torch.Tensor]:
    """W + s·(B A) of every LoRA layer, by hand, under the twin trunk's names."""
    out = {}
    for name, m in policy.causal.named_modules():
        if hasattr(m, "lora_A"):
            a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
            out[name.removeprefix("model.") + ".weight"] = (
                m.base_layer.weight + (b @ a) * m.scaling["default"]).detach().clone()
    return out


def _same_bf16(twin: torch.Tensor, fp32: torch.Tensor) -> None:
    """The twin's bf16 weight is the fp32 one rounded (summed in another order: one bf16
    step apart at most)."""
    torch.testing.assert_close(twin.float(), fp32.to(torch.bfloat16).float(), rtol=2**-7,
                               atol=1e-6)


def test_twin_reads_merged_reference_and_updated_weights(tiny_tokenizer):
    policy = _policy(tiny_tokenizer)
    own = {k: v.clone() for k, v in policy.causal.state_dict().items()}
    with policy.merged():
        twin = _twin_weights(policy, reference=False)
    # the twin folds the adapters in as it copies: the policy's fp32 weights never move
    assert all(torch.equal(v, own[k]) for k, v in policy.causal.state_dict().items())
    merged = _folded(policy)
    with policy.reference():
        base = {k.removeprefix("model."): v.clone()
                for k, v in plain_state(policy.causal).items()}
        twin_ref = _twin_weights(policy, reference=True)
    name = next(k for k in twin if k.endswith("q_proj.weight"))
    assert not torch.equal(merged[name], base[name])  # the adapters move this weight
    _same_bf16(twin[name], merged[name])
    assert torch.equal(twin_ref[name], base[name].to(torch.bfloat16))
    for p in policy.trainable_parameters():  # an "update": the next sample must see it
        p.data.add_(0.1)
    with policy.merged():
        moved = _twin_weights(policy, reference=False)
    assert not torch.equal(moved[name], twin[name])
    _same_bf16(moved[name], _folded(policy)[name])


def test_unmerged_policy_samples_on_the_exact_path(tiny_tokenizer):
    policy = _policy(tiny_tokenizer)
    trunk, _, approximate = policy.sampler_modules(reference=False)
    assert not approximate and trunk is policy.trunk()
    exact = _policy(tiny_tokenizer, "float32")
    with exact.merged():
        assert exact.sampler_modules()[2] is False


def test_twin_generation_is_approximate_and_ppo_gets_exact_logprobs(tiny_tokenizer):
    tok, policy = tiny_tokenizer, _policy(tiny_tokenizer)
    lm_stop = stop_token_ids(tok, policy.causal)
    prompts = [f"Story {i}: once upon a time" for i in range(6)]
    q, m = encode_prompts(tok, prompts)
    with policy.merged():
        gen = sample(policy, q, m, 8, lm_stop, tok.pad_token_id, 1.0, 1.0,
                     torch.Generator().manual_seed(0))
    assert gen.approximate
    exact, _, _ = response_forward(policy, gen.query_ids, gen.query_mask, gen.response_ids,
                                   gen.response_mask, 1.0)
    # the bf16 sampler's own log-probs are close to, but not, the update's
    assert not torch.equal(gen.logprobs, exact * gen.response_mask)
    s = sample_with_reference(policy, tok, prompts, GenerateConfig(max_new_tokens=8), lm_stop,
                              "k1", seed=0)
    assert not s.gen.approximate
    redo, _, values = response_forward(policy, s.gen.query_ids, s.gen.query_mask,
                                       s.gen.response_ids, s.gen.response_mask, 1.0)
    mask = s.gen.response_mask
    assert torch.equal(s.gen.logprobs, redo * mask) and torch.equal(s.gen.values, values * mask)


def test_first_ppo_ratio_is_exactly_one_with_the_twin(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    lm = load_causal_lm(TINY, tok, "float32")
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=4, lora_alpha=8, device="cpu",
                                    sampling_dtype="bfloat16"))
    prompts = [f"Story number {i}: once upon a time" for i in range(16)]
    cfg = PPOConfig(steps=2, prompts_per_step=4, samples_per_prompt=2, epochs=1,
                    minibatches=1, lr=1e-3, checkpoint_every=1000)
    trainer = PPOTrainer(policy, tok, prompts, token_share_scorer(torch.arange(0, len(tok), 2)),
                         cfg, GenerateConfig(max_new_tokens=6), tmp_path, stop_token_ids(tok, lm))
    stats: list[dict] = []
    trainer.train(on_step=stats.append)
    assert [s["val/ratio"] for s in stats] == pytest.approx([1.0, 1.0], abs=1e-6)
