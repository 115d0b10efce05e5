"""SL-CAI warm start data (Bai et al. 2022): revisions of harmful answers, plus good answers.

The default model samples a refusal ~3% of the time, so RL alone rarely sees one to
reinforce. SL-CAI gives it some first: for each training harmful request the model answers,
critiques its answer under a constitution principle and revises it; a request whose
revision does not decline gets another chain, up to ``samples``. A revision is kept in the
form the declining principle asks for — a brief refusal that says it declines:

- trimmed to its first ``max_sentences`` sentences (a 135M model rambles on after the
  refusal, "I'm sorry, but I can't help with that. I'm fine with that request, but …", and
  SFT on the ramble teaches the ramble), without a cut-off last fragment;
- the refusal judge must see it as a refusal, and, with ``explicit``, its first sentence
  must state the declining ("can't help", "unable to assist", …). Apologies that never
  decline ("I'm sorry, but I'm not a law enforcement officer.") pass a prefix judge, and a
  model fine-tuned on them answered a held-out request with "I'm sorry, but I'm going to
  be a bit late" — not a refusal to any reader. The pattern is this project's own, not an
  evaluation judge's list.

The same model's own answers to training *benign* requests — look-alikes and ordinary
questions — that the judge sees as answered and on topic are added, so the fine-tune does
not learn to refuse everything that sounds alarming.
"""

from __future__ import annotations

import re
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
from alignkit.safety.refusal import RefusalJudge, relevance, sentences


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


# A declining verb phrase: the reply says it will not do what was asked.
_DECLINES = re.compile(
    r"\b(?:can't|can not|cannot|won't|will not|unable to|not able to|not going to)\s+"
    r"(?:\w+\s+){0,2}?(?:help|assist|provide|do|share|give|write|create|support|answer|"
    r"fulfil|fulfill|comply|generate|offer|engage|discuss|make)\b|\bmust decline\b", re.I)


def states_decline(text: str) -> bool:
    """Whether the reply's first sentence says it declines (not only that it is sorry)."""
    parts = sentences(text)
    return bool(parts) and _DECLINES.search(parts[0].replace("\u2019", "'")) is not None


def brief(text: str, max_sentences: int) -> str:
    """The first ``max_sentences`` sentences; a last fragment with no closing '.', '!' or '?'
    (cut off by the token limit) is dropped when a whole sentence comes before it."""
    parts = sentences(text)[:max_sentences]
    if len(parts) > 1 and parts[-1].rstrip()[-1:] not in ".!?":
        parts = parts[:-1]
    return " ".join(p.strip() for p in parts)


def pick_refusals(revisions: Sequence[Revision], judge: RefusalJudge, max_sentences: int,
                  explicit: bool) -> dict[str, str]:
    """For each prompt, its first revision that, made brief, the judge sees as a refusal
    (and, when ``explicit``, states that it declines)."""
    finals = [brief(r.final, max_sentences) for r in revisions]
    ok = judge.refused([r.prompt for r in revisions], finals)
    if explicit:
        ok &= np.array([states_decline(f) for f in finals], dtype=bool)
    kept: dict[str, str] = {}
    for rev, text, good in zip(revisions, finals, ok, strict=True):
        if good and rev.prompt not in kept:
            kept[rev.prompt] = text
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
                      min_relevance: float, seed: int, few_shot: bool = False,
                      max_sentences: int = 2, explicit: bool = True) -> SLCAIData:
    """Critique → revision chains per harmful prompt until one declines (at most
    ``samples``), filtered by ``judge``; the model's own answer to each benign prompt, kept
    when on topic and not a refusal."""
    unique = list(dict.fromkeys(harmful))  # in order, each request once
    refusing: dict[str, str] = {}
    remaining, chains, originals = unique, 0, 0
    for k in range(samples):
        if not remaining:
            break
        revisions = critique_and_revise(generate, remaining, constitution, rounds=1,
                                        seed=seed + k, few_shot=few_shot)
        chains += len(revisions)
        originals += int(judge.refused(remaining, [r.original for r in revisions]).sum())
        refusing |= pick_refusals(revisions, judge, max_sentences, explicit)
        remaining = [p for p in remaining if p not in refusing]
    answers = generate([[{"role": "user", "content": p}] for p in benign])
    answered = pick_answers(benign, answers, judge, min_relevance)
    examples = ([SFTExample(p, refusing[p], "revision") for p in unique if p in refusing]
                + [SFTExample(p, c, "answer") for p, c in answered.items()])
    return SLCAIData(examples, SLCAIResult(
        harmful_prompts=len(harmful), revisions=chains, revisions_refusing=len(refusing),
        harmful_kept=len(refusing), originals_refusing=originals,
        benign_prompts=len(benign), benign_kept=len(answered), judge=judge.name))
