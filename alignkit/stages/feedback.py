"""Stage feedback: the round's completions go into the feedback store and get ranked — by
simulated labelers, by people in the labeling app, or by the policy as an AI labeler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignkit.artifacts import AIFeedbackSummary, read_completions
from alignkit.stages.context import StageContext, StageResult

if TYPE_CHECKING:
    from alignkit.feedback.store import FeedbackStore


def run(ctx: StageContext, r: int, resume: bool) -> StageResult:
    f = ctx.cfg.feedback
    store = ctx.store()
    if not resume or not store.items(round=r):
        if r == 0 and not f.db:
            store.reset()  # the run's own database: the completions may have changed
        sets = read_completions(ctx.run.round_completions(r))
        store.add_items([(s.prompt, s.completions) for s in sets], f.criterion, round=r,
                        guideline=f.guideline)
    if f.source == "simulated":
        return _simulated(ctx, store, r)
    if f.source == "human":
        return _wait_for_humans(ctx, store)
    return _ai_feedback(ctx, store, r)


def _simulated(ctx: StageContext, store: FeedbackStore, r: int) -> StageResult:
    from alignkit.feedback.simulate import simulate_feedback

    f = ctx.cfg.feedback
    s = simulate_feedback(store, ctx.judge.goodness, n_labelers=f.labelers, overlap=f.overlap,
                          target_agreement=f.target_agreement, seed=f.seed + r, round=r)
    ctx.console.print(f"simulated labelers ({f.labelers}, judge '{f.judge}' + noise "
                      f"σ={s.sigma:.2f}): {s.rankings} rankings, pairwise agreement "
                      f"{s.agreement:.2f} — these labels are SIMULATED, not human")
    return StageResult()


def _ai_feedback(ctx: StageContext, store: FeedbackStore, r: int) -> StageResult:
    """RLAIF: the policy (current weights) ranks the items as a log-prob labeler."""
    from alignkit.data.types import write_pairs_jsonl
    from alignkit.safety.ai_feedback import ai_feedback
    from alignkit.safety.constitution import load_constitution

    f = ctx.cfg.feedback
    with ctx.policy.merged():
        s = ai_feedback(store, ctx.policy.lm, ctx.tokenizer, load_constitution(f.constitution),
                        principles_per_pair=f.ai_principles, round=r,
                        goodness=ctx.judge.goodness, seed=f.seed)
    write_pairs_jsonl(s.pairs, ctx.run.ai_pairs)
    summary = AIFeedbackSummary(s.labeler, s.rankings, s.gold, s.principles)
    summary.write(ctx.run.ai_feedback)
    ctx.console.print(f"AI labeler: {s.rankings} rankings, agreement with the gold judge "
                      f"{s.gold['agreement']:.2f} on {s.gold['pairs']} pairs — AI labels, "
                      "not human")
    return StageResult(record=summary)


def _wait_for_humans(ctx: StageContext, store: FeedbackStore) -> StageResult:
    """Serve the labeling app and block until every item has ``overlap`` rankings."""
    import os
    import secrets

    from alignkit.feedback.app import create_app, hosts_for
    from alignkit.feedback.serve import BackgroundServer, wait_for_rankings

    f = ctx.cfg.feedback
    token = os.environ.get("ALIGNKIT_ADMIN_TOKEN") or secrets.token_urlsafe(18)
    app = create_app(store, admin_token=token, overlap=f.overlap,
                     allowed_hosts=hosts_for(f.host))
    with BackgroundServer(app, host=f.host, port=f.port) as server:
        ctx.console.print(
            f"labeling app: {server.url}/admin#token={token}\n"
            f"add labelers with: alignkit label add-labeler NAME --db {ctx.db_url}\n"
            f"waiting for {f.overlap} rankings per item (Ctrl-C pauses; rerun to resume)")
        try:
            done = wait_for_rankings(store, f.overlap, poll_s=5.0, timeout_s=f.wait_timeout_s)
        except KeyboardInterrupt:
            done = False
    return StageResult() if done else StageResult("waiting for human feedback", done=False)
