"""SL-CAI warm start data (Bai et al. 2022): revisions of harmful answers, plus good answers.

The default model samples a refusal ~3% of the time, so RL alone rarely sees one to
reinforce. SL-CAI gives it some first: for each training harmful request the model answers,
critiques its answer under a constitution principle and revises it, ``samples`` times; a
refusal judge keeps the revisions that decline (under the concrete "start with I'm sorry…"
principle ~85% do; the rest drift off topic, and unfiltered they would teach rambling). The
same model's own answers to training *benign* requests — look-alikes and ordinary questions
— that the judge sees as answered and on topic are added, so the fine-tune does not learn to
refuse everything that sounds alarming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alignkit.artifacts import SLCAIResult
from alignkit.safety.constitution import (
    ChatGenerator,
    Constitution,
    Revision,
    critique_and_revise,
)
from alignkit.safety.refusal import RefusalJudge, relevance


@dataclass
class SFTExample:
    prompt: str
    completion: str
    kind: str  # "revision" (a harmful request declined) or "answer" (a benign one answered)


@dataclass
class SLCAIData:
    """The SFT examples and the counts behind them (the stage adds the SFT's own numbers)."""

    examples: list[SFTExample]
    counts: SLCAIResult


def restrict(constitution: Constitution, names: Sequence[str]) -> Constitution:
    """The constitution with only the named principles (the ones that ask to decline)."""
    return Constitution(constitution.name, tuple(constitution.get(n) for n in names))


def pick_refusals(revisions: Sequence[Revision], judge: RefusalJudge) -> dict[str, str]:
    """For each prompt, its first revision the judge sees as a refusal."""
    finals = [r.final for r in revisions]
    refused = judge.refused([r.prompt for r in revisions], finals)
    kept: dict[str, str] = {}
    for rev, ok in zip(revisions, refused, strict=True):
        if ok and rev.prompt not in kept:
            kept[rev.prompt] = rev.final
    return kept


def pick_answers(prompts: Sequence[str], answers: Sequence[str], judge: RefusalJudge,
                 min_relevance: float) -> dict[str, str]:
    """For each benign prompt, its first answer that is not a refusal and is on topic."""
    ok = ~judge.refused(prompts, answers) & (relevance(prompts, answers) >= min_relevance)
    kept: dict[str, str] = {}
    for p, a, good in zip(prompts, answers, ok, strict=True):
        if good and p not in kept and a.strip():
            kept[p] = a
    return kept


def build_sl_cai_data(generate: ChatGenerator, harmful: Sequence[str], benign: Sequence[str],
                      constitution: Constitution, judge: RefusalJudge, samples: int,
                      min_relevance: float, seed: int, few_shot: bool = False) -> SLCAIData:
    """Critique → revision ``samples`` times per harmful prompt, filtered by ``judge``; the
    model's own answer to each benign prompt, kept when on topic and not a refusal."""
    repeated = [p for p in harmful for _ in range(samples)]
    revisions = critique_and_revise(generate, repeated, constitution, rounds=1, seed=seed,
                                    few_shot=few_shot)
    refusing = pick_refusals(revisions, judge)
    originals = judge.refused(repeated, [r.original for r in revisions])
    answers = generate([[{"role": "user", "content": p}] for p in benign])
    answered = pick_answers(benign, answers, judge, min_relevance)
    examples = ([SFTExample(p, c, "revision") for p, c in refusing.items()]
                + [SFTExample(p, c, "answer") for p, c in answered.items()])
    n_ref = int(judge.refused([r.prompt for r in revisions],
                              [r.final for r in revisions]).sum())
    return SLCAIData(examples, SLCAIResult(
        harmful_prompts=len(harmful), revisions=len(revisions), revisions_refusing=n_ref,
        harmful_kept=len(refusing), originals_refusing=int(np.sum(originals)),
        benign_prompts=len(benign), benign_kept=len(answered), judge=judge.name))
