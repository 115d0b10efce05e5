"""SFT on revisions: only completion tokens are targets, and the loss on them falls."""

import pytest
import torch

from alignkit.config import ModelConfig
from alignkit.models.loading import TINY, load_causal_lm
from alignkit.models.policy import Policy
from alignkit.safety.sft import build_batch, mean_completion_nll, sft_train


def test_targets_are_the_completion_and_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    recs = [{"prompt": "Hi there", "completion": "hello friend"},
            {"prompt": "A much longer prompt with many words in it", "completion": "ok"}]
    ids, attn, tgt = build_batch(tok, recs, chat_template=False)
    n0 = len(tok.encode("hello friend", add_special_tokens=False)) + 1
    assert int(tgt[0].sum()) == n0 and int(tgt[1].sum()) == 2
    assert ids[0, -1] == tok.eos_token_id and bool(tgt[0, -1])
    assert tgt[0, -n0:].all() and not tgt[0, :-n0].any()
    assert (attn.sum(1) == torch.tensor([
        len(tok.encode("Hi there", add_special_tokens=False)) + n0,
        len(tok.encode(recs[1]["prompt"], add_special_tokens=False)) + 2])).all()


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_sft_lowers_the_loss_on_revisions(tiny_tokenizer, tmp_path, cpu_bf16):
    lm = load_causal_lm(TINY, tiny_tokenizer)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=8, lora_alpha=16))
    recs = [{"prompt": f"Request {i}", "completion": "I can't help with that, but here is a "
             "safe alternative."} for i in range(8)]
    before = mean_completion_nll(policy, tiny_tokenizer, recs)
    rep = sft_train(policy, tiny_tokenizer, recs, epochs=6, lr=5e-3, batch_size=4,
                    cpu_bf16=cpu_bf16)
    # bf16 autocast lowers only the matmuls: the trained adapters stay fp32
    assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())
    after = mean_completion_nll(policy, tiny_tokenizer, recs)
    assert rep.steps == 12 and len(rep.losses) == 12
    assert after < 0.6 * before, (before, after)
    with policy.reference():  # the base model (adapters off) is untouched
        assert abs(mean_completion_nll(policy, tiny_tokenizer, recs) - before) < 1e-4
    policy.lm.save_pretrained(tmp_path / "policy")
    assert (tmp_path / "policy" / "adapter_config.json").exists()


def test_the_loss_is_the_full_logits_cross_entropy_on_completion_tokens(tiny_tokenizer):
    """The fused head on target rows only gives the same loss and adapter gradients as
    log-softmax over every position's full logits, masked to the completion (fp32)."""
    from alignkit.safety.sft import completion_nll

    lm = load_causal_lm(TINY, tiny_tokenizer)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=8, lora_alpha=16, compute_dtype="float32"))
    params = [p for n, p in policy.lm.named_parameters() if "lora_" in n]
    for p in params:  # B = 0 at init: give the adapters a say
        torch.nn.init.normal_(p, std=0.05)
    recs = [{"prompt": "Hi there", "completion": "hello friend"},
            {"prompt": "A much longer prompt with many words in it", "completion": "ok"}]
    ids, attn, tgt = build_batch(tiny_tokenizer, recs, chat_template=False)

    loss = completion_nll(policy, ids, attn, tgt)
    got = torch.autograd.grad(loss, params)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    logits = policy.lm(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = tgt[:, 1:].float()
    want_loss = -(logp * mask).sum() / mask.sum()
    want = torch.autograd.grad(want_loss, params)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
