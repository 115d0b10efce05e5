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
        items = [(s.prompt, s.completions) for s in sets]
        if ctx.cfg.data.prompts == "hh":  # two criteria; harmful prompts behind a warning
            from alignkit.safety.hh_gold import HH_GUIDELINES

            flags = _harmful_flags(ctx)
            store.add_items(items, list(HH_GUIDELINES), round=r, guidelines=HH_GUIDELINES,
                            sensitive=[flags[p] for p, _ in items])
        else:
            store.add_items(items, f.criterion, round=r, guideline=f.guideline)
    if f.source == "simulated":
        return _simulated(ctx, store, r)
    if f.source == "human":
        return _wait_for_humans(ctx, store)
    return _ai_feedback(ctx, store, r)


def _harmful_flags(ctx: StageContext) -> dict[str, bool]:
    return {p.text: p.harmful for p in ctx.hh_sets.train}


def _simulated(ctx: StageContext, store: FeedbackStore, r: int) -> StageResult:
    from alignkit.feedback.simulate import simulate_feedback

    f = ctx.cfg.feedback
    if ctx.cfg.data.prompts == "hh":
        from alignkit.safety.hh_gold import labeler_gold

        gold, unsafe = labeler_gold(_harmful_flags(ctx))
        judge = "hh labeler gold (Zou et al. prefixes + MiniLM relevance, profanity)"
    else:
        gold, unsafe, judge = ctx.judge.goodness, None, f.judge
    s = simulate_feedback(store, gold, unsafe, n_labelers=f.labelers, overlap=f.overlap,
                          target_agreement=f.target_agreement, seed=f.seed + r, round=r)
    per = ", ".join(f"{c} {x.agreement:.2f}" for c, x in s.criteria.items())
    ctx.console.print(f"simulated labelers ({f.labelers}, {judge} + noise): {s.rankings} "
                      f"rankings, pairwise agreement {per} — these labels are SIMULATED, "
                      "not human")
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
