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
from functools import partial

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from transformers import PreTrainedModel

from alignkit.config import ModelConfig
from alignkit.models.attention import use_fp32_attention
from alignkit.models.device import module_device, pick_device, precision
from alignkit.models.sampling_twin import (
    SamplingTwin,
    resolve_bf16_choice,
    resolve_compute_dtype,
)


class Policy(nn.Module):
    # Recompute each decoder layer's activations in the backward pass instead of keeping
    # them (set from ppo.gradient_checkpointing): only grad-enabled forwards are affected.
    gradient_checkpointing: bool = False

    def __init__(self, lm: PreTrainedModel, cfg: ModelConfig) -> None:
        super().__init__()
        self.use_lora = cfg.use_lora
        self.decode_kernel = cfg.decode_kernel
        if cfg.dtype == "bfloat16":
            if not cfg.use_lora:
                raise ValueError("model.dtype 'bfloat16' keeps a frozen base in bf16 and needs "
                                 "model.use_lora: true (trained weights stay fp32)")
            frozen_base_in_bf16(lm)
        if cfg.use_lora:
            lora = LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_targets, task_type="CAUSAL_LM",
            )
            self.lm: nn.Module = get_peft_model(lm, lora)
            fuse_lora_linears(self.lm)
            self._ref: PreTrainedModel | None = None
        else:
            self.lm = lm
            self._ref = copy.deepcopy(lm).eval().requires_grad_(False)
        hidden = lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self._merged = False
        self.to(pick_device(cfg.device))
        self.sampling_dtype = resolve_bf16_choice(cfg.sampling_dtype, self.device)
        self.compute_dtype = resolve_compute_dtype(cfg.compute_dtype, self.device)
        self._twins: dict[int, SamplingTwin] = {}  # by id of the model they copy
        if self.device.type == "cpu" and self.compute_dtype != torch.float32:
            for model in (self.causal, self._ref):  # bf16 attention's backward is slow
                if model is not None:
                    use_fp32_attention(model)

    @property
    def low_precision_base(self) -> bool:
        """True when the trunk's weights are below fp32 (model.dtype bfloat16): the
        sampler's incremental pass and the update's full pass then round differently, so
        PPO's old log-probs must come from the update's own computation."""
        return self.causal.get_input_embeddings().weight.dtype != torch.float32

    @property
    def device(self) -> torch.device:
        return module_device(self)

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

    def sampler_modules(self, reference: bool = False) -> tuple[nn.Module, nn.Module, bool]:
        """(trunk, head, approximate) for the sampler: the policy's own, or the bf16 twin
        with the current weights copied in (``model.sampling_dtype``); ``approximate`` says
        the sampler's log-probs and values round unlike the update's pass (a bf16 twin or
        trunk, or incremental decoding under autocast)."""
        unfolded = isinstance(self.lm, PeftModel) and not (reference or self._merged)
        if not self._twin_folds() or unfolded:
            # (unmerged adapters are not in the weights the twin copies: the exact path)
            inexact = self.low_precision_base or self.compute_dtype != torch.float32
            return self.trunk(reference), self.head(reference), inexact
        if reference and self._merged:
            raise RuntimeError("sampling the reference inside merged() would read the policy")
        model = self._ref if (reference and self._ref is not None) else self.causal
        twin = self._twins.get(id(model))
        if twin is None:
            twin = self._twins[id(model)] = SamplingTwin(model, self.sampling_dtype)
        twin.sync(model, fold_adapters=not reference)
        return twin.trunk, twin.head, True

    def _twin_folds(self) -> bool:
        """True when the sampler reads a low-precision twin, which folds the adapters in as
        it copies the weights (so ``merged`` need not touch the policy's own)."""
        return self.sampling_dtype != torch.float32 and not self.low_precision_base

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
        """Fold LoRA into the weights for sampling: one matmul per layer instead of three.

        With a low-precision sampling twin the twin folds them as it copies the weights,
        and the policy's own are left alone. Not on a bf16 base: W + BA − BA rounded to
        bf16 twice is not W, so every merge would move the frozen weights a little."""
        if not isinstance(self.lm, PeftModel) or self._merged or self.low_precision_base:
            yield
            return
        in_place = not self._twin_folds()
        if in_place:
            self.lm.merge_adapter()
        self._merged = True
        try:
            yield
        finally:
            if in_place:
                self.lm.unmerge_adapter()
            self._merged = False

    def absorb_adapters(self) -> None:
        """Fold the adapters into the base weights for good and start fresh ones.

        After SL-CAI's fine-tune this makes the SFT model the reference that PPO's KL is
        measured against (InstructGPT's reference is the SFT model too): with the SFT delta
        left in the adapters, the KL penalty would pull the policy back to the base model
        and undo the warm start."""
        if not isinstance(self.lm, PeftModel) or self._merged:
            raise RuntimeError("absorb_adapters needs LoRA adapters, outside merged()")
        self.lm.merge_adapter()
        for module in self.lm.modules():
            if isinstance(module, LoraLayer):
                module.merged_adapters = []  # the delta now belongs to the base weights
                for name in module.lora_A:
                    module.reset_lora_parameters(name, True)

    # --- forward ------------------------------------------------------------------------
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor,
                      reference: bool = False, compute_dtype: torch.dtype | None = None
                      ) -> Tensor:
        """Last-layer hidden states of a left-padded batch (positions from the mask), the
        trunk under ``compute_dtype`` autocast (default ``model.compute_dtype``), returned in
        the LM head's dtype: the heads read them at the weights' precision (fp32 unless
        model.dtype says otherwise)."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled() and not reference
        with precision(input_ids.device, compute_dtype or self.compute_dtype), \
                layer_checkpointing(self.causal, checkpointed):
            out = self.trunk(reference)(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False,
            )
        head_dtype = getattr(self.head(reference), "weight", out.last_hidden_state).dtype
        return out.last_hidden_state.to(head_dtype)

    def values(self, hidden: Tensor) -> Tensor:
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def adapter_state(self) -> dict[str, Tensor]:
        """Only what training changes: adapters (or the trained weights, never the frozen
        reference copy) and the value head — on the CPU, so a checkpoint or a broadcast
        made on a GPU loads anywhere."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()
                if "lora_" in k or "value_head" in k
                or (not self.use_lora and not k.startswith("_ref."))}


