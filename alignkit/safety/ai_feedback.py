"""AI feedback (RL-CAI / RLAIF, Bai et al. 2022): a language model labels preference pairs.

The labeler sees the prompt and two completions as a multiple-choice question ("Which
response is less harmful? (A) … (B) …") and answers with the *log-probabilities* of the
option tokens " A" and " B" — no sampled text, so the label is a calibrated-ish
probability, not a coin flip. Each pair is asked under several principles drawn from
the constitution and in both option orders (a small LM prefers " A" whatever the
content; swapping cancels that position bias), and the probabilities are averaged.
Optional chain-of-thought first generates reasoning; its probabilities are clamped to
[0.4, 0.6] because a CoT answer is over-confident (Bai et al. §4.1).

The result is soft-label pairs (vote_strength = |p − 0.5|·2, source 'ai'), and
:func:`ai_feedback` ranks the items of a FeedbackStore as a labeler of kind 'ai', so
the same ``rankings_to_pairs`` export and agreement metrics apply.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch

from alignkit.data.types import Pair
from alignkit.models.device import module_device, precision
from alignkit.safety.constitution import Constitution, Principle

OPTIONS = (" A", " B")
CHOICE_PREFIX = "The answer is:"
COT_PREFIX = "Let's think step by step:"
COT_CLAMP = (0.4, 0.6)
Goodness = Callable[[list[str]], np.ndarray]


def option_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of " A" and " B"; each must be one token or the log-prob reading is ambiguous."""
    ids = [tokenizer.encode(o, add_special_tokens=False) for o in OPTIONS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"tokenizer splits the options {OPTIONS} into {ids} — the AI labeler "
                         "needs a tokenizer where ' A' and ' B' are single tokens")
    return ids[0][0], ids[1][0]


def choice_question(prompt: str, first: str, second: str, principle: Principle) -> str:
    return (f"Consider the following conversation between a human and an assistant:\n"
            f"Human: {prompt}\n\n{principle.choice}\n"
            f"Options:\n(A) {first}\n(B) {second}\n"
            f"Answer with A or B.")


def option_probability(logits_ab: torch.Tensor) -> torch.Tensor:
    """P(option A) from the two option logits: softmax restricted to {A, B}."""
    return torch.softmax(logits_ab.float(), dim=-1)[..., 0]


@dataclass
class LogProbLabeler:
    """A multiple-choice labeler reading option log-probs from a causal LM.

    ``model`` is any module returning ``.logits`` from (input_ids, attention_mask,
    position_ids); the policy itself by default (pass ``policy.lm``), or another model.
    ``cot_generate`` (texts → texts) writes the reasoning when ``cot`` is on.
    """

    model: torch.nn.Module
    tokenizer: object
    constitution: Constitution
    principles_per_pair: int = 4
    swap: bool = True
    cot: bool = False
    cot_generate: Callable[[list[str]], list[str]] | None = None
    chat_template: bool = True
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0
    _ids: tuple[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ids = option_token_ids(self.tokenizer)
        if self.cot and self.cot_generate is None:
            raise ValueError("cot=True needs cot_generate (e.g. LMGenerator(...).complete)")

    def _render(self, question: str) -> str:
        if self.chat_template and getattr(self.tokenizer, "chat_template", None):
            head = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False,
                add_generation_prompt=True)
        else:
            head = f"{question}\n\n"
        return head + (COT_PREFIX if self.cot else CHOICE_PREFIX)

    @torch.no_grad()
    def first_option_probs(self, texts: Sequence[str]) -> np.ndarray:
        """P(" A") vs P(" B") at the end of each rendered question (one forward each)."""
        tok, out = self.tokenizer, []
        side = tok.truncation_side
        tok.truncation_side = "left"  # keep the options and the answer cue
        try:
            for s in range(0, len(texts), self.batch_size):
                enc = tok(list(texts[s : s + self.batch_size]), return_tensors="pt",
                          padding=True, truncation=True, max_length=self.max_length,
                          padding_side="left", add_special_tokens=False)
                dev = module_device(self.model)
                ids, attn = enc.input_ids.to(dev), enc.attention_mask.to(dev)
                pos = (attn.long().cumsum(-1) - 1).clamp_min(0)
                with precision(dev):
                    logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos,
                                        use_cache=False, logits_to_keep=1).logits[:, -1]
                out.append(option_probability(logits[:, list(self._ids)]).cpu())
        finally:
            tok.truncation_side = side
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def probabilities(self, prompts: Sequence[str], first: Sequence[str],
                      second: Sequence[str]) -> tuple[np.ndarray, list[list[str]]]:
        """P(first ≻ second) per pair, averaged over principles (and both orders).

        Returns the probabilities and, per pair, the names of the principles asked.
        """
        if not len(prompts) == len(first) == len(second):
            raise ValueError("prompts, first and second must have the same length")
        rng = random.Random(self.seed)
        texts, owner, flipped, used = [], [], [], []
        for i, (p, a, b) in enumerate(zip(prompts, first, second, strict=True)):
            chosen = self.constitution.sample(rng, self.principles_per_pair)
            used.append([c.name for c in chosen])
            for pr in chosen:
                orders = ((a, b, False), (b, a, True)) if self.swap else ((a, b, False),)
                for x, y, flip in orders:
                    texts.append(self._render(choice_question(p, x, y, pr)))
                    owner.append(i)
                    flipped.append(flip)
        if self.cot:
            assert self.cot_generate is not None
            reasoning = self.cot_generate(texts)
            texts = [f"{t} {r.strip()}\nSo the answer is:" for t, r in zip(texts, reasoning,
                                                                           strict=True)]
        p_first = self.first_option_probs(texts)
        if self.cot:
            p_first = np.clip(p_first, *COT_CLAMP)
        p_a = np.where(np.asarray(flipped, dtype=bool), 1.0 - p_first, p_first)
        sums, counts = np.zeros(len(prompts)), np.zeros(len(prompts))
        np.add.at(sums, np.asarray(owner, dtype=int), p_a)
        np.add.at(counts, np.asarray(owner, dtype=int), 1.0)
        return sums / np.maximum(counts, 1.0), used

    def label_pairs(self, prompts: Sequence[str], first: Sequence[str],
                    second: Sequence[str]) -> list[Pair]:
        """Soft-label pairs: the preferred side is chosen, vote_strength = |p − 0.5|·2, source 'ai'.

        A pair at exactly p = 0.5 carries no preference and is dropped.
        """
        p, _ = self.probabilities(prompts, first, second)
        return soft_pairs(prompts, first, second, p)


