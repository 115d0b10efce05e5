"""alignkit's PPO iteration on SmolLM2-135M-Instruct with LoRA (r 16, all linear layers).

Batch 16, 32 new tokens, 4 PPO epochs, fp32, the synthetic token-share reward of
``ppo_vs_trl``. Prints seconds per iteration (median after a warm-up), generated
tokens per second, peak RSS, and the achieved GFLOP/s of the iteration — its FLOPs
counted by ``torch.utils.flop_counter`` on the warm-up iteration — against a plain torch
matmul's GFLOP/s measured in the same process with the same threads.

    .venv/bin/python benchmarks/ppo_smollm2.py            # ~4 min on one thread
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import _common as C


def matmul_gflops(shapes=((512, 576, 1536), (2048, 2048, 2048)), repeats: int = 5) -> dict:
    """Best-of-``repeats`` GFLOP/s of ``a @ b`` for (m, k, n): a model-shaped and a big one."""
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = C.timestamp()
            a @ b
            best = min(best, C.timestamp() - t0)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
    return out


def build_trainer(out_dir: Path, lr: float = 3e-4):
    from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
    from alignkit.models.loading import SMOLLM2, load_causal_lm, stop_token_ids
    from alignkit.models.policy import Policy
    from alignkit.rl.ppo import PPOTrainer
    from alignkit.rl.scorers import token_share_scorer

    tok = C.bench_tokenizer()
    lm = load_causal_lm(SMOLLM2, tok)
    policy = Policy(lm, ModelConfig(name=SMOLLM2, use_lora=True, lora_r=16, lora_alpha=32))
    cfg = PPOConfig(steps=10**6, prompts_per_step=C.BATCH, samples_per_prompt=1,
                    epochs=C.PPO_EPOCHS, minibatches=1, lr=lr, checkpoint_every=10**6, seed=0)
    gen = GenerateConfig(max_new_tokens=C.NEW_TOKENS, temperature=1.0, top_p=1.0)
    return PPOTrainer(policy, tok, C.fixed_length_prompts(tok, 64), token_share_scorer(
        C.target_ids(tok)), cfg, gen, out_dir, stop_ids=stop_token_ids(tok, lm))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=4, help="iterations (first = warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args()
    if a.iters < 2:
        ap.error("--iters must be >= 2 (one warm-up + at least one timed)")
    C.set_threads(a.threads)
    from benchmarks.ppo_vs_trl import alignkit_iteration

    mm = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(Path(tmp))
        rss_setup = C.rss_mb()
        with FlopCounterMode(display=False) as fc:  # the warm-up, counted
            first = alignkit_iteration(trainer)
        flops = fc.get_total_flops()
        runs = [alignkit_iteration(trainer) for _ in range(a.iters - 1)]
    secs = C.median([r["seconds"] for r in runs])
    gen_tokens = C.BATCH * C.NEW_TOKENS  # upper bound; the random-free instruct model may stop
    achieved = flops / secs / 1e9
    print(f"\nSmolLM2-135M-Instruct + LoRA r16, batch {C.BATCH}, {C.NEW_TOKENS} new tokens, "
          f"{C.PPO_EPOCHS} epochs, fp32, {a.threads} thread(s), median of {len(runs)} after "
          "1 warm-up")
    print(f"seconds/iteration: {secs:.2f}  (runs: "
          + ", ".join(f"{r['seconds']:.2f}" for r in runs) + ")")
    print(f"  generation {C.median([r['t_gen'] for r in runs]):.2f} s, reference "
          f"{C.median([r['t_ref'] for r in runs]):.2f} s, rest = update")
    print(f"tokens/s (generated, {gen_tokens} max/iteration): {gen_tokens / secs:.1f}; "
          f"processed (prompt+response, all passes) ≈ "
          f"{C.BATCH * (C.PROMPT_TOKENS + C.NEW_TOKENS) * (2 + C.PPO_EPOCHS) / secs:.0f}")
    print(f"RSS after setup: {rss_setup:.0f} MB; peak RSS: {C.peak_rss_mb():.0f} MB")
    print(f"FLOPs per iteration (counted): {flops / 1e12:.2f} TFLOP; achieved "
          f"{achieved:.1f} GFLOP/s")
    for shape, g in mm.items():
        print(f"plain matmul {shape}: {g:.1f} GFLOP/s -> PPO iteration reaches "
              f"{100 * achieved / g:.0f}%")
    print(f"score first/last: {first['score']:.3f} / {runs[-1]['score']:.3f}")


if __name__ == "__main__":
    main()