class FusedLoraLinear(LoraLinear):
    """PEFT's LoRA linear layer with the plain case in one kernel:
    y = base(x) + s · (x Aᵀ) Bᵀ  as  base(x).addmm_(x Aᵀ, Bᵀ, alpha=s).

    PEFT computes B(A x), scales it and adds it: two extra passes over the [tokens, out]
    output in the forward and again in the backward — on a 2-core CPU ~5% of a PPO update
    for rank-16 adapters on every linear layer. Anything else (adapters off or merged,
    dropout, DoRA and other variants, several adapters, extra arguments, mixed dtypes)
    takes PEFT's own path."""

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        names = self.active_adapters
        if args or kwargs or self.disable_adapters or self.merged or len(names) != 1 \
                or names[0] not in self.lora_A or names[0] in self.lora_variant \
                or not isinstance(self.lora_dropout[names[0]], nn.Identity) or x.dim() < 2:
            return super().forward(x, *args, **kwargs)
        a, b = self.lora_A[names[0]].weight, self.lora_B[names[0]].weight
        rows = x.reshape(-1, x.size(-1))
        base = self.base_layer(rows)
        if not (base.dtype == x.dtype == a.dtype == b.dtype
                or torch.is_autocast_enabled(x.device.type)):  # autocast: all in its dtype
            return super().forward(x, *args, **kwargs)
        xa = torch.nn.functional.linear(rows, a).to(base.dtype)
        bt, scale = b.t().to(base.dtype), self.scaling[names[0]]
        if base._base is None:  # in place: linear's backward does not read its output, and
            # the copy an out-of-place addmm makes is a pass over [tokens, out] for nothing;
            # on a view (GPT-2's Conv1D returns one) autograd would copy it back instead
            out = base.addmm_(xa, bt, alpha=scale)
        else:
            out = torch.addmm(base, xa, bt, alpha=scale)
        return out.view(*x.shape[:-1], out.size(-1))


