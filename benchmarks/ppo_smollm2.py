"""alignkit's PPO iteration on SmolLM2-135M-Instruct with LoRA (r 16, all linear layers),
against the limits of the machine it runs on.

Batch 16, 32 new tokens, 4 PPO epochs, the synthetic token-share reward of ``ppo_vs_trl``
(the update's trunk under bf16 autocast where the CPU has bf16 instructions, ``--compute
auto``, as ``model.compute_dtype``; ``--compute float32`` for the exact one). Prints seconds
per iteration (median after a warm-up), split into generation / reference / update, and
measures in the same process, with the same threads, the two limits the work is bound by:

- copy bandwidth (a 256 MB ``copy_``, bytes read + written per second) → the time to read
  the weights once, the floor of a decoding step that is memory-bound;
- a plain matmul of the update's shape ([B·(P+T), hidden] × [hidden, intermediate]) →
  the floor of a step's FLOPs.

Beside the bound it prints the same product at a decoding step's shape (B rows), whose
kernels run far below the update-shaped rate: how far the step is from its own products.

The decoding step is compared with max(weight bytes / bandwidth, step FLOPs / matmul rate)
and the update with the matmul rate of its precision (its FLOPs counted by
``torch.utils.flop_counter`` on the warm-up iteration). The last two lines are
``decode/bound ratio: R`` and ``ppo/matmul share: S``. The measuring code touches alignkit
only through ``PPOTrainer``, so the same script times an older checkout
(``PYTHONPATH=<old checkout>``).

    .venv/bin/python benchmarks/ppo_smollm2.py --iters 3 --threads 2   # a few minutes
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import _common as C

# ISA extensions that decide which matmul kernels run (bf16 / int8 dot products, AMX tiles)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and which of ``ISA_FLAGS`` it has (from /proc/cpuinfo)."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), [f for f in ISA_FLAGS
                                                                if f in flags]


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = C.timestamp()
        fn()
        best = min(best, C.timestamp() - t0)
    return best


def copy_bandwidth(mbytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second of ``dst.copy_(src)`` on a buffer far larger than the caches,
    counting the bytes read and the bytes written (STREAM's "copy")."""
    src = torch.ones(mbytes * 2**20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), repeats)


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype = torch.float32,
                repeats: int = 5) -> float:
    """FLOP/s of ``x @ Wᵀ`` for x [m, k], W [n, k] (a linear layer's layout), best of
    ``repeats``."""
    x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    return 2 * m * k * n / _best_seconds(lambda: torch.nn.functional.linear(x, w), repeats)


def decode_weights(lm: torch.nn.Module) -> tuple[int, int]:
    """(bytes, parameters) one decoding step reads: every weight once (a tied
    embedding/head once), LoRA factors excluded (merged for sampling), minus an untied
    input embedding, of which a step reads only B rows."""
    seen, n_bytes, n_params = set(), 0, 0
    for name, p in lm.named_parameters():
        if p.data_ptr() not in seen and "lora_" not in name:
            seen.add(p.data_ptr())
            n_bytes, n_params = n_bytes + p.numel() * p.element_size(), n_params + p.numel()
    emb, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if head is None or emb.weight.data_ptr() != head.weight.data_ptr():
        n_bytes -= emb.weight.numel() * emb.weight.element_size()
        n_params -= emb.weight.numel()
    return n_bytes, n_params


