"""Training faults: a corrupted newest checkpoint, a full disk while writing one, kill -9."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkit import checkpoints
from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.scorers import token_share_scorer

ROOT = Path(__file__).resolve().parents[1]


def _trainer(tok, out: Path, steps: int = 4) -> PPOTrainer:
    torch.manual_seed(0)
    lm = load_causal_lm(TINY, tok)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=4, lora_alpha=8))
    cfg = PPOConfig(steps=steps, prompts_per_step=4, samples_per_prompt=2, lr=1e-3,
                    checkpoint_every=2, minibatches=2)
    return PPOTrainer(policy, tok, [f"prompt {i} is" for i in range(16)],
                      token_share_scorer(torch.arange(0, len(tok), 2)), cfg,
                      GenerateConfig(max_new_tokens=4), out, stop_token_ids(tok, lm))


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty_pointer_target"])
def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tiny_tokenizer, tmp_path,
                                                                    damage):
    straight = _trainer(tiny_tokenizer, tmp_path / "a")
    straight.train()
    run = tmp_path / "b"
    _trainer(tiny_tokenizer, run).train()  # checkpoints at steps 2 and 4
    newest = run / "checkpoints" / "step_00004" / "state.pt"
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        newest.write_bytes(b"\x00not a checkpoint" * 64)
    else:
        newest.unlink()
    said: list[str] = []
    resumed = _trainer(tiny_tokenizer, run)
    assert resumed.load_checkpoint(log=said.append) and resumed.step == 2
    assert any("step_00004" in m and "falling back" in m for m in said), said
    assert any("step_00002" in m for m in said), said
    assert len(_rows(run / "metrics.jsonl")) == 2  # the logs are cut back to step 2
    resumed.train()
    a, b = _rows(tmp_path / "a" / "metrics.jsonl"), _rows(run / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["objective/scores"] == rb["objective/scores"]
        # a resumed AdamW step matches to ~3e-4 relative here (as before the checkpoints
        # module: the same numbers at 7490ca7), not bit for bit
        assert ra["loss/policy_avg"] == pytest.approx(rb["loss/policy_avg"], rel=1e-3)


def test_no_readable_checkpoint_at_all_starts_over(tiny_tokenizer, tmp_path):
    t = _trainer(tiny_tokenizer, tmp_path, steps=2)
    t.train()
    (tmp_path / "checkpoints" / "step_00002" / "state.pt").write_bytes(b"junk")
    said: list[str] = []
    assert not _trainer(tiny_tokenizer, tmp_path).load_checkpoint(log=said.append)
    assert said and "unreadable" in said[0]


def test_full_disk_while_writing_leaves_the_previous_checkpoint(tiny_tokenizer, tmp_path,
                                                                monkeypatch):
    t = _trainer(tiny_tokenizer, tmp_path, steps=4)
    t.train(steps=2)
    before = (tmp_path / "checkpoints" / "step_00002" / "state.pt").read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *a, **kw):
        with open(f, "wb") as fh:  # part of the file reaches the disk, then ENOSPC
            fh.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        t.train(steps=4)
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    ck = tmp_path / "checkpoints"
    assert (ck / "latest").read_text() == "step_00002"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step_00002"]  # no half folder
    assert (ck / "step_00002" / "state.pt").read_bytes() == before
    again = _trainer(tiny_tokenizer, tmp_path)
    assert again.load_checkpoint() and again.step == 2


def test_load_weights_refuses_unexpected_keys():
    lin = torch.nn.Linear(2, 1)
    checkpoints.load_weights(lin, {"weight": torch.zeros(1, 2)}, "a checkpoint")  # partial: ok
    with pytest.raises(checkpoints.CheckpointError, match="unexpected"):
        checkpoints.load_weights(lin, {"other.weight": torch.zeros(1, 2)}, "a checkpoint")


@pytest.mark.slow
def test_kill_9_during_ppo_then_the_same_command_matches_an_uninterrupted_run(tmp_path):
    args = ["--config", "configs/tiny.yaml", "--set", "ppo.steps=8", "--set",
            "ppo.checkpoint_every=2", "--set", "generate.prompts=8"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "alignkit.cli", "run", *args, "--out", str(out)]

    straight = subprocess.run(cmd(tmp_path / "a"), cwd=ROOT, capture_output=True, text=True,
                              env=env, timeout=600)
    assert straight.returncode == 0, straight.stdout[-2000:]
    out = tmp_path / "b"
    proc = subprocess.Popen(cmd(out), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step   5/8"):
            proc.send_signal(signal.SIGKILL)  # no handler, no final checkpoint
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert json.loads((out / "manifest.json").read_text())["stages"]["ppo"]["status"] == \
        "running"
    again = subprocess.run(cmd(out), cwd=ROOT, capture_output=True, text=True, env=env,
                           timeout=600)
    assert again.returncode == 0, again.stdout[-2000:]
    assert re.search(r"resuming PPO from step [46]\b", again.stdout), again.stdout[-2000:]
    resumed_at = int(re.search(r"resuming PPO from step (\d+)", again.stdout).group(1))
    a, b = _rows(tmp_path / "a" / "metrics.jsonl"), _rows(out / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a[: resumed_at + 1], b[: resumed_at + 1], strict=True):
        # the steps before the kill, and the first step after the restart
        assert rb["objective/scores"] == ra["objective/scores"], ra["step"]
        assert rb["objective/kl"] == pytest.approx(ra["objective/kl"], rel=1e-4, abs=1e-6)
        for k, v in ra.items():
            if k.startswith(("loss/", "policy/", "val/")):
                assert rb[k] == pytest.approx(v, rel=1e-3, abs=1e-6), (ra["step"], k)
