"""Known-answer learning tests: the optimum is known, the code must move towards it."""

import random

import torch

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig, RewardConfig
from alignkit.data.types import Pair
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.reward.model import RewardModel, load_backbone
from alignkit.reward.train import train_reward_model
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.scorers import token_share_scorer


def _train_synthetic(tok, tmp_path, algorithm: str, steps: int) -> list[float]:
    # seeded here: the adapters' and the value head's draws came from whatever random state
    # earlier tests left (after test_head_logprobs one PPO run ended at 0.75; four seeds end
    # at 0.91-1.0, and at 0.86-0.99 with the fused attention kernel)
    torch.manual_seed(0)
    lm = load_causal_lm(TINY, tok)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=8, lora_alpha=16))
    target = torch.arange(0, len(tok), 2)  # reward: share of even token ids, optimum 1.0
    prompts = [f"Story number {i}: once upon a time" for i in range(64)]
    cfg = PPOConfig(algorithm=algorithm, steps=steps, prompts_per_step=8, samples_per_prompt=4,
                    lr=2e-3, kl_coef=0.0, epochs=2, minibatches=2, checkpoint_every=1000)
    trainer = PPOTrainer(policy, tok, prompts, token_share_scorer(target), cfg,
                         GenerateConfig(max_new_tokens=8), tmp_path, stop_token_ids(tok, lm))
    scores: list[float] = []
    trainer.train(on_step=lambda s: scores.append(s["objective/scores"]))
    return scores


def test_ppo_reaches_known_optimum(tiny_tokenizer, tmp_path):
    scores = _train_synthetic(tiny_tokenizer, tmp_path, "ppo", steps=30)
    start, end = sum(scores[:3]) / 3, sum(scores[-5:]) / 5
    assert start < 0.75, scores
    assert end > 0.8 and end > start + 0.15, scores


def test_rloo_and_grpo_raise_the_synthetic_reward(tiny_tokenizer, tmp_path):
    for alg in ("rloo", "grpo"):
        scores = _train_synthetic(tiny_tokenizer, tmp_path / alg, alg, steps=20)
        assert sum(scores[-5:]) / 5 > sum(scores[:3]) / 3 + 0.1, (alg, scores)


def test_reward_model_learns_a_known_rule():
    """Preference rule: a completion mentioning 'kind' beats one mentioning 'cruel'."""
    rng = random.Random(0)
    nouns = ["dog", "teacher", "city", "garden", "song", "river", "robot", "friend"]
    pairs = []
    for i in range(120):
        n = rng.choice(nouns)
        good = f"the {n} was {rng.choice(['kind', 'kind and warm', 'very kind'])} today"
        bad = f"the {n} was {rng.choice(['cruel', 'cruel and cold', 'very cruel'])} today"
        pairs.append(Pair(prompt=f"Tell me about item {i}", chosen=good, rejected=bad,
                          source="simulated"))
    backbone, tok = load_backbone("minilm", TINY)
    rm = RewardModel(backbone, tok, max_length=32)
    rep = train_reward_model(rm, pairs, RewardConfig(epochs=2, lr=1e-4, batch_prompts=8,
                                                     eval_fraction=0.25), progress=False)
    assert rep.pairs_eval == 30
    assert rep.eval_accuracy >= 0.9, rep
    # the normalised score separates the two kinds of text on unseen prompts
    s = rm.score(["new prompt"] * 2, ["the cat was kind today", "the cat was cruel today"])
    assert s[0] > s[1]
