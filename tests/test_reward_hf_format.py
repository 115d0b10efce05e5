"""A saved reward model is a standard sequence classifier: plain transformers scores it.

The bar of issue 16 item 2: ``AutoModelForSequenceClassification.from_pretrained(folder)``
(num_labels 1) in a process that never imports alignkit gives ``alignkit reward score``'s
numbers to 1e-4; ``RewardModel.load`` reads the new folder and the old layout alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.reward.model import HEAD, META, RewardModel, load_backbone

PROMPTS = ["Tell me about the weather", "Write a poem about " + "a very long river " * 40,
           "hi", "What do you think of my neighbours?", "Explain tides to a child."]
COMPLETIONS = [" It is sunny and warm.", " Rivers flow.", " " + "hello there " * 60,
               " They are awful people and I hate them.", " The moon pulls the sea."]

# What a TRL / OpenRLHF user runs: no alignkit, only the folder and the documented encoding.
STANDALONE = r"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, records = sys.argv[1], json.load(open(sys.argv[2]))
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
enc = tok([r["prompt"] for r in records], [r["completion"] for r in records],
          truncation=True, padding=True, return_tensors="pt")
with torch.no_grad():
    scores = model(**enc).logits[:, 0].tolist()
assert not any(m == "alignkit" or m.startswith("alignkit.") for m in sys.modules), "imported"
print(json.dumps({"scores": scores, "class": type(model).__name__,
                  "lengths": enc["attention_mask"].sum(1).tolist()}))
"""


def _rm(backbone_name: str, max_length: int) -> RewardModel:
    backbone, tok = load_backbone(backbone_name, "unused")
    rm = RewardModel(backbone, tok, max_length=max_length, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # a head far from zero and a normalisation that matters
        rm.head.weight.normal_(0.0, 0.5)
        rm.head.bias.fill_(0.7)
    rm.norm_mean.fill_(1.3)
    rm.norm_std.fill_(0.4)
    return rm.eval()


@pytest.fixture(scope="module")
def minilm_rm() -> RewardModel:
    return _rm("minilm", 96)


@pytest.fixture(scope="module")
def llama_rm() -> RewardModel:
    """`reward.backbone: policy` on the tiny policy: a Llama trunk, last-token pooling."""
    return _rm("tiny-llama", 48)


def _standalone_scores(folder: Path, tmp_path: Path) -> dict:
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"prompt": p, "completion": c}
                                   for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run([sys.executable, "-c", STANDALONE, str(folder), str(records)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _cli_scores(folder: Path, tmp_path: Path) -> list[float]:
    jsonl = tmp_path / "score.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n"
                             for p, c in zip(PROMPTS, COMPLETIONS, strict=True)))
    r = CliRunner().invoke(app, ["reward", "score", "--model", str(folder),
                                 "--jsonl", str(jsonl)])
    assert r.exit_code == 0, r.output
    return [json.loads(line)["reward"] for line in r.output.strip().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("which, cls, max_length", [
    ("minilm_rm", "BertForSequenceClassification", 96),
    ("llama_rm", "LlamaForSequenceClassification", 48),
])
def test_plain_transformers_scores_like_alignkit_reward_score(request, tmp_path, which, cls,
                                                              max_length):
    rm = request.getfixturevalue(which)
    folder = tmp_path / "reward_model"
    rm.save(folder, {"backbone": which})
    cli = _cli_scores(folder, tmp_path)
    out = _standalone_scores(folder, tmp_path)
    assert out["class"] == cls
    assert max(out["lengths"]) == max_length  # the long texts were cut at the RM's max_length
    assert max(abs(a - b) for a, b in zip(out["scores"], cli, strict=True)) < 1e-4, (out, cli)
    assert max(abs(s) for s in cli) > 1.0  # the normalisation is in: raw scores are not these


def test_new_folder_loads_back_with_the_same_scores(minilm_rm, tmp_path):
    before = minilm_rm.score(PROMPTS, COMPLETIONS)
    minilm_rm.save(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / META).read_text())
    assert meta["format"] == "sequence-classification" and meta["backbone_layers"] == 6
    cfg = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and len(cfg["id2label"]) == 1
    again = RewardModel.load(tmp_path / "rm", device="cpu")
    assert again.backbone.config.num_hidden_layers == 6
    torch.testing.assert_close(again.score(PROMPTS, COMPLETIONS), before, atol=1e-5, rtol=0)
    again.save(tmp_path / "rm2")  # a load → save round trip keeps the standard form
    torch.testing.assert_close(RewardModel.load(tmp_path / "rm2", device="cpu")
                               .score(PROMPTS, COMPLETIONS), before, atol=1e-5, rtol=0)
    backbone, _ = load_backbone(str(tmp_path / "rm"), "unused")  # an RM folder as backbone
    assert backbone.config.num_hidden_layers == 6


