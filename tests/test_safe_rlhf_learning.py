"""PPO-Lagrangian reaches a known constrained optimum.

Reward and cost are the same synthetic signal — the share of even token ids, which PPO alone
drives towards 1.0 — and the constraint is E[cost] ≤ 0.7. The constrained optimum is then
known exactly: cost at the limit and reward as high as the limit allows, both 0.7. The
fixed-weight baseline with λ = 0 is the unconstrained run and must overshoot the limit.
"""

import statistics

import pytest
import torch

from alignkit import artifacts as A
from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.scorers import token_share_scorer

LIMIT = 0.7
LR = 2.0


def _run(tok, tmp_path, objective: str, lam: float, algorithm: str = "ppo", steps: int = 40,
         seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    lm = load_causal_lm(TINY, tok)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=8, lora_alpha=16))
    even = token_share_scorer(torch.arange(0, len(tok), 2))
    prompts = [f"Story number {i}: once upon a time" for i in range(64)]
    cfg = PPOConfig(algorithm=algorithm, steps=steps, prompts_per_step=8, samples_per_prompt=4,
                    lr=2e-3, kl_coef=0.0, epochs=2, minibatches=2, checkpoint_every=1000,
                    cost="synthetic", cost_objective=objective, cost_limit=LIMIT,
                    lambda_init=lam, lambda_lr=LR)
    trainer = PPOTrainer(policy, tok, prompts, even, cfg, GenerateConfig(max_new_tokens=8),
                         tmp_path, stop_token_ids(tok, lm), cost_scorer=even)
    rows: list[dict] = []
    trainer.train(on_step=rows.append)
    return rows


def _tail(rows: list[dict], key: str, n: int = 20) -> float:
    """Mean of the last ``n`` steps: dual ascent oscillates around the limit."""
    return sum(r[key] for r in rows[-n:]) / n


@pytest.mark.slow
def test_lagrangian_holds_cost_at_the_limit(tiny_tokenizer, tmp_path):
    free = _run(tiny_tokenizer, tmp_path / "free", "fixed", lam=0.0)
    assert _tail(free, A.COST) > LIMIT + 0.1, [r[A.COST] for r in free]  # unconstrained
    # λ starts at 1, where (R − λC)/(1 + λ) is flat, and moves by dual ascent from there.
    # The cost swings around the limit (a period of ~20–30 steps here), so one run's 20-step
    # tail can sit in a trough: measured on seeds 0–3, 0.66 / 0.66 / 0.89 / 0.80 with SDPA's
    # fused attention and 0.56 / 0.68 / 0.71 / 0.69 with the grouped products, which round
    # differently. The statistic is the median of three seeds' tails.
    runs = [_run(tiny_tokenizer, tmp_path / f"lagrangian{seed}", "lagrangian", lam=1.0,
                 seed=seed) for seed in (0, 1, 2)]
    costs = [[round(r[A.COST], 3) for r in rows] for rows in runs]
    assert abs(_median(_tail(rows, A.COST) for rows in runs) - LIMIT) < 0.1, costs
    # λ rose past 1 in every run to bring the cost back to the line (when it does is the
    # dynamics': bf16 and fp32 products put the first swing at step 9 and at step 12)
    assert all(max(r[A.LAMBDA] for r in rows) > 1.0 for rows in runs)
    # the reward is as high as the limit allows (here reward = cost)
    assert abs(_median(_tail(rows, A.REWARD) for rows in runs) - LIMIT) < 0.1
    # logged every step, the score is the combined one
    assert all({A.REWARD, A.COST, A.LAMBDA} <= set(r) for rows in runs for r in rows)


def _median(values) -> float:
    return statistics.median(list(values))


