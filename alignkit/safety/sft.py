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

from alignkit.models.device import autocast_dtype
from alignkit.models.policy import Policy, head_logprobs


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
    ``cpu_bf16`` runs the trunk under CPU bf16 autocast (weights, adapters and the
    optimizer stay fp32; on a GPU the device's autocast).

    The LM head runs only on the target rows, through the fused head log-prob: an SFT batch
    of SL-CAI's (8 × ~80 tokens, a third of them targets) spent over a third of its step in
    [B, L, 49k] logits, their log-softmax and its backward (1.78 s a step on a 2-core Zen 4)."""
    dev = policy.device
    ids, attn, tgt = ids.to(dev), attn.to(dev), tgt.to(dev)
    if dev.type == "cpu":
        dtype = torch.bfloat16 if cpu_bf16 else torch.float32
    else:
        dtype = autocast_dtype(dev) or torch.float32
    hidden = policy.hidden_states(ids, attn, compute_dtype=dtype)[:, :-1]
    rows = (tgt[:, 1:] > 0).reshape(-1).nonzero().squeeze(1)
    logp, _ = head_logprobs(policy.head(), hidden.reshape(-1, hidden.size(-1))[rows],
                            ids[:, 1:].reshape(-1)[rows], with_entropy=False,
                            product_dtype=dtype)
    return -logp.sum() / max(rows.numel(), 1)


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
    opt = torch.optim.AdamW(params, lr=lr, fused=True)  # the CPU default loops per tensor
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
