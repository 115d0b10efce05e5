"""Stage generate: K completions per prompt for the labelers to rank — from the *current*
policy (the base in round 0, or the SL-CAI model), ``generate.base_completions`` of them from
the untrained base, in an order seeded per prompt so a labeler cannot tell which is which."""

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
    rng = random.Random(cfg.seed + 1000 * r)
    chosen = rng.sample(train, min(g.prompts, len(train)))
    n_policy, n_base = g.k - g.base_completions, g.base_completions
    own, _ = sample_texts(ctx, [p for p in chosen for _ in range(n_policy)], g.batch_size,
                          cfg.seed + r, desc=f"{n_policy} completions")
    base = _base_texts(ctx, [p for p in chosen for _ in range(n_base)], cfg.seed + r)
    sets = []
    for i, p in enumerate(chosen):
        texts = own[i * n_policy : (i + 1) * n_policy] + base[i * n_base : (i + 1) * n_base]
        if n_base:
            rng.shuffle(texts)
        sets.append(CompletionSet(p, texts))
    path = ctx.run.round_completions(r)
    write_completions(sets, path)
    ctx.console.print(f"{len(sets)} prompts × {g.k} completions"
                      + (f" ({n_base} from the base model)" if n_base else "") + f" → {path.name}")
    return StageResult()


def _base_texts(ctx: StageContext, prompts: list[str], seed: int) -> list[str]:
    """The untrained base's samples (its own copy after SL-CAI; adapters off either way)."""
    if not prompts:
        return []
    texts, _ = sample_texts(ctx, prompts, ctx.cfg.generate.batch_size, seed + 7,
                            reference=True, policy=ctx.base_policy,
                            desc="base completions")
    return texts