def build_trainer(out_dir: Path, lr: float = 3e-4, dtype: str = "float32",
                  sampling: str = "auto", compute: str = "auto"):
    from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
    from alignkit.models.loading import SMOLLM2, load_causal_lm, stop_token_ids
    from alignkit.models.policy import Policy
    from alignkit.rl.ppo import PPOTrainer
    from alignkit.rl.scorers import token_share_scorer

    C.alignkit_process_setup()
    tok = C.bench_tokenizer()
    lm = load_causal_lm(SMOLLM2, tok, dtype=dtype)
    model_cfg = dict(name=SMOLLM2, use_lora=True, lora_r=16, lora_alpha=32)
    if "sampling_dtype" in ModelConfig.model_fields:  # an older checkout has no twin
        model_cfg["sampling_dtype"] = sampling
    if "compute_dtype" in ModelConfig.model_fields:  # nor autocast on a CPU
        model_cfg["compute_dtype"] = compute
    if dtype != "float32":
        model_cfg["dtype"] = dtype
    policy = Policy(lm, ModelConfig(**model_cfg))
    cfg = PPOConfig(steps=10**6, prompts_per_step=C.BATCH, samples_per_prompt=1,
                    epochs=C.PPO_EPOCHS, minibatches=1, lr=lr, checkpoint_every=10**6, seed=0)
    gen = GenerateConfig(max_new_tokens=C.NEW_TOKENS, temperature=1.0, top_p=1.0)
    return PPOTrainer(policy, tok, C.fixed_length_prompts(tok, 64), token_share_scorer(
        C.target_ids(tok)), cfg, gen, out_dir, stop_ids=stop_token_ids(tok, lm))


