"""Smoke test of the benchmark helpers: alignkit's side runs one tiny iteration (no TRL).

The timing runs themselves are benchmarks, not tests; this only guards the code paths the
benchmarks import (and that the TRL reward stand-in scores exactly like alignkit's).
"""

import importlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

C = importlib.import_module("benchmarks._common")
ppo = importlib.import_module("benchmarks.ppo_vs_trl")
rwd = importlib.import_module("benchmarks.reward_vs_trl")

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def test_prompts_have_the_promised_length():
    tok = C.bench_tokenizer()
    prompts = C.fixed_length_prompts(tok, 20, length=5)
    assert {len(tok(p, add_special_tokens=False).input_ids) for p in prompts} == {5}
    assert tok.pad_token_id != tok.eos_token_id


def test_trl_reward_stand_in_matches_alignkit_scorer():
    """Share of target ids in the response (up to the stop token) — computed by hand."""
    from alignkit.generation import Generation
    from alignkit.rl.scorers import token_share_scorer

    targets = torch.tensor([10, 12])
    # prompt of 2 tokens; row 0 response 10 7 12 <pad>: 2 of 3 real tokens hit
    # row 1 response 7 7 7 10: 1 of 4
    q = torch.tensor([[5, 6], [5, 6]])
    resp = torch.tensor([[10, 7, 12, 0], [7, 7, 7, 10]])
    qr = torch.cat([q, resp], 1)
    mask = (qr != 0).long()
    rm = C.SyntheticRewardModel(targets, context_length=2)
    hidden = getattr(rm, rm.base_model_prefix)(input_ids=qr, attention_mask=mask).hidden_states[-1]
    logits = rm.score(hidden)
    last = torch.tensor([4, 5])  # index of the last real token, as TRL's get_reward picks it
    trl_scores = logits[torch.arange(2), last].squeeze(-1)
    assert torch.allclose(trl_scores, torch.tensor([2 / 3, 1 / 4]))

    rmask = (resp != 0).float()
    gen = Generation(q, torch.ones_like(q), resp, rmask, torch.zeros(2, 4), torch.zeros(2, 4),
                     torch.zeros(2, dtype=torch.bool))
    assert torch.allclose(token_share_scorer(targets)([], [], gen), trl_scores)


def test_alignkit_ppo_side_runs_one_iteration(tmp_path):
    for use_lora in (False, True):
        trainer = ppo.alignkit_trainer(use_lora, 1e-3, tmp_path / str(use_lora), n_prompts=8,
                                       batch=4, new_tokens=4, epochs=1, model_sizes=TINY)
        r = ppo.alignkit_iteration(trainer)
        assert r["seconds"] > 0 and 0.0 <= r["score"] <= 1.0
        assert r["threads"] == torch.get_num_threads()
        assert trainer.step == 1
        n_train = sum(p.numel() for p in trainer.policy.trainable_parameters())
        n_all = sum(p.numel() for p in trainer.policy.lm.parameters())
        assert (n_train < n_all / 2) if use_lora else (n_train > n_all / 2)


def test_alignkit_reward_side_runs_one_step():
    pairs = rwd.make_pairs(n_prompts=4)
    assert len(pairs) == 4 * 6  # K=4 distinct 'kind' counts: every pair is ordered
    assert all(p.chosen.count(" kind") > p.rejected.count(" kind") for p in pairs)
    side = rwd.AlignkitRM(model_sizes=TINY)
    r = side.step(rwd.batches(pairs)[0])
    assert r["pairs"] == rwd.PAIRS_PER_STEP and r["loss"] > 0
