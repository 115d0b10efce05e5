"""The sampler's prompt forward on SmolLM2-135M-Instruct: alignkit's own decoder against
transformers' forward of the same bf16 weights, at the batch and prompt lengths the
default run samples (64 prompts; SL-CAI's critique and revision prompts run to ~200 tokens,
the jailbreak-wrapped evaluation prompts to 384).

Both sides fill a KV cache for the whole batch in one forward over left-padded prompts (a
quarter of the rows padded by 16 positions), in one process, alternating, with the same
threads; times are medians after a warm-up. Three sides: the own decoder as shipped (the
prompt in chunks of ``PREFILL_ROWS`` rows, attention through PyTorch's fused SDPA for
chunks of ``FUSED_ATTENTION_ROWS`` positions or more), the own decoder as it was before
those two (the whole prompt at once, explicit attention products), and transformers (its
SDPA, a preallocated cache). The last line is ``own/transformers time ratio: R`` at the
longest prompt.

    .venv/bin/python benchmarks/prompt_forward.py --threads 2      # ~4 min
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH

import torch

from benchmarks import _common as C

NEW_TOKENS = 40  # the cache also holds the reply (sl_cai.max_new_tokens)


def batch(batch_size: int, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(length)
    ids = torch.randint(10, vocab, (batch_size, length), generator=g)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    mask[: batch_size // 4, : min(16, length - 1)] = 0
    return ids, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--batch", type=int, default=64, help="prompts per forward")
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 200, 384],
                    help="prompt lengths in tokens")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds after a warm-up")
    a = ap.parse_args()
    C.set_threads(a.threads)

    from alignkit.generation import _static_cache
    from alignkit.models import llama_decode as LD
    from alignkit.models.loading import SMOLLM2, load_causal_lm

    tok = C.bench_tokenizer()
    lm = load_causal_lm(SMOLLM2, tok).to(torch.bfloat16).eval()
    decoder = LD.LlamaDecoder(lm.model)
    decoder.refresh()

    shipped = LD.FUSED_ATTENTION_ROWS, LD.PREFILL_ROWS

    def own(ids, mask, fused_from: int, prefill_rows: int) -> None:
        LD.FUSED_ATTENTION_ROWS, LD.PREFILL_ROWS = fused_from, prefill_rows
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        decoder.forward(ids, pos, mask, max_len=ids.size(1) + NEW_TOKENS)

    @torch.no_grad()
    def theirs(ids, mask) -> None:
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                 past_key_values=_static_cache(lm.model, ids.size(1) + NEW_TOKENS))

    ratio = float("nan")
    print(f"SmolLM2-135M-Instruct, bf16 weights, {a.batch} prompts, {a.threads} thread(s); "
          f"median of {a.repeats} after a warm-up")
    for length in a.lengths:
        ids, mask = batch(a.batch, length, lm.config.vocab_size)
        sides = {"own (as shipped)": partial(own, ids, mask, *shipped),
                 "own before (one chunk, explicit attention)": partial(own, ids, mask, 10**9,
                                                                       10**9),
                 "transformers": partial(theirs, ids, mask)}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(a.repeats + 1):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                t0 = C.timestamp()
                sides[name]()
                if r:  # round 0 warms up
                    times[name].append(C.timestamp() - t0)
        med = {k: C.median(v) for k, v in times.items()}
        ratio = med["own (as shipped)"] / med["transformers"]
        print(f"{a.batch} x {length} tokens: " + ", ".join(f"{k} {v:.2f} s"
                                                          for k, v in med.items())
              + f"; own/transformers {ratio:.2f}")
    LD.FUSED_ATTENTION_ROWS, LD.PREFILL_ROWS = shipped
    print(f"own/transformers time ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
