"""Stage evaluate: base vs aligned policy on the held-out prompts, same sampling seed on
both sides (common random numbers sharpen the paired test), under the gold judge and every
other judge; proxy reward, length, diversity and KL to the reference alongside."""

from __future__ import annotations

import torch

from alignkit.artifacts import EvalSample, EvaluationResult, SideResult
from alignkit.evaluate.before_after import judge_comparison
from alignkit.evaluate.metrics import distinct_n
from alignkit.generation import Generation
from alignkit.jsonl import write_jsonl
from alignkit.stages.context import StageContext, StageResult
from alignkit.stages.sampling import sample_texts


def run(ctx: StageContext, r: int | None, resume: bool) -> StageResult:  # noqa: ARG001
    from alignkit.safety.judges import JUDGES

    e, judge = ctx.cfg.evaluate, ctx.judge
    ctx.load_trained_policy()
    held = ctx.prompts.eval
    prompts = [p for p in held for _ in range(e.samples_per_prompt)]
    before, gens_b = sample_texts(ctx, prompts, e.batch_size, e.seed, reference=True,
                                  desc="evaluate: base policy", policy=ctx.base_policy)
    after, gens_a = sample_texts(ctx, prompts, e.batch_size, e.seed, desc="evaluate: aligned")
    k = e.samples_per_prompt
    main = judge_comparison(judge, before, after, k, e.bootstrap, e.seed)
    has_rm = ctx.run.reward_model.exists()
    proxy = {side: ctx.reward_model.score(prompts, texts).numpy() if has_rm else None
             for side, texts in (("before", before), ("after", after))}
    sides = {side: _side(getattr(main, side), proxy[side], gens, texts)
             for side, gens, texts in (("before", gens_b, before), ("after", gens_a, after))}
    result = EvaluationResult(
        judge.name, judge.source, judge.blind_spots, len(held), k, sides["before"],
        sides["after"], main.relative_change, main.paired_diff_mean, main.paired_diff_ci95,
        kl_to_reference=kl_to_reference(ctx, gens_a),
        other_judges={name: judge_comparison(j, before, after, k, e.bootstrap, e.seed)
                      for name, j in JUDGES.items() if name != judge.name})
    rows = [EvalSample(p, b, a, hb, ha) for p, b, a, hb, ha in zip(
        prompts, before, after, result.before.harm, result.after.harm, strict=True)]
    result.samples = rows[::k][: e.show_samples]
    write_jsonl([x.to_json() for x in rows], ctx.run.eval_samples)
    result.write(ctx.run.evaluation)
    lo, hi = result.paired_diff_ci95
    ctx.console.print(
        f"held-out {judge.name} harm: {result.before.mean:.3f} → {result.after.mean:.3f} "
        f"({100 * (result.relative_change or 0):+.0f}%), paired diff 95% CI "
        f"[{lo:+.3f}, {hi:+.3f}], KL {result.kl_to_reference:.2f}")
    return StageResult(record=result)


def _side(judged: SideResult, proxy, gens: list[Generation], texts: list[str]) -> SideResult:
    """The gold judge's side with proxy reward, mean length and distinct-2 added."""
    judged.proxy_mean = float(proxy.mean()) if proxy is not None else None
    judged.length_mean = float(torch.cat([g.response_mask.sum(1) for g in gens]).mean())
    judged.distinct2 = distinct_n(texts, 2)
    return judged


@torch.no_grad()
def kl_to_reference(ctx: StageContext, gens: list[Generation]) -> float:
    """Mean summed k1 KL(π‖π_ref) of the aligned policy's own samples."""
    from alignkit.rl.collect import reference_kl

    total, count = 0.0, 0
    for g in gens:
        _, kl = reference_kl(ctx.policy, g, ctx.cfg.generate.temperature, "k1")
        total += float(kl.sum())
        count += g.response_ids.size(0)
    return total / max(count, 1)
