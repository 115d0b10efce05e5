"""Stage sl_cai (once, before round 0): SL-CAI warm start — critique → revision → SFT.

The policy revises its own answers to training harmful requests under the constitution's
declining principles; a refusal judge keeps the revisions that decline, the policy's own
on-topic answers to training benign requests are added (``safety.sl_cai``), and LoRA SFT on
them gives the SL-CAI model. Its adapters are then folded into the base weights, so PPO
starts from the SL-CAI model and measures KL against it. The adapter is saved to
``sl_cai/adapter``; a resumed or later process folds it in again when it builds the policy.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from rich.progress import Progress

from alignkit.data.hh import HHPrompt
from alignkit.generation import encode_prompts, sample
from alignkit.jsonl import write_jsonl
from alignkit.stages.context import StageContext, StageResult

PROMPT_TOKENS = 512  # few-shot critique/revision conversations run long


def chat_generator(ctx: StageContext, max_new_tokens: int, temperature: float, seed: int):
    """A ``ChatGenerator`` over the run's own sampler (KV cache, LoRA merged): conversations
    rendered with the chat template, batched by length, seeded per call."""
    tok, pol, calls = ctx.tokenizer, ctx.policy, [0]
    batch = ctx.cfg.generate.batch_size

    def generate(conversations: list[list[dict[str, str]]]) -> list[str]:
        calls[0] += 1
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rng = torch.Generator().manual_seed(seed * 1_000_003 + calls[0])
        out = [""] * len(texts)
        with Progress(console=ctx.console, transient=True) as bar:
            task = bar.add_task("SL-CAI sampling", total=len(texts))
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                q, m = encode_prompts(tok, [texts[i] for i in idx], max_length=PROMPT_TOKENS)
                with pol.merged():
                    gen = sample(pol, q, m, max_new_tokens, ctx.stop_ids, tok.pad_token_id,
                                 temperature, 1.0, rng)
                for i, t in zip(idx, gen.texts(tok), strict=True):
                    out[i] = t.strip()
                bar.update(task, advance=len(idx))
        return out

    return generate


def alternate(benign: list[HHPrompt]) -> list[HHPrompt]:
    """Look-alikes and ordinary benign requests taken in turn. Look-alikes first and only
    (the earlier order) taught the model to refuse ordinary questions: 50% of held-out
    chatterbot questions were refused after SL-CAI, measured on the default run."""
    look = [p for p in benign if p.source == "lookalike"]
    other = [p for p in benign if p.source != "lookalike"]
    mixed = [p for pair in zip(look, other, strict=False) for p in pair]
    n = min(len(look), len(other))
    return mixed + look[n:] + other[n:]


def run(ctx: StageContext, r: int | None, resume: bool) -> StageResult:  # noqa: ARG001
    from alignkit.models.build import save_warm_start
    from alignkit.models.sampling_twin import resolve_bf16_choice
    from alignkit.safety.constitution import load_constitution
    from alignkit.safety.refusal import refusal_judges
    from alignkit.safety.sft import sft_train
    from alignkit.safety.sl_cai import build_sl_cai_data, restrict

    c = ctx.cfg.sl_cai
    if not c.enabled:
        return StageResult("skipped (sl_cai.enabled is false)")
    if not ctx.cfg.data.chat_template:
        raise ValueError("sl_cai: critique and revision are chat turns — set "
                         "data.chat_template: true")
    sets = ctx.hh_sets
    harmful = [p.text for p in sets.train_harmful[: c.harmful_prompts]]
    benign_texts = [p.text for p in alternate(sets.train_benign)[: c.benign_prompts]]
    judge = refusal_judges()[c.judge]
    constitution = restrict(load_constitution(c.constitution), c.principles)
    gen = chat_generator(ctx, c.max_new_tokens, c.temperature, c.seed)
    data = build_sl_cai_data(gen, harmful, benign_texts, constitution, judge, c.samples,
                             c.min_relevance, c.seed, c.few_shot, c.max_sentences,
                             c.refusal_form == "explicit")
    ctx.run.sl_cai.mkdir(parents=True, exist_ok=True)
    write_jsonl([vars(e) for e in data.examples], ctx.run.sl_cai_data)
    records = [{"prompt": e.prompt, "completion": e.completion} for e in data.examples]
    sft = sft_train(ctx.policy, ctx.tokenizer, records, epochs=c.epochs, lr=c.lr,
                    batch_size=c.batch_size, max_length=c.max_length, chat_template=True,
                    seed=c.seed, cpu_bf16=resolve_bf16_choice(c.sft_dtype, ctx.policy.device)
                    == torch.bfloat16)
    save_warm_start(ctx.policy, ctx.run.sl_cai_adapter)
    ctx.policy.absorb_adapters()
    result = replace(data.counts, sft_steps=sft.steps, sft_first_loss=sft.first_loss,
                     sft_last_loss=sft.last_loss)
    result.write(ctx.run.sl_cai_report)
    ctx.console.print(
        f"SL-CAI: {result.revisions_refusing}/{result.revisions} chains declined "
        f"({result.originals_refusing} first answers already did); kept {result.harmful_kept} "
        f"harmful + {result.benign_kept} benign examples; SFT {sft.steps} steps, loss "
        f"{sft.first_loss:.2f} → {sft.last_loss:.2f}; folded into the base for PPO")
    return StageResult(record=result)
