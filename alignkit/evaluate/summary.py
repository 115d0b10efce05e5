"""report.json: one summary of a run, assembled from the artifacts its stages wrote."""

from __future__ import annotations

import json

import numpy as np

from alignkit.config import RunConfig
from alignkit.jsonl import read_jsonl
from alignkit.rundir import RunDir


def build_report(run: RunDir, cfg: RunConfig) -> dict:
    """Assemble report.json from the stages' artifacts (each section only if present)."""
    manifest = run.read_manifest()["stages"]
    out: dict = {"run": {
        "name": cfg.name, "model": cfg.model.name, "criterion": cfg.feedback.criterion,
        "prompts": cfg.data.prompts,
        "stage_seconds": {k: v.get("seconds") for k, v in manifest.items()},
        "seconds_total": sum(v.get("seconds") or 0 for v in manifest.values()),
    }}
    if run.feedback_db.exists() or cfg.feedback.db:
        from alignkit.feedback.pairs import feedback_summary
        from alignkit.feedback.store import FeedbackStore

        out["feedback"] = feedback_summary(
            FeedbackStore(cfg.feedback.db or f"sqlite:///{run.feedback_db}"))
    if run.reward_report.exists():
        out["reward_model"] = json.loads(run.reward_report.read_text())
    if run.metrics.exists():
        rows = read_jsonl(run.metrics)
        if rows:
            times = [r["time/step"] for r in rows]
            out["ppo"] = {
                "algorithm": cfg.ppo.algorithm, "iterations": len(rows),
                "kl_coef": rows[-1]["kl_coef"], "final_kl": rows[-1]["objective/kl"],
                "kl_budget": cfg.guard.kl_budget,
                "reward_start": float(np.mean([r["objective/scores"] for r in rows[:3]])),
                "reward_end": float(np.mean([r["objective/scores"] for r in rows[-3:]])),
                "gold_start": mean_key(rows[:3], "objective/gold"),
                "gold_end": mean_key(rows[-3:], "objective/gold"),
                "seconds_per_iteration": float(np.median(times)),
            }
    if run.evaluation.exists():
        out["evaluation"] = json.loads(run.evaluation.read_text())
    if run.guard.exists():
        out["guard"] = json.loads(run.guard.read_text())
    if run.rounds.exists():
        out["rounds"] = json.loads(run.rounds.read_text())
    for key, path in (("ai_feedback", run.ai_feedback), ("filter", run.filter_report)):
        if path.exists():
            out[key] = json.loads(path.read_text())
    redteam = run.path / "redteam" / "report.json"
    if redteam.exists():
        out["redteam"] = json.loads(redteam.read_text()).get("redteam")
    return out


def mean_key(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else None
