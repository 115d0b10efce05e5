"""Stage evaluate_hh (``data.prompts: hh``): base vs SL-CAI vs aligned on the held-out
helpful-and-harmless sets, with the refusal judges, helpfulness, honesty and profanity.

Each checkpoint answers every held-out prompt once with the same seed: the aligned policy
(PPO adapters on), the SL-CAI model (PPO's reference: adapters off) and the base model (a
fresh copy when SL-CAI moved the reference). HarmBench, the jailbreak-wrapped requests, the
false claims and RealToxicityPrompts never fed training.
"""

from __future__ import annotations

from alignkit.artifacts import HHSample
from alignkit.evaluate.hh import (
    HHReplies,
    evaluate_hh,
    flatten,
    hh_prompt_sets,
    mean_result,
    unflatten,
)
from alignkit.jsonl import write_jsonl
from alignkit.stages.context import StageContext, StageResult
from alignkit.stages.sampling import sample_texts

PROMPT_TOKENS = 384  # jailbreak templates are long; the request sits at their end
HELPFULNESS_JUDGE = "mitigation-bypass"  # the list the simulated labelers never used


def run(ctx: StageContext, r: int | None, resume: bool) -> StageResult:  # noqa: ARG001
    from alignkit.safety.judges import get_judge
    from alignkit.safety.refusal import refusal_judges

    if ctx.cfg.data.prompts != "hh":
        return StageResult("skipped (data.prompts is not hh)")
    e = ctx.cfg.evaluate
    ctx.load_trained_policy()
    sets = ctx.hh_sets
    prompts, references = hh_prompt_sets(sets)
    prompts["rtp"] = sets.rtp
    flat, spans = flatten(prompts)

    def answers(policy, reference: bool, name: str) -> dict[str, list[str]]:
        texts, _ = sample_texts(ctx, flat, e.batch_size, e.seed, reference=reference,
                                desc=f"evaluate hh: {name}", policy=policy,
                                max_new_tokens=e.hh_max_new_tokens,
                                max_prompt_tokens=PROMPT_TOKENS)
        return unflatten(texts, spans)

    replies = {"aligned": answers(ctx.policy, False, "aligned")}
    if ctx.cfg.sl_cai.enabled:
        replies["sl_cai"] = answers(ctx.policy, True, "SL-CAI")
    replies["base"] = answers(ctx.base_policy, True, "base")
    data = HHReplies(prompts, replies, references)
    result = evaluate_hh(data, refusal_judges(), HELPFULNESS_JUDGE, e.bootstrap, e.seed)
    profanity = get_judge("profanity")
    result.rtp_profanity = mean_result(
        {m: profanity.harm(rep["rtp"]) for m, rep in replies.items()}, e.bootstrap, e.seed)
    result.write(ctx.run.hh_evaluation)
    write_jsonl([HHSample(name, p, {m: replies[m][name][i] for m in replies}).to_json()
                 for name, ps in prompts.items() for i, p in enumerate(ps)],
                ctx.run.hh_samples)
    _print(ctx, result)
    return StageResult(record=result)


def _print(ctx: StageContext, result) -> None:
    for name in ("harmful_heldout", "harmbench", "jailbreak", "benign_refusal",
                 "lookalike_refusal"):
        for judge, x in getattr(result, name).items():
            sl = f" → SL-CAI {x.sl_cai:.0%}" if x.sl_cai is not None else ""
            lo, hi = x.paired_diff_ci95
            ctx.console.print(f"{name:<18} {judge:<18} base {x.base:.0%}{sl} → aligned "
                              f"{x.aligned:.0%}  (Δ 95% CI [{lo:+.2f}, {hi:+.2f}], n={x.n})")
    h = result.benign_helpfulness
    ctx.console.print(f"benign helpfulness base {h.base:.3f} → aligned {h.aligned:.3f}; "
                      f"honesty (false claims disputed) {result.honesty}; RTP profanity "
                      f"{result.rtp_profanity.base:.3f} → {result.rtp_profanity.aligned:.3f}")
