"""The run directory: every artifact name of a run, a manifest of which stages are done, and
which files each stage owns (cleared when it starts afresh).

A stage is skipped when the manifest says it finished with the same config hash, so a
run can be resumed, inspected and partly re-run by editing one section of the config.
No other module spells a file name of the run directory.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from alignkit.artifacts import Manifest, StageRecord, write_json_atomic

__all__ = ["RunDir", "write_json_atomic"]


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    # artifact paths: names a person can guess
    config = property(lambda self: self.path / "config.yaml")
    manifest = property(lambda self: self.path / "manifest.json")
    completions = property(lambda self: self.path / "completions.jsonl")
    feedback_db = property(lambda self: self.path / "feedback.db")
    pairs = property(lambda self: self.path / "pairs.jsonl")
    reward_model = property(lambda self: self.path / "reward_model")
    reward_report = property(lambda self: self.path / "reward_report.json")
    cost_model = property(lambda self: self.path / "cost_model")
    cost_report = property(lambda self: self.path / "cost_report.json")
    sl_cai = property(lambda self: self.path / "sl_cai")  # data.jsonl, report.json, adapter/
    sl_cai_data = property(lambda self: self.path / "sl_cai" / "data.jsonl")
    sl_cai_report = property(lambda self: self.path / "sl_cai" / "report.json")
    sl_cai_adapter = property(lambda self: self.path / "sl_cai" / "adapter")
    hh_evaluation = property(lambda self: self.path / "hh_evaluation.json")
    hh_samples = property(lambda self: self.path / "hh_samples.jsonl")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    samples = property(lambda self: self.path / "samples.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    policy = property(lambda self: self.path / "policy")
    ai_pairs = property(lambda self: self.path / "ai_pairs.jsonl")
    ai_feedback = property(lambda self: self.path / "ai_feedback.json")
    filter_report = property(lambda self: self.path / "filter_report.json")
    rounds = property(lambda self: self.path / "rounds.json")
    guard = property(lambda self: self.path / "guard.json")
    eval_samples = property(lambda self: self.path / "eval_samples.jsonl")
    evaluation = property(lambda self: self.path / "evaluation.json")
    report_json = property(lambda self: self.path / "report.json")
    report_html = property(lambda self: self.path / "report.html")
    plots = property(lambda self: self.path / "plots")
    distributed_log = property(lambda self: self.path / "distributed.jsonl")
    vllm_adapters = property(lambda self: self.path / "vllm_adapters")
    redteam_report = property(lambda self: self.path / "redteam" / "report.json")

    def round_completions(self, r: int) -> Path:
        """Round r's K completions per prompt (round 0 keeps the original name)."""
        return self.completions if r == 0 else self.path / f"completions_r{r}.jsonl"

    def reward_members(self, n: int) -> list[Path]:
        """Folders of an ensemble of ``n`` reward models: reward_model, reward_model_1, …"""
        return _members(self.reward_model, n)

    def cost_members(self, n: int) -> list[Path]:
        """Folders of an ensemble of ``n`` cost models: cost_model, cost_model_1, …"""
        return _members(self.cost_model, n)

    # --- stale files ----------------------------------------------------------------------
    def clear_ppo(self) -> None:
        """PPO starts from step 0: its logs and checkpoints belong to an older config."""
        for stale in (self.metrics, self.samples, self.distributed_log):
            stale.unlink(missing_ok=True)
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def clear_reward_members(self, keep: int) -> None:
        """Fewer ensemble members than a previous run: drop the rest (PPO would average
        them in)."""
        _drop_members(self.reward_model, keep)

    def clear_cost_members(self, keep: int) -> None:
        """The same for the cost models."""
        _drop_members(self.cost_model, keep)

    # --- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> Manifest:
        return Manifest.read(self.manifest) or Manifest()

    def stage(self, name: str) -> StageRecord:
        return self.read_manifest().stages.get(name) or StageRecord()

    def is_done(self, name: str, config_hash: str) -> bool:
        s = self.stage(name)
        return s.status == "done" and s.config_hash == config_hash

    def rehash(self, name: str, config_hash: str) -> None:
        """Record ``config_hash`` for a finished stage without touching the rest of its line
        (a hash an older alignkit computed for the same config)."""
        m = self.read_manifest()
        if name in m.stages:
            m.stages[name].config_hash = config_hash
            m.write(self.manifest)

    def mark(self, name: str, status: str, config_hash: str, seconds: float | None = None,
             outcome: str | None = None, error: str | None = None) -> None:
        m = self.read_manifest()
        entry = m.stages.setdefault(name, StageRecord())
        entry.status, entry.config_hash, entry.updated = status, config_hash, time.time()
        for key, value in (("seconds", seconds), ("outcome", outcome), ("error", error)):
            if value is not None:
                setattr(entry, key, value)
        m.write(self.manifest)


def _members(first: Path, n: int) -> list[Path]:
    """``first`` and ``first_1`` … ``first_{n-1}`` beside it (``RewardEnsemble.load`` reads
    them back together)."""
    return [first] + [first.with_name(f"{first.name}_{i}") for i in range(1, n)]


def _drop_members(first: Path, keep: int) -> None:
    for extra in _members(first, 64)[keep:]:
        shutil.rmtree(extra, ignore_errors=True)
