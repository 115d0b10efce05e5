"""Trackers: TensorBoard event files hold PPO's scalars; MLflow/W&B are optional and lazy."""

import importlib.util
import json
import sys
import types

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig, RunConfig
from alignkit.models.loading import TINY, load_causal_lm, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.scorers import token_share_scorer
from alignkit.tracking import (
    TrackerError,
    Trackers,
    check_trackers,
    flatten,
    make_trackers,
    scalars,
)

PPO_KEYS = ("objective/kl", "objective/scores", "objective/rlhf_reward", "policy/clipfrac_avg",
            "loss/value_avg", "val/ratio", "kl_coef")


def test_tensorboard_event_files_hold_ppo_scalars(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    lm = load_causal_lm(TINY, tiny_tokenizer)
    policy = Policy(lm, ModelConfig(name=TINY, lora_r=4, lora_alpha=8))
    trainer = PPOTrainer(policy, tiny_tokenizer, [f"prompt {i} is" for i in range(8)],
                         token_share_scorer(torch.arange(0, len(tiny_tokenizer), 2)),
                         PPOConfig(steps=3, prompts_per_step=2, samples_per_prompt=2,
                                   checkpoint_every=10),
                         GenerateConfig(max_new_tokens=4), tmp_path,
                         stop_token_ids(tiny_tokenizer, lm))
    cfg = RunConfig(name="tb-test", report_to=["tensorboard"])
    tracker = make_trackers(cfg.report_to, tmp_path, cfg.model_dump())
    trainer.train(on_step=lambda s: tracker.log(s, step=s["step"]))
    tracker.close()

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(PPO_KEYS) <= tags
    assert "step" not in tags  # the step is the x axis, not a series
    for key in PPO_KEYS:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6,
                                                          abs=1e-7)
    assert "tb-test" in acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()


def test_resume_purges_steps_logged_after_the_checkpoint(tmp_path):
    with make_trackers(["tensorboard"], tmp_path, {}) as t:
        for step in (1, 2, 3):
            t.log({"objective/kl": float(step)}, step)
    with make_trackers(["tensorboard"], tmp_path, {}, resume_step=1) as t:  # back at step 1
        for step in (2, 3):
            t.log({"objective/kl": 10.0 * step}, step)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("objective/kl")
    assert [(e.step, e.value) for e in events] == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_nothing_requested_is_a_no_op(tmp_path):
    t = make_trackers([], tmp_path, {})
    t.log({"objective/kl": 1.0}, 1)
    t.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_missing_package_is_a_one_line_error(name, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(TrackerError) as e:
        make_trackers(["tensorboard", name], tmp_path, {})
    msg = str(e.value)
    assert "\n" not in msg and f"'{name}' needs the {name} package" in msg
    assert f"pip install {name}" in msg


def test_check_trackers_before_the_run(monkeypatch):
    check_trackers(["tensorboard"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(TrackerError, match="'wandb' needs the wandb package"):
        check_trackers(["tensorboard", "wandb"])
    with pytest.raises(TrackerError, match="unknown tracker 'x'"):
        check_trackers(["x"])


def test_unknown_tracker(tmp_path):
    with pytest.raises(TrackerError, match="unknown tracker 'comet'"):
        make_trackers(["comet"], tmp_path, {})


def _recorder(name: str) -> tuple[types.ModuleType, list]:
    calls: list = []
    mod = types.ModuleType(name)

    def rec(fn):
        return lambda *a, **k: calls.append((fn, a, k)) or types.SimpleNamespace(
            log=lambda *a2, **k2: calls.append(("run.log", a2, k2)),
            finish=lambda: calls.append(("run.finish", (), {})))

    for fn in ("set_tracking_uri", "set_experiment", "start_run", "log_params", "log_metrics",
               "end_run", "init"):
        setattr(mod, fn, rec(fn))
    return mod, calls


def test_mlflow_and_wandb_get_metrics_through_their_apis(tmp_path, monkeypatch):
    mlflow, ml_calls = _recorder("mlflow")
    wandb, wb_calls = _recorder("wandb")
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"name": "r1", "ppo": {"lr": 0.001, "steps": 2}}
    with make_trackers(["mlflow", "wandb"], tmp_path, config) as t:
        t.log({"step": 1, "objective/kl": 0.5, "note": "text", "objective/scores": float("nan")},
              step=1)
    names = [c[0] for c in ml_calls]
    assert names == ["set_tracking_uri", "set_experiment", "start_run", "log_params",
                     "log_metrics", "end_run"]
    assert ml_calls[0][1][0] == (tmp_path / "mlruns").resolve().as_uri()
    assert ml_calls[3][1][0] == {"name": "r1", "ppo.lr": "0.001", "ppo.steps": "2"}
    assert ml_calls[4][1] == ({"objective/kl": 0.5},) and ml_calls[4][2] == {"step": 1}
    assert wb_calls[0][0] == "init" and wb_calls[0][2]["config"] == config
    assert wb_calls[1] == ("run.log", ({"objective/kl": 0.5},), {"step": 1})
    assert wb_calls[2][0] == "run.finish"


def test_scalars_and_flatten():
    assert scalars({"step": 3, "a": 1, "b": True, "c": "x", "d": float("inf"), "e": 2.5}) == {
        "a": 1.0, "e": 2.5}
    assert flatten({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": 1, "d": "[1, 2]"}
    assert isinstance(make_trackers([], ".", {}), Trackers)
