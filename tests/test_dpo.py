"""DPO: the loss on hand-computed numbers, and a known-answer preference it must learn."""

import math

import torch

from alignkit.config import DPOConfig, ModelConfig
from alignkit.data.types import Pair
from alignkit.models.loading import TINY, load_causal_lm
from alignkit.models.policy import Policy
from alignkit.rl.dpo import sequence_logprobs, train_dpo
from alignkit.rl.math import dpo_loss


def test_dpo_loss_hand_computed():
    loss, h = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                       torch.tensor([-2.0]), beta=0.5)
    # h = 0.5 * ((−1 + 2) − (−3 + 2)) = 1.0
    assert math.isclose(float(h), 1.0)
    assert math.isclose(float(loss), math.log(1 + math.exp(-1.0)), rel_tol=1e-6)


def test_dpo_learns_a_known_preference(tiny_tokenizer):
    """Rule: ' kind words' is preferred over ' cruel words'; held-out prompts must agree."""
    torch.manual_seed(0)
    tok = tiny_tokenizer
    policy = Policy(load_causal_lm(TINY, tok), ModelConfig(name=TINY, lora_r=8, lora_alpha=16))
    pairs = [Pair(f"Item {i} is described with", " kind gentle words", " cruel harsh words",
                  source="simulated") for i in range(48)]
    cfg = DPOConfig(beta=0.1, lr=3e-3, epochs=2, batch_size=8)
    held = [f"Thing {i} is described with" for i in range(100, 108)]
    good, bad = [" kind gentle words"] * 8, [" cruel harsh words"] * 8
    with torch.no_grad(), policy.reference():
        ref_gap = (sequence_logprobs(policy, tok, held, good, cfg, reference=True)
                   - sequence_logprobs(policy, tok, held, bad, cfg, reference=True))
    rep = train_dpo(policy, tok, pairs, cfg, progress=False)
    assert rep.reward_accuracy == 1.0 and rep.loss[-1] < rep.loss[0]
    with torch.no_grad():
        gap = (sequence_logprobs(policy, tok, held, good, cfg)
               - sequence_logprobs(policy, tok, held, bad, cfg))
    assert bool((gap > ref_gap + 1.0).all()), (gap, ref_gap)  # generalises to new prompts
