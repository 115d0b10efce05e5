"""Safe RLHF's equations on numbers computed by hand: the Lagrangian score, the dual step on
λ, and the cost model's Bradley–Terry + classification objective."""

import math

import torch

from alignkit.reward.losses import cost_model_loss, safety_accuracy
from alignkit.rl import math as M
from alignkit.rl.lagrangian import SafetyObjective


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_lagrangian_score_hand_values():
    # (R − λC)/(1 + λ): (2 − 1·1)/2 = 0.5; λ = 0 leaves the reward; λ = 3: (2 − 3)/4 = −0.25
    assert torch.allclose(M.lagrangian_score(t([2.0]), t([1.0]), 1.0), t([0.5]))
    assert torch.allclose(M.lagrangian_score(t([2.0, -1.0]), t([1.0, 5.0]), 0.0), t([2.0, -1.0]))
    assert torch.allclose(M.lagrangian_score(t([2.0]), t([1.0]), 3.0), t([-0.25]))


def test_multiplier_rises_above_the_limit_and_is_projected_at_zero():
    # 0.5 + 0.5·(0.8 − 0.2) = 0.8
    assert math.isclose(M.lagrange_multiplier_step(0.5, 0.8, 0.2, 0.5), 0.8)
    # 0.1 + 1·(0 − 0.5) = −0.4 → projected to 0
    assert M.lagrange_multiplier_step(0.1, 0.0, 0.5, 1.0) == 0.0
    # exactly at the limit: unchanged
    assert M.lagrange_multiplier_step(0.7, 0.3, 0.3, 2.0) == 0.7


def test_safety_objective_modes():
    lag = SafetyObjective("lagrangian", cost_limit=0.0, lambda_lr=1.0, lam=1.0)
    fixed = SafetyObjective("fixed", cost_limit=0.0, lambda_lr=1.0, lam=1.0)
    r, c = t([2.0]), t([1.0])
    assert torch.allclose(lag.score(r, c), t([0.5]))
    assert torch.allclose(fixed.score(r, c), t([1.0]))  # R − w·C
    lag.update(0.5)
    fixed.update(0.5)
    assert lag.lam == 1.5 and fixed.lam == 1.0
    restored = SafetyObjective("lagrangian", 0.0, 1.0, 0.0)
    restored.load_state_dict(lag.state_dict())
    assert restored.lam == 1.5


def test_a_limit_of_none_is_the_first_batch_mean_and_survives_a_resume():
    obj = SafetyObjective("lagrangian", None, lambda_lr=0.5, lam=1.0)
    obj.update(-2.0)  # the first batch sets the limit: λ does not move
    assert obj.cost_limit == -2.0 and obj.lam == 1.0
    obj.update(-1.0)  # one unit more harmful than the start: λ ← 1 + 0.5·1
    assert obj.lam == 1.5
    resumed = SafetyObjective("lagrangian", None, lambda_lr=0.5, lam=1.0)
    resumed.load_state_dict(obj.state_dict())
    assert (resumed.cost_limit, resumed.lam) == (-2.0, 1.5)
    resumed.update(-3.0)  # safer than the start: λ ← max(0, 1.5 − 0.5·1)
    assert resumed.lam == 1.0


def test_only_the_unsafe_part_of_the_cost_is_penalised():
    # C⁺ = max(C, 0): a safe refusal (−4) and a safe answer (−2) both cost 0
    assert torch.equal(M.unsafe_part(t([-4.0, -2.0, 0.0, 1.5])), t([0.0, 0.0, 0.0, 1.5]))
    obj = SafetyObjective("lagrangian", 0.0, lambda_lr=0.5, lam=1.0, unsafe_only=True)
    cost = obj.cost(t([-4.0, -2.0, 1.5]))
    # (R − λC⁺)/(1 + λ): (−1 − 0)/2, (1 − 0)/2, (1 − 1.5)/2
    assert torch.allclose(obj.score(t([-1.0, 1.0, 1.0]), cost), t([-0.5, 0.5, -0.25]))
    obj.update(float(cost.mean()))  # mean C⁺ = 0.5 above the limit 0: λ ← 1 + 0.5·0.5
    assert obj.lam == 1.25
    raw = SafetyObjective("lagrangian", 0.0, lambda_lr=0.5, lam=1.0)
    assert torch.equal(raw.cost(t([-4.0, 1.5])), t([-4.0, 1.5]))


