"""PPO on a real local Ray cluster (2 CPUs, temporary folder): 2 rollout workers, the
synthetic known-optimum reward must rise, a worker killed mid-run must not fail the run,
and nothing may be left under ~/.ray or in /tmp."""

import glob
import json
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig  # noqa: E402
from alignkit.distributed.config import DistributedConfig  # noqa: E402
from alignkit.distributed.runner import RayPPO, ray_session, train_on_ray  # noqa: E402
from alignkit.distributed.workers import WorkerSpec, build_policy  # noqa: E402
from alignkit.models.loading import TINY  # noqa: E402
from alignkit.rl.ppo import PPOTrainer  # noqa: E402

PROMPTS = [f"Story number {i}: once upon a time" for i in range(64)]
STEPS = 30
KILL_AFTER = 3


def _spec(steps: int) -> WorkerSpec:
    # tests/test_learning.py's known-answer setup (share of even token ids, optimum 1.0) at
    # half its learning rate: with two data-parallel learners and weights one version
    # stale, 2e-3 reached 0.94 and then collapsed to ~0.6 on some sampler roundings; 1e-3
    # climbs to 1.0 on both roundings measured
    return WorkerSpec(
        model=ModelConfig(name=TINY, lora_r=8, lora_alpha=16),
        ppo=PPOConfig(steps=steps, prompts_per_step=8, samples_per_prompt=4, lr=1e-3,
                      kl_coef=0.0, epochs=2, minibatches=2, checkpoint_every=10),
        generate=GenerateConfig(max_new_tokens=8), threads=1)


def _local_keys(tmp_path: Path) -> set[str]:
    spec = _spec(1)
    tok, policy, stop = build_policy(spec)
    PPOTrainer(policy, tok, PROMPTS, spec.scorer(tok), spec.ppo, spec.generate,
               tmp_path, stop).train()
    return set(json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0]))


@pytest.mark.slow
def test_ray_ppo_learns_with_two_workers_and_survives_a_killed_worker(tmp_path):
    ray_home = Path.home() / ".ray"
    had_ray_home = ray_home.exists()
    before_tmp = set(glob.glob("/tmp/alignkit-ray-*"))
    torch.set_num_threads(1)
    cfg = DistributedConfig(backend="ray", num_cpus=2, num_rollout_workers=2,
                            max_weight_lag=1, worker_cpus=1, max_restarts=2)
    out = tmp_path / "run"
    scores: list[float] = []
    killed: list[int] = []
    with ray_session(cfg):
        runner = RayPPO(_spec(STEPS), PROMPTS, out, cfg)

        def on_step(s: dict) -> None:
            scores.append(s["objective/scores"])
            if s["step"] == KILL_AFTER:  # worker 0 holds the next step's shard right now
                killed.append(ray.get(runner.workers[0].pid.remote()))
                ray.kill(runner.workers[0], no_restart=False)

        assert runner.train(on_step=on_step) == "steps done"
        final = runner.adapter_state()
        runner.shutdown()
    assert not ray.is_initialized()

    # completes, with the local backend's metric keys and its checkpoints
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))
    assert set(lines[0]) == _local_keys(tmp_path / "local")
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:05d}"
    assert any("lora_" in k for k in final)

    # learning check (same thresholds as tests/test_learning.py)
    start, end = sum(scores[:3]) / 3, sum(scores[-5:]) / 5
    assert start < 0.75, scores
    assert end > 0.8 and end > start + 0.15, scores

    # the killed worker was restarted (new pid) and at most its in-flight rollouts were lost
    dist = [json.loads(x) for x in (out / "distributed.jsonl").read_text().splitlines()]
    print("scores", [round(x, 3) for x in scores], "\nlast", dist[-1])
    assert len(dist) == STEPS
    pids0 = {d["worker_pids"][0] for d in dist}
    assert killed and killed[0] in pids0 and len(pids0) == 2, dist
    assert dist[-1]["lost_total"] <= 1 + cfg.max_weight_lag
    assert all(d["weight_lag_max"] <= cfg.max_weight_lag for d in dist)
    assert max(d["weight_lag_max"] for d in dist) == 1  # sampling did overlap the update

    # no auth token or session folder left behind
    assert ray_home.exists() == had_ray_home
    assert not (ray_home / "auth_token").exists() or had_ray_home
    assert set(glob.glob("/tmp/alignkit-ray-*")) == before_tmp


