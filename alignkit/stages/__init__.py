"""The stages of the cycle, in order, and what decides whether each is already done.

A stage is a module with one function ``run(ctx, round, resume) -> StageResult`` and one
``Stage`` entry in ``REGISTRY`` below. The cycle runs, in registry order:

1. the once-stages listed *before* the first per-round stage (SL-CAI),
2. the per-round stages, ``rounds`` times (generate → feedback → pairs → reward → ppo),
3. the once-stages listed *after* them (evaluate, report).

``inputs`` are the config sections the stage's result depends on (its own and every
upstream one): the stage is skipped when the manifest says it finished with the same hash
of those sections. Adding a stage is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alignkit.stages import (
    evaluate,
    evaluate_hh,
    feedback,
    generate,
    pairs,
    ppo,
    report,
    reward,
    sl_cai,
)
from alignkit.stages.context import StageContext, StageResult

StageFn = Callable[[StageContext, int | None, bool], StageResult]

_POLICY = ("model", "data", "sl_cai")  # what the starting policy depends on
_UPSTREAM = (*_POLICY, "generate", "feedback")
_TRAINED = (*_UPSTREAM, "reward", "cost", "ppo", "guard")


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn  # (context, round — None for a once-stage, resume) -> result
    inputs: tuple[str, ...]  # config sections hashed to decide "done with the same config"
    per_round: bool = False  # repeated every round; else run once


REGISTRY: dict[str, Stage] = {s.name: s for s in (
    Stage("sl_cai", sl_cai.run, _POLICY),
    Stage("generate", generate.run, (*_POLICY, "generate"), per_round=True),
    Stage("feedback", feedback.run, _UPSTREAM, per_round=True),
    Stage("pairs", pairs.run, _UPSTREAM, per_round=True),
    Stage("reward", reward.run, (*_UPSTREAM, "reward", "cost"), per_round=True),
    Stage("ppo", ppo.run, _TRAINED, per_round=True),
    Stage("evaluate", evaluate.run, (*_TRAINED, "evaluate")),
    Stage("evaluate_hh", evaluate_hh.run, (*_TRAINED, "evaluate")),
    Stage("report", report.run, (*_TRAINED, "evaluate")),
)}
STAGES = tuple(REGISTRY)
ROUND_STAGES = tuple(n for n, s in REGISTRY.items() if s.per_round)


def after_rounds(stage: Stage) -> bool:
    """A once-stage listed after the per-round ones (it sees every round's results)."""
    names = list(REGISTRY)
    first = next((i for i, n in enumerate(names) if REGISTRY[n].per_round), len(names))
    return not stage.per_round and names.index(stage.name) > first


def phases(names: tuple[str, ...]) -> tuple[list[Stage], list[Stage], list[Stage]]:
    """``names`` split into (once before the rounds, each round, once after), in registry
    order; per-round stages must sit together in the registry."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown} — known: {', '.join(STAGES)}")
    chosen = [s for s in REGISTRY.values() if s.name in names]
    before = [s for s in chosen if not s.per_round and not after_rounds(s)]
    return before, [s for s in chosen if s.per_round], [s for s in chosen if after_rounds(s)]


__all__ = ["REGISTRY", "ROUND_STAGES", "STAGES", "Stage", "StageContext", "StageResult",
           "after_rounds", "phases"]
