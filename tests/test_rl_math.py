"""The PPO equations on numbers computed by hand."""

import math

import pytest
import torch

from alignkit.rl import math as M
from alignkit.rl.kl_control import AdaptiveKL, FixedKL


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_kl_estimators_match_hand_values():
    logp, ref = t([-1.0, -2.0]), t([-1.5, -1.0])
    # r = ref - logp = [-0.5, 1.0]
    assert torch.allclose(M.kl_per_token(logp, ref, "k1"), t([0.5, -1.0]))
    assert torch.allclose(M.kl_per_token(logp, ref, "k2"), t([0.125, 0.5]))
    k3 = [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]  # [0.106531, 0.718282]
    assert torch.allclose(M.kl_per_token(logp, ref, "k3"), t(k3))
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        M.kl_per_token(logp, ref, "k9")


def test_k3_is_unbiased_for_true_kl():
    # KL(p||q) for two categorical distributions, estimated by sampling from p.
    p, q = t([0.7, 0.2, 0.1]), t([0.4, 0.4, 0.2])
    true_kl = float((p * (p / q).log()).sum())
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(p, 200_000, replacement=True, generator=g)
    est = M.kl_per_token(p.log()[idx], q.log()[idx], "k3").mean()
    assert abs(float(est) - true_kl) < 0.005


def test_masked_whiten_hand_values():
    x, m = t([[1.0, 2.0, 3.0, 100.0]]), t([[1, 1, 1, 0]])
    # mean 2, unbiased var 1 -> (x-2)/1, padding zeroed
    assert torch.allclose(M.masked_whiten(x, m, eps=0.0), t([[-1.0, 0.0, 1.0, 0.0]]))
    assert torch.allclose(M.masked_whiten(x, m, shift_mean=False, eps=0.0),
                          t([[1.0, 2.0, 3.0, 0.0]]))


def test_shape_rewards_puts_score_on_last_real_token():
    kl, m = t([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), t([[1, 1, 0], [1, 1, 1]])
    r = M.shape_rewards(t([1.0, 2.0]), kl, m, beta=0.5)
    assert torch.allclose(r, t([[-0.05, -0.1 + 1.0, 0.0], [-0.2, -0.25, -0.3 + 2.0]]))


def test_gae_hand_computed():
    rewards, values = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.7]])
    m = t([[1, 1, 1]])
    gamma, lam = 0.9, 0.5
    # deltas: d2 = 1 - 0.7 = 0.3; d1 = 0 + .9*.7 - .6 = 0.03; d0 = .9*.6 - .5 = 0.04
    # A2 = .3; A1 = .03 + .45*.3 = .165; A0 = .04 + .45*.165 = .11425
    adv, ret = M.gae(rewards, values, m, gamma, lam)
    assert torch.allclose(adv, t([[0.11425, 0.165, 0.3]]))
    assert torch.allclose(ret, t([[0.61425, 0.765, 1.0]]))


def test_gae_ignores_padding():
    rewards, values, m = t([[1.0, 9.0]]), t([[0.25, 9.0]]), t([[1, 0]])
    adv, ret = M.gae(rewards, values, m, 1.0, 1.0)
    assert torch.allclose(adv, t([[0.75, 0.0]])) and torch.allclose(ret, t([[1.0, 0.0]]))


def test_clipped_policy_loss_hand_computed():
    old = t([[0.0, 0.0]])
    logp = t([[math.log(1.5), math.log(0.5)]])  # ratios 1.5 and 0.5
    adv, m = t([[1.0, -1.0]]), t([[1, 1]])
    loss, clipfrac, approxkl = M.clipped_policy_loss(logp, old, adv, m, clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped)
    assert math.isclose(float(loss), (-1.2 + 0.8) / 2)
    assert math.isclose(float(clipfrac), 1.0)
    assert math.isclose(float(approxkl), 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 2)


def test_clipped_value_loss_hand_computed():
    v, old, ret, m = t([[2.0, 0.0]]), t([[1.0, 0.0]]), t([[3.0, 1.0]]), t([[1, 1]])
    loss, clipfrac = M.clipped_value_loss(v, old, ret, m, clip=0.5)
    # token 0: unclipped (2-3)^2 = 1, clipped v=1.5 -> 2.25 -> max 2.25; token 1: 1 and 1
    assert math.isclose(float(loss), 0.5 * (2.25 + 1.0) / 2)
    assert math.isclose(float(clipfrac), 0.5)


def test_rloo_and_grpo_advantages():
    s = t([[1.0, 2.0, 6.0]])
    # leave-one-out baselines: 4, 3.5, 1.5
    assert torch.allclose(M.rloo_advantages(s), t([[-3.0, -1.5, 4.5]]))
    std = float(s.std())
    assert torch.allclose(M.grpo_advantages(s, eps=0.0), (s - 3.0) / std)
    with pytest.raises(ValueError):
        M.rloo_advantages(t([[1.0]]))


def test_adaptive_kl_controller_clips_error():
    ctl = AdaptiveKL(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=60.0, n_samples=10)  # error clipped to +0.2
    assert math.isclose(ctl.value, 0.1 * (1 + 0.2 * 10 / 100))
    ctl = AdaptiveKL(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=4.5, n_samples=10)  # error -0.25 -> -0.2
    assert math.isclose(ctl.value, 0.1 * (1 - 0.2 * 0.1))
    fixed = FixedKL(0.3)
    fixed.update(100.0, 10)
    assert fixed.value == 0.3
