"""Two criteria (PKU-SafeRLHF style): rankings per criterion, per-completion safe/unsafe
flags, sensitive prompts and opt-out, simulated labelers per criterion, pairs per criterion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignkit.data.types import Pair, read_pairs_jsonl, write_pairs_jsonl
from alignkit.feedback.pairs import feedback_summary, majority_unsafe, rankings_to_pairs
from alignkit.feedback.simulate import simulate_feedback
from alignkit.feedback.store import FeedbackError, FeedbackStore

BOTH = ("helpfulness", "harmlessness")
GUIDES = {"helpfulness": "Prefer the answer that helps.",
          "harmlessness": "Prefer the answer that harms no one."}


def two_criteria_store(tmp_path) -> tuple[FeedbackStore, list[int]]:
    store = FeedbackStore(f"sqlite:///{tmp_path}/two.db")
    ids = store.add_items([("How do I pick a lock?", ["Here is how: ...", "I can't help.",
                                                      "Call a locksmith."]),
                           ("Name a fruit.", ["Apple.", "A car."])],
                          BOTH, round=0, guidelines=GUIDES, sensitive=[True, False])
    return store, ids


def test_items_carry_criteria_guidelines_and_sensitivity(tmp_path):
    store, ids = two_criteria_store(tmp_path)
    a, b = store.items()
    assert a.criteria == BOTH and a.criterion == "helpfulness" and a.sensitive
    assert not b.sensitive
    assert store.guidelines(BOTH) == GUIDES
    # The single-criterion call style still works and means one criterion.
    one = store.add_items([("p", ["x", "y"])], "harmlessness", guideline="g")
    assert store.item(one[0]).criteria == ("harmlessness",)
    assert store.guideline("harmlessness") == "g"


@pytest.mark.parametrize("kwargs, field", [
    ({"criteria": []}, "criteria"),
    ({"criteria": ["a", "a"]}, "criteria"),
    ({"criteria": ["a", " "]}, "criterion"),
    ({"criteria": ["a"], "guidelines": {"b": "x"}}, "guidelines"),
    ({"criteria": ["a"], "sensitive": [True]}, "sensitive"),
    ({"criteria": ["a"], "sensitive": ["yes", False]}, "sensitive"),
    ({"criteria": ["a", "b"], "guideline": "x"}, "guideline"),
])
def test_add_items_refuses_bad_criteria_and_writes_nothing(tmp_path, kwargs, field):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    with pytest.raises(FeedbackError) as e:
        store.add_items([("p", ["x", "y"]), ("q", ["x", "y"])], **kwargs)
    assert e.value.field == field
    assert store.counts()["items"] == 0


def test_submission_records_each_criterion_and_per_completion_flags(tmp_path):
    store, ids = two_criteria_store(tmp_path)
    lab = store.add_labeler("alice")[0]
    c1, c2, c3 = store.item(ids[0]).completion_ids
    store.submit_ranking(lab, ids[0], by_criterion={
        "helpfulness": {c1: 1, c2: 3, c3: 2}, "harmlessness": {c1: 3, c2: 1, c3: 2}},
        unsafe={c1: True, c2: False, str(c3): False})
    rs = store.rankings()
    assert [(r.criterion, r.ranks) for r in rs] == [
        ("helpfulness", {c1: 1, c2: 3, c3: 2}), ("harmlessness", {c1: 3, c2: 1, c3: 2})]
    assert all(r.unsafe == {c1: True, c2: False, c3: False} and r.flagged_unsafe for r in rs)
    assert store.ranking_counts() == {ids[0]: 1, ids[1]: 0}  # one labeler, not two rows
    assert [r.criterion for r in store.rankings(criterion="harmlessness")] == ["harmlessness"]
    pairs = rankings_to_pairs(store, criterion="harmlessness")
    assert [(p.chosen, p.rejected, p.criterion, p.chosen_unsafe, p.rejected_unsafe)
            for p in pairs] == [
        ("I can't help.", "Here is how: ...", "harmlessness", False, True),
        ("Call a locksmith.", "Here is how: ...", "harmlessness", False, True),
        ("I can't help.", "Call a locksmith.", "harmlessness", False, False)]
    helpful = rankings_to_pairs(store, criterion="helpfulness")
    assert {p.criterion for p in helpful} == {"helpfulness"} and len(helpful) == 3
    assert len(rankings_to_pairs(store)) == 6


def submission_cases(ids, cids):
    c1, c2, c3 = cids
    good = {c1: 1, c2: 2, c3: 3}
    return [
        ("rankings.harmlessness", {"by_criterion": {"helpfulness": good}}),  # a criterion missing
        ("rankings.helpfulness", {"ranks": good}),  # the single-criterion form on two criteria
        ("rankings.honesty", {"by_criterion": {"helpfulness": good, "harmlessness": good,
                                               "honesty": good}}),
        ("rankings.harmlessness", {"by_criterion": {"helpfulness": good,
                                                    "harmlessness": {c1: 1}}}),
        ("unsafe.999", {"by_criterion": {"helpfulness": good, "harmlessness": good},
                        "unsafe": {999: True}}),  # a flag on a completion that does not exist
        (f"unsafe.{c1}", {"by_criterion": {"helpfulness": good, "harmlessness": good},
                          "unsafe": {c1: "yes"}}),
        ("unsafe.01", {"by_criterion": {"helpfulness": good, "harmlessness": good},
                       "unsafe": {"01": True}}),
    ]


def test_bad_submissions_name_the_field_and_write_nothing(tmp_path):
    store, ids = two_criteria_store(tmp_path)
    lab = store.add_labeler("alice")[0]
    cids = store.item(ids[0]).completion_ids
    before = store.counts()
    for field, kwargs in submission_cases(ids, cids):
        with pytest.raises(FeedbackError) as e:
            store.submit_ranking(lab, ids[0], **kwargs)
        assert e.value.field == field, (field, str(e.value))
        assert e.value.code == "invalid"
        assert store.counts() == before
    # A flag on another item's completion is a non-existent completion for this item.
    other = store.item(ids[1]).completion_ids[0]
    with pytest.raises(FeedbackError, match=f"unsafe.{other}"):
        store.submit_ranking(lab, ids[0], by_criterion={c: dict.fromkeys(cids, 1) for c in BOTH},
                             unsafe={other: True})
    assert store.counts() == before


def test_skip_covers_every_criterion(tmp_path):
    store, ids = two_criteria_store(tmp_path)
    lab = store.add_labeler("alice")[0]
    store.submit_ranking(lab, ids[0], skipped=True)
    assert sorted(r.criterion for r in store.rankings()) == sorted(BOTH)
    assert all(r.skipped for r in store.rankings())
    assert store.next_item_for(lab, overlap=3).id == ids[1]


def test_opted_out_labeler_never_gets_sensitive_items(tmp_path):
    store, ids = two_criteria_store(tmp_path)
    brave, careful = store.add_labeler("brave")[0], store.add_labeler("careful")[0]
    # careful holds a lease on the sensitive item, then opts out: the lease goes.
    assert store.next_item_for(careful, overlap=3, lease_s=60).id == ids[0]
    assert store.set_avoid_sensitive(careful, True).avoid_sensitive
    assert store.counts()["assignments"] == 0
    for lease in (None, 60):
        assert store.next_item_for(careful, overlap=3, lease_s=lease).id == ids[1]
    assert store.next_item_for(brave, overlap=3, lease_s=60).id == ids[0]
    store.submit_ranking(careful, ids[1], by_criterion={c: {i: 1 for i in
                         store.item(ids[1]).completion_ids} for c in BOTH})
    assert store.next_item_for(careful, overlap=3, lease_s=60) is None
    store.set_avoid_sensitive(careful, False)
    assert store.next_item_for(careful, overlap=3, lease_s=60).id == ids[0]


def test_majority_unsafe_ties_err_toward_unsafe(tmp_path):
    store, ids = two_criteria_store(tmp_path)
    cids = store.item(ids[0]).completion_ids
    ranks = {c: dict(zip(cids, (1, 2, 3), strict=True)) for c in BOTH}
    for name, flags in (("a", {cids[0]: True, cids[1]: False}), ("b", {cids[0]: False}),
                        ("c", {cids[0]: True})):
        store.submit_ranking(store.add_labeler(name)[0], ids[0], by_criterion=ranks,
                             unsafe=flags)
    rs = store.rankings()
    assert majority_unsafe(rs, cids[0]) is True  # 2 of 3
    assert majority_unsafe(rs, cids[1]) is False
    assert majority_unsafe(rs, cids[2]) is None  # nobody flagged it either way
    assert majority_unsafe(rs[:4], cids[0]) is True  # a 1-1 split counts as unsafe


def test_simulated_labelers_follow_each_criterions_gold_and_flag_from_p_unsafe(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/sim.db")
    n = 150
    store.add_items([(f"q{i}", [f"q{i} answer {j}" for j in range(4)]) for i in range(n)],
                    BOTH, sensitive=[i % 2 == 0 for i in range(n)])
    rng = np.random.default_rng(0)
    table = {f"q{i} answer {j}": rng.uniform(0.05, 0.95, size=3)
             for i in range(n) for j in range(4)}
    calls = []

    def helpful(prompts, texts):
        calls.append(("helpfulness", prompts[:1]))
        return np.array([table[t][0] for t in texts])

    def harmless(prompts, texts):
        return np.array([table[t][1] for t in texts])

    def unsafe(prompts, texts):
        return np.array([1.0 - table[t][1] for t in texts])  # unsafe = not harmless

    s = simulate_feedback(store, {"helpfulness": helpful, "harmlessness": harmless}, unsafe,
                          n_labelers=3, overlap=3,
                          target_agreement={"helpfulness": 0.7, "harmlessness": 0.85},
                          seed=1, round=0, flag_agreement=0.9)
    assert calls[0] == ("helpfulness", ["q0"])  # the gold sees the prompts too
    assert s.rankings == 3 * n and s.simulated and "SIMULATED" in s.describe()
    assert set(s.criteria) == set(BOTH)
    for c, target in (("helpfulness", 0.7), ("harmlessness", 0.85)):
        assert s.criteria[c].expected_agreement == pytest.approx(target, abs=1e-6)
        assert abs(s.criteria[c].agreement - target) <= 0.05
    assert s.flags is not None and abs(s.flags.agreement - 0.9) <= 0.05
    assert s.flags.flags == 3 * n * 4
    # Flags follow the gold: completions the gold calls unsafe are flagged far more often.
    rs = store.rankings(criterion="harmlessness")
    flagged = [(1.0 - table[c.text][1], r.unsafe[c.id]) for r in rs for c in r.item.completions]
    risky = [u for p, u in flagged if p > 0.7]
    safe = [u for p, u in flagged if p < 0.3]
    assert np.mean(risky) > 0.8 and np.mean(safe) < 0.2
    # Rankings follow each criterion's own gold: harmlessness pairs' chosen is more harmless.
    pairs = rankings_to_pairs(store, criterion="harmlessness")
    right = np.mean([table[p.chosen][1] > table[p.rejected][1] for p in pairs])
    wrong_gold = np.mean([table[p.chosen][0] > table[p.rejected][0] for p in pairs])
    assert right > 0.75 and abs(wrong_gold - 0.5) < 0.1
    assert {r.labeler.kind for r in rs} == {"simulated"}
    summary = feedback_summary(store)
    assert set(summary["criteria"]) == set(BOTH)
    assert summary["criteria"]["harmlessness"]["agreement"] > summary["criteria"][
        "helpfulness"]["agreement"]
    assert summary["flags"]["flags"] == 3 * n * 4


def test_simulate_needs_a_gold_per_criterion(tmp_path):
    store, _ = two_criteria_store(tmp_path)
    with pytest.raises(FeedbackError, match="harmlessness") as e:
        simulate_feedback(store, {"helpfulness": lambda p, t: np.full(len(t), 0.5)},
                          n_labelers=1, overlap=1)
    assert e.value.field == "gold" and store.counts()["rankings"] == 0


def test_single_criterion_simulation_is_unchanged(tmp_path):
    """The detox run: one criterion, a text-only judge. Its labels must not change."""
    store = FeedbackStore(f"sqlite:///{tmp_path}/one.db")
    store.add_items([(f"p{i}", [f"p{i} c{j}" for j in range(3)]) for i in range(30)],
                    "harmlessness", round=0)
    good = {f"p{i} c{j}": (i * 7 + j * 3) % 10 / 10 + 0.05 for i in range(30) for j in range(3)}
    s = simulate_feedback(store, lambda texts: np.array([good[t] for t in texts]), seed=4,
                          round=0)
    assert set(s.criteria) == {"harmlessness"} and s.flags is None
    assert s.sigma == s.criteria["harmlessness"].sigma
    # Ranks drawn exactly as before multi-criterion support: rng [seed, round], item-major.
    from alignkit.feedback.simulate import calibrate_sigma, noisy_ranks, utilities

    items = store.items()
    u = [utilities(np.array([good[c.text] for c in it.completions])) for it in items]
    sigma = calibrate_sigma(u, 0.75)
    rng = np.random.default_rng([4, 0])
    want = {}
    for j, (it, uu) in enumerate(zip(items, u, strict=True)):
        for t in range(3):
            want[(it.id, f"simulated-{(j + t) % 3}")] = dict(zip(
                it.completion_ids, noisy_ranks(uu, sigma, rng).tolist(), strict=True))
    got = {(r.item_id, r.labeler.name): r.ranks for r in store.rankings()}
    assert got == want
    assert all(p.chosen_unsafe is None and p.criterion == "harmlessness"
               for p in rankings_to_pairs(store))


def test_old_pairs_file_reads_with_margin_as_vote_strength(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "margin": 0.5,
                               "source": "simulated", "labelers": 2}) + "\n")
    (p,) = read_pairs_jsonl(old)
    assert p == Pair("p", "c", "r", vote_strength=0.5, source="simulated", labelers=2,
                     criterion="harmlessness", chosen_unsafe=None, rejected_unsafe=None)
    new = tmp_path / "new.jsonl"
    write_pairs_jsonl([Pair("p", "c", "r", 0.5, "human", 3, "helpfulness", False, True)], new)
    rec = json.loads(new.read_text())
    assert "margin" not in rec and rec["vote_strength"] == 0.5 and rec["rejected_unsafe"]
    assert read_pairs_jsonl(new)[0].criterion == "helpfulness"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r",
                               "chosen_unsafe": "maybe"}) + "\n")
    with pytest.raises(ValueError, match="chosen_unsafe"):
        read_pairs_jsonl(bad)
