"""The GPU path, checked on a CUDA machine: parity with the CPU, learning, every stage once,
and PPO throughput of the default model's architecture.

CI has no GPU, so nothing here is a test; run it wherever a GPU is at hand:

    python benchmarks/gpu_check.py --out gpu_check.json

Each section runs on its own and records ``ok`` or the error, so one run shows every
problem. Sections:

- ``parity``: the tiny policy on CPU (fp32) and on CUDA (trunk under bf16 autocast, heads in
  fp32): response log-probs of the same tokens, and PPO's first-minibatch ratio on the GPU
  (rollout log-probs from the KV-cache sampler vs the update's full forward).
- ``learning``: PPO on the synthetic reward whose optimum is known (share of even token
  ids, 1.0) with the guard and its held-out evaluation, on the GPU; a checkpoint written
  there is loaded into a CPU policy.
- ``stages``: reward model (Bradley–Terry, known rule), DPO, SFT and the AI labeler, once
  each on the GPU.
- ``ray`` (only when asked: ``--only ray``): the Ray backend with 2 rollout workers and 2
  data-parallel learners sharing the GPU, on the known-answer reward.
- ``throughput``: PPO iterations of SmolLM2-135M's architecture (its config, random
  weights: the packaged GGUF need not travel) at the default config's shape and a larger
  one, on the GPU and on the CPU of the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.config import (  # noqa: E402
    DPOConfig,
    GenerateConfig,
    ModelConfig,
    PPOConfig,
    RewardConfig,
)
from alignkit.data.types import Pair  # noqa: E402
from alignkit.models.device import describe, pick_device  # noqa: E402
from alignkit.models.loading import (  # noqa: E402
    SMOLLM2,
    TINY,
    cache_dir,
    load_causal_lm,
    load_tokenizer,
    stop_token_ids,
)
from alignkit.models.policy import Policy  # noqa: E402
from alignkit.rl.ppo import PPOTrainer  # noqa: E402
from alignkit.rl.scorers import token_share_scorer  # noqa: E402

RESULTS: dict = {}
GPU = "cuda"  # --device cpu: a dry run of the script itself on a machine without a GPU
PROMPTS = [f"Story number {i}: once upon a time" for i in range(64)]


@contextlib.contextmanager
def section(name: str):
    t0 = time.perf_counter()
    rec = RESULTS.setdefault(name, {})
    try:
        yield rec
        rec["ok"] = True
    except Exception as e:  # noqa: BLE001 — record it and go on to the next section
        rec["ok"] = False
        rec["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"[{name}] {json.dumps(rec)}", flush=True)


def tiny_policy(tok, device: str, seed: int = 0) -> tuple[Policy, list[int]]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = load_causal_lm(TINY, tok, seed=seed)
        policy = Policy(lm, ModelConfig(name=TINY, lora_r=8, lora_alpha=16, device=device))
    return policy, stop_token_ids(tok, lm)


def trainer(policy, tok, stop_ids, out: Path, new_tokens: int = 8, **ppo) -> PPOTrainer:
    cfg = PPOConfig(**{"steps": 30, "prompts_per_step": 8, "samples_per_prompt": 4, "lr": 2e-3,
                       "kl_coef": 0.0, "epochs": 2, "minibatches": 2, "checkpoint_every": 1000,
                       **ppo})
    return PPOTrainer(policy, tok, PROMPTS, token_share_scorer(torch.arange(0, len(tok), 2)),
                      cfg, GenerateConfig(max_new_tokens=new_tokens), out, stop_ids)


def check_parity(tok, work: Path) -> None:
    from alignkit.generation import encode_prompts, sample
    from alignkit.rl.rollout import response_forward

    with section("parity") as rec:
        cpu, stop_ids = tiny_policy(tok, "cpu")
        gpu, _ = tiny_policy(tok, GPU)
        q, qm = encode_prompts(tok, PROMPTS[:16])
        gen = sample(cpu, q, qm, 16, stop_ids, tok.pad_token_id,
                     generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            lp_cpu, _, _ = response_forward(cpu, q, qm, gen.response_ids, gen.response_mask, 1.0)
            lp_gpu, _, _ = response_forward(gpu, q, qm, gen.response_ids, gen.response_mask, 1.0)
        m = gen.response_mask
        diff = ((lp_gpu.cpu() - lp_cpu).abs() * m).max().item()
        rec["logprob_max_abs_diff_cpu_fp32_vs_gpu_autocast"] = diff
        rec["logprob_mean_abs"] = float((lp_cpu.abs() * m).sum() / m.sum())
        gen_g = sample(gpu, q, qm, 16, stop_ids, tok.pad_token_id,
                       generator=torch.Generator().manual_seed(0))
        rec["same_tokens_cpu_vs_gpu_sampler"] = float(
            (gen_g.response_ids.cpu() == gen.response_ids).float().mean())
        t = trainer(gpu, tok, stop_ids, work / "parity", steps=1, epochs=1, minibatches=1)
        roll, *_ = t.rollout(0)
        stats = t.update(roll, 0)  # one minibatch: the ratio before any step
        rec["first_update_ratio"] = stats["val/ratio"]
        rec["first_update_approxkl"] = stats["policy/approxkl_avg"]
        assert diff < 0.1, f"log-probs differ by {diff}"
        assert abs(stats["val/ratio"] - 1) < 1e-2, stats["val/ratio"]


def check_learning(tok, work: Path) -> None:
    from alignkit.guard.config import GuardConfig
    from alignkit.guard.guard import Guard, HeldoutEval

    with section("learning") as rec:
        policy, stop_ids = tiny_policy(tok, GPU)
        t = trainer(policy, tok, stop_ids, work / "learning")
        guard = Guard(GuardConfig(every=5, heldout_prompts=8, kl_budget=50.0), t,
                      heldout=HeldoutEval(t, PROMPTS[:8]), log=None)
        guard.baseline()
        scores: list[float] = []
        t0 = time.perf_counter()
        t.train(on_step=lambda s: scores.append(s["objective/scores"]), guard=guard)
        rec["seconds_per_step"] = round((time.perf_counter() - t0) / len(scores), 3)
        start, end = sum(scores[:3]) / 3, sum(scores[-5:]) / 5
        rec.update(start=round(start, 3), end=round(end, 3), optimum=1.0,
                   guard_evaluations=len(guard.evaluations), alarms=len(guard.alarms))
        ckpt = t.save_checkpoint()
        cpu, _ = tiny_policy(tok, "cpu")
        t_cpu = trainer(cpu, tok, stop_ids, work / "learning")
        t_cpu.load_checkpoint(ckpt, keep_logs=True)
        gpu_w, cpu_w = policy.adapter_state(), cpu.adapter_state()
        rec["checkpoint_on_cpu_max_diff"] = max(
            (gpu_w[k] - cpu_w[k]).abs().max().item() for k in gpu_w)
        assert end > 0.8 and end > start + 0.15, scores


def check_stages(tok, work: Path) -> None:
    from alignkit.reward.model import RewardModel, load_backbone
    from alignkit.reward.train import train_reward_model

    rng = random.Random(0)
    nouns = ["dog", "teacher", "city", "garden", "song", "river", "robot", "friend"]
    pairs = [Pair(prompt=f"Tell me about item {i}",
                  chosen=f"the {rng.choice(nouns)} was {rng.choice(['kind', 'very kind'])}",
                  rejected=f"the {rng.choice(nouns)} was {rng.choice(['cruel', 'very cruel'])}",
                  source="simulated") for i in range(120)]
    with section("reward_model") as rec:
        backbone, rtok = load_backbone("policy", TINY)
        rm = RewardModel(backbone, rtok, max_length=32, device=GPU)
        rep = train_reward_model(rm, pairs, RewardConfig(epochs=6, lr=1e-3, batch_prompts=8,
                                                         eval_fraction=0.25), progress=False)
        rec.update(device=str(rm.device), eval_accuracy=rep.eval_accuracy,
                   pairs_eval=rep.pairs_eval)
        assert rep.eval_accuracy >= 0.9, rep.eval_accuracy
    with section("dpo") as rec:
        from alignkit.rl.dpo import train_dpo

        policy, _ = tiny_policy(tok, GPU)
        r = train_dpo(policy, tok, pairs[:48], DPOConfig(epochs=2, lr=2e-3), progress=False)
        rec.update({k: v for k, v in r.__dict__.items() if isinstance(v, int | float)})
    with section("sft") as rec:
        from alignkit.safety.sft import sft_train

        policy, _ = tiny_policy(tok, GPU)
        recs = [{"prompt": p.prompt, "completion": p.chosen} for p in pairs[:32]]
        r = sft_train(policy, tok, recs, epochs=2, lr=2e-3, chat_template=False)
        rec.update({k: v for k, v in r.__dict__.items() if isinstance(v, int | float)})
    with section("ai_labeler") as rec:
        from alignkit.safety.ai_feedback import LogProbLabeler
        from alignkit.safety.constitution import load_constitution

        policy, _ = tiny_policy(tok, GPU)
        lab = LogProbLabeler(policy.lm, tok, load_constitution(), principles_per_pair=2)
        probs, _ = lab.probabilities([p.prompt for p in pairs[:4]], [p.chosen for p in pairs[:4]],
                                  [p.rejected for p in pairs[:4]])
        rec["p_first"] = [round(float(x), 3) for x in probs]


def smollm2_arch(tok, device: str) -> tuple[Policy, list[int]]:
    """SmolLM2-135M's architecture with random weights (its config.json only)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dir = os.environ.get("ALIGNKIT_SMOLLM2_CONFIG", str(cache_dir() / SMOLLM2))
    config = AutoConfig.from_pretrained(cfg_dir)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return Policy(lm, ModelConfig(name=SMOLLM2, device=device)), stop_token_ids(tok, lm)


