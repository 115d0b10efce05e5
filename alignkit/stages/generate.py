"""Stage generate: K completions per prompt from the *current* policy (the base in round 0),
for the labelers to rank."""

from __future__ import annotations

import random

from alignkit.artifacts import CompletionSet, write_completions
from alignkit.stages.context import StageContext, StageResult
from alignkit.stages.sampling import sample_texts


def run(ctx: StageContext, r: int, resume: bool) -> StageResult:  # noqa: ARG001
    g, cfg = ctx.cfg.generate, ctx.cfg
    if r > 0:
        ctx.load_trained_policy()
    train = ctx.prompts.train
    chosen = random.Random(cfg.seed + 1000 * r).sample(train, min(g.prompts, len(train)))
    flat = [p for p in chosen for _ in range(g.k)]
    texts, _ = sample_texts(ctx, flat, g.batch_size, cfg.seed + r, desc=f"{g.k} completions")
    sets = [CompletionSet(p, texts[i * g.k : (i + 1) * g.k]) for i, p in enumerate(chosen)]
    path = ctx.run.round_completions(r)
    write_completions(sets, path)
    ctx.console.print(f"{len(sets)} prompts × {g.k} completions → {path.name}")
    return StageResult()
