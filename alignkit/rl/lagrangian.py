"""The reward–cost trade-off of PPO-Lagrangian (Safe RLHF), as a small stateful object.

The trainer asks it for each sample's score from (reward, cost) and, once per step, hands it
the batch's mean cost so λ follows the constraint E[C] ≤ cost_limit by dual ascent. A fixed
weight (score = R − w·C, λ never moves) is the baseline Safe RLHF compares against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from torch import Tensor

from alignkit.rl.math import lagrange_multiplier_step, lagrangian_score

CostMode = Literal["lagrangian", "fixed"]


@dataclass
class SafetyObjective:
    mode: CostMode
    cost_limit: float
    lambda_lr: float
    lam: float

    def score(self, reward: Tensor, cost: Tensor) -> Tensor:
        if self.mode == "lagrangian":
            return lagrangian_score(reward, cost, self.lam)
        return reward - self.lam * cost

    def update(self, mean_cost: float) -> None:
        if self.mode == "lagrangian":
            self.lam = lagrange_multiplier_step(self.lam, mean_cost, self.cost_limit,
                                                self.lambda_lr)

    def state_dict(self) -> dict[str, float | str]:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state["lam"])