@pytest.mark.slow
def test_ray_on_policy_reproduces_local_and_resumes_a_local_checkpoint(tmp_path):
    """Lag 0, one worker, reward model in its own actor: the numbers of the local trainer
    (known answer: the local run), through real actors and the object store."""
    steps = 3
    spec = _spec(steps)
    tok, policy, stop = build_policy(spec)
    PPOTrainer(policy, tok, PROMPTS, spec.scorer(tok), spec.ppo, spec.generate,
               tmp_path / "local", stop).train()
    want = [json.loads(x) for x in (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()]

    cfg = DistributedConfig(backend="ray", num_cpus=2, num_rollout_workers=1,
                            max_weight_lag=0, placement="separate", learner_cpus=1)
    # and a run checkpointed by the local backend after 2 steps resumes on Ray for step 3
    spec2 = _spec(2)
    tok, policy, stop = build_policy(spec2)
    PPOTrainer(policy, tok, PROMPTS, spec2.scorer(tok), spec2.ppo, spec2.generate,
               tmp_path / "resumed", stop).train()
    started: list[int] = []
    with ray_session(cfg):
        runner = RayPPO(spec, PROMPTS, tmp_path / "ray", cfg)
        assert runner.train() == "steps done"
        runner.shutdown()
        outcome, final = train_on_ray(spec, PROMPTS, tmp_path / "resumed",
                                      cfg.model_copy(update={"placement": "colocated"}),
                                      resume=True, on_start=started.append)
    assert outcome == "steps done" and started == [2] and any("lora_" in k for k in final)
    resumed = [json.loads(x) for x in
               (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for k in want[2]:
        if not k.startswith("time/") and k != "eps":  # eps: a wall-clock rate
            assert resumed[2][k] == pytest.approx(want[2][k], rel=1e-4, abs=1e-5), k
    got = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert len(got) == steps and set(got[0]) == set(want[0])
    for g, w in zip(got, want, strict=True):
        for k in w:
            if not k.startswith("time/") and k != "eps":  # eps: a wall-clock rate
                assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-5), (g["step"], k)
    dist = [json.loads(x) for x in (tmp_path / "ray" / "distributed.jsonl").read_text()
            .splitlines()]
    assert [d["weight_versions"] for d in dist] == [[0], [1], [2]]  # always the newest


@pytest.mark.slow
def test_two_data_parallel_learners_learn_and_agree(tmp_path):
    """2 rollout workers + 2 learners in a gloo group on the 2-CPU cluster: the run has the
    local metric keys, the synthetic reward rises, the ranks hold the same weights and
    the group's detached bookkeeping actor is gone after shutdown."""
    torch.set_num_threads(1)
    cfg = DistributedConfig(backend="ray", num_cpus=2, num_rollout_workers=2, num_learners=2,
                            max_weight_lag=1, worker_cpus=1)
    out = tmp_path / "run"
    scores: list[float] = []
    with ray_session(cfg):
        runner = RayPPO(_spec(STEPS), PROMPTS, out, cfg)
        assert runner.train(on_step=lambda s: scores.append(s["objective/scores"])) \
            == "steps done"
        w0, w1 = ray.get([rank.state.remote() for rank in runner.learners])
        group = runner.group
        runner.shutdown()
        with pytest.raises(ValueError):
            ray.get_actor("info_" + group)
    assert w0[0] == w1[0] == STEPS
    for k in w0[2]:
        assert torch.equal(w0[2][k], w1[2][k]), k
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert set(lines[0]) == _local_keys(tmp_path / "local")
    dist = [json.loads(x) for x in (out / "distributed.jsonl").read_text().splitlines()]
    assert {d["learners"] for d in dist} == {2}
    start, end = sum(scores[:3]) / 3, sum(scores[-5:]) / 5
    assert start < 0.75, scores
    assert end > 0.8 and end > start + 0.15, scores
