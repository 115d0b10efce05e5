"""Stage pairs: rankings → preference pairs (all rounds so far), optionally filtered by a
judge; measures how well last round's reward model ranks this round's new pairs."""

from __future__ import annotations

from alignkit.artifacts import PairsResult
from alignkit.stages.context import StageContext, StageResult


def run(ctx: StageContext, r: int, resume: bool) -> StageResult:  # noqa: ARG001
    from alignkit.data.types import read_pairs_jsonl, write_pairs_jsonl
    from alignkit.feedback.pairs import rankings_to_pairs

    store, f = ctx.store(), ctx.cfg.feedback
    if f.source == "ai" and f.ai_soft_labels and ctx.run.ai_pairs.exists():
        pairs = read_pairs_jsonl(ctx.run.ai_pairs)
    else:
        pairs = rankings_to_pairs(store)
    if f.filter_judge:
        from alignkit.safety.judges import get_judge
        from alignkit.safety.redteam import filter_pairs

        pairs, rep = filter_pairs(pairs, get_judge(f.filter_judge), f.filter_threshold,
                                  f.filter_action)
        rep.write(ctx.run.filter_report)
        ctx.console.print(f"filter '{f.filter_judge}': {rep.removed} removed, "
                          f"{rep.flagged} flagged of {rep.total} pairs")
    # TRL reads a `margin` column as its loss margin: write one only if we train with it.
    write_pairs_jsonl(pairs, ctx.run.pairs, margin=ctx.cfg.reward.margin)
    new = rankings_to_pairs(store, round=r)
    result = PairsResult(len(new))
    if r > 0 and ctx.run.reward_model.exists():
        # How well last round's RM ranks the new policy's samples: its drift.
        from alignkit.reward.losses import pair_accuracy
        from alignkit.reward.train import evaluate_pairs

        c, rj = evaluate_pairs(ctx.reward_model, new)
        result.rm_accuracy_new = pair_accuracy(c, rj) if c.numel() else None
    ctx.console.print(f"{len(pairs)} pairs ({len(new)} from this round) → {ctx.run.pairs.name}")
    return StageResult(record=result)