def check_ray(work: Path, steps: int = 30) -> None:
    """The Ray backend with the models on the GPU: 2 rollout workers and 2 data-parallel
    learners (gloo over CUDA tensors) sharing the one GPU in quarters."""
    import ray

    from alignkit.distributed.config import DistributedConfig
    from alignkit.distributed.runner import RayPPO, ray_session
    from alignkit.distributed.workers import WorkerSpec

    with section("ray") as rec:
        spec = WorkerSpec(model=ModelConfig(name=TINY, lora_r=8, lora_alpha=16),
                          ppo=PPOConfig(steps=steps, prompts_per_step=8, samples_per_prompt=4,
                                        lr=2e-3, kl_coef=0.0, epochs=2, minibatches=2,
                                        checkpoint_every=1000),
                          generate=GenerateConfig(max_new_tokens=8), threads=1)
        share = 0.25 if GPU.startswith("cuda") else 0.0  # a quarter of the GPU each
        cfg = DistributedConfig(backend="ray", num_cpus=4, num_rollout_workers=2,
                                worker_gpus=share, num_learners=2, placement="separate",
                                learner_cpus=1, learner_gpus=share, learner_backend="gloo")
        scores: list[float] = []
        with ray_session(cfg):
            runner = RayPPO(spec, PROMPTS, work / "ray", cfg)
            t0 = time.perf_counter()
            runner.train(on_step=lambda s: scores.append(s["objective/scores"]))
            rec["seconds_per_step"] = round((time.perf_counter() - t0) / steps, 3)
            where = lambda actor: str(ray.get(actor.__ray_call__.remote(  # noqa: E731
                lambda self: self.policy.device)))
            rec["worker_devices"] = [where(w) for w in runner.workers]
            rec["learner_devices"] = [where(rank) for rank in runner.learners]
            states = ray.get([rank.state.remote() for rank in runner.learners])
            rec["ranks_identical"] = all(torch.equal(states[0][2][k], states[1][2][k])
                                         for k in states[0][2])
            runner.shutdown()
        start, end = sum(scores[:3]) / 3, sum(scores[-5:]) / 5
        rec.update(start=round(start, 3), end=round(end, 3), optimum=1.0)
        assert rec["ranks_identical"] and end > start + 0.15, scores


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def check_throughput(tok, work: Path, iters: int, cpu_threads: int, with_cpu: bool) -> None:
    shapes = {"default": {"prompts_per_step": 16, "samples_per_prompt": 2, "new_tokens": 24},
              "large": {"prompts_per_step": 64, "samples_per_prompt": 4, "new_tokens": 64}}
    for device in dict.fromkeys((GPU, "cpu") if with_cpu else (GPU,)):
        for name, shape in shapes.items():
            if device == "cpu" and name == "large":
                continue  # minutes per iteration: the default shape makes the comparison
            with section(f"throughput_{device}_{name}") as rec:
                if device == "cpu":
                    torch.set_num_threads(cpu_threads)
                policy, stop_ids = smollm2_arch(tok, device)
                t = trainer(policy, tok, stop_ids, work / f"tp_{device}_{name}",
                            lr=6e-4, kl_coef=0.1, steps=iters + 1, **shape)
                steps: list[dict] = []
                t.train(on_step=steps.append)
                times = [s["time/step"] for s in steps]
                gen_tokens = [s["response/length"] for s in steps]
                steady = times[1:]  # the first iteration pays for CUDA kernels' warm-up
                batch = shape["prompts_per_step"] * shape["samples_per_prompt"]
                per_iter = _median(steady)
                rec.update(device=describe(pick_device(device)), batch=batch,
                           new_tokens=shape["new_tokens"], iters=len(steady),
                           median_s_per_iter=round(per_iter, 3),
                           **{f"median_s_{k}": round(_median([s[f"time/{k}"]
                                                               for s in steps[1:]]), 3)
                              for k in ("generation", "reference", "scoring", "update")},
                           generated_tokens_per_s=round(batch * sum(gen_tokens[1:])
                                                        / len(steady) / per_iter, 1))
                if device.startswith("cuda"):
                    rec["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
                    torch.cuda.reset_peak_memory_stats()
    for name in shapes:
        g, c = RESULTS.get(f"throughput_cuda_{name}", {}), RESULTS.get(f"throughput_cpu_{name}")
        if c and g.get("ok") and c.get("ok"):
            RESULTS[f"gpu/cpu time ratio ({name})"] = round(
                g["median_s_per_iter"] / c["median_s_per_iter"], 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--iters", type=int, default=4, help="Timed PPO iterations per shape.")
    ap.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default="parity,learning,stages,throughput")
    ap.add_argument("--device", default="cuda", help="'cpu' dry-runs the script itself.")
    ap.add_argument("--no-cpu", action="store_true", help="Skip the CPU throughput baseline.")
    args = ap.parse_args()
    global GPU
    GPU = args.device
    if GPU.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA GPU — run it on a GPU machine")
    import peft
    import transformers

    RESULTS["env"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                      "peft": peft.__version__, "device": describe(pick_device(GPU)),
                      "cpu_threads": args.cpu_threads}
    print(json.dumps(RESULTS["env"]), flush=True)
    torch.set_num_threads(args.cpu_threads)
    tok = load_tokenizer(TINY)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "parity" in only:
            check_parity(tok, work)
        if "learning" in only:
            check_learning(tok, work)
        if "stages" in only:
            check_stages(tok, work)
        if "ray" in only:
            check_ray(work)
        if "throughput" in only:
            check_throughput(tok, work, args.iters, args.cpu_threads, not args.no_cpu)
    args.out.write_text(json.dumps(RESULTS, indent=2))
    failed = [k for k, v in RESULTS.items() if isinstance(v, dict) and v.get("ok") is False]
    print(f"gpu check: {len(failed)} section(s) failed{': ' + ', '.join(failed) if failed else ''}")


if __name__ == "__main__":
    main()
