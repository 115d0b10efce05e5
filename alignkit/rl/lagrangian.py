"""The reward–cost trade-off of PPO-Lagrangian (Safe RLHF), as a small stateful object.

The trainer asks it for each sample's score from (reward, cost) and, once per step, hands it
the batch's mean cost so λ follows the constraint E[C] ≤ cost_limit by dual ascent. A fixed
weight (score = R − w·C, λ never moves) is the baseline Safe RLHF compares against.

A limit of ``None`` is taken from the first batch: "no more harmful than the policy PPO
starts from". The cost model's scale is learned anew each run, so a fixed number can sit far
above the starting policy's mean cost (λ then falls to 0 at once and the helpfulness reward
alone pulls the warm start's refusals back to compliance, as measured on the default run
with a limit of 0) or far below it (λ grows without bound).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from torch import Tensor

from alignkit.rl.math import lagrange_multiplier_step, lagrangian_score, unsafe_part

CostMode = Literal["lagrangian", "fixed"]


@dataclass
class SafetyObjective:
    mode: CostMode
    cost_limit: float | None
    lambda_lr: float
    lam: float
    unsafe_only: bool = False  # penalise C⁺ = max(C − t, 0) instead of C (rl.math.unsafe_part)
    unsafe_threshold: float = 0.0  # t

    def cost(self, raw: Tensor) -> Tensor:
        """The cost the score and the constraint use: the cost model's, or its unsafe part."""
        return unsafe_part(raw, self.unsafe_threshold) if self.unsafe_only else raw

    def score(self, reward: Tensor, cost: Tensor) -> Tensor:
        if self.mode == "lagrangian":
            return lagrangian_score(reward, cost, self.lam)
        return reward - self.lam * cost

    def update(self, mean_cost: float) -> None:
        if self.cost_limit is None:
            self.cost_limit = mean_cost
        if self.mode == "lagrangian":
            self.lam = lagrange_multiplier_step(self.lam, mean_cost, self.cost_limit,
                                                self.lambda_lr)

    def state_dict(self) -> dict[str, float | str]:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state["lam"])
        if state.get("cost_limit") is not None:  # a resumed run keeps the limit it set
            self.cost_limit = float(state["cost_limit"])
