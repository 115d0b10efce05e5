"""Simulated labelers hit the agreement they are tuned to, fast, and are stored as such."""

from __future__ import annotations

import time

import numpy as np
import pytest

from alignkit.feedback.simulate import (
    calibrate_sigma,
    expected_agreement,
    noisy_ranks,
    simulate_feedback,
    utilities,
)
from alignkit.feedback.store import FeedbackError, FeedbackStore


def synthetic_store(path, n_items: int = 200, k: int = 4):
    store = FeedbackStore(f"sqlite:///{path}/f.db")
    store.add_items([(f"prompt {i}", [f"p{i} c{j}" for j in range(k)]) for i in range(n_items)],
                    "harmlessness")
    rng = np.random.default_rng(7)
    table: dict[str, float] = {}

    def goodness(texts: list[str]) -> np.ndarray:
        return np.array([table.setdefault(t, rng.beta(2, 2)) for t in texts])

    return store, goodness


@pytest.mark.parametrize("target", [0.65, 0.75, 0.85])
def test_agreement_within_005_of_target(tmp_path, target):
    store, goodness = synthetic_store(tmp_path)
    start = time.perf_counter()
    summary = simulate_feedback(store, goodness, target_agreement=target, seed=3)
    assert time.perf_counter() - start < 2.0
    assert summary.rankings == 600
    assert summary.expected_agreement == pytest.approx(target, abs=1e-6)
    assert abs(summary.agreement - target) <= 0.05
    assert {r.labeler.kind for r in store.rankings()} == {"simulated"}
    assert set(store.ranking_counts().values()) == {3}


def test_rerun_fills_gaps_only_and_reuses_labelers(tmp_path):
    store, goodness = synthetic_store(tmp_path, n_items=20)
    first = simulate_feedback(store, goodness, n_labelers=4, overlap=2)
    assert first.rankings == 40 and len(store.labelers()) == 4
    again = simulate_feedback(store, goodness, n_labelers=4, overlap=2)
    assert again.rankings == 0 and len(store.labelers()) == 4
    with pytest.raises(FeedbackError, match="overlap"):
        simulate_feedback(store, goodness, n_labelers=2, overlap=3)
    store.add_labeler("human-0")
    with pytest.raises(FeedbackError, match="not simulated"):
        simulate_feedback(store, goodness, name_prefix="human")


def test_calibration_edges():
    u = [utilities(np.array([0.1, 0.5, 0.9]))]
    assert expected_agreement(u, 0.0) == 1.0
    assert expected_agreement(u, 1e6) == pytest.approx(0.5, abs=1e-3)
    sigma = calibrate_sigma(u, 0.8)
    assert expected_agreement(u, sigma) == pytest.approx(0.8, abs=1e-6)
    # Identical goodness: nothing to agree on beyond chance; the smallest noise is returned.
    same = [utilities(np.array([0.3, 0.3]))]
    assert calibrate_sigma(same, 0.75) == pytest.approx(1e-3)
    ranks = noisy_ranks(np.array([3.0, 1.0, 2.0]), 1e-6, np.random.default_rng(0))
    assert ranks.tolist() == [1, 3, 2]
