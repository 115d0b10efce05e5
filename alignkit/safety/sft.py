"""Supervised fine-tuning (LoRA) on SL-CAI revisions: the policy learns to answer as revised.

Loss is the mean next-token cross-entropy over the *completion* tokens only (and the
EOS that ends them): the prompt is context, not a target, so the model is not taught to
write red-team prompts. The adapter is saved with ``save_pretrained`` next to a
config.yaml, so the output folder is a run directory the red-team runner can load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from alignkit.models.device import precision
from alignkit.models.policy import Policy


@dataclass
class SFTReport:
    examples: int
    steps: int
    losses: list[float] = field(default_factory=list)  # one per optimizer step

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else float("nan")

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def render_prompt(tokenizer, prompt: str, chat_template: bool) -> str:
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
    return prompt


def build_batch(tokenizer, records: Sequence[dict], max_length: int = 256,
                chat_template: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Left-padded (input_ids, attention_mask, target_mask); target_mask marks the
    completion tokens and the EOS after them. Over-long prompts lose their start."""
    eos = tokenizer.eos_token_id
    rows, targets = [], []
    for r in records:
        if "prompt" not in r or "completion" not in r:
            raise ValueError("SFT record needs 'prompt' and 'completion' — got keys "
                             f"{sorted(r)}")
        p = tokenizer.encode(render_prompt(tokenizer, r["prompt"], chat_template),
                             add_special_tokens=False)
        c = tokenizer.encode(r["completion"], add_special_tokens=False) + [eos]
        c = c[: max_length - 1]
        p = p[-(max_length - len(c)):]
        rows.append(p + c)
        targets.append([0] * len(p) + [1] * len(c))
    width = max(len(x) for x in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(x)) + x for x in rows])
    attn = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in rows])
    tgt = torch.tensor([[0] * (width - len(t)) + t for t in targets])
    return ids, attn, tgt


def completion_nll(policy: Policy, ids: Tensor, attn: Tensor, tgt: Tensor,
                   cpu_bf16: bool = False) -> Tensor:
    """Mean −log p(token) over target positions (token t is predicted from position t−1).
    ``cpu_bf16`` runs the forward under CPU bf16 autocast (weights, adapters and the
    optimizer stay fp32; the log-softmax is taken in fp32)."""
    dev = policy.device
    ids, attn, tgt = ids.to(dev), attn.to(dev), tgt.to(dev)
    pos = (attn.long().cumsum(-1) - 1).clamp_min(0)
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16 and dev.type == "cpu")
    with precision(dev), cast:
        logits = policy.lm(input_ids=ids, attention_mask=attn, position_ids=pos,
                           use_cache=False).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = tgt[:, 1:].float()
    return -(logp * mask).sum() / mask.sum().clamp_min(1.0)


def sft_train(policy: Policy, tokenizer, records: Sequence[dict], epochs: int = 2,
              lr: float = 2e-4, batch_size: int = 8, max_length: int = 256,
              chat_template: bool = True, seed: int = 0,
              on_step: Callable[[int, float], None] | None = None,
              cpu_bf16: bool = False) -> SFTReport:
    """Fine-tune the policy's LoRA adapters (or all weights) on (prompt, completion);
    ``cpu_bf16``: forward and backward under CPU bf16 autocast (see ``completion_nll``)."""
    if not records:
        raise ValueError("sft: no records — run `alignkit constitution revise` first")
    params = [p for n, p in policy.lm.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    rng = random.Random(seed)
    report = SFTReport(examples=len(records), steps=0)
    order = list(range(len(records)))
    policy.train()
    try:
        for _ in range(epochs):
            rng.shuffle(order)
            for s in range(0, len(order), batch_size):
                batch = [records[i] for i in order[s : s + batch_size]]
                loss = completion_nll(policy, *build_batch(tokenizer, batch, max_length,
                                                           chat_template), cpu_bf16=cpu_bf16)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                report.steps += 1
                report.losses.append(loss.item())
                if on_step:
                    on_step(report.steps, report.losses[-1])
    finally:
        policy.eval()
    return report


@torch.no_grad()
def mean_completion_nll(policy: Policy, tokenizer, records: Sequence[dict],
                        chat_template: bool = True) -> float:
    return float(completion_nll(policy, *build_batch(tokenizer, records,
                                                     chat_template=chat_template)))
