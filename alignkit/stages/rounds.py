"""The end of a feedback → RM → PPO round: record it in rounds.json, decide whether to stop.

Stops on: the guard stopping PPO, the gold target reached, the KL budget spent, no gold
gain for ``patience`` rounds, or the last round done.
"""

from __future__ import annotations

from alignkit import artifacts as A
from alignkit.stages.context import StageContext


def close_round(ctx: StageContext, r: int) -> str | None:
    """Write round ``r``'s record; returns why the rounds stop, or None to go on."""
    cfg = ctx.cfg
    rows = A.read_metrics(ctx.run.metrics)
    end = min(len(rows), cfg.ppo.steps * (r + 1))  # this round's last PPO step
    last = rows[max(0, end - 3) : end]
    rounds = A.read_records(A.RoundRecord, ctx.run.rounds)
    earlier = next((x for x in rounds if x.round == r), None)  # a resumed run skipped stages
    rounds = [x for x in rounds if x.round != r and x.round < cfg.rounds]
    entry = A.RoundRecord(r, end, gold=A.mean_metric(last, A.GOLD),
                          proxy=A.mean_metric(last, A.SCORES), kl=A.mean_metric(last, A.KL))
    pairs = ctx.result("pairs", r)
    if isinstance(pairs, A.PairsResult):
        entry.pairs_added, entry.rm_accuracy_new = pairs.pairs_added, pairs.rm_accuracy_new
    elif earlier is not None and earlier.pairs_added is not None:
        entry.pairs_added, entry.rm_accuracy_new = earlier.pairs_added, earlier.rm_accuracy_new
    else:
        from alignkit.feedback.pairs import rankings_to_pairs

        entry.pairs_added = len(rankings_to_pairs(ctx.store(), round=r))
    rounds = sorted([*rounds, entry], key=lambda x: x.round)
    A.write_records(rounds, ctx.run.rounds)
    return _stop_reason(ctx, r, entry, rounds)


def _stop_reason(ctx: StageContext, r: int, entry: A.RoundRecord,
                 rounds: list[A.RoundRecord]) -> str | None:
    cfg, gold = ctx.cfg, entry.gold
    ppo = ctx.result("ppo", r)
    if isinstance(ppo, A.PPOResult) and ppo.guard_stop:
        return f"guard stop ({ppo.guard_stop})"
    if cfg.target_gold is not None and gold is not None and gold >= cfg.target_gold:
        return f"reward target reached (gold {gold:.3f} >= {cfg.target_gold})"
    if entry.kl is not None and entry.kl >= cfg.guard.kl_budget:
        return f"KL budget spent ({entry.kl:.2f} >= {cfg.guard.kl_budget})"
    golds = [x.gold for x in rounds if x.round <= r and x.gold is not None]
    p = cfg.patience
    if len(golds) > p and max(golds[-p:]) <= max(golds[:-p]):
        return f"no gold improvement for {p} rounds"
    if r == cfg.rounds - 1:
        return "rounds exhausted" if cfg.rounds > 1 else "steps done"
    return None
