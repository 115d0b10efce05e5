"""A run directory written by an older alignkit still resumes and reports.

``fixtures/old_run`` was written by the code at 7490ca7 (``alignkit run --config
configs/tiny.yaml --set data.prompts=synthetic --set model.tiny_hidden=8 --set ppo.steps=3
--set ppo.checkpoint_every=1 --set generate.prompts=6 --set data.eval_prompts=6 --set
guard.heldout_prompts=4 --set evaluate.bootstrap=100``), then put in the state a kill after
step 3 leaves: ``checkpoints/latest`` at step 2, PPO marked running, no evaluation. The
reward model's tokenizer.json (3 MB, the packaged SmolLM2 one) is re-saved by the test.
``fixtures/old_run_finished`` holds what that run wrote when it was left to finish, with the
old metric names (``episodes``).
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from alignkit.config import RunConfig
from alignkit.cycle import run_cycle

FIXTURES = Path(__file__).parent / "fixtures"
OLD = FIXTURES / "old_run"
FINISHED = FIXTURES / "old_run_finished"
TIMES = ("time/", "eps")


def _copy_old_run(tmp_path: Path) -> Path:
    from alignkit.models.loading import TINY, load_tokenizer

    run = tmp_path / "old_run"
    shutil.copytree(OLD, run)
    load_tokenizer(TINY).save_pretrained(run / "reward_model")  # the file left out of git
    return run


def _numbers(row: dict) -> dict:
    """A metrics row without wall times, with the old name of the episode counter."""
    row = {("episode" if k == "episodes" else k): v for k, v in row.items()}
    return {k: v for k, v in row.items() if not k.startswith(TIMES) and k != "lr"}


# the entropy sums 49k terms per token, whose rounding follows the CPU's kernels: 2.9e-5
# apart between the AMD EPYC that recorded the fixture and a Sapphire Rapids Xeon
RELATIVE = {"policy/entropy_avg": 1e-4}


def test_old_run_resumes_at_its_checkpoint_and_reports(tmp_path, monkeypatch):
    # The fixture was recorded on a CPU without bf16 instructions: 'auto' sampled in fp32.
    # Here 'auto' must mean the same, or the bf16 twin's tokens (not its PPO math) differ.
    monkeypatch.setattr("alignkit.models.sampling_twin.cpu_has_fast_bf16", lambda: False)
    run = _copy_old_run(tmp_path)
    cfg = RunConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text()))
    assert run_cycle(cfg, run) == "done"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["updated"] == json.loads(
        (OLD / "manifest.json").read_text())["stages"]["generate"]["updated"]  # not re-run
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    old = [json.loads(x) for x in (FINISHED / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(old) == 3
    for new_row, old_row in zip(rows, old, strict=True):
        a, b = _numbers(new_row), _numbers(old_row)
        assert set(b) <= set(a)
        for k in b:
            assert a[k] == pytest.approx(b[k], rel=RELATIVE.get(k, 1e-5), abs=1e-6), k
    ev = json.loads((run / "evaluation.json").read_text())
    old_ev = json.loads((FINISHED / "evaluation.json").read_text())
    for side in ("before", "after"):
        assert ev[side]["mean"] == pytest.approx(old_ev[side]["mean"], abs=1e-6)
    assert ev["kl_to_reference"] == pytest.approx(old_ev["kl_to_reference"], rel=1e-4)
    assert (run / "report.html").stat().st_size > 10_000


def test_old_finished_run_reports(tmp_path):
    from alignkit.evaluate.report import write_report

    run = tmp_path / "old_run_finished"
    shutil.copytree(FINISHED, run)
    page = write_report([run], tmp_path / "report.html").read_text()
    assert "old_run_finished" in page or "tiny" in page
    assert "profanity" in page
