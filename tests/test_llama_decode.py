"""alignkit's own Llama decoder (model.decode_kernel 'auto'): the hidden states transformers'
full forward computes, over left-padded prompts and step by step; only trunks it covers;
the weights as they are at each batch; and the sampler's tokens and log-probs unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2Model

from alignkit.config import ModelConfig
from alignkit.generation import _OWN_DECODERS, encode_prompts, sample
from alignkit.models import llama_decode as LD
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids, tiny_llama
from alignkit.models.policy import Policy


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three prompts of 5 positions with 0, 2 and 1 left pads, 4 tokens to append."""
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, vocab, (3, 5), generator=g)
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[1, :2] = 0
    mask[2, :1] = 0
    return prompt, mask, torch.randint(0, vocab, (3, 4), generator=g)


def _steps(decoder: LD.LlamaDecoder, prompt, mask, more) -> list[torch.Tensor]:
    """Last hidden state after the prompt and after each appended token."""
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    full_mask = torch.cat([mask, torch.ones_like(more)], 1)
    out = [decoder.forward(prompt, pos, mask, max_len=full_mask.size(1))]
    for t in range(more.size(1)):
        out.append(decoder.forward(more[:, t : t + 1], pos[:, -1:] + 1 + t,
                                   full_mask[:, : prompt.size(1) + t + 1]))
    return out


def _reference(lm, prompt, mask, more) -> list[torch.Tensor]:
    """The same states from transformers' one full forward over the whole sequence."""
    ids, full_mask = torch.cat([prompt, more], 1), torch.cat([mask, torch.ones_like(more)], 1)
    pos = (full_mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        h = lm.model(input_ids=ids, attention_mask=full_mask, position_ids=pos).last_hidden_state
    return [h[:, prompt.size(1) - 1 + t] for t in range(more.size(1) + 1)]


@pytest.mark.parametrize(("fused_from", "prefill_rows"), [
    (LD.FUSED_ATTENTION_ROWS, LD.PREFILL_ROWS), (2, LD.PREFILL_ROWS), (LD.FUSED_ATTENTION_ROWS, 6),
    (2, 6)])
def test_decoder_matches_transformers_full_forward_over_left_padding(tiny_tokenizer, monkeypatch,
                                                                     fused_from, prefill_rows):
    # fused_from 2: a prompt chunk goes through SDPA (a long prompt's attention), steps do
    # not; prefill_rows 6: the 3 × 5 prompt goes in chunks of 2, 2 and 1 positions
    monkeypatch.setattr(LD, "FUSED_ATTENTION_ROWS", fused_from)
    monkeypatch.setattr(LD, "PREFILL_ROWS", prefill_rows)
    lm = tiny_llama(tiny_tokenizer, layers=2, hidden=64)
    assert LD.supports(lm.model)
    decoder = LD.LlamaDecoder(lm.model)
    decoder.refresh()
    batch = _batch(lm.config.vocab_size)
    for mine, theirs in zip(_steps(decoder, *batch), _reference(lm, *batch), strict=True):
        assert mine.dtype == torch.float32
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_bf16_weights_stay_close_to_the_fp32_model(tiny_tokenizer):
    lm = tiny_llama(tiny_tokenizer, layers=2, hidden=64)
    twin = tiny_llama(tiny_tokenizer, layers=2, hidden=64).to(torch.bfloat16)
    twin.load_state_dict(lm.state_dict())
    decoder = LD.LlamaDecoder(twin.model)
    decoder.refresh()
    assert decoder.dtype == torch.bfloat16
    batch = _batch(lm.config.vocab_size)
    for mine, theirs in zip(_steps(decoder, *batch), _reference(lm, *batch), strict=True):
        # bf16 products, fp32 everything else: within bf16's rounding of the fp32 model
        assert (mine - theirs).norm() / theirs.norm() < 2e-2


def test_refresh_reads_the_weights_as_they_are_now(tiny_tokenizer):
    lm = tiny_llama(tiny_tokenizer, layers=2, hidden=64)
    decoder = LD.LlamaDecoder(lm.model)
    batch = _batch(lm.config.vocab_size)
    decoder.refresh()
    before = _steps(decoder, *batch)[-1]
    with torch.no_grad():
        lm.model.layers[1].mlp.up_proj.weight.mul_(3.0)
    decoder.refresh()
    after = _steps(decoder, *batch)[-1]
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, _reference(lm, *batch)[-1], rtol=1e-5, atol=1e-5)


