"""The policy: one copy of the weights serving as policy, reference and critic trunk.

LoRA adapters make the policy; the same module with adapters disabled is the frozen
reference, so KL(π‖π_ref) costs no second model in memory. The value head is a linear
layer on the policy's last hidden state (shared trunk, as in Ziegler et al. 2019).
With full fine-tuning the reference is a frozen deep copy instead.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor, nn
from transformers import PreTrainedModel

from alignkit.config import ModelConfig


class Policy(nn.Module):
    def __init__(self, lm: PreTrainedModel, cfg: ModelConfig) -> None:
        super().__init__()
        self.use_lora = cfg.use_lora
        if cfg.use_lora:
            lora = LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_targets, task_type="CAUSAL_LM",
            )
            self.lm: nn.Module = get_peft_model(lm, lora)
            self._ref: PreTrainedModel | None = None
        else:
            self.lm = lm
            self._ref = copy.deepcopy(lm).eval().requires_grad_(False)
        hidden = lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self._merged = False

    # --- pieces -------------------------------------------------------------------------
    @property
    def causal(self) -> PreTrainedModel:
        """The transformers model (with LoRA layers injected when PEFT is on)."""
        return self.lm.get_base_model() if isinstance(self.lm, PeftModel) else self.lm

    def trunk(self, reference: bool = False) -> nn.Module:
        model = self._ref if (reference and self._ref is not None) else self.causal
        return model.base_model

    def head(self, reference: bool = False) -> nn.Module:
        model = self._ref if (reference and self._ref is not None) else self.causal
        return model.get_output_embeddings()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # --- modes --------------------------------------------------------------------------
    @contextmanager
    def reference(self) -> Iterator[None]:
        """Run the frozen reference: adapters off (LoRA) or the frozen copy (full FT)."""
        if isinstance(self.lm, PeftModel):
            with self.lm.disable_adapter():
                yield
        else:
            yield

    @contextmanager
    def merged(self) -> Iterator[None]:
        """Fold LoRA into the weights for sampling: one matmul per layer instead of three."""
        if not isinstance(self.lm, PeftModel) or self._merged:
            yield
            return
        self.lm.merge_adapter()
        self._merged = True
        try:
            yield
        finally:
            self.lm.unmerge_adapter()
            self._merged = False

    # --- forward ------------------------------------------------------------------------
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor,
                      reference: bool = False) -> Tensor:
        """Last-layer hidden states of a left-padded batch (positions from the mask)."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        out = self.trunk(reference)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=False,
        )
        return out.last_hidden_state

    def values(self, hidden: Tensor) -> Tensor:
        return self.value_head(hidden).squeeze(-1)

    def adapter_state(self) -> dict[str, Tensor]:
        """Only what training changes: adapters (or all weights) and the value head."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()
                if "lora_" in k or "value_head" in k or not self.use_lora}


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0,
                   with_entropy: bool = True) -> tuple[Tensor, Tensor | None]:
    """log softmax(z/τ)[token] = z_token/τ − logsumexp(z/τ), and the entropy.

    Every elementwise pass over [B, T, vocab] costs as much as a small matmul on CPU, so
    the log-prob is a gather minus a logsumexp (no [B, T, V] log-softmax kept for
    backward), the 1/τ scaling is skipped at τ = 1, and the entropy — logged, never
    differentiated — is computed off the graph.
    """
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = lse - (torch.softmax(z, dim=-1) * z).sum(-1)
    return logp, entropy
