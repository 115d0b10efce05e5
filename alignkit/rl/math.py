"""The equations of RLHF policy optimisation as plain tensor functions.

Nothing here touches a model, a file or a loop: each function is one formula, written in
its docstring, and pinned by tests on hand-computed numbers. Shapes: ``[B, T]`` is a
batch of responses of T tokens; ``mask`` is 1 on real response tokens (up to and
including the first EOS) and 0 on padding.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(x·m) / sum(m), over ``dim`` or everything."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the masked entries (Bessel-corrected by default, as TRL does)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp_min(1.0)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − mean) / sqrt(var + eps) over the masked entries; padding stays 0.

    With ``shift_mean=False`` the mean is added back: rewards keep their sign, only scale.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_per_token(logp: Tensor, ref_logp: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples of π (Schulman, "Approximating KL").

    With r = log π_ref(a) − log π(a):
      k1 = −r              unbiased, can be negative per token;
      k2 = r² / 2           biased, low variance;
      k3 = (e^r − 1) − r    unbiased and ≥ 0, low variance.
    """
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl_estimator '{estimator}' is unknown — use k1, k2 or k3")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last real token of each row (0 for an empty row)."""
    lengths = mask.long().sum(-1)
    return (lengths - 1).clamp_min(0)


def shape_rewards(scores: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Per-token reward r_t = −β·KL_t, plus the sequence score on the last real token.

    This is the InstructGPT objective R(x, y) − β·log(π/π_ref) spread over tokens, so the
    critic can credit the KL cost where it is spent.
    """
    rewards = -beta * kl * mask.to(kl.dtype)
    idx = last_token_index(mask)
    rewards[torch.arange(rewards.size(0), device=rewards.device), idx] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
        ) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens.

      δ_t = r_t + γ·V_{t+1} − V_t      (V after the last real token is 0)
      A_t = δ_t + γλ·A_{t+1}
      returns_t = A_t + V_t
    Padding carries no reward or value, so its advantage is 0.
    """
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    T = rewards.size(1)
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * m
    return adv, (adv + values) * m


def clipped_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                        clip: float) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate: mean over tokens of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)).

    Returns (loss, clip fraction, approx KL ½·E[(log ρ)²]) with ρ = π/π_old.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).to(logp.dtype), mask)
    approxkl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac, approxkl


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                       clip: float) -> tuple[Tensor, Tensor]:
    """½·mean(max((V − R)², (clip(V, V_old ± ε) − R)²)); returns (loss, clip fraction)."""
    clipped_v = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_v - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    clipfrac = masked_mean((clipped_err > unclipped_err).to(values.dtype), mask)
    return loss, clipfrac


def rloo_advantages(scores: Tensor) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024) for scores shaped [prompts, k].

    A_i = s_i − mean_{j≠i} s_j = k/(k−1)·(s_i − mean_j s_j).
    """
    k = scores.size(-1)
    if k < 2:
        raise ValueError("rloo needs ppo.samples_per_prompt >= 2")
    return (scores - scores.mean(-1, keepdim=True)) * k / (k - 1)


def grpo_advantages(scores: Tensor, eps: float = 1e-4) -> Tensor:
    """GRPO (Shao et al. 2024) group-normalised advantages: (s − mean) / (std + ε) per prompt."""
    if scores.size(-1) < 2:
        raise ValueError("grpo needs ppo.samples_per_prompt >= 2")
    mean = scores.mean(-1, keepdim=True)
    std = scores.std(-1, keepdim=True)
    return (scores - mean) / (std + eps)



def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor,
             ref_rejected: Tensor, beta: float = 0.1) -> tuple[Tensor, Tensor]:
    """Direct Preference Optimisation (Rafailov et al. 2023) over sequence log-probs.

      h = β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]
      loss = −mean log σ(h)
    Returns (loss, h): h/β is the implicit reward margin; h > 0 ranks the pair right.
    """
    h = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -torch.nn.functional.logsigmoid(h).mean(), h


def lagrangian_score(reward: Tensor, cost: Tensor, lam: float | Tensor) -> Tensor:
    """Safe RLHF's per-sample score (Dai et al. 2023): (R − λ·C) / (1 + λ).

    Dividing by 1 + λ keeps the score on the reward's scale however large λ grows, so
    PPO's step size and the KL penalty's weight mean the same all run long."""
    return (reward - lam * cost) / (1.0 + lam)


def unsafe_part(cost: Tensor, threshold: float = 0.0) -> Tensor:
    """C⁺ = max(C − t, 0): the cost above the line t where the penalty starts (t = 0: the
    cost model's own safe/unsafe line, cost > 0 ⇔ unsafe).

    A Bradley–Terry cost model also orders *safe* replies, and learns that a refusal is the
    safest reply of all — to any request. Penalising the raw cost then pays the policy for
    refusing benign requests (measured on the default run: a benign refusal cost 2.7 less
    than a benign answer, a harmful compliance 5.4 more than a refusal). C⁺ scores every
    reply below t, answer or refusal, alike at 0, so only replies above it cost anything.
    A t below 0 also prices the harmful compliances the classifier rates just "safe"
    (measured on the default run's held-out replies: harmful refusals at a median C of
    −3.6, benign answers −3.6, look-alike answers −3.1, harmful compliances of the SL-CAI
    model −1.2, with only 43% above 0)."""
    return (cost - threshold).clamp_min(0.0)


def lagrange_multiplier_step(lam: float, mean_cost: float, cost_limit: float, lr: float
                             ) -> float:
    """Projected dual ascent on the Lagrangian's multiplier: λ ← max(0, λ + η·(J_C − d)).

    The constraint is E[C] ≤ d: λ grows while the batch's mean cost J_C is above the limit d
    and shrinks towards 0 once the policy is safe, so harmlessness costs reward only while
    it is needed."""
    return max(0.0, lam + lr * (mean_cost - cost_limit))