def fuse_lora_linears(model: nn.Module) -> None:
    """Give every PEFT LoRA ``Linear`` of ``model`` the fused forward (same module, same
    parameters and state dict; only the class changes)."""
    for m in model.modules():
        if type(m) is LoraLinear:
            m.__class__ = FusedLoraLinear


def frozen_base_in_bf16(lm: PreTrainedModel) -> None:
    """Store the trunk in bf16 (half the memory and, on CPUs with AVX512-BF16/AMX and on
    GPUs, ~2× the matmul rate) but keep the LM head in fp32, untied from the embedding if
    it was tied: log-probs over a 49k vocabulary from bf16 logits (8 bits of mantissa)
    would be off by ~1e-2. LoRA adapters (PEFT creates them in fp32), the value head,
    losses and optimizer state stay fp32; PEFT casts a layer's input to the adapter's dtype
    and the result back."""
    head, emb = lm.get_output_embeddings(), lm.get_input_embeddings()
    if head is not None and head.weight is emb.weight:
        head.weight = nn.Parameter(head.weight.detach().float().clone(),
                                   requires_grad=head.weight.requires_grad)
        lm.config.tie_word_embeddings = False
        if hasattr(lm.config, "get_text_config"):
            lm.config.get_text_config(decoder=True).tie_word_embeddings = False
    lm.to(torch.bfloat16)
    if head is not None:
        head.float()


@contextmanager
def layer_checkpointing(lm: nn.Module, on: bool) -> Iterator[None]:
    """Checkpoint every decoder layer of ``lm`` inside this block (transformers'
    GradientCheckpointingLayer; non-reentrant torch checkpointing): activations inside a
    layer are recomputed in the backward pass instead of kept, so memory grows with the
    number of layers, not with layers × their intermediates. The layers' ``training`` flag
    (which transformers also requires) is set on the layer modules only, so dropout and
    every other child stays as it was."""
    if not on:
        yield
        return
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in lm.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"ppo.gradient_checkpointing: {type(lm).__name__} has no "
                         "checkpointable decoder layers — set it to false for this model")
    saved = [(m.gradient_checkpointing, m.training, m.__dict__.get("_gradient_checkpointing_func"))
             for m in layers]
    for m in layers:
        m.gradient_checkpointing, m.training = True, True
        m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
    try:
        yield
    finally:
        for m, (flag, training, fn) in zip(layers, saved, strict=True):
            m.gradient_checkpointing, m.training = flag, training
            if fn is None:
                m.__dict__.pop("_gradient_checkpointing_func", None)
            else:
                m._gradient_checkpointing_func = fn


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


# --- the LM head fused with the log-prob ----------------------------------------------------
# Rows of hidden states per chunk: [512, 49k] fp32 blocks (100 MB, reused from a pool). On
# the 2-core Zen 4 the [rows, 576] x [576, 49k] matmul ran at 55 GFLOP/s with 128 rows, 63
# with 256 and 76 with 512 (one thread): fewer passes over the 113 MB head weight.
_CHUNK_ROWS = 512
_pool: dict[tuple, Tensor] = {}  # (role, V, dtype, device) -> reusable [capacity, V] buffer


def _take_buffer(role: str, rows: int, cols: int, like: Tensor) -> Tensor:
    """A [≥ rows, cols] buffer reused between calls (slice it): a fresh 100 MB tensor
    costs ~25k page faults (≈ 0.1 s on this CPU) every time it is allocated. One buffer
    per role is kept, grown when a call needs more rows."""
    buf = _pool.pop((role, cols, like.dtype, like.device), None)
    if buf is None or buf.size(0) < rows:
        buf = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    return buf


def _give_back(role: str, buf: Tensor) -> None:
    _pool[(role, buf.size(1), buf.dtype, buf.device)] = buf


def log_prob_from_softmax(z: Tensor, p: Tensor, tokens: Tensor) -> Tensor:
    """log p[token] from a softmax row; rows where p[token] is below 1e-30 (where the float's
    relative precision, ~1e-7 otherwise, degrades) are redone exactly as z − logsumexp(z)."""
    p_tok = p.gather(1, tokens[:, None]).squeeze(1)
    out = p_tok.log()
    tiny = (p_tok < 1e-30).nonzero().squeeze(1)
    if tiny.numel():
        zt = z.index_select(0, tiny).to(p.dtype)
        out[tiny] = zt.gather(1, tokens[tiny, None]).squeeze(1) - torch.logsumexp(zt, -1)
    return out


