"""Distributed PPO pieces without Ray: sharding, merging, and the worker/learner split
reproducing the local trainer's numbers (known answer: the local run itself)."""

import json
from dataclasses import replace

import pytest
import torch

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.distributed import workers
from alignkit.distributed.config import DistributedConfig
from alignkit.distributed.device import autocast_dtype, pick_device, precision
from alignkit.distributed.runner import shard_prompts
from alignkit.distributed.workers import (
    Learner,
    RemoteScorer,
    RolloutTask,
    RolloutWorker,
    WorkerSpec,
    build_policy,
    merge_rollouts,
    merge_stats,
)
from alignkit.models.loading import TINY, set_threads
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.rollout import Rollout


def tiny_spec(steps: int = 2, **ppo) -> WorkerSpec:
    cfg = dict(steps=steps, prompts_per_step=4, samples_per_prompt=2, lr=2e-3, kl_coef=0.05,
               epochs=1, minibatches=2, checkpoint_every=1000)
    cfg.update(ppo)
    return WorkerSpec(model=ModelConfig(name=TINY, lora_r=8, lora_alpha=16),
                      ppo=PPOConfig(**cfg), generate=GenerateConfig(max_new_tokens=6))


PROMPTS = [f"Story number {i}: once upon a time" for i in range(32)]


def test_config_forbids_unknown_keys_and_documents_every_field():
    with pytest.raises(ValueError, match="extra"):
        DistributedConfig(workers=2)
    with pytest.raises(ValueError):
        DistributedConfig(max_weight_lag=-1)
    for name, f in DistributedConfig.model_fields.items():
        assert f.description, name
    assert DistributedConfig().backend == "local"


def test_shards_keep_prompt_groups_together():
    prompts = [p for p in "abcde" for _ in range(2)]
    shards = shard_prompts(prompts, group=2, n=2)
    assert shards == [list("aabbcc"), list("ddee")]
    assert shard_prompts(prompts[:2], group=2, n=3) == [["a", "a"]]  # never an empty shard
    assert sum(shards, []) == prompts


def _roll(P: int, T: int, q: int, r: int, v: float) -> Rollout:
    full = lambda w, x: torch.full((1, w), x)  # noqa: E731
    return Rollout(full(P, q), torch.ones(1, P, dtype=torch.long), full(T, r),
                   torch.ones(1, T), full(T, v), full(T, v), full(T, v), torch.tensor([v]),
                   full(T, v), full(T, v), full(T, v))


def test_merge_pads_queries_left_and_responses_right():
    a, b = _roll(2, 3, q=5, r=7, v=1.0), _roll(3, 1, q=6, r=8, v=2.0)
    m = merge_rollouts([a, b], pad_id=0)
    assert m.query_ids.tolist() == [[0, 5, 5], [6, 6, 6]]
    assert m.query_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert m.response_ids.tolist() == [[7, 7, 7], [8, 0, 0]]
    assert m.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert m.advantages.tolist() == [[1, 1, 1], [2, 0, 0]]
    assert m.scores.tolist() == [1.0, 2.0]


def test_merge_stats_weights_means_by_shard_size():
    s = merge_stats([{"objective/scores": 1.0, "val/num_eos_tokens": 2, "time/generation": 3.0},
                     {"objective/scores": 4.0, "val/num_eos_tokens": 5, "time/generation": 1.0}],
                    [1, 3])
    assert s == {"objective/scores": 3.25, "val/num_eos_tokens": 7, "time/generation": 3.0}


