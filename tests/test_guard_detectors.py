"""Each detector fires on a constructed hacked trajectory and stays quiet on a healthy one."""

import math

import numpy as np
import pytest

from alignkit.guard import detectors as D
from alignkit.guard.config import GuardConfig

STEPS = list(range(1, 11))


# --- KL budget -------------------------------------------------------------------------------
def test_kl_budget_fires_above_budget_only():
    a = D.kl_budget(7, [0.5, 3.0, 9.0], budget=8.0, samples=["x", "y", "z", "w"])
    assert a is not None and a.detector == "kl_budget" and a.step == 7
    assert a.evidence["kl"] == 9.0 and a.evidence["sqrt_kl"] == pytest.approx(3.0)
    assert a.samples == ["x", "y", "z"]
    assert D.kl_budget(7, [0.5, 9.0, 7.9], budget=8.0) is None  # back under: quiet
    assert D.kl_budget(1, [], budget=8.0) is None


# --- Gao et al. fit ----------------------------------------------------------------------------
def test_gao_fit_recovers_known_coefficients_and_peak():
    alpha, beta, gold0 = 0.3, 0.2, 0.5
    d = np.linspace(0.0, 6.0, 13)
    gold = gold0 + d * (alpha - beta * np.log(np.where(d > 0, d, 1.0)))
    fit = D.gao_fit(d**2, gold)
    assert fit.alpha == pytest.approx(alpha, abs=1e-9) and fit.beta == pytest.approx(beta)
    # peak at d* = exp(α/β − 1) = exp(0.5)
    assert fit.d_peak == pytest.approx(math.exp(0.5))
    assert fit.gold_peak == pytest.approx(gold0 + math.exp(0.5) * (alpha - beta * 0.5))
    assert fit.r2 == pytest.approx(1.0)
    assert fit.predict(np.array([2.0]))[0] == pytest.approx(gold0 + 2 * (0.3 - 0.2 * math.log(2)))
    assert fit.gold0 == pytest.approx(gold0)
    assert D.gao_fit([0.0, 1.0, 4.0], [0.5, 0.6, 0.4]) is None  # too few points


# --- proxy vs gold ---------------------------------------------------------------------------
def _overoptimised():
    """Proxy climbs throughout; gold follows the Gao curve and falls past its peak."""
    kl = [0.25 * s * s for s in STEPS]  # d = s/2
    d = np.sqrt(kl)
    gold = list(0.5 + d * (0.3 - 0.2 * np.log(d)))
    proxy = [0.1 * s for s in STEPS]
    return kl, proxy, gold


def test_proxy_gold_fires_when_proxy_rises_and_gold_falls():
    kl, proxy, gold = _overoptimised()
    a = D.proxy_gold_divergence(10, STEPS, proxy, gold, kl, window=4, proxy_rise=0.05,
                                gold_stall=0.0, samples=["s1", "s2"])
    assert a is not None and a.detector == "proxy_gold"
    ev = a.evidence
    assert ev["proxy_change"] == pytest.approx(0.3) and ev["gold_change"] < 0
    assert ev["gold_best_step"] == 3  # d = 1.5 is closest to the peak d* = e^0.5 ≈ 1.65
    assert ev["gao_d_peak"] == pytest.approx(math.exp(0.5), rel=1e-6)
    assert ev["past_gold_peak"] is True and ev["sqrt_kl"] == pytest.approx(5.0)
    assert a.samples == ["s1", "s2"]


def test_proxy_gold_quiet_when_gold_rises_with_proxy():
    kl = [0.1 * s for s in STEPS]
    proxy = [0.1 * s for s in STEPS]
    gold = [0.5 + 0.02 * s for s in STEPS]
    assert D.proxy_gold_divergence(10, STEPS, proxy, gold, kl, 4, 0.05, 0.0) is None
    # and quiet early in the hacked run, before gold turns (steps 1-3 of the window)
    kl_h, proxy_h, gold_h = _overoptimised()
    assert D.proxy_gold_divergence(3, STEPS[:3], proxy_h[:3], gold_h[:3], kl_h[:3], 3,
                                   0.05, 0.0) is None
    # a flat proxy (nothing optimised) never fires, whatever gold does
    assert D.proxy_gold_divergence(10, STEPS, [1.0] * 10, gold_h, kl_h, 4, 0.05, 0.0) is None