def iteration(trainer, count_flops: bool = False) -> dict:
    """One PPO iteration as ``PPOTrainer.train`` runs it (rollout, update, KL controller),
    minus the checkpoint; the update timed on its own (and its FLOPs counted apart from the
    rollout's when ``count_flops``)."""
    counters = [FlopCounterMode(display=False) for _ in range(2)] if count_flops else None
    t0 = C.timestamp()
    if counters:
        with counters[0]:
            roll, _, _, stats = trainer.rollout(trainer.step)
    else:
        roll, _, _, stats = trainer.rollout(trainer.step)
    t1 = C.timestamp()
    if counters:
        with counters[1]:
            stats.update(trainer.update(roll, trainer.step))
    else:
        stats.update(trainer.update(roll, trainer.step))
    t2 = C.timestamp()
    trainer.kl_ctl.update(stats["objective/kl"], roll.query_ids.size(0))
    trainer.step += 1
    out = {"seconds": t2 - t0, "t_update": t2 - t1, "t_gen": stats["time/generation"],
           "t_ref": stats["time/reference"], "score": stats["objective/scores"],
           "ratio": stats["val/ratio"], "steps": roll.response_ids.size(1),
           "prompt": roll.query_ids.size(1)}
    if counters:
        out["rollout_flops"], out["update_flops"] = (c.get_total_flops() for c in counters)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=4, help="iterations (first = warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="model.dtype: bfloat16 = frozen base weights in bf16")
    ap.add_argument("--sampling", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="model.sampling_dtype: the weights the sampler reads")
    ap.add_argument("--compute", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="model.compute_dtype: bf16 autocast of the update's trunk")
    a = ap.parse_args()
    if a.iters < 2:
        ap.error("--iters must be >= 2 (one warm-up + at least one timed)")
    C.set_threads(a.threads)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(Path(tmp), dtype=a.dtype, sampling=a.sampling,
                                compute=a.compute)
        bf16_update = a.dtype == "bfloat16" or (
            getattr(trainer.policy, "compute_dtype", None) == torch.bfloat16)
        twin = (getattr(trainer.policy, "sampling_dtype", None) == torch.bfloat16
                and not trainer.policy.low_precision_base)
        lm = trainer.policy.causal
        hidden = lm.config.hidden_size
        inter = getattr(lm.config, "intermediate_size", 4 * hidden)
        rows = C.BATCH * (C.PROMPT_TOKENS + C.NEW_TOKENS)

        def limits() -> tuple[float, float, float, float, float]:
            return (copy_bandwidth(), matmul_rate(rows, hidden, inter),
                    matmul_rate(rows, hidden, inter, torch.bfloat16),
                    matmul_rate(2048, 2048, 2048),
                    matmul_rate(C.BATCH, hidden, inter,  # a decoding step's product
                                torch.bfloat16 if twin else torch.float32))

        before = limits()  # measured before and after the iterations; the best is the
        # machine's limit (on a shared machine a loaded moment only lowers a measurement)
        rss_setup = C.rss_mb()
        first = iteration(trainer, count_flops=True)  # the warm-up, counted
        runs = [iteration(trainer) for _ in range(a.iters - 1)]
        w_bytes, w_params = decode_weights(lm)
        if twin:  # the sampler reads the bf16 twin: two bytes a weight
            w_bytes = 2 * w_params
    bandwidth, mm32, mm16, mm_big, mm_step = (max(x, y) for x, y in
                                               zip(before, limits(), strict=True))

    med = {k: C.median([r[k] for r in runs]) for k in ("seconds", "t_gen", "t_ref", "t_update")}
    steps = C.median([r["steps"] for r in runs])
    decode_step = med["t_gen"] / steps
    step_flops = 2 * C.BATCH * w_params  # one multiply-add per weight per sequence
    mm = mm16 if bf16_update else mm32  # the rate of the update's kernels
    t_read, t_flop = w_bytes / bandwidth, step_flops / (mm16 if twin else mm)
    bound = max(t_read, t_flop)
    update_rate = first["update_flops"] / med["t_update"]
    iter_rate = (first["rollout_flops"] + first["update_flops"]) / med["seconds"]
    cpu, isa = cpu_description()

    print(f"\nSmolLM2-135M-Instruct + LoRA r16, batch {C.BATCH}, {C.NEW_TOKENS} new tokens, "
          f"{C.PPO_EPOCHS} epochs, {a.dtype} base weights, update "
          f"{'in bf16' if bf16_update else 'in fp32'}, sampling from "
          f"{'a bf16 twin' if twin else 'the base weights'}, {a.threads} thread(s), median of "
          f"{len(runs)} after 1 warm-up")
    print(f"CPU: {cpu}; ISA: {' '.join(isa) or 'none of ' + ', '.join(ISA_FLAGS)}; torch "
          f"{torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()}")
    print(f"seconds/iteration: {med['seconds']:.2f}  (runs: "
          + ", ".join(f"{r['seconds']:.2f}" for r in runs) + ")")
    other = med["seconds"] - med["t_gen"] - med["t_ref"] - med["t_update"]
    print(f"  generation {med['t_gen']:.2f} s, reference {med['t_ref']:.2f} s, update "
          f"{med['t_update']:.2f} s, other (scoring, advantages) {other:.2f} s")
    print(f"RSS after setup: {rss_setup:.0f} MB; peak RSS: {C.peak_rss_mb():.0f} MB")
    print(f"machine: copy bandwidth {bandwidth / 1e9:.1f} GB/s; matmul [{rows}x{hidden}]x"
          f"[{hidden}x{inter}] {mm32 / 1e9:.1f} GFLOP/s fp32, {mm16 / 1e9:.1f} GFLOP/s bf16; "
          f"2048^3 fp32 {mm_big / 1e9:.1f} GFLOP/s")
    print(f"decode step: {1000 * decode_step:.1f} ms ({steps:.0f} steps, prompt forward "
          f"included); bound {1000 * bound:.1f} ms = max(weights {w_bytes / 1e6:.0f} MB "
          f"/ bandwidth = {1000 * t_read:.1f} ms, {step_flops / 1e9:.2f} "
          f"GFLOP / matmul = {1000 * t_flop:.1f} ms)")
    print(f"  (beside the bound: a [{C.BATCH}x{hidden}]x[{hidden}x{inter}] product, a decoding "
          f"step's shape, runs at {mm_step / 1e9:.1f} GFLOP/s: the step's FLOPs at that rate "
          f"take {1000 * step_flops / mm_step:.1f} ms; the step is "
          f"{decode_step * mm_step / step_flops:.2f}x that)")
    print(f"update: {first['update_flops'] / 1e12:.2f} TFLOP in {med['t_update']:.2f} s = "
          f"{update_rate / 1e9:.1f} GFLOP/s; whole iteration "
          f"{(first['rollout_flops'] + first['update_flops']) / 1e12:.2f} TFLOP, "
          f"{iter_rate / 1e9:.1f} GFLOP/s")
    print(f"val/ratio of iteration 1 (mean over its {C.PPO_EPOCHS} epochs): {first['ratio']:.4f}; "
          f"score first/last: "
          f"{first['score']:.3f} / {runs[-1]['score']:.3f}")
    print(f"decode/bound ratio: {decode_step / bound:.2f}")
    print(f"ppo/matmul share: {update_rate / mm:.2f}")


if __name__ == "__main__":
    main()
