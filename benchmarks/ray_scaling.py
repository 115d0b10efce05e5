"""Ray backend vs local: rollout throughput with 1 and 2 rollout workers, the cost of Ray
at 1 worker on whole PPO steps (rollout + update, strictly on-policy), and the update time
with 1 and 2 data-parallel learners (gloo).

Default model SmolLM2-135M-Instruct, the synthetic token-share reward, 16 prompts × 2
samples, 24 new tokens (the default config's batch). Every process uses ``--threads``
torch threads, so 2 workers need 2 free cores to scale. Phases run one after the other
(never two busy sides at once); each reports the median over ``--steps`` after one
warm-up step.

    .venv/bin/python benchmarks/ray_scaling.py                      # ~10 min on one thread
    .venv/bin/python benchmarks/ray_scaling.py --model tiny-llama   # ~1 min smoke run

Last line: ``ray/local time ratio: R`` = median Ray PPO step / median local PPO step at 1
worker (goal: R <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig  # noqa: E402
from alignkit.data.prompts import load_prompts  # noqa: E402
from alignkit.distributed.config import DistributedConfig  # noqa: E402
from alignkit.distributed.runner import RayPPO, ray_session  # noqa: E402
from alignkit.distributed.workers import WorkerSpec, build_policy  # noqa: E402
from alignkit.rl.ppo import PPOTrainer  # noqa: E402


def make_spec(args) -> WorkerSpec:
    return WorkerSpec(
        model=ModelConfig(name=args.model),
        ppo=PPOConfig(steps=args.steps + 1, prompts_per_step=args.prompts, samples_per_prompt=2,
                      checkpoint_every=10_000),
        generate=GenerateConfig(max_new_tokens=args.new_tokens), threads=args.threads)


class Local:
    """The local backend in this process: rollouts and whole PPO steps on demand."""

    def __init__(self, spec: WorkerSpec, prompts: list[str], out: Path) -> None:
        tok, policy, stop = build_policy(spec)
        self.trainer = PPOTrainer(policy, tok, prompts, spec.scorer(tok), spec.ppo,
                                  spec.generate, out, stop)

    def rollout(self, step: int) -> float:
        t0 = time.perf_counter()
        self.trainer.rollout(step)
        return time.perf_counter() - t0

    def ppo_step(self) -> float:
        t0 = time.perf_counter()
        self.trainer.train(self.trainer.step + 1)
        return time.perf_counter() - t0


def ray_ppo_step(runner: RayPPO, updates: list[float] | None = None) -> float:
    """Driver wall time of one PPO step, every Ray call included; the learners' update time
    goes to ``updates``."""
    t0 = time.perf_counter()
    runner.train(runner.step + 1, on_step=lambda s: updates is not None and updates.append(
        s["time/update"]))
    return time.perf_counter() - t0


def measure(spec: WorkerSpec, prompts: list[str], steps: int, tmp: Path) -> dict:
    """Local and Ray phases alternate step by step, so a burst of load on a shared machine
    hits both sides alike; only one side is busy at any moment (the other waits)."""
    cfg = DistributedConfig(backend="ray", num_rollout_workers=1, max_weight_lag=0,
                            worker_cpus=spec.threads, num_cpus=2 * spec.threads)
    local = Local(spec, prompts, tmp / "local")
    res: dict[str, list[float]] = {k: [] for k in (
        "local_roll", "ray1_roll", "ray2_roll", "local_step", "ray1_step", "learn1_update",
        "learn2_step", "learn2_update")}
    with ray_session(cfg):
        one = RayPPO(spec, prompts, tmp / "ray1", cfg)
        for step in range(steps + 1):  # rollouts only, same weights on both sides
            res["local_roll"].append(local.rollout(step))
            res["ray1_roll"].append(one.sample(step)[1])
        for _ in range(steps + 1):  # whole PPO steps, strictly on-policy
            res["local_step"].append(local.ppo_step())
            res["ray1_step"].append(ray_ppo_step(one, res["learn1_update"]))
        one.shutdown()
        dp = RayPPO(spec, prompts, tmp / "ray_dp", cfg.model_copy(update={"num_learners": 2}))
        for _ in range(steps + 1):  # the same steps with 2 data-parallel learners
            res["learn2_step"].append(ray_ppo_step(dp, res["learn2_update"]))
        dp.shutdown()
        two = RayPPO(spec, prompts, tmp / "ray2",
                     cfg.model_copy(update={"num_rollout_workers": 2}))
        for step in range(steps + 1):
            res["ray2_roll"].append(two.sample(step)[1])
        two.shutdown()
    return {k: statistics.median(v[1:]) for k, v in res.items()}  # first one is warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=3, help="measured steps (after 1 warm-up)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (× 2 samples)")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = make_spec(args)
    prompts = load_prompts("rtp")[:200]
    seqs = args.prompts * 2
    print(f"model {args.model}, {seqs} sequences × {args.new_tokens} new tokens per step, "
          f"{args.threads} thread(s) per process, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(spec, prompts, args.steps, Path(tmp))
    for name, key in (("local:         ", "local_roll"), ("ray, 1 worker: ", "ray1_roll"),
                      ("ray, 2 workers:", "ray2_roll")):
        print(f"rollout throughput  {name} {seqs / r[key]:7.2f} seq/s ({r[key]:.2f} s/step)")
    print(f"rollout speed-up 2 vs 1 worker: {r['ray1_roll'] / r['ray2_roll']:.2f}x")
    print(f"PPO step  local {r['local_step']:.2f} s, ray 1 worker {r['ray1_step']:.2f} s")
    print(f"PPO update  1 learner {r['learn1_update']:.2f} s, 2 data-parallel learners "
          f"{r['learn2_update']:.2f} s ({r['learn1_update'] / r['learn2_update']:.2f}x); "
          f"whole step with 2 learners {r['learn2_step']:.2f} s")
    print(f"ray/local time ratio: {r['ray1_step'] / r['local_step']:.3f}")


if __name__ == "__main__":
    main()
