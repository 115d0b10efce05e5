"""Rankings -> pairs on a database whose every pair is worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignkit.data.types import Pair, read_pairs_jsonl, write_pairs_jsonl
from alignkit.feedback.pairs import (
    bradley_terry_strengths,
    feedback_summary,
    pair_source,
    rankings_to_pairs,
)
from alignkit.feedback.store import FeedbackStore


def known_store(path) -> FeedbackStore:
    """Four items; rankings given by completion position (1 = best)."""
    store = FeedbackStore(f"sqlite:///{path}/known.db")
    ids = store.add_items(
        [("Q1", ["a", "b", "c"]), ("Q2", ["x", "y"]), ("Q3", ["p", "q", "r"]),
         ("Q4", ["m", "n"]), ("Q5", ["unranked 1", "unranked 2"])],
        "helpfulness",
    )
    who = {
        "h1": store.add_labeler("h1")[0], "h2": store.add_labeler("h2")[0],
        "h3": store.add_labeler("h3")[0], "s1": store.add_labeler("s1", "simulated")[0],
        "ai1": store.add_labeler("ai1", "ai")[0],
    }

    def rank(name: str, item: int, by_position: list[int] | None) -> None:
        cids = store.item(ids[item]).completion_ids
        if by_position is None:
            store.submit_ranking(who[name], ids[item], {}, skipped=True)
        else:
            store.submit_ranking(who[name], ids[item], dict(zip(cids, by_position, strict=True)))

    rank("h1", 0, [1, 2, 3])
    rank("h2", 0, [1, 3, 2])
    rank("h3", 0, [2, 1, 2])  # b best, a and c tied
    rank("h1", 1, [1, 2])
    rank("h2", 1, [2, 1])  # an even split: dropped
    rank("h3", 1, None)  # skipped: not a voter
    rank("s1", 2, [1, 2, 3])
    rank("h1", 2, [1, 1, 2])
    rank("ai1", 3, [2, 1])
    return store


EXPECTED_MAJORITY = [
    # Q1: (a,b) 2-1 over 3 voters; (a,c) 2-0 (h3 tied, abstains); (b,c) 2-1.
    Pair("Q1", "a", "b", 1 / 3, "human", 3),
    Pair("Q1", "a", "c", 1.0, "human", 2),
    Pair("Q1", "b", "c", 1 / 3, "human", 3),
    # Q2: 1-1, dropped. Q3: a simulated voter makes the pair simulated, never human.
    Pair("Q3", "p", "q", 1.0, "simulated", 1),
    Pair("Q3", "p", "r", 1.0, "simulated", 2),
    Pair("Q3", "q", "r", 1.0, "simulated", 2),
    Pair("Q4", "n", "m", 1.0, "ai", 1),
]


def test_majority_export_is_exactly_the_hand_computed_pairs(tmp_path):
    store = known_store(tmp_path)
    pairs = rankings_to_pairs(store)
    assert len(pairs) == 7
    for got, want in zip(pairs, EXPECTED_MAJORITY, strict=True):
        assert (got.prompt, got.chosen, got.rejected, got.source, got.labelers) == (
            want.prompt, want.chosen, want.rejected, want.source, want.labelers)
        assert got.vote_strength == pytest.approx(want.vote_strength)
    # The same from a plain list of rankings, and through the JSONL file.
    assert rankings_to_pairs(store.rankings()) == pairs
    write_pairs_jsonl(pairs, tmp_path / "pairs.jsonl")
    assert read_pairs_jsonl(tmp_path / "pairs.jsonl") == pairs


def test_bradley_terry_export(tmp_path):
    pairs = rankings_to_pairs(known_store(tmp_path), aggregate="bradley_terry")
    q1 = {(p.chosen, p.rejected): p for p in pairs if p.prompt == "Q1"}
    # Votes a>b 2:1, a>c 2:0, b>c 2:1: strengths a > b > c, and a-c is the surest pair.
    assert set(q1) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert q1[("a", "c")].vote_strength > max(q1[("a", "b")].vote_strength,
                                              q1[("b", "c")].vote_strength)
    assert all(0 < p.vote_strength < 1 for p in pairs)
    assert not [p for p in pairs if p.prompt == "Q2"]  # 1-1: equal strengths, dropped
    with pytest.raises(ValueError, match="aggregate"):
        rankings_to_pairs([], aggregate="mean")


def test_bradley_terry_prior_fixed_point():
    # Two completions, w unanimous votes: stationarity w (1 - sigmoid(2s)) = s (prior 1).
    for w in (1, 3):
        s = bradley_terry_strengths(np.array([[0.0, w], [0.0, 0.0]]))
        assert s[0] == pytest.approx(-s[1])
        assert w * (1 - 1 / (1 + math.exp(-2 * s[0]))) == pytest.approx(s[0])
    assert bradley_terry_strengths(np.zeros((3, 3))).tolist() == [0.0, 0.0, 0.0]


def test_pair_source_is_honest():
    assert pair_source(["human", "human"]) == "human"
    assert pair_source(["human", "simulated"]) == "simulated"
    assert pair_source(["human", "ai"]) == "ai"
    assert pair_source(["ai", "simulated"]) == "simulated"


def test_feedback_summary(tmp_path):
    summary = feedback_summary(known_store(tmp_path))
    assert summary["rankings"] == 8 and summary["skipped"] == 1
    assert summary["labelers"] == 5 and summary["items"] == 5 and summary["items_ranked"] == 4
    assert summary["source"] == "ai+human+simulated"
    # Pooled pairwise agreement: Q1 3/7 (h1-h2 2/3, h1-h3 1/2, h2-h3 0/2), Q2 0/1, Q3 2/2.
    assert summary["agreement"] == pytest.approx(0.5)
    assert [d["prompt"] for d in summary["most_disputed"]] == ["Q2", "Q1", "Q3"]
    assert summary["most_disputed"][1]["agreement"] == pytest.approx(3 / 7, abs=1e-4)
    assert -1 <= summary["krippendorff_alpha"] <= 1
    assert 0 <= summary["kendall_w_mean"] <= 1
