"""The training commands on pairs files: reward train/score and DPO, end to end."""

import json
from pathlib import Path

from typer.testing import CliRunner

from alignkit.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _pairs(path: Path, n: int = 24) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Tell me about item {i}", "chosen": " it was kind",
                                "rejected": " it was cruel", "source": "simulated"}) + "\n")
    return path


def test_reward_train_then_score(tmp_path):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "rm"
    r = CliRunner().invoke(app, ["reward", "train", "--pairs", str(pairs), "--out", str(out),
                                 "--config", str(ROOT / "configs/tiny.yaml"),
                                 "--set", "reward.epochs=1"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "reward_report.json").read_text())["pairs_train"] > 0
    r = CliRunner().invoke(app, ["reward", "score", "--model", str(out), "--prompt", "hi",
                                 "--completion", "there"])
    assert r.exit_code == 0, r.output
    assert -20 < float(r.output.strip().splitlines()[-1]) < 20  # one normalised score


def test_dpo_command_writes_an_adapter(tmp_path):
    pairs = _pairs(tmp_path / "pairs.jsonl", 8)
    r = CliRunner().invoke(app, ["dpo", "--pairs", str(pairs), "--out", str(tmp_path / "d"),
                                 "--config", str(ROOT / "configs/tiny.yaml")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "policy" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "d" / "dpo_report.json").read_text())["pairs"] == 8


def test_bad_pairs_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    r = CliRunner().invoke(app, ["dpo", "--pairs", str(bad), "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "rejected" in r.output and "Traceback" not in r.output
