"""The cost model learns a known harm rule and puts the safe/unsafe line at 0."""

import random

from alignkit.config import RewardConfig
from alignkit.data.types import Pair
from alignkit.models.loading import TINY
from alignkit.reward.model import RewardModel, load_backbone
from alignkit.reward.train import train_reward_model


def _pairs(n: int = 120) -> list[Pair]:
    """Harmlessness pairs: a refusal (safe) beats instructions for a weapon (unsafe)."""
    rng = random.Random(0)
    things = ["a bomb", "a gun", "poison", "a knife trap", "a fake passport", "malware"]
    out = []
    for i in range(n):
        thing = rng.choice(things)
        safe = rng.choice(["I'm sorry, I can't help with that.", "I won't help with this.",
                           "Sorry, that could hurt people, so I can't."])
        unsafe = f"Sure, here is how to make {thing}: first get the parts, then assemble them"
        out.append(Pair(prompt=f"How do I make {thing}? ({i})", chosen=safe, rejected=unsafe,
                        source="simulated", criterion="harmlessness", chosen_unsafe=False,
                        rejected_unsafe=True))
    return out


def test_cost_model_learns_harm_and_its_sign():
    backbone, tok = load_backbone("minilm", TINY)
    cm = RewardModel(backbone, tok, max_length=48)
    rep = train_reward_model(cm, _pairs(), RewardConfig(epochs=2, lr=1e-4, batch_prompts=8,
                                                        eval_fraction=0.25),
                             progress=False, cost=True)
    assert rep.pairs_eval == 30
    assert rep.eval_accuracy >= 0.9, rep  # the more harmful reply costs more
    assert rep.safety_accuracy is not None and rep.safety_accuracy >= 0.9, rep
    # unseen request: the compliance costs > 0 (unsafe), the refusal < 0 (safe)
    c = cm.score(["How do I build a bomb?"] * 2,
                 ["Sure, here is how to make a bomb: first get the parts, then assemble them",
                  "I'm sorry, I can't help with that."])
    assert c[0] > 0 > c[1], c
    assert float(cm.norm_mean) == 0.0 and float(cm.norm_std) == 1.0


def test_a_model_trained_after_other_stages_is_the_one_a_resumed_run_trains(tmp_path):
    """``train_one`` seeds the head's initialisation itself: whatever the process drew before
    (earlier stages in the same process, or none when a resumed run skipped them), the cost
    model comes out the same."""
    import torch

    from alignkit.config import load_config
    from alignkit.stages.reward import train_one

    cfg = load_config("configs/tiny.yaml", {"cost.epochs": 1, "cost.backbone": "policy"})
    heads = []
    for i, draws in enumerate((0, 17)):
        torch.manual_seed(123)
        torch.rand(draws)  # the random state earlier stages leave behind
        cm, _ = train_one(cfg, _pairs(24), tmp_path / f"cm{i}", cost=True)
        heads.append(cm.head.weight.detach().clone())
    assert torch.equal(heads[0], heads[1])


def test_cost_ensemble_members_sit_where_ppo_reads_them_and_stale_ones_go(tmp_path):
    """``cost.ensemble`` members live at cost_model, cost_model_1, … — the folders
    ``RewardEnsemble.load`` (PPO's cost scorer) averages — and a run with fewer members than
    the last removes the rest, which PPO would otherwise still average in."""
    from alignkit.reward.model import RewardEnsemble
    from alignkit.rundir import RunDir

    run = RunDir(tmp_path)
    backbone, tok = load_backbone("policy", TINY)
    cm = RewardModel(backbone, tok, max_length=16, device="cpu")
    for path in run.cost_members(3):
        cm.save(path)
    assert [p.name for p in run.cost_members(3)] == ["cost_model", "cost_model_1",
                                                     "cost_model_2"]
    assert len(RewardEnsemble.load(run.cost_model, "cpu").members) == 3
    run.clear_cost_members(2)
    assert len(RewardEnsemble.load(run.cost_model, "cpu").members) == 2
    assert run.reward_members(2)[1].name == "reward_model_1"
