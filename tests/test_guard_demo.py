"""The reward-hacking demo on the tiny model: the unguarded run's proxy/gold alarm fires and
the guarded run ends with the higher gold score."""

import json

import pytest
from typer.testing import CliRunner

from alignkit.artifacts import RunReport
from alignkit.cli import app


@pytest.mark.slow
def test_reward_hacking_demo(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "reward-hacking", "--out", str(out),
                                   "--model", "tiny-llama", "--steps", "16"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    u, g = s["runs"]["unguarded"], s["runs"]["guarded"]
    # the unguarded run: proxy/gold alarm fired (logged only, so it trained on)
    assert any(a["detector"] == "proxy_gold" for a in u["alarms"]), u["alarms"]
    assert u["steps_run"] == 16 and u["kl_coef_end"] == 0.0
    # the guarded run ends with the higher held-out gold
    assert g["final"]["gold"] > u["final"]["gold"], (g["final"], u["final"])
    assert s["checks"] == {"unguarded_alarm_fired": True, "guarded_gold_higher": True}
    # and the evidence is on disk: metrics of both runs, guard sections, the plot
    for name in ("unguarded", "guarded"):
        assert (out / name / "metrics.jsonl").read_text().count("\n") == \
            s["runs"][name]["steps_run"]
        rep = json.loads((out / name / "report.json").read_text())
        assert {"detector", "step", "message", "evidence"} <= set(rep["guard"]["alarms"][0])
        typed = RunReport.from_json(rep)  # the cycle's record: `alignkit report` reads it
        assert typed.ppo is not None and typed.ppo.iterations == s["runs"][name]["steps_run"]
        assert typed.run.stop_reason == s["runs"][name]["stopped"]
    assert (out / "proxy_gold_vs_kl.png").read_bytes()[:4] == b"\x89PNG"
