"""report.json: one summary of a run, assembled from the artifacts its stages wrote."""

from __future__ import annotations

import numpy as np

from alignkit import artifacts as A
from alignkit.config import RunConfig
from alignkit.rundir import RunDir


def build_report(run: RunDir, cfg: RunConfig) -> A.RunReport:
    """Assemble report.json from the stages' artifacts (each section only if present)."""
    stages = run.read_manifest().stages
    report = A.RunReport(A.RunInfo(
        name=cfg.name, model=cfg.model.name, criterion=cfg.feedback.criterion,
        prompts=cfg.data.prompts, stage_seconds={k: v.seconds for k, v in stages.items()},
        seconds_total=sum(v.seconds or 0 for v in stages.values())))
    if run.feedback_db.exists() or cfg.feedback.db:
        from alignkit.feedback.pairs import feedback_summary
        from alignkit.feedback.store import FeedbackStore

        report.feedback = A.FeedbackSummary.from_json(feedback_summary(
            FeedbackStore(cfg.feedback.db or f"sqlite:///{run.feedback_db}")))
    report.reward_model = A.RewardReport.read(run.reward_report)
    report.ppo = ppo_summary(A.read_metrics(run.metrics), cfg.ppo.algorithm,
                             cfg.guard.kl_budget)
    report.evaluation = A.EvaluationResult.read(run.evaluation)
    report.guard = A.GuardReport.read(run.guard)
    report.rounds = A.read_records(A.RoundRecord, run.rounds) if run.rounds.exists() else None
    report.ai_feedback = A.AIFeedbackSummary.read(run.ai_feedback)
    report.filter = A.FilterSummary.read(run.filter_report)
    redteam = A.RedTeamFile.read(run.redteam_report)
    report.redteam = redteam.redteam if redteam is not None else None
    report.cost_model = A.RewardReport.read(run.cost_report)
    report.sl_cai = A.SLCAIResult.read(run.sl_cai_report)
    report.hh = A.HHEvaluation.read(run.hh_evaluation)
    return report


def ppo_summary(rows: list[A.MetricsRow], algorithm: str, kl_budget: float | None
                ) -> A.PPOSummary | None:
    """Where reward, gold and KL started and ended (means over three steps). It takes the
    two settings, not a RunConfig, so a PPO run outside the cycle (the guard demo) reports
    the same way."""
    if not rows:
        return None
    return A.PPOSummary(
        algorithm=algorithm, iterations=len(rows), kl_coef=rows[-1][A.KL_COEF],
        final_kl=rows[-1][A.KL], kl_budget=kl_budget,
        reward_start=float(np.mean([r[A.SCORES] for r in rows[:3]])),
        reward_end=float(np.mean([r[A.SCORES] for r in rows[-3:]])),
        gold_start=A.mean_metric(rows[:3], A.GOLD), gold_end=A.mean_metric(rows[-3:], A.GOLD),
        cost_start=A.mean_metric(rows[:3], A.COST), cost_end=A.mean_metric(rows[-3:], A.COST),
        lambda_end=rows[-1].get(A.LAMBDA),
        seconds_per_iteration=float(np.median([r[A.TIME_STEP] for r in rows])))