def test_supports_only_what_it_computes(tiny_tokenizer):
    lm = tiny_llama(tiny_tokenizer, layers=2, hidden=64)
    assert LD.supports(lm.model)
    assert not LD.supports(GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2)))
    biased = tiny_llama(tiny_tokenizer, layers=1, hidden=16)
    biased.config.attention_bias = True
    assert not LD.supports(biased.model)
    peft = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    trunk = peft.base_model.model.model
    assert not LD.supports(trunk)  # unmerged adapters: not one weight per projection
    peft.merge_adapter()
    assert LD.supports(trunk)
    peft.unmerge_adapter()
    with peft.disable_adapter():
        assert LD.supports(trunk)  # the reference: the base weights alone


@pytest.mark.parametrize("rows", [3, LD.FEW_ROWS + 1])
def test_few_row_products_are_linear(rows):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, 40, generator=g), torch.randn(9000, 40, generator=g)
    torch.testing.assert_close(LD.few_rows_linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(LD.few_rows_head(x, w), F.linear(x, w), rtol=1e-5, atol=1e-4)
    xb, wb = x.bfloat16(), w.bfloat16()
    torch.testing.assert_close(LD.few_rows_head(xb, wb).float(), F.linear(xb, wb).float(),
                               rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("rows", [1, 16, 130])
def test_packed_bf16_products_are_linear_bit_for_bit(rows):
    g = torch.Generator().manual_seed(0)
    x, w = (torch.randn(rows, 40, generator=g).bfloat16(),
            torch.randn(300, 40, generator=g).bfloat16())
    packed = LD.pack_bf16(w)
    if packed is None:
        pytest.skip("this torch build has no oneDNN bf16 reorder")
    assert torch.equal(LD.packed_linear(x, packed), F.linear(x, w))
    assert torch.equal(LD.product(x, w, packed), F.linear(x, w))
    assert LD.pack_bf16(w.float()) is None  # fp32 weights keep the few-row kernels


def test_sampler_draws_the_same_tokens_and_log_probs_with_either_kernel(tiny_tokenizer):
    tok = tiny_tokenizer
    runs = {}
    for kernel in ("transformers", "auto"):
        torch.manual_seed(0)
        lm = load_causal_lm(TINY, tok, "float32")
        policy = Policy(lm, ModelConfig(name=TINY, lora_r=4, lora_alpha=8, device="cpu",
                                        sampling_dtype="float32", compute_dtype="float32",
                                        decode_kernel=kernel))
        for name, p in policy.named_parameters():  # adapters that really change the output
            if "lora_B" in name:
                p.data.normal_(0, 0.5)
        q, m = encode_prompts(tok, [f"Story {i}: once upon {'a ' * i}time" for i in range(6)])
        with policy.merged():
            runs[kernel] = sample(policy, q, m, 10, stop_token_ids(tok, lm), tok.pad_token_id,
                                  1.0, 1.0, torch.Generator().manual_seed(0))
        assert (policy.trunk() in _OWN_DECODERS) == (kernel == "auto")
    a, b = runs["transformers"], runs["auto"]
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.response_mask, b.response_mask)
    assert not b.approximate
    torch.testing.assert_close(b.logprobs, a.logprobs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.values, a.values, rtol=0, atol=1e-5)


def test_a_cached_decoder_does_not_keep_its_trunk_alive(tiny_tokenizer):
    import gc
    import weakref

    lm = tiny_llama(tiny_tokenizer, layers=1, hidden=16)
    _OWN_DECODERS[lm.model] = LD.LlamaDecoder(lm.model)
    gone = weakref.ref(lm.model)
    del lm
    gc.collect()
    assert gone() is None
