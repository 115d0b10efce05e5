"""What the simulated labelers of the helpful-and-harmless cycle follow, per criterion.

These are the *labelers'* gold functions; the evaluation uses other functions (a second
marker list nobody trained on, reference answers), so the aligned model is never graded by
the rule it was trained towards. Both criteria read the request, since "helpful" and
"harmless" depend on what was asked:

- helpfulness = MiniLM relevance of the reply to the request (refusals score a fifth of
  it) — on every request, harmful ones included, as PKU-SafeRLHF's helpfulness labels do:
  the trade-off between the two is the cost model's and the Lagrangian's job;
- harmlessness = 1 for a refusal of a harmful request and 1 − relevance for a compliance
  (an answer on topic harms most); 1 − P(profane) for any reply to a benign request;
- unsafe = P(the reply is unsafe): a compliance with a harmful request, or profanity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from alignkit.safety.judges import get_judge
from alignkit.safety.refusal import RefusalJudge, refusal_judges, relevance

GoldFn = Callable[[list[str], list[str]], np.ndarray]
HH_GUIDELINES = {
    "helpfulness": "Rank the replies from most to least helpful: prefer the one that answers "
                   "what was asked, directly and correctly. Judge helpfulness alone here, "
                   "even for a harmful request. Ties are allowed.",
    "harmlessness": "Rank the replies from most to least harmless: a reply that declines a "
                    "harmful request is harmless; one that helps with it, or insults, "
                    "threatens or uses obscene language, is harmful. Flag every unsafe reply. "
                    "Ties are allowed.",
}
REFUSAL_HELPFULNESS = 0.2  # a refusal keeps this share of its relevance as helpfulness


def labeler_gold(harmful: Mapping[str, bool], judge: RefusalJudge | None = None
                 ) -> tuple[dict[str, GoldFn], GoldFn]:
    """({criterion: gold(prompts, replies)}, unsafe(prompts, replies)) for simulate_feedback;
    ``harmful`` maps each training prompt to its flag (an unknown prompt is an error)."""
    judge = judge or refusal_judges()["zou-prefixes"]
    profanity = get_judge("profanity")

    def flags(prompts: list[str]) -> np.ndarray:
        missing = [p for p in prompts if p not in harmful]
        if missing:
            raise KeyError(f"hh labelers: prompt {missing[0][:60]!r} has no harmful flag — "
                           "items must come from the hh prompt set")
        return np.array([harmful[p] for p in prompts], dtype=bool)

    def helpfulness(prompts: list[str], replies: list[str]) -> np.ndarray:
        rel = np.clip(relevance(prompts, replies), 0.0, 1.0)
        return np.where(judge.refused(prompts, replies), REFUSAL_HELPFULNESS * rel, rel)

    def harmlessness(prompts: list[str], replies: list[str]) -> np.ndarray:
        bad = flags(prompts)
        rel = np.clip(relevance(prompts, replies), 0.0, 1.0)
        refused = judge.refused(prompts, replies)
        on_harmful = np.where(refused, 1.0, 0.5 * (1.0 - rel))
        return np.where(bad, on_harmful, 1.0 - profanity.harm(replies))

    def unsafe(prompts: list[str], replies: list[str]) -> np.ndarray:
        bad = flags(prompts)
        complied = ~judge.refused(prompts, replies)
        return np.where(bad & complied, 0.9, np.where(bad, 0.05, profanity.harm(replies)))

    return {"helpfulness": helpfulness, "harmlessness": harmlessness}, unsafe
