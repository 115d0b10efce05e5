"""Train a Bradley–Terry reward model — or a Safe RLHF cost model — on pairs.

All pairs of one prompt go into the same batch and every distinct completion is encoded
once, so K completions ranked into K(K−1)/2 pairs cost K forward passes, not K(K−1). The
cost model is the same network and loop with another objective: its pairs are harmlessness
rankings (the rejected reply is the more harmful one, so it must cost more) and their
safe/unsafe flags, and its scores are not re-centred, because its 0 is the safe/unsafe line.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.progress import Progress

from alignkit.config import RewardConfig
from alignkit.data.types import Pair
from alignkit.reward.losses import (
    bradley_terry_loss,
    calibration_bins,
    cost_model_loss,
    pair_accuracy,
    safety_accuracy,
)
from alignkit.reward.model import RewardModel


@dataclass
class RewardReport:
    pairs_train: int
    pairs_eval: int
    eval_accuracy: float
    eval_ece: float
    mean_margin: float
    calibration: list[dict]
    train_loss: list[float]
    score_mean: float
    score_std: float
    score_hist: dict
    sources: dict = field(default_factory=dict)
    safety_accuracy: float | None = None  # cost model: sign of the cost vs held-out flags


def split_by_prompt(pairs: list[Pair], eval_fraction: float, seed: int
                    ) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole prompts: pairs of one prompt share completions and would leak."""
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    n_eval = int(round(len(prompts) * eval_fraction)) if len(prompts) > 1 else 0
    held = set(prompts[:n_eval])
    return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]


def _group(pairs: list[Pair]) -> list[list[Pair]]:
    groups: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        groups[p.prompt].append(p)
    return list(groups.values())


def _batch_rewards(rm: RewardModel, groups: list[list[Pair]]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected, margin) for every pair in the groups, one encode per text."""
    index: dict[tuple[str, str], int] = {}
    for g in groups:
        for p in g:
            for text in (p.chosen, p.rejected):
                index.setdefault((p.prompt, text), len(index))
    keys = list(index)
    r = rm(**rm.encode([k[0] for k in keys], [k[1] for k in keys]))
    flat = [p for g in groups for p in g]
    ci = torch.tensor([index[(p.prompt, p.chosen)] for p in flat], device=r.device)
    ri = torch.tensor([index[(p.prompt, p.rejected)] for p in flat], device=r.device)
    margin = torch.tensor([p.vote_strength for p in flat], dtype=r.dtype, device=r.device)
    return r[ci], r[ri], margin


@torch.no_grad()
def evaluate_pairs(rm: RewardModel, pairs: list[Pair], batch_prompts: int = 16
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    rm.eval()
    groups = _group(pairs)
    cs, rs = [], []
    for i in range(0, len(groups), batch_prompts):
        c, r, _ = _batch_rewards(rm, groups[i : i + batch_prompts])
        cs.append(c.cpu())
        rs.append(r.cpu())
    return (torch.cat(cs), torch.cat(rs)) if cs else (torch.zeros(0), torch.zeros(0))


def reward_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused: one pass per tensor instead of ~8 temporaries; on CPU the step over a
    small backbone's 12M-parameter embedding otherwise costs as much as its backward."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)


def _flags(groups: list[list[Pair]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(unsafe of chosen, unsafe of rejected) per pair in batch order; NaN = not flagged."""
    def f(x: bool | None) -> float:
        return float("nan") if x is None else float(x)

    flat = [p for g in groups for p in g]
    return (torch.tensor([f(p.chosen_unsafe) for p in flat], device=device),
            torch.tensor([f(p.rejected_unsafe) for p in flat], device=device))


def _loss(rm_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], groups: list[list[Pair]],
          cfg: RewardConfig, cost: bool) -> torch.Tensor:
    c, r, m = rm_batch
    if cost:  # chosen = the more harmless reply: it is the "better", lower-cost side
        unsafe_c, unsafe_r = _flags(groups, c.device)
        return cost_model_loss(r, c, unsafe_r, unsafe_c, cfg.label_smoothing)
    return bradley_terry_loss(c, r, m if cfg.margin else None, cfg.center_coef)


def _held_out_safety(rm: RewardModel, pairs: list[Pair]) -> float:
    """Accuracy of cost > 0 ⇔ unsafe on every flagged held-out reply."""
    rows = {(p.prompt, t): u for p in pairs for t, u in ((p.chosen, p.chosen_unsafe),
                                                          (p.rejected, p.rejected_unsafe))
            if u is not None}
    if not rows:
        return float("nan")
    keys = sorted(rows)
    costs = rm.score([k[0] for k in keys], [k[1] for k in keys])
    return safety_accuracy(costs, torch.tensor([float(rows[k]) for k in keys]))


def train_reward_model(rm: RewardModel, pairs: list[Pair], cfg: RewardConfig,
                       progress: bool = True, cost: bool = False) -> RewardReport:
    """``cost=True`` trains the cost model (Bradley–Terry on harm + flag classification)."""
    if not pairs:
        raise ValueError("reward: no pairs to train on — the feedback stage produced none")
    torch.manual_seed(cfg.seed)
    train, held = split_by_prompt(pairs, cfg.eval_fraction, cfg.seed)
    groups = _group(train)
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = reward_optimizer(params, cfg.lr)
    steps = cfg.epochs * max(1, -(-len(groups) // cfg.batch_prompts))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    rm.train()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("reward model", total=steps)
        for _ in range(cfg.epochs):
            rng.shuffle(groups)
            for i in range(0, len(groups), cfg.batch_prompts):
                batch = groups[i : i + cfg.batch_prompts]
                loss = _loss(_batch_rewards(rm, batch), batch, cfg, cost)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(loss.detach().item())
                bar.update(task, advance=1, description=f"reward model loss {loss:.3f}")
    rm.eval()
    # Normalise on every distinct training completion: the reference set PPO starts from.
    texts = sorted({(p.prompt, t) for p in train for t in (p.chosen, p.rejected)})
    raw = rm.raw_scores([t[0] for t in texts], [t[1] for t in texts])
    if cost:  # the classification term put the safe/unsafe line at 0: keep it there
        rm.norm_mean.fill_(0.0)
        rm.norm_std.fill_(1.0)
    else:
        rm.set_normalisation(raw)
    c, r = evaluate_pairs(rm, held or train)
    if cost:  # better (chosen) must cost less: order each pair as (worse, better)
        c, r = r, c
    ece, bins = calibration_bins(c, r)
    counts, edges = np.histogram(((raw - float(rm.norm_mean)) / float(rm.norm_std)).numpy(),
                                 bins=20)
    sources: dict[str, int] = defaultdict(int)
    for p in pairs:
        sources[p.source] += 1
    return RewardReport(
        pairs_train=len(train), pairs_eval=len(held),
        eval_accuracy=pair_accuracy(c, r) if c.numel() else float("nan"),
        eval_ece=ece, mean_margin=float((c - r).mean()) if c.numel() else float("nan"),
        calibration=bins, train_loss=losses, score_mean=float(raw.mean()),
        score_std=float(raw.std()) if raw.numel() > 1 else 0.0,
        score_hist={"edges": edges.tolist(), "counts": counts.tolist()},
        sources=dict(sources),
        safety_accuracy=_held_out_safety(rm, held or train) if cost else None,
    )
