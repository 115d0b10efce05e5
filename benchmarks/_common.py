"""Shared pieces of the side-by-side benchmarks: one model, one tokenizer, one reward, one
protocol for stepping workers in turn.

Why workers: each implementation runs in its own process so its peak RSS is its own and
TRL's imports (installed in a private ``bench_trl_*`` folder, never in the venv) cannot
leak into alignkit's side. The parent asks each worker for one iteration at a time and
alternates between them, so a burst of load on the shared machine hits every side alike.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "@@BENCH "  # protocol lines on stdout; everything else a worker prints is noise

# The setting: batch 16, 32 new tokens, 4 PPO epochs, fp32.
BATCH = 16
NEW_TOKENS = 32
PPO_EPOCHS = 4
PROMPT_TOKENS = 8
_WORDS = ("the cat dog sat on a mat and ran far to big red sun sky blue tree house river "
         "green old new small city road car bird fish song day night light dark cold warm "
         "king queen man woman boy girl home school book story time water fire stone")
WORDS = tuple(_WORDS.split())


# --- TRL, installed beside the repo, never imported by alignkit ---------------------------
def ensure_trl(version: str) -> Path:
    """``pip install --no-deps --target bench_trl_<version> trl==<version>`` once."""
    target = ROOT / f"bench_trl_{version}"
    if not (target / "trl").is_dir():
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
               str(target), f"trl=={version}"]
        print("installing:", " ".join(cmd[2:]), file=sys.stderr)
        subprocess.run(cmd, check=True)
    return target


def use_trl(version: str) -> None:
    """Put the private TRL folder first on sys.path (TRL side only)."""
    sys.path.insert(0, str(ensure_trl(version)))


# --- the shared model, tokenizer, prompts and reward --------------------------------------
def bench_tokenizer():
    """SmolLM2's tokenizer with a pad token distinct from EOS.

    TRL finds the end of a response by looking for the pad token; with pad == EOS it
    would mask the EOS itself. ``<|endoftext|>`` (id 0) is unused by the chat format.
    """
    from alignkit.models.loading import smollm2_tokenizer

    tok = smollm2_tokenizer()
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = "left"
    return tok


def gpt2_config(tok, n_layer: int = 4, n_embd: int = 128, n_head: int = 4, num_labels: int = 1):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, num_labels=num_labels,
    )


def tiny_gpt2(tok, seed: int = 0, **sizes):
    """The ~13M-parameter random GPT-2 both sides train (identical weights for a seed).

    The untied output layer is drawn wider than GPT-2's init (logit std ≈ 3) so the random
    LM prefers a few hundred tokens per context, like a real one; with near-uniform
    next-token distributions over 49k tokens no policy gradient gets a signal in minutes.
    """
    from transformers import GPT2LMHeadModel

    cfg = gpt2_config(tok, **sizes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg)
        model.lm_head.weight.data.normal_(0.0, 3.0 / cfg.n_embd ** 0.5)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.float().eval()


def fixed_length_prompts(tok, n: int, length: int = PROMPT_TOKENS, seed: int = 0) -> list[str]:
    """Prompts of exactly ``length`` tokens, so no side pays (or dodges) left padding."""
    singles = [w for w in WORDS if len(tok(" " + w, add_special_tokens=False).input_ids) == 1]
    rng = random.Random(seed)
    prompts = ["".join(" " + rng.choice(singles) for _ in range(length)) for _ in range(n)]
    lengths = {len(tok(p, add_special_tokens=False).input_ids) for p in prompts}
    if lengths != {length}:
        raise RuntimeError(f"prompts tokenise to lengths {sorted(lengths)}, expected {length}")
    return prompts


def target_ids(tok) -> Tensor:
    """The synthetic reward's token set: even ids (half the vocabulary), specials excluded."""
    ids = torch.arange(0, len(tok), 2)
    return ids[~torch.isin(ids, torch.tensor(tok.all_special_ids))]


class _ShareBackbone(nn.Module):
    """Hidden state at response position t = share of target tokens among response[:t+1]."""

    def __init__(self, targets: Tensor, context_length: int) -> None:
        super().__init__()
        self.register_buffer("targets", targets)
        self.context_length = context_length

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **_: object):
        P = self.context_length
        m = attention_mask[:, P:].float()
        hits = torch.isin(input_ids[:, P:], self.targets).float() * m
        share = hits.cumsum(1) / m.cumsum(1).clamp_min(1.0)
        h = torch.cat([torch.zeros_like(input_ids[:, :P], dtype=torch.float32), share], 1)
        return SimpleNamespace(hidden_states=(h[..., None],), last_hidden_state=h[..., None])


class SyntheticRewardModel(nn.Module):
    """TRL's reward-model interface (``getattr(m, m.base_model_prefix)`` → hidden states,
    ``m.score(hidden)`` → per-position logits) around alignkit's token-share score, so
    both sides optimise exactly the same reward: the share of target tokens in the
    response up to and including its first stop token."""

    base_model_prefix = "backbone"

    def __init__(self, targets: Tensor, context_length: int) -> None:
        super().__init__()
        self.backbone = _ShareBackbone(targets, context_length)

    def score(self, hidden: Tensor) -> Tensor:
        return hidden


# --- measurement --------------------------------------------------------------------------
def set_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


def alignkit_process_setup() -> None:
    """What alignkit's CLI does to its process besides the threads (``run.keep_freed_memory``);
    nothing on an older checkout without it. Only alignkit's side calls this."""
    try:
        from alignkit.models.allocator import keep_freed_memory
    except ImportError:
        return
    keep_freed_memory()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# --- worker protocol ----------------------------------------------------------------------
def send(obj: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def receive() -> str:
    line = sys.stdin.readline()
    return line.strip() or "stop"


def next_step() -> bool:
    """True when the parent asks for another iteration; otherwise the worker reports its
    peak RSS and returns False (then ends)."""
    if receive() == "step":
        return True
    send({"peak_rss_mb": peak_rss_mb()})
    return False


def next_step_or_exit() -> None:
    """``next_step`` for code running inside a peer's training loop (a TRL callback), which
    has no clean way out: the process ends at once when the parent says stop."""
    if not next_step():
        sys.stdout.flush()
        os._exit(0)


class Worker:
    """A child process that does one iteration per ``step()`` and reports its timing."""

    def __init__(self, name: str, argv: list[str], threads: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=os.pathsep.join(  # a caller's PYTHONPATH first: lets one time
                       # a patched alignkit copy against the same benchmark code
                       [*filter(None, [os.environ.get("PYTHONPATH")]), str(ROOT)]))
        self.name = name
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1, env=env,
                                     cwd=ROOT)
        self.ready = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        raise RuntimeError(f"worker {self.name} exited (rc={self.proc.wait()}) — see stderr")

    def step(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out = self._read()
        self.proc.wait(timeout=60)
        return out


def run_alternating(workers: list[Worker], iters: int) -> dict[str, list[dict]]:
    """Iteration i of every worker, then i+1; the order flips each round."""
    results: dict[str, list[dict]] = {w.name: [] for w in workers}
    for i in range(iters):
        for w in (workers if i % 2 == 0 else workers[::-1]):
            r = w.step()
            results[w.name].append(r)
            print(f"  iter {i + 1:2d} {w.name:15s} {r['seconds']:7.2f} s  "
                  + "  ".join(f"{k}={v:.3f}" for k, v in r.items()
                              if k not in ("seconds", "threads") and isinstance(v, float)),
                  file=sys.stderr, flush=True)
    return results


def timestamp() -> float:
    return time.perf_counter()