_low_weights: dict[tuple, tuple[int, Tensor]] = {}  # (ptr, shape, dtype) -> (version, copy)


def _low_precision_copy(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """``weight`` in ``dtype``; a frozen weight's copy is kept and reused while its version
    counter (bumped by ``load_state_dict`` and other in-place writes on the tensor, not by
    writes through ``.data``) stays put — the 49k × 576 head's cast costs ~15 ms, a fifth
    of the product it feeds. A trained weight is cast afresh every call (a fused optimizer
    step bumps no version counter)."""
    if weight.requires_grad:
        return weight.detach().to(dtype)
    key = (weight.data_ptr(), tuple(weight.shape), dtype)
    hit = _low_weights.get(key)
    if hit is None or hit[0] != weight._version:
        _low_weights.clear()  # one head at a time: a stale copy is 56 MB
        hit = _low_weights[key] = (weight._version, weight.detach().to(dtype))
    return hit[1]


class _HeadLogprob(torch.autograd.Function):
    """log softmax(h Wᵀ + b)[token] and the entropy, without a [N, V] tensor in the graph.

    Forward, per chunk of rows: logits → softmax → log of the token's entry; P is kept (in a
    pooled buffer) only when W needs a gradient, and PW = P·W ([N, D], small) is kept for
    the hidden-state gradient and gives the entropy for free:
    H = lse − Σ_v p_v z_v = lse − h·PW − p·b.
    Backward needs no elementwise pass over [N, V]:
    ∂/∂h = g (W_tok − PW),  ∂/∂W = scatter_tok(g h) − Pᵀ (g h),  ∂/∂b = scatter_tok(g) − Pᵀ g.

    ``product_dtype`` (bf16 where the trunk runs in it): both [N, D] × [D, V] products in
    that precision (fp32 accumulation; the logits come out in it, the softmax is fp32) —
    on AVX512-BF16 ~4× the fp32 rate (SmolLM2's 512 × 576 × 49k: 184 → 45 ms), and the head
    is a quarter of a bf16 PPO iteration's time otherwise. The price, measured on SmolLM2's
    sampled responses: log-probs off the fp32 head's by 0.026 nats a token on average (max
    0.11), the size of what the bf16 trunk already moves them (0.020); the same function
    gives the old and the new log-probs, so PPO's first ratio is still exactly 1.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, tokens: Tensor,
                want_entropy: bool, product_dtype: torch.dtype | None = None
                ) -> tuple[Tensor, Tensor]:
        N, V = hidden.size(0), weight.size(0)
        need_h = ctx.needs_input_grad[0]
        need_w = ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2])
        logp = hidden.new_empty(N)
        pw = hidden.new_empty(N, weight.size(1)) if (need_h or want_entropy) else None
        p_all = _take_buffer("softmax", N, V, hidden) if need_w else None
        pb = hidden.new_empty(N) if (want_entropy and bias is not None) else None
        low = product_dtype not in (None, weight.dtype)
        if low:  # the products' operands, rounded once
            w_mm = _low_precision_copy(weight, product_dtype)
            h_mm, b_mm = hidden.to(product_dtype), None if bias is None else bias.to(product_dtype)
        else:
            w_mm, h_mm, b_mm = weight, hidden, bias
        wt = w_mm.t()
        rows = max(1, min(_CHUNK_ROWS, N))
        z_buf = _take_buffer("logits", rows, V, h_mm)
        p_buf = None if p_all is not None else _take_buffer("probs", rows, V, hidden)
        p_low_buf = _take_buffer("probs_low", rows, V, h_mm) if pw is not None and low \
            else None
        for i in range(0, N, rows):
            j = min(i + rows, N)
            z = z_buf[: j - i]
            p = p_all[i:j] if p_all is not None else p_buf[: j - i]
            if b_mm is None:
                torch.mm(h_mm[i:j], wt, out=z)
            else:
                torch.addmm(b_mm, h_mm[i:j], wt, out=z)
            # the softmax in the hidden states' precision, in place in p: softmax(z,
            # dtype=, out=) makes two fresh [rows, V] copies on the way (~25 ms of ~30)
            if z.dtype == p.dtype:
                torch.softmax(z, dim=-1, out=p)
            else:
                torch.softmax(p.copy_(z), dim=-1, out=p)
            logp[i:j] = log_prob_from_softmax(z, p, tokens[i:j])
            if p_low_buf is not None:
                pw[i:j] = torch.mm(p_low_buf[: j - i].copy_(p), w_mm)
            elif pw is not None:
                torch.mm(p, weight, out=pw[i:j])
            if pb is not None:
                torch.mv(p, bias, out=pb[i:j])
        for role, buf in (("logits", z_buf), ("probs", p_buf), ("probs_low", p_low_buf)):
            if buf is not None:
                _give_back(role, buf)
        entropy = None
        if want_entropy:
            z_tok = (hidden * weight[tokens]).sum(-1)
            if bias is not None:
                z_tok = z_tok + bias[tokens]
            entropy = (z_tok - logp) - (hidden * pw).sum(-1)  # lse − Σ p z
            if pb is not None:
                entropy = entropy - pb
        else:
            entropy = logp.new_zeros(0)
        ctx.mark_non_differentiable(entropy)
        ctx.save_for_backward(hidden, weight, tokens)
        ctx.pw, ctx.has_bias = pw, bias is not None
        ctx.p_buf, ctx.p_all = p_all, (None if p_all is None else p_all[:N])
        return logp, entropy

    @staticmethod
    def backward(ctx, g: Tensor, _g_entropy: Tensor):
        hidden, weight, tokens = ctx.saved_tensors
        d_h = d_w = d_b = None
        if ctx.needs_input_grad[0]:
            d_h = g[:, None] * (weight[tokens] - ctx.pw)
        need_w = ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2])
        if need_w:
            p_all = ctx.p_all
            if p_all is None:
                raise RuntimeError("head log-prob: backward ran twice over one graph; "
                                   "call backward once (no retain_graph) per forward")
            gh = g[:, None] * hidden
            if ctx.needs_input_grad[1]:
                d_w = torch.mm(p_all.t(), gh).neg_().index_add_(0, tokens, gh)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                d_b = torch.mv(p_all.t(), g).neg_().index_add_(0, tokens, g)
            _give_back("softmax", ctx.p_buf)
            ctx.p_all = ctx.p_buf = None
        return d_h, d_w, d_b, None, None, None


def head_logprobs(head: nn.Module, hidden: Tensor, tokens: Tensor, temperature: float = 1.0,
                  with_entropy: bool = True, product_dtype: torch.dtype | None = None
                  ) -> tuple[Tensor, Tensor | None]:
    """Log-probs (at temperature τ) of ``tokens`` [N] under ``head`` applied to ``hidden``
    [N, D], and the entropies (no gradient) — without keeping [N, vocab] logits for backward.

    A plain ``nn.Linear`` head (GPT-2, Llama, SmolLM2; PEFT's all-linear leaves it alone)
    in fp32/fp64 takes the fused path; any other head (or half precision) falls back to
    logits + ``token_logprobs``. ``product_dtype``: the precision of the fused path's
    products (see ``_HeadLogprob``); None = the weight's.
    """
    if type(head) is not nn.Linear or hidden.dtype != head.weight.dtype \
            or hidden.dtype not in (torch.float32, torch.float64):  # half: logits go to fp32
        return token_logprobs(head(hidden), tokens, temperature, with_entropy)
    weight, bias = head.weight, head.bias
    if not torch.is_grad_enabled():  # no graph: keep no softmax buffer for a backward
        hidden, weight = hidden.detach(), weight.detach()
        bias = None if bias is None else bias.detach()
    if temperature != 1.0:  # z/τ = (h/τ)Wᵀ + b/τ: scale the [N, D] side, not the logits
        hidden = hidden / temperature
        bias = None if bias is None else bias / temperature
    logp, entropy = _HeadLogprob.apply(hidden.contiguous(), weight, bias, tokens.contiguous(),
                                       with_entropy, product_dtype)
    return logp, (entropy if with_entropy else None)