def _save_legacy(rm: RewardModel, path: Path) -> None:
    """The folder layout written before the standard format (no "format" in the meta)."""
    path.mkdir(parents=True)
    rm.backbone.save_pretrained(path)
    rm.tokenizer.save_pretrained(path)
    save_file({k: v.contiguous() for k, v in rm.head.state_dict().items()}, path / HEAD)
    (path / META).write_text(json.dumps({
        "pooling": rm.pooling, "max_length": rm.max_length, "norm_mean": float(rm.norm_mean),
        "norm_std": float(rm.norm_std), "backbone": "minilm"}))


def test_old_folders_still_load(minilm_rm, tmp_path):
    _save_legacy(minilm_rm, tmp_path / "old")
    old = RewardModel.load(tmp_path / "old", device="cpu")
    torch.testing.assert_close(old.score(PROMPTS, COMPLETIONS),
                               minilm_rm.score(PROMPTS, COMPLETIONS), atol=1e-6, rtol=0)


def test_a_llama_reward_model_loads_back_from_its_standard_folder(llama_rm, tmp_path):
    before = llama_rm.score(PROMPTS, COMPLETIONS)
    llama_rm.save(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / META).read_text())
    assert meta["format"] == "sequence-classification"
    again = RewardModel.load(tmp_path / "rm", device="cpu")
    assert again.pooling == "last" and not again.backbone.config.attention_bias
    torch.testing.assert_close(again.score(PROMPTS, COMPLETIONS), before, atol=1e-5, rtol=0)


def test_other_backbones_keep_the_alignkit_layout(tmp_path):
    from transformers import GPT2Config, GPT2Model

    from alignkit.models.loading import TINY, load_tokenizer

    tok = load_tokenizer(TINY)
    torch.manual_seed(0)
    backbone = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok)))
    rm = RewardModel(backbone, tok, max_length=32, device="cpu")
    before = rm.score(PROMPTS[:2], COMPLETIONS[:2])
    rm.save(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / META).read_text())["format"] == "alignkit"
    torch.testing.assert_close(RewardModel.load(tmp_path / "rm", device="cpu")
                               .score(PROMPTS[:2], COMPLETIONS[:2]), before, atol=1e-6, rtol=0)


def test_a_bf16_reward_model_scores_in_bf16_after_reloading(minilm_rm, tmp_path):
    """``reward.compute_dtype`` is saved with the model: reloaded, it scores exactly as it
    did (a resumed run's PPO rewards are the uninterrupted run's), within bf16's rounding
    of the fp32 scores, and a plain fp32 model saves no choice at all."""
    rm = RewardModel(minilm_rm.backbone, minilm_rm.tokenizer, minilm_rm.max_length,
                     device="cpu", compute_dtype="bfloat16")
    rm.head.load_state_dict(minilm_rm.head.state_dict())
    rm.norm_mean.copy_(minilm_rm.norm_mean)
    rm.norm_std.copy_(minilm_rm.norm_std)
    assert rm.compute_dtype == torch.bfloat16
    low, exact = rm.score(PROMPTS, COMPLETIONS), minilm_rm.score(PROMPTS, COMPLETIONS)
    assert not torch.equal(low, exact)
    torch.testing.assert_close(low, exact, atol=0.1, rtol=0.05)
    rm.save(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / META).read_text())["compute_dtype"] == "bfloat16"
    again = RewardModel.load(tmp_path / "bf16", device="cpu")
    assert again.compute_dtype == torch.bfloat16
    assert torch.equal(again.score(PROMPTS, COMPLETIONS), low)
    minilm_rm.save(tmp_path / "fp32")
    assert "compute_dtype" not in json.loads((tmp_path / "fp32" / META).read_text())
