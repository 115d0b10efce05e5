"""alignkit's PPO vs TRL 1.12's PPOTrainer, side by side on one CPU.

Same random GPT-2-style model (identical weights), same tokenizer, same prompts (8
tokens each), batch 16, 32 new tokens, 4 PPO epochs over one minibatch, fp32, KL
coefficient 0.05 (k1, in the reward), same synthetic reward (share of even token ids),
same thread count. Three worker processes — TRL, alignkit full fine-tuning (shared-trunk
value head) and alignkit LoRA — do one iteration each in turn (order flipped every
round); the time of an iteration is the median after a warm-up iteration.

The headline ratio uses alignkit *full fine-tuning*, the apples-to-apples setting: TRL's
PPO fine-tunes every weight (with a separate value model). LoRA is reported beside it.

    .venv/bin/python benchmarks/ppo_vs_trl.py            # ~5 min on one thread
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH

import torch

from benchmarks import _common as C

TRL_VERSION = "1.12.0"
KL_COEF = 0.05


# --- alignkit side ------------------------------------------------------------------------
def alignkit_trainer(use_lora: bool, lr: float, out_dir: Path, n_prompts: int = 64,
                     batch: int = C.BATCH, new_tokens: int = C.NEW_TOKENS,
                     epochs: int = C.PPO_EPOCHS, model_sizes: dict | None = None):
    from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
    from alignkit.models.policy import Policy
    from alignkit.rl.ppo import PPOTrainer
    from alignkit.rl.scorers import token_share_scorer

    tok = C.bench_tokenizer()
    lm = C.tiny_gpt2(tok, **(model_sizes or {}))
    # TRL's side samples and trains in fp32: so does this one (an older checkout may lack
    # the fields; its defaults were fp32 then, apart from the sampling twin)
    precision = {k: "float32" for k in ("compute_dtype", "sampling_dtype")
                 if k in ModelConfig.model_fields}
    policy = Policy(lm, ModelConfig(name="bench-gpt2", use_lora=use_lora, lora_r=16,
                                    lora_alpha=32, lora_targets="all-linear", **precision))
    cfg = PPOConfig(steps=10**6, prompts_per_step=batch, samples_per_prompt=1, epochs=epochs,
                    minibatches=1, lr=lr, kl_coef=KL_COEF, kl_estimator="k1",
                    checkpoint_every=10**6, seed=0)
    gen = GenerateConfig(max_new_tokens=new_tokens, temperature=1.0, top_p=1.0)
    prompts = C.fixed_length_prompts(tok, n_prompts)
    return PPOTrainer(policy, tok, prompts, token_share_scorer(C.target_ids(tok)), cfg, gen,
                      out_dir, stop_ids=[tok.eos_token_id])


def alignkit_iteration(trainer) -> dict:
    """One PPO iteration (rollout + update + KL controller), as ``PPOTrainer.train`` does,
    minus the per-step checkpoint (TRL's side saves nothing either)."""
    t0 = C.timestamp()
    roll, _, _, stats = trainer.rollout(trainer.step)
    stats.update(trainer.update(roll, trainer.step))
    trainer.kl_ctl.update(stats["objective/kl"], roll.query_ids.size(0))
    trainer.step += 1
    seconds = C.timestamp() - t0
    return {"seconds": seconds, "score": stats["objective/scores"], "kl": stats["objective/kl"],
            "t_gen": stats["time/generation"], "t_ref": stats["time/reference"],
            "threads": torch.get_num_threads()}


def alignkit_worker(use_lora: bool, lr: float) -> None:
    C.alignkit_process_setup()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = alignkit_trainer(use_lora, lr, Path(tmp))
        n_train = sum(p.numel() for p in trainer.policy.trainable_parameters())
        C.send({"rss_mb": C.rss_mb(), "trainable": n_train})
        while C.next_step():
            C.send(alignkit_iteration(trainer))


# --- TRL side -----------------------------------------------------------------------------
def trl_worker(lr: float, iters: int) -> None:
    C.use_trl(TRL_VERSION)
    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    threads = torch.get_num_threads()
    tok = C.bench_tokenizer()
    policy = C.tiny_gpt2(tok)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        value = GPT2ForSequenceClassification(C.gpt2_config(tok)).float()
    value.transformer.load_state_dict(policy.transformer.state_dict())  # critic = policy trunk
    torch.nn.init.zeros_(value.score.weight)  # like alignkit's value head
    reward = C.SyntheticRewardModel(C.target_ids(tok), C.PROMPT_TOKENS)
    prompts = C.fixed_length_prompts(tok, 64)
    ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    data = Dataset.from_dict({"input_ids": ids})

    class Stepper(TrainerCallback):
        """Blocks after each iteration until the parent asks for the next one."""

        last: dict = {}

        def on_train_begin(self, args, state, control, **kw):
            torch.set_num_threads(threads)  # nothing on the way may change it
            self.t = C.timestamp()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "objective/scores" in logs:
                self.last = logs

        def on_step_end(self, args, state, control, **kw):
            C.send({"seconds": C.timestamp() - self.t,
                    "score": float(self.last.get("objective/scores", float("nan"))),
                    "kl": float(self.last.get("objective/kl", float("nan"))),
                    "threads": torch.get_num_threads()})
            C.next_step_or_exit()
            self.t = C.timestamp()

    with tempfile.TemporaryDirectory() as tmp:
        args = PPOConfig(
            output_dir=tmp, per_device_train_batch_size=C.BATCH, gradient_accumulation_steps=1,
            num_mini_batches=1, num_ppo_epochs=C.PPO_EPOCHS, response_length=C.NEW_TOKENS,
            temperature=1.0, learning_rate=lr, lr_scheduler_type="constant",
            kl_coef=KL_COEF, kl_estimator="k1", stop_token="eos", missing_eos_penalty=None,
            whiten_rewards=False, vf_coef=0.1, cliprange=0.2, cliprange_value=0.2,
            gamma=1.0, lam=0.95, total_episodes=C.BATCH * (iters + 1),
            num_sample_generations=0, report_to="none", save_strategy="no", logging_steps=1,
            bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
            disable_tqdm=True, seed=0, dataloader_num_workers=0,
        )
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None,
                             reward_model=reward, train_dataset=data, value_model=value,
                             eval_dataset=data, callbacks=[Stepper()])
        C.send({"rss_mb": C.rss_mb(),
                "trainable": sum(p.numel() for p in trainer.model.parameters()
                                 if p.requires_grad)})
        if C.next_step():
            trainer.train()


