"""Batched sampling from the run's policy with a progress bar: generate and evaluate."""

from __future__ import annotations

import torch
from rich.progress import Progress

from alignkit.generation import Generation, encode_prompts, sample
from alignkit.models.policy import Policy
from alignkit.stages.context import StageContext


def sample_texts(ctx: StageContext, prompts: list[str], batch_size: int, seed: int,
                 reference: bool = False, desc: str = "sampling", policy: Policy | None = None,
                 max_new_tokens: int | None = None, max_prompt_tokens: int = 128
                 ) -> tuple[list[str], list[Generation]]:
    """Texts and generations for ``prompts`` from ``policy`` (the run's by default; its
    reference when ``reference``), one seeded generator over all batches so a rerun draws
    the same samples. Over-long prompts keep their end, where a request usually is."""
    g, tok = ctx.cfg.generate, ctx.tokenizer
    pol = policy or ctx.policy
    new_tokens = max_new_tokens or g.max_new_tokens
    rng = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    gens: list[Generation] = []
    with Progress(console=ctx.console, transient=True) as bar:
        task = bar.add_task(desc, total=len(prompts))
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            q, m = encode_prompts(tok, chunk, ctx.cfg.data.chat_template, max_prompt_tokens)
            with pol.reference() if reference else pol.merged():
                gen = sample(pol, q, m, new_tokens, ctx.stop_ids, tok.pad_token_id,
                             g.temperature, g.top_p, rng, reference=reference)
            texts += gen.texts(tok)
            gens.append(gen)
            bar.update(task, advance=len(chunk))
    return texts, gens
