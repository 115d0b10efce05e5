"""The run directory: every artifact of a run, and a manifest of which stages are done.

A stage is skipped when the manifest says it finished with the same config hash, so a
run can be resumed, inspected and partly re-run by editing one section of the config.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


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

    def read_manifest(self) -> dict:
        if self.manifest.exists():
            return json.loads(self.manifest.read_text())
        return {"stages": {}}

    def stage(self, name: str) -> dict:
        return self.read_manifest()["stages"].get(name, {})

    def is_done(self, name: str, config_hash: str) -> bool:
        s = self.stage(name)
        return s.get("status") == "done" and s.get("config_hash") == config_hash

    def mark(self, name: str, status: str, config_hash: str, **extra: Any) -> None:
        m = self.read_manifest()
        entry = m["stages"].setdefault(name, {})
        entry.update(status=status, config_hash=config_hash, updated=time.time(), **extra)
        write_json_atomic(self.manifest, m)