# --- parent -------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=10, help="iterations per side (first = warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every worker")
    ap.add_argument("--lr", type=float, default=3e-5, help="lr of full fine-tuning (both)")
    ap.add_argument("--lora-lr", type=float, default=3e-4, help="lr of alignkit's LoRA run")
    ap.add_argument("--no-lora", action="store_true", help="skip the alignkit LoRA worker")
    ap.add_argument("--worker", choices=["trl", "full", "lora"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    C.set_threads(a.threads)
    if a.worker == "trl":
        return trl_worker(a.lr, a.iters)
    if a.worker in ("full", "lora"):
        return alignkit_worker(a.worker == "lora", a.lora_lr if a.worker == "lora" else a.lr)
    if a.iters < 4:
        ap.error("--iters must be >= 4 (one warm-up + at least three timed)")

    C.ensure_trl(TRL_VERSION)
    me = str(Path(__file__).resolve())
    common = ["--iters", str(a.iters), "--threads", str(a.threads), "--lr", str(a.lr),
              "--lora-lr", str(a.lora_lr)]
    names = {"trl": "trl-1.12 full", "full": "alignkit full", "lora": "alignkit lora"}
    kinds = ["trl", "full"] + ([] if a.no_lora else ["lora"])
    workers = [C.Worker(names[k], [me, "--worker", k, *common], a.threads) for k in kinds]
    res = C.run_alternating(workers, a.iters)
    ends = {w.name: w.stop() for w in workers}

    print(f"\nPPO iteration, batch {C.BATCH}, {C.NEW_TOKENS} new tokens, {C.PPO_EPOCHS} epochs, "
          f"fp32, {a.threads} thread(s), median of {a.iters - 1} after 1 warm-up")
    tok = C.bench_tokenizer()
    n_params = sum(p.numel() for p in C.tiny_gpt2(tok).parameters())
    print(f"model: random GPT-2, {n_params / 1e6:.1f}M params, vocab {len(tok)}")
    print(f"{'side':16s} {'s/iter':>7s} {'min':>6s} {'max':>6s} {'trainable':>10s} "
          f"{'RSS setup':>10s} {'peak RSS':>9s} {'score 1st':>9s} {'score last2':>11s} "
          f"{'KL last2':>8s}")
    med = {}
    for w in workers:
        rs = res[w.name][1:]
        secs = [r["seconds"] for r in rs]
        med[w.name] = C.median(secs)
        first = res[w.name][0]["score"]
        last = sum(r["score"] for r in res[w.name][-2:]) / 2
        kl = sum(r["kl"] for r in res[w.name][-2:]) / 2
        print(f"{w.name:16s} {med[w.name]:7.2f} {min(secs):6.2f} {max(secs):6.2f} "
              f"{w.ready['trainable'] / 1e6:9.2f}M {w.ready['rss_mb']:8.0f}MB "
              f"{ends[w.name]['peak_rss_mb']:7.0f}MB {first:9.3f} {last:11.3f} {kl:8.2f}")
    trl = med[names["trl"]]
    for k in kinds[1:]:
        print(f"{names[k]} / trl time ratio: {med[names[k]] / trl:.2f}")
    last = {w.name: sum(r["score"] for r in res[w.name][-2:]) / 2 for w in workers}
    ok = last[names["full"]] >= last[names["trl"]] - 0.02
    print(f"learning check (reward after {a.iters} iterations, alignkit full >= TRL - 0.02): "
          f"{'PASS' if ok else 'FAIL'}")
    print("headline: alignkit full fine-tuning vs TRL (both tune every weight)")
    print(f"alignkit/trl time ratio: {med[names['full']] / trl:.2f}")


if __name__ == "__main__":
    main()
