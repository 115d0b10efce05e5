"""Stage reward: train ``reward.ensemble`` Bradley–Terry reward models on the pairs (seeds
seed, seed+1, …); member 0 is the one reported and kept in memory for PPO. With a cost
model (``ppo.cost: model``, Safe RLHF) the reward models learn the helpfulness pairs and
the cost model the harmlessness pairs and their safe/unsafe flags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alignkit.artifacts import RewardReport
from alignkit.config import RunConfig
from alignkit.stages.context import StageContext, StageResult

if TYPE_CHECKING:
    from alignkit.data.types import Pair
    from alignkit.reward.model import RewardModel


def train_one(cfg: RunConfig, pairs: list[Pair], path: Path, member: int | None = None,
              cost: bool = False) -> tuple[RewardModel, RewardReport]:
    """One reward model on ``pairs`` (seed ``reward.seed + member``), saved to ``path``;
    ``member`` is its index in an ensemble (None: a lone model); ``cost`` trains the cost
    model instead, with the ``cost`` section.

    ``alignkit reward train`` and this stage both call it, so they train the same model.
    """
    import torch

    from alignkit.reward.model import RewardModel, load_backbone
    from alignkit.reward.train import train_reward_model

    r, m = (cfg.cost if cost else cfg.reward), cfg.model
    seed = r.seed + (member or 0)
    backbone, tok = load_backbone(r.backbone, m.name, m.tiny_layers, m.tiny_hidden)
    # the head's initialisation from this model's seed, not from wherever the process's
    # random state stood: a resumed run (stages before this one skipped) trains the model
    # the uninterrupted run did (the cost model's head init alone moved the default run's
    # over-refusal from 7.5% to 15%)
    torch.manual_seed(seed)
    rm = RewardModel(backbone, tok, r.max_length, device=m.device,
                     compute_dtype=r.compute_dtype)
    report = train_reward_model(rm, pairs, r.model_copy(update={"seed": seed}), cost=cost)
    extra = {"backbone": r.backbone, "kind": "cost" if cost else "reward"}
    rm.save(path, extra | ({} if member is None else {"member": member}))
    return rm, RewardReport.from_json({"backbone": r.backbone, **vars(report)})


def run(ctx: StageContext, r: int, resume: bool) -> StageResult:  # noqa: ARG001
    from alignkit.data.types import read_pairs_jsonl

    rc = ctx.cfg.reward
    pairs = read_pairs_jsonl(ctx.run.pairs)
    if ctx.cfg.ppo.cost == "model":
        _train_cost_model(ctx, [p for p in pairs if p.criterion == "harmlessness"])
        pairs = [p for p in pairs if p.criterion == "helpfulness"]
        if not pairs:
            raise ValueError("reward: ppo.cost is 'model' but no helpfulness pairs — rank "
                             "both criteria (data.prompts: hh does)")
    ctx.run.clear_reward_members(rc.ensemble)
    report = _train_members(ctx, pairs, ctx.run.reward_members(rc.ensemble), cost=False)
    report.write(ctx.run.reward_report)
    ctx.console.print(f"reward model: {report.pairs_train} train / {report.pairs_eval} "
                      f"held-out pairs, held-out accuracy {report.eval_accuracy:.3f}, "
                      f"ECE {report.eval_ece:.3f}"
                      + (f"; ensemble of {rc.ensemble}: accuracies "
                         + ", ".join(f"{a:.3f}" for a in report.ensemble_accuracies)
                         if rc.ensemble > 1 else ""))
    return StageResult(record=report)


def _train_cost_model(ctx: StageContext, pairs: list[Pair]) -> None:
    if not pairs:
        raise ValueError("reward: ppo.cost is 'model' but there are no harmlessness pairs")
    n = ctx.cfg.cost.ensemble  # PPO's cost is their mean (RewardEnsemble via the path)
    ctx.run.clear_cost_members(n)
    rep = _train_members(ctx, pairs, ctx.run.cost_members(n), cost=True)
    rep.write(ctx.run.cost_report)
    ctx.console.print(f"cost model: {rep.pairs_train} train / {rep.pairs_eval} held-out "
                      f"harmlessness pairs, held-out accuracy {rep.eval_accuracy:.3f}, ECE "
                      f"{rep.eval_ece:.3f}, safe/unsafe accuracy {rep.safety_accuracy:.3f}")


def _train_members(ctx: StageContext, pairs: list[Pair], paths: list[Path], cost: bool
                   ) -> RewardReport:
    """One model per folder of ``paths`` (member i on seed + i, from the cost section when
    ``cost``); member 0 is kept in memory (as cost_model or reward_model) and its report, with
    every member's held-out accuracy, returned."""
    reports = []
    for i, path in enumerate(paths):
        model, rep = train_one(ctx.cfg, pairs, path, member=i, cost=cost)
        reports.append(rep)
        if i == 0:
            ctx.set_model("cost_model" if cost else "reward_model", model)
    reports[0].ensemble_accuracies = [x.eval_accuracy for x in reports]
    return reports[0]
