"""alignkit's own incremental forward of a Llama-family trunk, for sampling on a CPU.

Why not transformers' forward: at decoding's shapes (16–64 rows, one token each) a step
of SmolLM2-135M spends about half its time outside the weight reads — 30 layers × ~40
small ops, mask and cache bookkeeping, seven separate matmuls a layer — and oneDNN/MKL's
``x @ Wᵀ`` with few rows runs far below the copy bandwidth (measured on a 2-core AVX2
EPYC: 16 × 576 → 1536 in 340 µs, while ``W @ xᵀ`` takes 240 µs; the 49k-row LM head 32 ms
against 17 ms; on a Sapphire Rapids Xeon in bf16 the layers' products 18.5 ms against
12.1 ms). This decoder

- fuses q/k/v into one weight and gate/up into another (four matmuls a layer instead
  of seven), copied from the trunk at every ``refresh`` so it never holds stale weights
  (the attention scale folded into the query rows: exact for a power-of-two head size);
- multiplies bf16 weights through oneDNN's packed layout (``pack_bf16``, once per batch),
  and fp32 ones for a few rows as ``(W @ xᵀ)ᵀ``, where that is the faster kernel;
- writes keys and values in place into a cache preallocated for prompt + response;
- keeps everything but the products in fp32 (with bf16 weights, bf16 attention and
  norms at these sizes cost more than fp32's).

It computes what transformers' Llama computes (RMSNorm, the model's own rotary embedding
module, grouped-query attention, SiLU-gated MLP); sums are ordered differently, so a
logit can differ from transformers' in the last bits (measured on SmolLM2 in fp32 against
the update's full pass: log-probs ≤ 3.2e-5 apart, transformers' incremental pass 8.9e-5;
mean ratio − 1 of 3e-7 and 6e-8). Anything
it does not cover — another architecture, attention or MLP biases, sliding windows,
unmerged LoRA adapters, a GPU — is refused by ``supports`` and sampled by transformers.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignkit.models.device import module_device

FEW_ROWS = 64  # up to this many rows a product is taken as (W @ xᵀ)ᵀ (see above)


def few_rows_linear(x: Tensor, weight: Tensor) -> Tensor:
    """x Wᵀ for x [M, K], W [N, K]; for M ≤ ``FEW_ROWS`` as (W xᵀ)ᵀ, the kernel that runs
    closer to the bandwidth at decoding's shapes (30 layers' projections of SmolLM2, 16
    rows, weights from DRAM: fp32 42 → 38 ms on the AVX2 EPYC; bf16 18.5 → 12.1 ms on a
    Sapphire Rapids Xeon, whose ``x @ Wᵀ`` reaches 11.5 GB/s of its 29.6). A view, not
    contiguous."""
    if x.size(0) <= FEW_ROWS:
        return torch.mm(weight, x.t()).t()
    return F.linear(x, weight)


# vocabulary rows of the LM head per product, by dtype (measured fastest; 16 × 576 → 49k):
# fp32 in blocks, 12 ms against 17 ms in one product and 32 ms as x @ Wᵀ (AVX2 EPYC);
# bf16 in one product, 2.2 ms against 4.3 ms as x @ Wᵀ and 2.6 ms in 4096-row blocks (Xeon)
HEAD_CHUNK = {torch.float32: 4096}


def few_rows_head(h: Tensor, weight: Tensor) -> Tensor:
    """Logits h Wᵀ [M, V] of an untied or tied LM head, for few rows as (W hᵀ)ᵀ in blocks
    of ``HEAD_CHUNK`` vocabulary rows."""
    if h.size(0) > FEW_ROWS:
        return F.linear(h, weight)
    chunk = HEAD_CHUNK.get(weight.dtype)
    if chunk is None:
        return torch.mm(weight, h.t()).t()
    return torch.cat([torch.mm(w, h.t()) for w in weight.split(chunk)]).t()


# from this many query positions a chunk on (a long prompt of a few rows: see PREFILL_ROWS)
# attention runs as PyTorch's fused SDPA kernel: SmolLM2's prompt forward, 2-core Zen 4,
# 4 prompts × 1000 tokens 5.0 → 3.3 s, 16 × 384 3.8 → 3.5 s; at 64 positions and below the
# explicit products are as fast or faster (6.5 against 7.5 ms a layer at 64 × 64), and at
# one position (a decoding step) they are too
FUSED_ATTENTION_ROWS = 128

# rows (prompts × positions) of one chunk of a long prompt's forward. Fed whole, 64 prompts
# of 384 tokens make ~0.7 GB of fresh temporaries a layer, which the allocator hands back
# to the OS and page-faults in again: 24.6 s (17.4 s of it in the kernel) against 11.4 s
# in 2048-row chunks (2-core Zen 4; 200 tokens: 8.7 → 5.5 s). The chunks see the same
# keys; only the products' rounding (bf16: blocking by row count) can differ
PREFILL_ROWS = 2048

PACK_ROWS = 16  # the row count oneDNN's blocked layout is chosen for (decoding's batch)


def pack_bf16(weight: Tensor) -> Tensor | None:
    """``weight`` [N, K] reordered into oneDNN's blocked layout for ``packed_linear``, or
    None where that is not to be had (not bf16, not on the CPU, oneDNN missing).

    Why: at decoding's 16 rows the plain bf16 ``x @ Wᵀ`` re-lays the weight out on every
    call and streams it at ~13 GB/s; the prepacked weight streams at ~22 GB/s (2-core Zen 4,
    30 layers' products 15.0 → 9.4 ms a step, the 49k-row head 3.1 → 1.9 ms) and gives the
    same bits as ``F.linear`` at every row count. The reorder costs ~0.5 ms a weight, two
    to three of its products (torch.profiler over a 16 × 32-token batch of SmolLM2: 121
    reorders, 60 ms of a 0.9 s batch). Applying changed LoRA factors beside weights packed
    once instead was measured slower (1.03–1.21 s against 0.90–0.98 s a batch): ~8 more
    small products a layer cost more than the reorders they save."""
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" \
            or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
    except (RuntimeError, AttributeError):  # a build without the op, a CPU oneDNN refuses
        return None


def packed_linear(x: Tensor, packed: Tensor) -> Tensor:
    """x Wᵀ for x [M, K] and W packed by ``pack_bf16`` (bf16 in, bf16 out)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def product(x: Tensor, weight: Tensor, packed: Tensor | None) -> Tensor:
    """x Wᵀ by the fastest kernel this weight has: packed, else ``few_rows_linear``."""
    return few_rows_linear(x, weight) if packed is None else packed_linear(x, packed)


def _effective_weight(module: nn.Module) -> Tensor | None:
    """The weight a projection applies, or None when this decoder cannot read it: a plain
    linear's, or a LoRA layer's base weight when its adapters are merged in or switched off."""
    if type(module) is nn.Linear:
        return None if module.bias is not None else module.weight
    base = getattr(module, "base_layer", None)
    if type(base) is nn.Linear and base.bias is None and (
            getattr(module, "merged", False) or getattr(module, "disable_adapters", False)):
        return base.weight
    return None


def _projections(layer: nn.Module) -> dict[str, Tensor] | None:
    names = {"q": layer.self_attn.q_proj, "k": layer.self_attn.k_proj,
             "v": layer.self_attn.v_proj, "o": layer.self_attn.o_proj,
             "gate": layer.mlp.gate_proj, "up": layer.mlp.up_proj, "down": layer.mlp.down_proj}
    out = {k: _effective_weight(m) for k, m in names.items()}
    return None if any(w is None for w in out.values()) else out  # type: ignore[return-value]


def supports(trunk: nn.Module) -> bool:
    """True when ``trunk`` (a transformers ``LlamaModel``'s shape, on the CPU) can be run
    by ``LlamaDecoder`` as it is now: every projection readable as one weight."""
    cfg = getattr(trunk, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return False
    if module_device(trunk).type != "cpu" or getattr(cfg, "attention_bias", False) \
            or getattr(cfg, "mlp_bias", False) or getattr(cfg, "hidden_act", "silu") != "silu" \
            or getattr(cfg, "sliding_window", None) or not hasattr(trunk, "rotary_emb"):
        return False
    layers = getattr(trunk, "layers", None)
    return bool(layers) and all(_projections(layer) is not None for layer in layers)


class LlamaDecoder:
    """Fused weights and a preallocated KV cache for one trunk: ``refresh`` before a batch,
    ``forward`` its prompt with ``max_len``, then one token at a time."""

    def __init__(self, trunk: nn.Module) -> None:
        cfg = trunk.config
        # weakly: ``generation`` keeps one decoder per trunk in a WeakKeyDictionary, whose
        # values must not keep their keys (and every weight) alive
        self._trunk = weakref.ref(trunk)
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        first = _projections(trunk.layers[0])
        assert first is not None, "check supports(trunk) first"
        self.dtype = first["q"].dtype
        n, d = len(trunk.layers), cfg.hidden_size
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        inter = first["gate"].size(0)
        self.qkv = first["q"].new_empty(n, q_out + 2 * kv_out, d)
        self.gate_up = first["q"].new_empty(n, 2 * inter, d)
        self.split_qkv = (q_out, kv_out, kv_out)
        self.inter = inter
        self.k_cache = self.v_cache = torch.empty(0)
        self.filled = 0

    @property
    def trunk(self) -> nn.Module:
        trunk = self._trunk()
        if trunk is None:
            raise RuntimeError("LlamaDecoder: its trunk no longer exists")
        return trunk

    @torch.no_grad()
    def refresh(self, head: Tensor | None = None) -> None:
        """Copy the trunk's current weights into the fused buffers, packed for oneDNN where
        they are bf16 (call before a batch); ``head``, the LM head's weight, is packed too
        for ``logits``."""
        self.layer_weights: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for i, layer in enumerate(self.trunk.layers):
            w = _projections(layer)
            if w is None:
                raise RuntimeError("LlamaDecoder: a projection became unreadable (adapters "
                                   "unmerged?) — sample through transformers instead")
            q, k, _ = self.split_qkv
            self.qkv[i, :q].copy_(w["q"]).mul_(self.head_dim**-0.5)  # attention's scale
            self.qkv[i, q : q + k].copy_(w["k"])
            self.qkv[i, q + k :].copy_(w["v"])
            self.gate_up[i, : self.inter].copy_(w["gate"])
            self.gate_up[i, self.inter :].copy_(w["up"])
            self.layer_weights.append((layer.input_layernorm.weight.float(),
                                       layer.post_attention_layernorm.weight.float(), w["o"],
                                       w["down"]))
        self.final_norm = self.trunk.norm.weight.float()
        # per layer: packed qkv, o, gate_up, down (None each where packing is not had)
        self.packed = [tuple(pack_bf16(t) for t in (self.qkv[i], o, self.gate_up[i], down))
                       for i, (_, _, o, down) in enumerate(self.layer_weights)]
        self.head = head
        self.packed_head = None if head is None else pack_bf16(head)

    def logits(self, h: Tensor) -> Tensor:
        """Logits [B, V] in the head's dtype of final hidden states ``h`` [B, D] (in the
        head's dtype), through the head given to ``refresh``."""
        if self.head is None:
            raise RuntimeError("LlamaDecoder.logits: refresh was given no head")
        if self.packed_head is not None:
            return packed_linear(h, self.packed_head)
        return few_rows_head(h, self.head)

    @torch.no_grad()
    def forward(self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor,
                max_len: int | None = None) -> Tensor:
        """Feed ``input_ids`` [B, S] at ``position_ids`` [B, S]; ``key_mask`` [B, filled + S]
        says which cached + new positions are real tokens. ``max_len`` (first call) sizes
        the cache and starts a batch. Returns the last position's final hidden state [B, D]
        in fp32.

        The products run in the weights' dtype; the residual stream, norms, rotary
        embedding, cache and attention in fp32, as autocast would have it (with bf16
        weights that is both closer to the fp32 model than an all-bf16 pass and faster:
        bf16 attention at these sizes took 150 µs a layer, fp32 40 µs).

        A long prompt goes through in chunks of about ``PREFILL_ROWS`` rows (see there)."""
        B, S = input_ids.shape
        if S == 0:
            raise ValueError("LlamaDecoder.forward: input_ids has no positions to feed")
        if max_len is not None:
            shape = (len(self.trunk.layers), B, self.kv_heads, max_len, self.head_dim)
            self.k_cache, self.v_cache = torch.empty(shape), torch.empty(shape)
            self.filled = 0
        if self.filled + S > self.k_cache.size(3):
            raise RuntimeError(f"KV cache holds {self.k_cache.size(3)} positions, asked for "
                               f"{self.filled + S}")
        chunk = max(1, PREFILL_ROWS // B)
        for i in range(0, S, chunk):
            j = min(S, i + chunk)
            last = self._forward(input_ids[:, i:j], position_ids[:, i:j],
                                 key_mask[:, : self.filled + j - i])
        return last

    def _forward(self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor) -> Tensor:
        """``forward`` of positions that fit in one chunk."""
        B, S = input_ids.shape
        start, end = self.filled, self.filled + S
        rows = self.trunk.embed_tokens(input_ids).float().reshape(B * S, -1)
        cos, sin = self.trunk.rotary_emb(rows, position_ids)  # [B, S, head_dim], fp32
        half = self.head_dim // 2
        # rotate_half(x)·sin = roll(x, half)·[−sin₁, sin₂]: one roll instead of split + cat
        cos, sin = cos[:, :, None], torch.cat((-sin[..., :half], sin[..., half:]), -1)[:, :, None]
        allowed = self._allowed(key_mask[:, :end], start, S)
        fused = S >= FUSED_ATTENTION_ROWS  # else the explicit products and mask below
        bias = None if fused else self._attention_bias(allowed)
        n_q, n_qk = self.heads, self.heads + self.kv_heads
        group = self.heads // self.kv_heads
        for i, (ln1, ln2, w_o, w_down) in enumerate(self.layer_weights):
            p_qkv, p_o, p_gate_up, p_down = self.packed[i]
            x = F.rms_norm(rows, (rows.size(-1),), ln1, self.eps).to(self.dtype)
            qkv = product(x, self.qkv[i], p_qkv).float().reshape(B, S, n_qk + self.kv_heads,
                                                                 self.head_dim)
            qk = torch.addcmul(qkv[:, :, :n_qk] * cos, qkv[:, :, :n_qk].roll(half, -1), sin)
            self.k_cache[i, :, :, start:end] = qk[:, :, n_q:].transpose(1, 2)
            self.v_cache[i, :, :, start:end] = qkv[:, :, n_qk:].transpose(1, 2)
            keys, values = self.k_cache[i, :, :, :end], self.v_cache[i, :, :, :end]
            if fused:  # scale 1: it is folded into the query rows
                att = F.scaled_dot_product_attention(qk[:, :, :n_q].transpose(1, 2), keys,
                                                     values, attn_mask=allowed[:, None],
                                                     scale=1.0, enable_gqa=group > 1)
            else:  # heads that share a key/value head sit together: [B, kv, group·S, hd]
                q = qk[:, :, :n_q].transpose(1, 2).reshape(B, self.kv_heads, group * S, -1)
                scores = torch.matmul(q, keys.transpose(-1, -2)).add_(bias)
                att = torch.matmul(torch.softmax(scores, -1), values)
            att = att.view(B, self.heads, S, -1).transpose(1, 2).reshape(B * S, -1)
            rows = rows + product(att.to(self.dtype), w_o, p_o)
            x = F.rms_norm(rows, (rows.size(-1),), ln2, self.eps).to(self.dtype)
            gu = product(x, self.gate_up[i], p_gate_up)
            rows = rows + product(F.silu(gu[:, : self.inter]) * gu[:, self.inter :], w_down,
                                  p_down)
        self.filled = end
        last = rows.reshape(B, S, -1)[:, -1]
        return F.rms_norm(last, (last.size(-1),), self.final_norm, self.eps)

    @staticmethod
    def _allowed(key_mask: Tensor, start: int, S: int) -> Tensor:
        """[B, S or 1, start + S] bool: where a query may look (a real key, not after it);
        a pad query looks at itself rather than at nothing, which would be NaN."""
        end = start + S
        allowed = key_mask[:, None, :].bool()  # [B, 1, end]
        if S > 1:
            query = torch.arange(start, end, device=key_mask.device)[:, None]
            key = torch.arange(end, device=key_mask.device)
            allowed = (allowed & (key <= query)) | (key == query)  # [B, S, end]
        return allowed

    def _attention_bias(self, allowed: Tensor) -> Tensor:
        """``allowed`` [B, S, end] as an additive fp32 mask [B, 1, group·S, end] (0 or −inf),
        its rows repeated per query head of a group."""
        bias = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
        group = self.heads // self.kv_heads
        return bias.repeat(1, group, 1)[:, None]
