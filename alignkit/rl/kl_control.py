"""KL coefficient controllers: fixed β, or the adaptive rule of Ziegler et al. (2019)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FixedKL:
    value: float

    def update(self, current_kl: float, n_samples: int) -> None:
        """A fixed β ignores the observed KL."""

    def set(self, value: float) -> None:
        """β from outside the loop (the guard's raise_beta, a learner told by the driver)."""
        self.value = float(value)

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


@dataclass
class AdaptiveKL(FixedKL):
    """β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon): a proportional controller.

    The error is clipped at ±20% so one noisy batch cannot swing β.
    """

    target: float = 6.0
    horizon: int = 10000

    def update(self, current_kl: float, n_samples: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon


def make_kl_controller(init: float, adaptive: bool, target: float, horizon: int) -> FixedKL:
    return AdaptiveKL(init, target, horizon) if adaptive else FixedKL(init)
