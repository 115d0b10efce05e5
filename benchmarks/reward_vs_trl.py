"""alignkit's reward-model train step vs TRL 1.16's RewardTrainer, side by side on one CPU.

Same data: 40 prompts with K = 4 completions each, ranked by a known rule (more "kind"
words wins), so every prompt gives K(K-1)/2 = 6 pairs; a step trains on 24 pairs (4
prompts' worth) on both sides, prompt + completion ≤ 64 tokens. Same model: the random
GPT-2 trunk of ``ppo_vs_trl`` (identical weights) with a scalar head on the last token.
fp32, no gradient checkpointing (TRL's RewardConfig defaults to bf16 and gradient
checkpointing; both are off here), same lr, AdamW, grad-norm clip 1.0, same threads.

alignkit groups a prompt's pairs and encodes each distinct completion once (16 sequences
per step); TRL encodes chosen and rejected of every pair (48 sequences). alignkit's step
also includes tokenisation, which TRL does once before training.

    .venv/bin/python benchmarks/reward_vs_trl.py          # ~1 min on one thread
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH

import torch

from benchmarks import _common as C

TRL_VERSION = "1.16.0"
K = 4
PROMPTS_PER_STEP = 4
PAIRS_PER_STEP = PROMPTS_PER_STEP * K * (K - 1) // 2
LR = 5e-5
MAX_LENGTH = 64


def make_pairs(n_prompts: int = 40, seed: int = 0):
    """K completions per prompt, every ordered pair by the count of 'kind' (ties dropped)."""
    from alignkit.data.types import Pair

    rng = random.Random(seed)
    words = [w for w in C.WORDS if w != "kind"]
    pairs = []
    for i in range(n_prompts):
        prompt = f"Tell me a story about item {i}."
        comps = []
        for k in range(K):
            body = [rng.choice(words) for _ in range(40)]
            for j in rng.sample(range(40), k * 3 + rng.randint(0, 2)):
                body[j] = "kind"
            comps.append((sum(w == "kind" for w in body), " " + " ".join(body)))
        comps.sort(reverse=True)
        for a in range(K):
            for b in range(a + 1, K):
                if comps[a][0] > comps[b][0]:
                    pairs.append(Pair(prompt=prompt, chosen=comps[a][1], rejected=comps[b][1],
                                      source="simulated"))
    return pairs


def batches(pairs):
    """Consecutive groups of PROMPTS_PER_STEP prompts (all their pairs in one batch)."""
    from alignkit.reward.train import _group

    groups = _group(pairs)
    return [groups[i : i + PROMPTS_PER_STEP] for i in range(0, len(groups), PROMPTS_PER_STEP)]


# --- alignkit side ------------------------------------------------------------------------
class AlignkitRM:
    """``train_reward_model``'s inner step, one batch at a time."""

    def __init__(self, model_sizes: dict | None = None) -> None:
        from alignkit.reward.model import RewardModel
        from alignkit.reward.train import reward_optimizer

        tok = C.bench_tokenizer()
        trunk = C.tiny_gpt2(tok, **(model_sizes or {})).transformer
        self.rm = RewardModel(trunk, tok, max_length=MAX_LENGTH, pooling="last")
        self.params = [p for p in self.rm.parameters() if p.requires_grad]
        self.opt = reward_optimizer(self.params, LR)
        self.rm.train()

    def step(self, groups) -> dict:
        from alignkit.reward.losses import bradley_terry_loss, pair_accuracy
        from alignkit.reward.train import _batch_rewards

        t0 = C.timestamp()
        c, r, _ = _batch_rewards(self.rm, groups)
        loss = bradley_terry_loss(c, r)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return {"seconds": C.timestamp() - t0, "loss": loss.detach().item(),
                "pairs": int(c.numel()),
                "accuracy": pair_accuracy(c.detach(), r.detach()),
                "threads": torch.get_num_threads()}


def alignkit_worker() -> None:
    side = AlignkitRM()
    steps = batches(make_pairs())
    C.send({"rss_mb": C.rss_mb()})
    i = 0
    while C.next_step():
        C.send(side.step(steps[i % len(steps)]))
        i += 1


