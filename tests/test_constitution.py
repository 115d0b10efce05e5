"""SL-CAI: constitution loading and the answer → critique → revise data flow."""

import pytest

from alignkit.data.types import read_pairs_jsonl, write_pairs_jsonl
from alignkit.safety.constitution import (
    LMGenerator,
    critique_and_revise,
    load_constitution,
    revision_pairs,
    sft_records,
)


def test_default_constitution_has_sixteen_principles_over_three_criteria():
    c = load_constitution()
    assert len(c.principles) == 16
    assert {p.category for p in c.principles} == {"harmlessness", "honesty", "helpfulness"}
    assert len({p.name for p in c.principles}) == 16
    assert all(p.critique and p.revision and p.choice.endswith("?") for p in c.principles)
    assert any(p.examples for p in c.principles)


def test_bad_constitution_names_the_missing_field(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("principles:\n  - name: x\n    critique: y\n")
    with pytest.raises(ValueError, match="revision"):
        load_constitution(f)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_constitution(tmp_path / "missing.yaml")


class ScriptedModel:
    """Answers rudely, critiques, then revises to a numbered polite text; records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, conversations):
        self.calls.append(conversations)
        out = []
        for conv in conversations:
            last = conv[-1]["content"]
            if last.startswith("Critique request:"):
                out.append("Critique: the answer is rude.")
            elif last.startswith("Revision request:"):
                out.append(f"Revision: polite answer v{len(self.calls)}")
            else:
                out.append("rude answer")
        return out


def test_critique_and_revise_known_trajectory(tmp_path):
    c = load_constitution()
    model = ScriptedModel()
    prompts = ["p1", "p2", "p3"]
    revs = critique_and_revise(model, prompts, c, rounds=2, seed=3, few_shot=False)
    # 1 answer call + 2 rounds × (critique + revision) calls, each batched over all prompts
    assert len(model.calls) == 5 and all(len(call) == 3 for call in model.calls)
    for r, p in zip(revs, prompts, strict=True):
        assert r.prompt == p and r.original == "rude answer"
        assert r.final == "polite answer v5"  # the label "Revision:" is stripped
        assert [s.critique for s in r.steps] == ["the answer is rude."] * 2
        assert all(c.get(s.principle) for s in r.steps)
    # round 2 critiques the round-1 revision, not the original
    assert model.calls[3][0][-2]["content"] == "polite answer v3"
    pairs = revision_pairs(revs)
    assert [(q.chosen, q.rejected, q.source, q.vote_strength) for q in pairs] == [
        ("polite answer v5", "rude answer", "ai", 1.0)] * 3
    write_pairs_jsonl(pairs, tmp_path / "pairs.jsonl")
    assert read_pairs_jsonl(tmp_path / "pairs.jsonl") == pairs
    assert sft_records(revs)[0] == {"prompt": "p1", "completion": "polite answer v5"}
    # same seed → same principles; another seed → (almost surely) different ones
    again = critique_and_revise(ScriptedModel(), prompts, c, rounds=2, seed=3, few_shot=False)
    other = critique_and_revise(ScriptedModel(), prompts * 4, c, rounds=2, seed=4,
                                few_shot=False)
    names = lambda rs: [s.principle for r in rs for s in r.steps]  # noqa: E731
    assert names(again) == names(revs) and names(other)[:6] != names(revs)


def test_few_shot_examples_precede_the_conversation():
    c = load_constitution()
    model = ScriptedModel()
    critique_and_revise(model, ["q"] * 40, c, rounds=1, seed=0, few_shot=True)
    convs = model.calls[1]
    with_examples = [conv for conv in convs if len(conv) > 3]
    assert with_examples, "some drawn principle has examples"
    assert all(conv[-3]["content"] == "q" for conv in convs)


def test_unchanged_or_empty_revisions_give_no_pair():
    c = load_constitution()
    revs = critique_and_revise(lambda convs: [""] * len(convs), ["a", "b"], c,
                               responses=["same", "same"], few_shot=False)
    assert [r.final for r in revs] == ["same", "same"]
    assert revision_pairs(revs) == [] and sft_records(revs) == []


def test_sl_cai_runs_on_the_tiny_model(tiny_tokenizer):
    from alignkit.models.loading import TINY, load_causal_lm

    lm = load_causal_lm(TINY, tiny_tokenizer)
    gen = LMGenerator(lm, tiny_tokenizer, max_new_tokens=6, batch_size=4, seed=0)
    revs = critique_and_revise(gen, ["Tell me about cats.", "Say something rude."],
                               load_constitution(), rounds=2, seed=0, few_shot=False)
    assert len(revs) == 2 and all(len(r.steps) == 2 for r in revs)
    assert all(isinstance(r.final, str) for r in revs)
    # seeded: the same generator settings reproduce the same texts
    gen2 = LMGenerator(lm, tiny_tokenizer, max_new_tokens=6, batch_size=4, seed=0)
    revs2 = critique_and_revise(gen2, ["Tell me about cats.", "Say something rude."],
                                load_constitution(), rounds=2, seed=0, few_shot=False)
    assert [r.final for r in revs2] == [r.final for r in revs]
    assert all(p.source == "ai" for p in revision_pairs(revs))


def test_generator_batches_by_length_but_returns_inputs_order(tiny_tokenizer):
    import torch

    class EchoLast:
        """'Generates' one token: the prompt's last token (so outputs identify inputs)."""

        def generate(self, input_ids, attention_mask, **kw):
            return torch.cat([input_ids, input_ids[:, -1:]], dim=1)

    gen = LMGenerator(EchoLast(), tiny_tokenizer, batch_size=2)
    texts = ["one two three four five six seven dog", "cat", "a b house", "x y z w tree"]
    assert gen.complete(texts) == ["dog", "cat", "house", "tree"]
