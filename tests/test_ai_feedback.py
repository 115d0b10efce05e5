"""RLAIF: the log-prob multiple-choice labeler on stub models with known answers."""

import math

import numpy as np
import pytest
import torch

from alignkit.data.types import Pair
from alignkit.feedback.pairs import rankings_to_pairs
from alignkit.feedback.store import FeedbackStore
from alignkit.safety.ai_feedback import (
    COT_CLAMP,
    LogProbLabeler,
    ai_feedback,
    gold_agreement,
    option_token_ids,
    ranks_from_probabilities,
)
from alignkit.safety.constitution import load_constitution


class Out:
    def __init__(self, logits):
        self.logits = logits


class FavoursA(torch.nn.Module):
    """Always puts logit +3 on ' A' and 0 on ' B', whatever the question."""

    def __init__(self, tok, gap=3.0):
        super().__init__()
        self.a, self.b = option_token_ids(tok)
        self.vocab, self.gap = len(tok), gap

    def forward(self, input_ids, attention_mask=None, **kw):
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        logits[:, -1, self.a] = self.gap
        return Out(logits)


class PrefersPolite(torch.nn.Module):
    """Reads the question: the option whose line contains 'polite' gets logit +2."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok
        self.a, self.b = option_token_ids(tok)

    def forward(self, input_ids, attention_mask=None, **kw):
        logits = torch.zeros(input_ids.shape[0], 1, len(self.tok))
        for r, ids in enumerate(input_ids):
            text = self.tok.decode(ids[attention_mask[r].bool()])
            line_a = text.split("(A)")[-1].split("(B)")[0]
            line_b = text.split("(B)")[-1]
            logits[r, -1, self.a] = 2.0 * ("polite" in line_a)
            logits[r, -1, self.b] = 2.0 * ("polite" in line_b)
        return Out(logits)


@pytest.fixture(scope="module")
def constitution():
    return load_constitution()


def test_option_tokens_are_single_tokens(tiny_tokenizer):
    a, b = option_token_ids(tiny_tokenizer)
    assert tiny_tokenizer.decode([a]) == " A" and tiny_tokenizer.decode([b]) == " B"


def test_labeler_whose_answer_is_known_and_position_bias_cancels(tiny_tokenizer, constitution):
    sig = 1.0 / (1.0 + math.exp(-3.0))
    prompts, a, b = ["q1", "q2"], ["x", "y"], ["z", "w"]
    biased = LogProbLabeler(FavoursA(tiny_tokenizer), tiny_tokenizer, constitution,
                            principles_per_pair=3, swap=False)
    p, used = biased.probabilities(prompts, a, b)
    np.testing.assert_allclose(p, [sig, sig], atol=1e-6)
    assert [len(u) for u in used] == [3, 3]
    pairs = biased.label_pairs(prompts, a, b)
    assert [(q.chosen, q.rejected, q.source) for q in pairs] == [("x", "z", "ai"),
                                                                   ("y", "w", "ai")]
    assert pairs[0].vote_strength == pytest.approx(abs(sig - 0.5) * 2, abs=1e-6)
    # both orders: "always A" says nothing about the content → exactly 0.5, no pair
    fair = LogProbLabeler(FavoursA(tiny_tokenizer), tiny_tokenizer, constitution, swap=True)
    p, _ = fair.probabilities(prompts, a, b)
    np.testing.assert_allclose(p, [0.5, 0.5], atol=1e-6)
    assert fair.label_pairs(prompts, a, b) == []


def test_content_preference_survives_swapping(tiny_tokenizer, constitution):
    sig2 = 1.0 / (1.0 + math.exp(-2.0))
    lab = LogProbLabeler(PrefersPolite(tiny_tokenizer), tiny_tokenizer, constitution,
                         principles_per_pair=2, swap=True)
    p, _ = lab.probabilities(["q", "q"], ["a polite reply", "rude reply"],
                             ["rude reply", "a polite reply"])
    np.testing.assert_allclose(p, [sig2, 1 - sig2], atol=1e-6)
    pairs = lab.label_pairs(["q", "q"], ["a polite reply", "rude reply"],
                            ["rude reply", "a polite reply"])
    assert all(q.chosen == "a polite reply" for q in pairs)


def test_chain_of_thought_is_clamped(tiny_tokenizer, constitution):
    seen = []

    def reason(texts):
        seen.extend(texts)
        return ["A seems fine."] * len(texts)

    lab = LogProbLabeler(FavoursA(tiny_tokenizer, gap=8.0), tiny_tokenizer, constitution,
                         principles_per_pair=1, swap=False, cot=True, cot_generate=reason)
    p, _ = lab.probabilities(["q"], ["x"], ["y"])
    assert p[0] == pytest.approx(COT_CLAMP[1])
    assert seen and seen[0].endswith("Let's think step by step:")
    with pytest.raises(ValueError, match="cot_generate"):
        LogProbLabeler(FavoursA(tiny_tokenizer), tiny_tokenizer, constitution, cot=True)


def test_ranks_from_soft_wins():
    # 0 beats 1 (0.9), 0 beats 2 (0.8), 2 beats 1 (P(1≻2) = 0.3): order 0, 2, 1
    assert ranks_from_probabilities(3, {(0, 1): 0.9, (0, 2): 0.8, (1, 2): 0.3}) == [1, 3, 2]
    assert ranks_from_probabilities(2, {(0, 1): 0.5}) == [1, 1]


def test_gold_agreement_known_answer():
    good = lambda texts: np.array([1.0 if "good" in t else 0.0 for t in texts])  # noqa: E731
    pairs = [Pair("p", "good", "bad", 0.8, "ai"), Pair("p", "bad", "good", 0.2, "ai"),
             Pair("p", "good a", "good b", 0.5, "ai")]  # judge tie: skipped
    g = gold_agreement(pairs, good)
    assert g["pairs"] == 2 and g["agreement"] == 0.5 and g["weighted"] == pytest.approx(0.8)


def test_ai_feedback_ranks_store_items_as_an_ai_labeler(tiny_tokenizer, constitution):
    store = FeedbackStore("sqlite://")
    store.add_items([("hello", ["rude one", "a polite one", "rude two"]),
                     ("bye", ["a polite bye", "rude bye"])], "harmlessness")
    good = lambda texts: np.array([0.9 if "polite" in t else 0.1 for t in texts])  # noqa: E731
    s = ai_feedback(store, PrefersPolite(tiny_tokenizer), tiny_tokenizer, constitution,
                    principles_per_pair=2, goodness=good)
    assert s.rankings == 2 and sum(s.principles.values()) == 2 * 4
    assert store.labeler_by_name("ai-labeler").kind == "ai"
    exported = rankings_to_pairs(store)
    assert {p.source for p in exported} == {"ai"}
    # polite beats each rude one; the two rude ones tie (no pair)
    assert sorted((p.chosen, p.rejected) for p in exported) == sorted([
        ("a polite one", "rude one"), ("a polite one", "rude two"), ("a polite bye", "rude bye")])
    assert len(s.pairs) == 3 and all(0 < p.vote_strength < 1 and p.source == "ai" for p in s.pairs)
    assert s.gold == {"agreement": 1.0, "weighted": 1.0, "pairs": 3}
    # a re-run ranks nothing twice
    assert ai_feedback(store, PrefersPolite(tiny_tokenizer), tiny_tokenizer,
                       constitution).rankings == 0


def test_rlaif_data_flow_on_the_tiny_model(tiny_tokenizer, constitution):
    from alignkit.models.loading import TINY, load_causal_lm

    lm = load_causal_lm(TINY, tiny_tokenizer)
    store = FeedbackStore("sqlite://")
    store.add_items([(f"prompt {i}", [f"answer {i} a", f"answer {i} b", f"answer {i} c"])
                     for i in range(3)], "harmlessness")
    s = ai_feedback(store, lm, tiny_tokenizer, constitution, principles_per_pair=2)
    assert s.rankings == 3
    rs = store.rankings()
    assert len(rs) == 3 and all(sorted(r.ranks.values())[0] == 1 for r in rs)
    assert all(p.source == "ai" and 0.0 <= p.vote_strength <= 1.0 for p in s.pairs)
    assert all(p.source == "ai" for p in rankings_to_pairs(store))
