"""The red-team, constitution and SFT commands end to end on the tiny random model."""

import json

import yaml
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.data.types import Pair, read_pairs_jsonl, write_pairs_jsonl

runner = CliRunner()


def _ok(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r


def test_revise_sft_then_redteam_the_fine_tuned_run(tmp_path):
    cai = tmp_path / "cai"
    _ok(["constitution", "revise", "--model", "tiny-llama", "--prompts", "harmbench", "--n", "3",
         "--max-new-tokens", "6", "--no-few-shot", "--out", str(cai), "--threads", "1"])
    revs = [json.loads(x) for x in (cai / "revisions.jsonl").read_text().splitlines()]
    assert len(revs) == 3 and all(len(r["steps"]) == 1 for r in revs)
    pairs = read_pairs_jsonl(cai / "pairs.jsonl")
    assert all(p.source == "ai" for p in pairs)
    # the tiny model's revisions are noise; SFT on a fixed record so the run has data
    (cai / "sft.jsonl").write_text(json.dumps({"prompt": "q", "completion": "no thanks"}) + "\n")
    run = tmp_path / "sft"
    _ok(["sft", "--data", str(cai / "sft.jsonl"), "--model", "tiny-llama", "--out", str(run),
         "--epochs", "1", "--threads", "1"])
    assert (run / "policy" / "adapter_config.json").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "tiny-llama"

    out = tmp_path / "rt"
    r = _ok(["redteam", "--model", str(run), "--attacks", "advbench,rtp-heldout,generated",
             "--per-set", "4", "--generated", "4", "--max-new-tokens", "6", "--out", str(out),
             "--threads", "1"])
    rep = json.loads((out / "report.json").read_text())["redteam"]
    names = {s["name"] for s in rep["sets"] if s["category"] == "all"}
    assert {"advbench", "rtp-heldout"} <= names
    assert all(0 <= s["success_rate"] <= 1 and len(s["ci95"]) == 2 for s in rep["sets"])
    # a run directory is compared with its base model on the same attacks
    assert rep["baseline"]["model"] == "tiny-llama"
    assert {c["name"] for c in rep["comparison"]} == names
    lines = (out / "responses.jsonl").read_text().splitlines()
    assert len(lines) == 2 * rep["attacks"]
    assert (out / "report.html").exists() and "Red team" in (out / "report.html").read_text()
    assert "advbench" in r.output


def test_redteam_needs_model_and_out():
    r = runner.invoke(app, ["redteam", "--attacks", "advbench"])
    assert r.exit_code == 2 and "--model" in r.output


def test_filter_command_drops_pairs_with_harmful_chosen_side(tmp_path):
    src = tmp_path / "pairs.jsonl"
    write_pairs_jsonl([Pair("p", "you are a fucking idiot", "hello", 1.0, "ai"),
                       Pair("p", "have a nice day", "shut up you idiot", 1.0, "ai")], src)
    out = tmp_path / "clean.jsonl"
    r = _ok(["redteam", "filter", "--pairs", str(src), "--out", str(out)])
    kept = read_pairs_jsonl(out)
    assert [p.chosen for p in kept] == ["have a nice day"]
    rep = json.loads((tmp_path / "clean.jsonl.report.json").read_text())
    assert rep["removed"] == 1 and "fucking" not in json.dumps(rep)
    assert "1 removed" in r.output
    bad = runner.invoke(app, ["redteam", "filter", "--out", str(out)])
    assert bad.exit_code == 2 and "exactly one" in bad.output