# --- TRL side -----------------------------------------------------------------------------
def trl_worker(iters: int) -> None:
    C.use_trl(TRL_VERSION)

    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    threads = torch.get_num_threads()
    tok = C.bench_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = GPT2ForSequenceClassification(C.gpt2_config(tok)).float()
    model.transformer.load_state_dict(C.tiny_gpt2(tok).transformer.state_dict())
    # the same pairs in the same batches as alignkit's side (TRL shuffles them anyway)
    flat = [p for groups in batches(make_pairs()) for g in groups for p in g]
    data = Dataset.from_dict({"prompt": [p.prompt for p in flat],
                              "chosen": [p.chosen for p in flat],
                              "rejected": [p.rejected for p in flat]})

    class Stepper(TrainerCallback):
        last: dict = {}

        def on_train_begin(self, args, state, control, **kw):
            torch.set_num_threads(threads)
            self.t = C.timestamp()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.last = logs

        def on_step_end(self, args, state, control, **kw):
            self.pending = C.timestamp() - self.t

    class Reporter(TrainerCallback):
        """Runs after the log of the step (Trainer logs after on_step_end)."""

        def __init__(self, stepper: Stepper) -> None:
            self.s = stepper

        def on_log(self, args, state, control, logs=None, **kw):
            if not (logs and "loss" in logs):
                return
            C.send({"seconds": self.s.pending, "loss": float(logs["loss"]),
                    "accuracy": float(logs.get("accuracy", float("nan"))),
                    "pairs": PAIRS_PER_STEP, "threads": torch.get_num_threads()})
            C.next_step_or_exit()
            self.s.t = C.timestamp()

    with tempfile.TemporaryDirectory() as tmp:
        args = RewardConfig(
            output_dir=tmp, per_device_train_batch_size=PAIRS_PER_STEP, max_steps=iters + 1,
            learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0,
            max_grad_norm=1.0, max_length=MAX_LENGTH, bf16=False, fp16=False,
            gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no",
            logging_steps=1, disable_tqdm=True, seed=0, dataloader_num_workers=0,
        )
        stepper = Stepper()
        trainer = RewardTrainer(model=model, args=args, processing_class=tok,
                                train_dataset=data, callbacks=[stepper, Reporter(stepper)])
        C.send({"rss_mb": C.rss_mb()})
        if C.next_step():
            trainer.train()


# --- parent -------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=8, help="steps per side (first = warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every worker")
    ap.add_argument("--worker", choices=["trl", "alignkit"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    C.set_threads(a.threads)
    if a.worker == "trl":
        return trl_worker(a.iters)
    if a.worker == "alignkit":
        return alignkit_worker()
    if a.iters < 4:
        ap.error("--iters must be >= 4 (one warm-up + at least three timed)")
    C.ensure_trl(TRL_VERSION)
    me = str(Path(__file__).resolve())
    common = ["--iters", str(a.iters), "--threads", str(a.threads)]
    workers = [C.Worker("trl-1.16 RM", [me, "--worker", "trl", *common], a.threads),
               C.Worker("alignkit RM", [me, "--worker", "alignkit", *common], a.threads)]
    res = C.run_alternating(workers, a.iters)
    ends = {w.name: w.stop() for w in workers}
    print(f"\nreward-model train step, {PAIRS_PER_STEP} pairs ({PROMPTS_PER_STEP} prompts x "
          f"{K} completions), <= {MAX_LENGTH} tokens, fp32, {a.threads} thread(s), median of "
          f"{a.iters - 1} after 1 warm-up")
    print(f"{'side':13s} {'s/step':>7s} {'pairs/s':>8s} {'peak RSS':>9s} {'loss 1st':>8s} "
          f"{'loss last':>9s}")
    med = {}
    for w in workers:
        secs = [r["seconds"] for r in res[w.name][1:]]
        med[w.name] = C.median(secs)
        print(f"{w.name:13s} {med[w.name]:7.3f} {PAIRS_PER_STEP / med[w.name]:8.1f} "
              f"{ends[w.name]['peak_rss_mb']:7.0f}MB {res[w.name][0]['loss']:8.3f} "
              f"{res[w.name][-1]['loss']:9.3f}")
    print(f"alignkit/trl time ratio: {med['alignkit RM'] / med['trl-1.16 RM']:.2f}")


if __name__ == "__main__":
    main()
