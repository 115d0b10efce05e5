"""Typed records: ``from_json`` is tolerant as before; ``salvage`` keeps only what fits the
types and names what it left out (the report reads damaged run directories with it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.artifacts import (
    Alarm,
    EvaluationResult,
    GuardReport,
    Manifest,
    RoundRecord,
    RunInfo,
    RunReport,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("run", ["run_small", "old_run_finished"])
def test_salvage_of_a_sound_file_is_from_json_without_problems(run: str) -> None:
    for cls, name in ((RunReport, "report.json"), (Manifest, "manifest.json")):
        data = json.loads((FIXTURES / run / name).read_text())
        problems: list[str] = []
        assert cls.salvage(data, problems, name) == cls.from_json(data)
        assert problems == []


def test_from_json_still_passes_wrong_types_through() -> None:
    guard = GuardReport.from_json({"alarms": [{"step": "x"}], "evaluations": "none"})
    assert guard.alarms[0].step == "x" and guard.evaluations == "none"
    with pytest.raises(ValueError, match="expected a JSON object"):
        GuardReport.from_json({"alarms": [5]})


def test_salvage_leaves_out_what_does_not_fit_and_says_where() -> None:
    problems: list[str] = []
    rep = RunReport.salvage({
        "run": [], "ppo": {"iterations": "many", "kl_coef": 0},
        "guard": {"alarms": [{"step": 3, "evidence": [1], "detector": "kl"}, 5, None]},
        "rounds": [{"round": 0, "steps": 2.5}, {"round": True, "steps": 4}],
        "evaluation": {"before": {"mean": 0.2, "ci95": [0.1, "x"], "harm": []},
                       "other_judges": {"a": 3}},
        "redteam": {"sets": [{"name": "rtp", "success_rate": "?"}, "x"], "seconds": 2},
        "future_section": {"k": 1},
    }, problems, "report.json")
    assert rep is not None
    assert rep.run == RunInfo()  # a record field that is not an object: its default
    assert rep.ppo is not None and rep.ppo.iterations is None and rep.ppo.kl_coef == 0
    assert rep.guard is not None
    assert rep.guard.alarms == [Alarm(detector="kl", step=3, message=None, evidence=None)]
    assert rep.rounds == [RoundRecord(round=0, steps=None), RoundRecord(round=None, steps=4)]
    assert rep.evaluation is not None and rep.evaluation.before is not None
    assert rep.evaluation.before.ci95 == [0.1] and rep.evaluation.other_judges == {}
    assert rep.redteam is not None and rep.redteam.seconds == 2
    assert [(s.name, s.success_rate) for s in rep.redteam.sets] == [("rtp", None)]
    assert rep.extra == {"future_section": {"k": 1}}  # unknown keys kept, as from_json does
    assert problems == [
        "report.json: run should be an object, got [] — left out",
        "report.json: ppo.iterations should be an integer, got 'many' — left out",
        "report.json: evaluation.before.ci95[1] should be a number, got 'x' — left out",
        "report.json: evaluation.other_judges.a should be an object, got 3 — left out",
        "report.json: guard.alarms[0].evidence should be an object, got [1] — left out",
        "report.json: guard.alarms[1] should be an object, got 5 — left out",
        "report.json: rounds[0].steps should be an integer, got 2.5 — left out",
        "report.json: rounds[1].round should be an integer, got True — left out",
        "report.json: redteam.sets[0].success_rate should be a number, got '?' — left out",
        "report.json: redteam.sets[1] should be an object, got 'x' — left out",
    ]


def test_salvage_of_a_null_or_non_object() -> None:
    problems: list[str] = []
    assert EvaluationResult.salvage([1, 2], problems, "evaluation.json") is None
    assert problems == ["evaluation.json: the file should be an object, got [1, 2] — left out"]
    rep = RunReport.salvage({"run": None, "ppo": None}, problems, "report.json")
    assert rep is not None and rep.run == RunInfo() and rep.ppo is None  # null: quietly absent
    assert len(problems) == 1
