"""Reading a run directory for the report: every file may be missing or malformed.

Unreadable files become ``problems`` the report shows, never exceptions: a half-written
run is exactly when someone opens the report. report.json and manifest.json are read into
their typed records with ``Record.salvage``, which leaves out (and names) what does not
fit a record's types, so the sections read attributes of the types they declare.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from alignkit.artifacts import Manifest, MetricsRow, Record, RunReport, upgrade_metrics_row
from alignkit.evaluate.report_format import _num
from alignkit.rundir import RunDir

_R = TypeVar("_R", bound=Record)

# ---------------------------------------------------------------- reading a run directory


@dataclass
class Run:
    """Everything the report needs from one run directory, already parsed.

    ``problems`` collects files (and parts of report.json) that were unreadable, so the
    report can show them instead of failing: a half-written run is exactly when someone
    opens the report. ``has_report`` is False when report.json is absent, unreadable or
    empty: then every section is absent.
    """

    path: Path
    manifest: Manifest = field(default_factory=Manifest)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[MetricsRow] = field(default_factory=list)
    report: RunReport = field(default_factory=RunReport)
    has_report: bool = False
    problems: list[str] = field(default_factory=list)
    label: str = ""

    def has(self, name: str) -> bool:
        """Whether report.json has section ``name`` (a record, or a non-empty list / map)."""
        return bool(getattr(self.report, name))

    @property
    def name(self) -> str:
        return str(self.report.run.name or self.config.get("name") or self.path.name)

    @property
    def model(self) -> str:
        cfg = self.config.get("model")
        cfg_name = cfg.get("name") if isinstance(cfg, dict) else None
        return str(self.report.run.model or cfg_name or "unknown model")

    @property
    def criterion(self) -> str:
        fb = self.config.get("feedback")
        cfg_crit = fb.get("criterion") if isinstance(fb, dict) else None
        return str(self.report.run.criterion or cfg_crit or "unstated criterion")

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage from report.json, else from the manifest."""
        secs = self.report.run.stage_seconds
        if secs:
            return {k: v for k, v in secs.items() if _num(v) is not None}
        return {k: s.seconds for k, s in self.manifest.stages.items()
                if _num(s.seconds) is not None}

    def config_value(self, dotted: str) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node


def load_run(path: Path) -> Run:
    """Parse a run directory; unreadable files become ``problems``, never exceptions."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"report: run directory '{path}' does not exist — pass the "
                                "folder the cycle wrote (it holds manifest.json)")
    run = Run(path=path)
    files = RunDir(path)
    run.manifest = _read_record(Manifest, files.manifest, run.problems) or Manifest()
    report = _read_record(RunReport, files.report_json, run.problems)
    run.report, run.has_report = report or RunReport(), report is not None
    run.config = _read_yaml(files.config, run.problems)
    run.metrics = [upgrade_metrics_row(r) for r in _read_jsonl(files.metrics, run.problems)]
    return run


def _read_record(cls: type[_R], path: Path, problems: list[str]) -> _R | None:
    """The record in ``path``, salvaged; None when the file is absent, unreadable, not an
    object, or an empty one (the last quietly: nothing was recorded)."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} could not be read ({type(e).__name__}: {e})")
        return None
    if value == {}:
        return None
    return cls.salvage(value, problems, path.name)


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path.name} could not be read ({type(e).__name__})")
        return {}
    return value if isinstance(value, dict) else {}


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a torn last line (run killed mid-write) is skipped and noted."""
    if not path.is_file():
        return []
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        problems.append(f"metrics.jsonl: {bad} unreadable line(s) skipped")
    return rows


def _label_runs(runs: Sequence[Run]) -> None:
    """Give each run a distinct legend label: its name, else its folder, else numbered."""
    names = [r.name for r in runs]
    for i, run in enumerate(runs):
        label = run.name
        if names.count(label) > 1:
            label = run.path.name if [r.path.name for r in runs].count(run.path.name) == 1 \
                else f"{run.name} #{i + 1}"
        run.label = label