def test_worker_and_learner_reproduce_the_local_trainer(tiny_tokenizer, tmp_path):
    """One shard, lag 0: the split path must give the local trainer's metrics."""
    spec = tiny_spec(steps=2)
    set_threads(spec.threads)  # the workers pin theirs; sums round by thread count
    tok, policy, stop = build_policy(spec)
    local = PPOTrainer(policy, tok, PROMPTS, spec.scorer(tok), spec.ppo, spec.generate,
                       tmp_path / "local", stop)
    local.train()
    want = [json.loads(x) for x in (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()]

    worker = RolloutWorker(spec)
    learner = Learner(spec, PROMPTS, tmp_path / "split")
    got = []
    for step in range(2):
        version, beta, weights = learner.state()
        prompts = learner.batch_prompts([step])[step]
        meta, payload = worker.rollout(RolloutTask(step, 0, prompts, step), [weights], version,
                                       beta)
        assert meta.version == step
        got.append(learner.learn(step, [meta], 0.0, False, payload)[0])
    assert [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
            ] == got
    assert set(got[0]) == set(want[0])
    for g, w in zip(got, want, strict=True):
        for k in w:
            if not k.startswith("time/") and k != "eps":  # eps: a wall-clock rate
                assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-5), k
    # the update moved the adapters, and the worker picks up the broadcast
    _, _, new = learner.state()
    assert any(not torch.equal(new[k], weights[k]) for k in new)


def test_actors_apply_the_runs_process_settings(monkeypatch):
    """A Ray actor is a process of its own: the driver's threads and run.keep_freed_memory
    do not reach it, so each actor applies the spec's."""
    calls: list[tuple[int, bool]] = []
    monkeypatch.setattr(workers, "configure_process", lambda t, k: calls.append((t, k)))
    RemoteScorer(replace(tiny_spec(), threads=1, keep_freed_memory=False))
    assert calls == [(1, False)]


def test_device_helper_on_cpu():
    dev = pick_device("auto" if not torch.cuda.is_available() else "cpu")
    assert dev.type == "cpu"
    assert autocast_dtype(dev) is None  # fp32 on CPU
    with precision(dev):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            pick_device("cuda")


def test_driver_guard_mirrors_the_learner_and_returns_what_must_go_back(tmp_path):
    """The driver-side guard sees the learner's weights, step and β; a raised β and a
    rollback come back so the runner can send them to the learners."""
    from alignkit.distributed.runner import DriverGuard

    spec = tiny_spec()
    tok, policy, stop = build_policy(spec)
    mirror = PPOTrainer(policy, tok, PROMPTS, spec.scorer(tok), spec.ppo, spec.generate,
                        tmp_path, stop)
    learner_weights = {k: v + 1.0 for k, v in policy.adapter_state().items()}
    seen = {}

    every3 = type("Cfg", (), {"enabled": True, "every": 3})()

    class StubGuard:  # what Guard does on a KL alarm (raise β) and a rollback
        cfg, rollbacks = every3, 0

        def __call__(self, stats, prompts, texts):
            seen.update(step=mirror.step, beta=mirror.kl_ctl.value,
                        weights_match=all(torch.equal(policy.state_dict()[k].cpu(), w)
                                          for k, w in learner_weights.items()))
            mirror.kl_ctl.value *= 2
            for k, p in policy.named_parameters():
                if "lora_B" in k:
                    p.data.zero_()
            self.rollbacks += 1
            return "guard: proxy_gold at step 3; rolled back"

    class QuietGuard:
        cfg, rollbacks = every3, 0

        def __call__(self, stats, prompts, texts):
            return None

    dg = DriverGuard(StubGuard(), mirror)
    assert dg.due(3) and not dg.due(4)
    verdict, beta, restored = dg({"step": 3, "kl_coef": 0.05}, ["p"], ["t"], learner_weights)
    assert seen == {"step": 3, "beta": 0.05, "weights_match": True}
    assert verdict.startswith("guard:") and beta == pytest.approx(0.1)
    assert restored is not None and all(
        torch.count_nonzero(v) == 0 for k, v in restored.items() if "lora_B" in k)
    # a guard that neither raises β nor rolls back sends nothing back
    quiet = DriverGuard(QuietGuard(), mirror)
    assert quiet({"step": 3, "kl_coef": 0.05}, [], [], learner_weights) == (None, 0.05, None)