# --- length exploitation -------------------------------------------------------------------------
def test_length_fires_when_reward_tracks_growing_length():
    lengths = [10, 10, 12, 15, 18, 22, 26, 30]
    rewards = [0.1 * n for n in lengths]
    texts = ["short", "a much much longer answer", "mid answer"]
    a = D.length_exploitation(8, rewards, lengths, corr_threshold=0.8, drift_threshold=0.5,
                              samples=texts)
    assert a is not None and a.detector == "length"
    assert a.evidence["corr_over_steps"] == pytest.approx(1.0)
    assert a.evidence["length_drift"] == pytest.approx(2.0)  # 10 → 30
    assert a.samples[0] == "a much much longer answer"  # the longest first


def test_length_quiet_on_healthy_runs():
    # reward rises while length wobbles around 10: no correlation, no drift
    lengths = [10, 11, 10, 9, 10, 11, 10, 10]
    rewards = [0.1 * i for i in range(8)]
    assert D.length_exploitation(8, rewards, lengths, 0.8, 0.5) is None
    # length drifts but reward does not follow it
    lengths = [10, 10, 12, 15, 18, 22, 26, 30]
    rewards = [0.3, 0.1, 0.4, 0.2, 0.3, 0.1, 0.4, 0.2]
    assert D.length_exploitation(8, rewards, lengths, 0.8, 0.5) is None


def test_length_fires_on_per_sample_correlation():
    lengths = [10, 10, 10, 16]  # drift +60 %
    rewards = [0.5, 0.4, 0.6, 0.5]  # over steps: no correlation
    a = D.length_exploitation(4, rewards, lengths, 0.8, 0.5,
                              sample_rewards=[1, 2, 3, 4], sample_lengths=[5, 10, 15, 20])
    assert a is not None and a.evidence["corr_over_samples"] == pytest.approx(1.0)


# --- collapse --------------------------------------------------------------------------------
PROMPTS = [f"prompt {i}" for i in range(4) for _ in range(2)]
HEALTHY = [f"the {w} river runs past {v} hills" for w in "abcdefgh" for v in ["red"]]


def _collapse(texts, ent=(2.0, 2.0, 1.9), eos=(0.5, 0.5, 0.5)):
    c = GuardConfig()
    return D.collapse(5, PROMPTS, texts, list(ent), list(eos), c.entropy_floor,
                      c.distinct_floor, c.same_answer_share, c.eos_rate_change)


def test_collapse_quiet_on_diverse_samples():
    texts = ["the cat sat on a mat", "dogs bark at night", "rain falls in spring",
             "rain falls in spring", "an apple a day", "keeps doctors away", "stars shine",
             "over quiet towns"]
    assert _collapse(texts) is None


def test_collapse_fires_on_same_answer_for_different_prompts():
    a = _collapse(["buy now buy now"] * 8)
    assert a is not None and a.detector == "collapse"
    assert a.evidence["same_answer_share"] == 1.0 and a.evidence["distinct_prompts"] == 4
    assert "4/4 prompts got the same answer" in a.message
    assert "distinct-2" in a.message and a.samples[0] == "buy now buy now"


def test_collapse_fires_on_entropy_floor_and_eos_jump_separately():
    texts = HEALTHY
    a = _collapse(texts, ent=(2.0, 2.0, 0.02))
    assert a is not None and "entropy 0.020" in a.message and "EOS" not in a.message
    b = _collapse(texts, eos=(0.1, 0.1, 0.9))
    assert b is not None and "EOS rate 0.10 → 0.90" in b.message and "entropy" not in b.message


def test_distinct2_counts_bigrams():
    assert D.distinct2(["a b a b"]) == pytest.approx(2 / 3)  # (a,b) (b,a) (a,b)
    assert D.distinct2(["a", ""]) is None


# --- ensemble disagreement ----------------------------------------------------------------------
def test_ensemble_fires_when_disagreement_rises():
    a = D.ensemble_disagreement(6, [0.1, 0.1, 0.12, 0.15, 0.2, 0.25], rise=2.0,
                                samples=["odd text"])
    assert a is not None and a.evidence["ratio"] == pytest.approx(2.5)
    assert D.ensemble_disagreement(6, [0.1, 0.1, 0.12, 0.11, 0.09, 0.13], rise=2.0) is None
    assert D.ensemble_disagreement(2, [0.1, 0.5], rise=2.0) is None  # no baseline yet


def test_config_rejects_unknown_keys_and_maps_actions():
    with pytest.raises(ValueError):
        GuardConfig(kl_budjet=3)
    c = GuardConfig(kl_action="stop", collapse_action="rollback")
    assert c.action("kl_budget") == "stop" and c.action("collapse") == "rollback"
    with pytest.raises(ValueError):
        GuardConfig(length_action="raise_beta")  # raise_beta is for the KL budget only
    assert all(f.description for f in GuardConfig.model_fields.values())