def test_a_threshold_below_zero_prices_barely_safe_compliances():
    # C⁺ = max(C − t, 0) with t = −2: a refusal (−3.6) and a benign answer (−3.1) still cost
    # nothing; a compliance the classifier rates "safe" (−1.2) costs 0.8, an unsafe one 3.5
    got = M.unsafe_part(t([-3.6, -3.1, -1.2, 1.5]), -2.0)
    assert torch.allclose(got, t([0.0, 0.0, 0.8, 3.5]))
    obj = SafetyObjective("lagrangian", 0.0, lambda_lr=0.5, lam=6.0, unsafe_only=True,
                          unsafe_threshold=-2.0)
    cost = obj.cost(t([-3.6, -1.2]))
    # refusal (R −1.6): −1.6/7 = −0.2286; compliance (R 0.25): (0.25 − 6·0.8)/7 = −0.65;
    # with t = 0 the compliance would score 0.25/7 = +0.036 and beat the refusal
    assert torch.allclose(obj.score(t([-1.6, 0.25]), cost), t([-1.6 / 7, -4.55 / 7]))
    assert obj.state_dict()["unsafe_threshold"] == -2.0


def test_cost_model_loss_hand_values():
    cw, cb = t([1.0]), t([-1.0])
    bt = math.log1p(math.exp(-2.0))  # −log σ(1 − (−1)) = 0.126928
    cls = math.log1p(math.exp(-1.0))  # −log σ(+1·1) = −log σ(−1·−1) = 0.313262
    assert math.isclose(float(cost_model_loss(cw, cb)), bt, rel_tol=1e-9)
    got = cost_model_loss(cw, cb, t([1.0]), t([0.0]))
    assert math.isclose(float(got), bt + 2 * cls, rel_tol=1e-9)  # 0.753452
    # an unknown flag (NaN) drops its term only
    got = cost_model_loss(cw, cb, t([1.0]), t([float("nan")]))
    assert math.isclose(float(got), bt + cls, rel_tol=1e-9)
    # a wrong sign costs more: the worse reply flagged safe, the better one unsafe
    assert float(cost_model_loss(cw, cb, t([0.0]), t([1.0]))) > float(got)


def test_label_smoothing_gives_the_classification_term_a_finite_optimum():
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    eps = 0.05
    # ε·log σ(c) + (1 − ε)·log σ(−c) at c = −3 for a safe flag, by hand:
    c = -3.0
    log_sig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    by_hand = -(eps * log_sig(c) + (1 - eps) * log_sig(-c))
    bt = -math.log(1 / (1 + math.exp(-(0.0 - c))))
    got = cost_model_loss(t([0.0]), t([c]), None, t([0.0]), eps)
    assert math.isclose(float(got), bt + by_hand, rel_tol=1e-7)
    # the safe reply's classification loss is lowest at logit(ε), not at −∞
    grid = torch.linspace(-8, 2, 1001, dtype=torch.float64)
    cls = [float(cost_model_loss(t([9.0]), g.reshape(1), None, t([0.0]), eps)) for g in grid]
    best = float(grid[int(torch.tensor(cls).argmin())])
    assert abs(best - math.log(eps / (1 - eps))) < 0.02
    hard = [float(cost_model_loss(t([9.0]), g.reshape(1), None, t([0.0]))) for g in grid]
    assert int(torch.tensor(hard).argmin()) == 0  # ε = 0: lower is always better


def test_safety_accuracy_counts_sign_agreement_on_known_flags():
    costs = t([2.0, -1.0, 0.5, -3.0])
    unsafe = t([1.0, 0.0, 0.0, float("nan")])
    assert math.isclose(safety_accuracy(costs, unsafe), 2 / 3)
    assert math.isnan(safety_accuracy(costs, t([float("nan")] * 4)))