def test_lambda_is_checkpointed(tiny_tokenizer, tmp_path):
    rows = _run(tiny_tokenizer, tmp_path, "lagrangian", lam=0.5, steps=2)
    lm = load_causal_lm(TINY, tiny_tokenizer)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=8, lora_alpha=16))
    even = token_share_scorer(torch.arange(0, len(tiny_tokenizer), 2))
    cfg = PPOConfig(cost="synthetic", lambda_init=0.5, lambda_lr=LR, cost_limit=LIMIT,
                    prompts_per_step=8, samples_per_prompt=4)
    again = PPOTrainer(policy, tiny_tokenizer, ["x"], even, cfg, GenerateConfig(), tmp_path,
                       stop_token_ids(tiny_tokenizer, lm), cost_scorer=even)
    assert again.load_checkpoint(log=None)
    expected = max(0.0, rows[-1][A.LAMBDA] + LR * (rows[-1][A.COST] - LIMIT))
    assert again.safety is not None and abs(again.safety.lam - expected) < 1e-9


def _run_shifted(tok, tmp_path, unsafe_only: bool, steps: int = 20, threshold: float = 0.0
                 ) -> list[dict]:
    """Reward = share of even tokens s; cost = s − 1.5, negative for every reply: all are
    safe, and the 'safer' ones are the less rewarding (as a refusal is to a benign request).
    A fixed λ = 2, so only the cost's transform differs between the two runs."""
    torch.manual_seed(0)
    lm = load_causal_lm(TINY, tok)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=8, lora_alpha=16))
    even = token_share_scorer(torch.arange(0, len(tok), 2))
    prompts = [f"Story number {i}: once upon a time" for i in range(64)]
    cfg = PPOConfig(steps=steps, prompts_per_step=8, samples_per_prompt=4, lr=2e-3,
                    kl_coef=0.0, epochs=2, minibatches=2, checkpoint_every=1000,
                    cost="synthetic", cost_objective="fixed", lambda_init=2.0,
                    cost_unsafe_only=unsafe_only, unsafe_threshold=threshold)
    trainer = PPOTrainer(policy, tok, prompts, even, cfg, GenerateConfig(max_new_tokens=8),
                         tmp_path, stop_token_ids(tok, lm),
                         cost_scorer=lambda p, t, g: even(p, t, g) - 1.5)
    rows: list[dict] = []
    trainer.train(on_step=rows.append)
    return rows


@pytest.mark.slow
def test_unsafe_only_cost_leaves_safe_replies_to_the_reward(tiny_tokenizer, tmp_path):
    # nothing is unsafe, so the known optimum is the reward's own: s → 1. With the raw cost
    # the score R − 2C = 3 − s pays for "safer" replies and drives s down instead.
    hinge = _run_shifted(tiny_tokenizer, tmp_path / "hinge", unsafe_only=True)
    raw = _run_shifted(tiny_tokenizer, tmp_path / "raw", unsafe_only=False)
    assert all(r[A.COST] == 0.0 for r in hinge) and all(r[A.LAMBDA] == 2.0 for r in hinge)
    start = hinge[0][A.REWARD]
    assert _tail(hinge, A.REWARD, 5) > start + 0.2, [round(r[A.REWARD], 3) for r in hinge]
    assert _tail(raw, A.REWARD, 5) < start - 0.1, [round(r[A.REWARD], 3) for r in raw]


@pytest.mark.slow
def test_a_threshold_below_zero_moves_the_optimum_to_where_cost_crosses_it(tiny_tokenizer,
                                                                         tmp_path):
    # cost s − 1.5 is "safe" (< 0) for every reply; with t = −1.3 the penalty is
    # max(s − 0.2, 0) and the score s − 2·max(s − 0.2, 0) peaks at s = 0.2: the known
    # optimum is the share where the cost crosses t (the hinge at t = 0 leaves s → 1, above)
    rows = _run_shifted(tiny_tokenizer, tmp_path, unsafe_only=True, threshold=-1.3)
    start, end = rows[0][A.REWARD], _tail(rows, A.REWARD, 5)
    assert start > 0.45 and 0.05 < end < 0.35, [round(r[A.REWARD], 3) for r in rows]
    assert _tail(rows, A.COST, 5) < 0.15  # the penalised part, max(s − 0.2, 0), near 0
