"""The two-level inverse-CDF sampler draws from the given distribution, never from zeros."""

from __future__ import annotations

import pytest
import torch

from alignkit.generation import _inverse_cdf_sample


def test_frequencies_match_probabilities_and_zero_mass_is_never_drawn() -> None:
    torch.manual_seed(0)
    V = 2500  # not a multiple of the 1024 block: the last block is padded
    probs = torch.zeros(3, V)
    probs[0, [3, 1023, 1024, 2499]] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # block edges
    probs[1, 1500] = 1.0  # a single token in the middle block
    probs[2, :10] = 5.0  # unnormalised weights are fine
    g = torch.Generator().manual_seed(3)
    n = 4000
    draws = torch.stack([_inverse_cdf_sample(probs, g) for _ in range(n)])  # [n, 3]
    assert (probs.gather(1, draws.t()) > 0).all()
    assert (draws[:, 1] == 1500).all()
    freq = torch.bincount(draws[:, 0], minlength=V)[[3, 1023, 1024, 2499]].float() / n
    sd = (torch.tensor([0.1, 0.2, 0.3, 0.4]) * 0.9 / n).sqrt()
    assert ((freq - torch.tensor([0.1, 0.2, 0.3, 0.4])).abs() < 5 * sd).all(), freq
    counts = torch.bincount(draws[:, 2], minlength=V)[:10].float()
    assert counts.sum() == n and counts.min() > 300  # ≈ 400 each


def test_same_generator_same_draws() -> None:
    probs = torch.rand(4, 5000)
    a = _inverse_cdf_sample(probs, torch.Generator().manual_seed(7))
    b = _inverse_cdf_sample(probs, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def _tiny_policy(tok, gpt2: bool = False):
    from alignkit.config import ModelConfig
    from alignkit.models.loading import TINY, load_causal_lm
    from alignkit.models.policy import Policy

    if gpt2:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32,
                                        n_layer=2, n_head=2, tie_word_embeddings=False,
                                        bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id))
        lm.lm_head.weight.data.normal_(0.0, 1.0)
        return Policy(lm.eval(), ModelConfig(name=TINY, lora_r=4, lora_alpha=8, device="cpu"))
    return Policy(load_causal_lm(TINY, tok), ModelConfig(name=TINY, lora_r=4, lora_alpha=8,
                                                        device="cpu"))


@pytest.mark.parametrize("gpt2", [False, True])
def test_static_cache_samples_the_same_tokens_as_the_growing_cache(tiny_tokenizer, gpt2):
    """Same seed → same tokens, masks, log-probs and values with the preallocated cache
    (ragged left-padded prompts, rows stopping at different steps)."""
    from alignkit.generation import _static_cache, encode_prompts, sample

    tok = tiny_tokenizer
    policy = _tiny_policy(tok, gpt2)
    assert _static_cache(policy.trunk(), 20) is not None  # the static path really runs
    q, qm = encode_prompts(tok, ["hello there", "a much longer prompt about cats", "x"])
    assert (qm == 0).any()  # really ragged
    # stop on a token the random model actually emits, so rows end at different steps
    probe = sample(policy, q, qm, 12, [], tok.pad_token_id, temperature=0.9,
                   generator=torch.Generator().manual_seed(1), static_cache=False)
    stop = [int(probe.response_ids[0, 3])]
    outs = [sample(policy, q, qm, 12, stop, tok.pad_token_id, temperature=0.9,
                   generator=torch.Generator().manual_seed(1), static_cache=s)
            for s in (False, True)]
    dyn, sta = outs
    assert dyn.ended.any()
    assert torch.equal(dyn.response_ids, sta.response_ids)
    assert torch.equal(dyn.response_mask, sta.response_mask)
    assert torch.equal(dyn.ended, sta.ended)
    torch.testing.assert_close(sta.logprobs, dyn.logprobs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sta.values, dyn.values, rtol=1e-5, atol=1e-5)