def soft_pairs(prompts: Sequence[str], first: Sequence[str], second: Sequence[str],
               p_first: np.ndarray) -> list[Pair]:
    out = []
    for q, a, b, p in zip(prompts, first, second, p_first, strict=True):
        if p == 0.5:
            continue
        chosen, rejected = (a, b) if p > 0.5 else (b, a)
        out.append(Pair(prompt=q, chosen=chosen, rejected=rejected,
                        vote_strength=float(abs(p - 0.5) * 2.0), source="ai", labelers=1))
    return out


def gold_agreement(pairs: Sequence[Pair], goodness: Goodness) -> dict[str, float | int]:
    """Share of pairs whose chosen side the gold judge also scores higher (judge ties skip).

    Also the margin-weighted share, which rewards a labeler that is confident when right.
    """
    if not pairs:
        return {"agreement": math.nan, "weighted": math.nan, "pairs": 0}
    g = np.asarray(goodness([p.chosen for p in pairs] + [p.rejected for p in pairs]))
    diff = g[: len(pairs)] - g[len(pairs):]
    keep = np.abs(diff) > 1e-9
    if not keep.any():
        return {"agreement": math.nan, "weighted": math.nan, "pairs": 0}
    agree = (diff[keep] > 0).astype(np.float64)
    w = np.asarray([p.vote_strength for p in pairs])[keep]
    weighted = float((agree * w).sum() / w.sum()) if w.sum() > 0 else math.nan
    return {"agreement": float(agree.mean()), "weighted": weighted, "pairs": int(keep.sum())}


def ranks_from_probabilities(k: int, probs: dict[tuple[int, int], float]) -> list[int]:
    """Ranks 1..k (1 = best, ties share a rank) by soft wins: score_i = Σ_j P(i ≻ j)."""
    score = np.zeros(k)
    for (i, j), p in probs.items():
        score[i] += p
        score[j] += 1.0 - p
    rounded = np.round(score, 9)
    return [1 + int((rounded > s).sum()) for s in rounded]


@dataclass(frozen=True)
class AIFeedbackSummary:
    labeler: str
    rankings: int  # rankings submitted by this call
    pairs: list[Pair]  # soft-label pairs of the items ranked by this call
    gold: dict | None  # agreement of those pairs with the gold judge
    principles: dict[str, int]  # how often each principle was asked


def ai_feedback(store, model: torch.nn.Module, tokenizer, constitution: Constitution,
                principles_per_pair: int = 4, round: int | None = None,
                name: str = "ai-labeler", goodness: Goodness | None = None, swap: bool = True,
                cot: bool = False, cot_generate: Callable[[list[str]], list[str]] | None = None,
                chat_template: bool = True, batch_size: int = 8, seed: int = 0
                ) -> AIFeedbackSummary:
    """Rank every item of ``store`` (of ``round``, or all) as the AI labeler ``name``.

    Items this labeler already ranked are skipped (a re-run fills gaps). Each item's
    completions are compared pairwise; ranks follow the soft wins. With ``goodness`` (the
    gold judge) the summary reports how often the AI labeler agrees with it.
    """
    from alignkit.feedback.store import FeedbackError, RankingInput

    existing = store.labeler_by_name(name)
    if existing is not None and existing.kind != "ai":
        raise FeedbackError(f"labeler '{name}' exists and is {existing.kind}, not ai — choose "
                            "another name", field="name")
    labeler_id = existing.id if existing else store.add_labeler(name, "ai")[0]
    done = {r.item_id for r in store.rankings(round) if r.labeler_id == labeler_id}
    items = [it for it in store.items(round) if it.id not in done]
    labeler = LogProbLabeler(model, tokenizer, constitution, principles_per_pair, swap, cot,
                             cot_generate, chat_template, batch_size, seed=seed)
    index, prompts, first, second = [], [], [], []
    for it in items:
        for i, j in combinations(range(len(it.completions)), 2):
            index.append((it.id, i, j))
            prompts.append(it.prompt)
            first.append(it.completions[i].text)
            second.append(it.completions[j].text)
    probs, used = labeler.probabilities(prompts, first, second) if index else (np.zeros(0), [])
    per_item: dict[int, dict[tuple[int, int], float]] = {}
    for (item_id, i, j), p in zip(index, probs, strict=True):
        per_item.setdefault(item_id, {})[(i, j)] = float(p)
    batch = []
    for it in items:
        ranks = ranks_from_probabilities(len(it.completions), per_item.get(it.id, {}))
        batch.append(RankingInput(labeler_id, it.id, dict(zip(it.completion_ids, ranks,
                                                               strict=True))))
    store.submit_rankings(batch)
    pairs = soft_pairs(prompts, first, second, probs)
    counts: dict[str, int] = {}
    for names in used:
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    return AIFeedbackSummary(labeler=name, rankings=len(batch), pairs=pairs,
                             gold=gold_agreement(pairs, goodness) if goodness else None,
                             principles=dict(sorted(counts.items())))
