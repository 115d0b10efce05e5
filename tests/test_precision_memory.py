"""The bf16 frozen base (model.dtype: bfloat16) and gradient checkpointing of the trunk, on
the tiny model: dtypes where they belong, PPO's first ratio exactly 1, the frozen weights
unmoved by an iteration, and checkpointing giving the same gradients while really
recomputing the layers."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

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


def test_fused_lora_layer_matches_peft_forward_and_gradients(tiny_tokenizer):
    """The one-kernel LoRA layer computes PEFT's y = base(x) + s·B(A x) and its gradients;
    adapters off (the reference) still gives the base alone."""
    from peft.tuners.lora import Linear as LoraLinear

    from alignkit.models.policy import FusedLoraLinear

    torch.manual_seed(0)
    policy = Policy(load_causal_lm(TINY, tiny_tokenizer),
                    ModelConfig(name=TINY, lora_r=4, lora_alpha=8, device="cpu",
                                compute_dtype="float32"))
    layers = [m for m in policy.modules() if isinstance(m, LoraLinear)]
    assert layers and all(type(m) is FusedLoraLinear for m in layers)
    for m in layers:  # B starts at 0: give it a value so the adapter term is really there
        torch.nn.init.normal_(m.lora_B["default"].weight, std=0.5)
    ids = torch.randint(0, len(tiny_tokenizer), (3, 7))
    mask = torch.ones_like(ids)

    def run() -> tuple[Tensor, dict[str, Tensor], Tensor]:
        policy.zero_grad(set_to_none=True)
        h = policy.hidden_states(ids, mask)
        (h.square().sum()).backward()
        with torch.no_grad(), policy.reference():
            ref = policy.hidden_states(ids, mask)
        return h.detach(), {k: p.grad.clone() for k, p in policy.named_parameters()
                            if p.grad is not None}, ref

    fused = run()
    for m in layers:
        m.__class__ = LoraLinear
    plain = run()
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=1e-5)
    assert fused[1].keys() == plain[1].keys() and fused[1]
    for k in plain[1]:
        torch.testing.assert_close(fused[1][k], plain[1][k], rtol=1e-4, atol=1e-5)
    assert torch.equal(fused[2], plain[2])  # reference: adapters off, the base alone
    assert not torch.allclose(fused[0], fused[2])  # and the adapters did change the output


def test_fused_head_log_probs_across_several_row_chunks() -> None:
    """Enough rows for three chunks of the fused head (the last one partial): the same
    log-probs, entropies and gradients as a plain log-softmax."""
    from alignkit.models import policy as P

    torch.manual_seed(0)
    n = 2 * P._CHUNK_ROWS + 37
    head = torch.nn.Linear(8, 50).double()
    h = torch.randn(n, 8, dtype=torch.float64, requires_grad=True)
    tok = torch.randint(0, 50, (n,))
    lp, ent = P.head_logprobs(head, h, tok)
    lp.sum().backward()
    g_h, g_w = h.grad.clone(), head.weight.grad.clone()
    h.grad = head.weight.grad = head.bias.grad = None
    logp_all = torch.log_softmax(head(h), -1)
    want = logp_all.gather(1, tok[:, None]).squeeze(1)
    want.sum().backward()
    torch.testing.assert_close(lp, want)
    torch.testing.assert_close(ent, -(logp_all.exp() * logp_all).sum(-1).detach())
    torch.testing.assert_close(g_h, h.grad)
    torch.testing.assert_close(g_w, head.weight.grad)


def test_keep_freed_memory_reuses_a_big_block_without_page_faults():
    """With run.keep_freed_memory a freed 64 MB tensor's memory stays with the process: made
    again, it is not faulted in page by page (glibc alone unmaps it: ~16k faults)."""
    import platform
    import resource

    from alignkit.models.allocator import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert keep_freed_memory()
    n = 16 * 2**20  # 64 MB of fp32

    def faults_of_one_block() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(n)  # written whole, then freed
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_one_block()
    assert faults_of_one_block() < 1000
