"""The pairs file means to TRL and OpenRLHF what it means to alignkit (issue 16, item 1).

TRL's RewardTrainer loss on one batch, computed the way TRL documents it
(``-log sigma(r_c - r_r - margin)`` when the dataset has a ``margin`` column, else
``-log sigma(r_c - r_r)``), from the exported file as TRL loads it, equals alignkit's
reward loss on the same scores — with and without a margin.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from datasets import load_dataset, load_from_disk
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.config import RewardConfig
from alignkit.data.types import Pair, read_pairs_jsonl, write_pairs_jsonl
from alignkit.datasets_io import convert
from alignkit.reward.losses import bradley_terry_loss
from alignkit.reward.train import _batch_rewards

PAIRS = [
    Pair("Say hi.", "Hello there!", "Go away.", 1.0, "human", 3),
    Pair("Say hi.", "Hello there!", "Hi.", 1 / 3, "human", 3),
    Pair("Say hi.", "Hi.", "Go away.", 0.5, "simulated", 2),
    Pair("Name a fruit.", "A pear.", "A car.", 0.25, "ai", 1, "helpfulness", False, False),
]
SCORES = {"Hello there!": 1.3, "Go away.": -0.9, "Hi.": 0.4, "A pear.": 0.7, "A car.": 0.2}


def score(prompt: str, text: str) -> float:
    """A fixed scorer both sides use: what a reward model would output for this pair text."""
    return SCORES[text] + 0.01 * len(prompt)


class ScoreTable(torch.nn.Module):
    """Stands in for the reward model in alignkit's own batching code (`_batch_rewards`)."""

    def encode(self, prompts: list[str], texts: list[str]) -> dict:
        return {"keys": list(zip(prompts, texts, strict=True))}

    def forward(self, keys: list[tuple[str, str]]) -> torch.Tensor:
        return torch.tensor([score(p, t) for p, t in keys], dtype=torch.float64)


def alignkit_loss(pairs: list[Pair], margin: bool) -> float:
    """The loss `train_reward_model` computes for one batch holding every pair."""
    cfg = RewardConfig(margin=margin)
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.prompt, []).append(p)
    c, r, m = _batch_rewards(ScoreTable(), list(groups.values()))
    return float(bradley_terry_loss(c, r, m if cfg.margin else None, cfg.center_coef))


def trl_loss(rows: list[dict]) -> float:
    """TRL RewardTrainer.compute_loss as documented, on a batch of the loaded dataset."""
    r_c = torch.tensor([score(x["prompt"], x["chosen"]) for x in rows], dtype=torch.float64)
    r_r = torch.tensor([score(x["prompt"], x["rejected"]) for x in rows], dtype=torch.float64)
    if "margin" in rows[0]:
        margin = torch.tensor([x["margin"] for x in rows], dtype=torch.float64)
        return float(-F.logsigmoid(r_c - r_r - margin).mean())
    return float(-F.logsigmoid(r_c - r_r).mean())


@pytest.mark.parametrize("margin", [False, True])
def test_trl_loss_on_the_exported_file_equals_alignkits(tmp_path, margin):
    # The run's own pairs.jsonl (what the pairs stage writes), loaded as TRL users do.
    path = tmp_path / "pairs.jsonl"
    write_pairs_jsonl(PAIRS, path, margin=margin)
    rows = load_dataset("json", data_files=str(path), split="train").to_list()
    assert ("margin" in rows[0]) is margin
    ours = alignkit_loss(read_pairs_jsonl(path), margin)
    assert trl_loss(rows) == pytest.approx(ours, abs=1e-12)
    # And the dataset `alignkit data convert --to trl` writes.
    out = tmp_path / "trl_ds"
    convert(path, out, to="trl", margin=margin)
    ds = load_from_disk(str(out))
    assert ds.column_names == ["prompt", "chosen", "rejected", *(["margin"] if margin else [])]
    assert trl_loss(ds.to_list()) == pytest.approx(ours, abs=1e-12)


def test_the_old_file_would_have_changed_trls_loss(tmp_path):
    """What issue 16 saw: vote strength in a `margin` column, read by TRL as its margin."""
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen,
                                       "rejected": p.rejected, "margin": p.vote_strength,
                                       "source": p.source, "labelers": p.labelers}) + "\n"
                           for p in PAIRS))
    trained_without_margin = alignkit_loss(read_pairs_jsonl(old), margin=False)
    as_is = load_dataset("json", data_files=str(old), split="train").to_list()
    assert trl_loss(as_is) > trained_without_margin + 0.1  # the silent change
    # Converting it for TRL drops the column unless the model trained with a margin.
    convert(old, tmp_path / "fixed.jsonl", to="trl")
    fixed = [json.loads(x) for x in (tmp_path / "fixed.jsonl").read_text().splitlines()]
    assert "margin" not in fixed[0]
    assert trl_loss(fixed) == pytest.approx(trained_without_margin, abs=1e-12)


@pytest.mark.parametrize("margin", [False, True])
def test_openrlhf_export_is_chat_messages_with_the_same_loss(tmp_path, margin):
    src = tmp_path / "pairs.jsonl"
    write_pairs_jsonl(PAIRS, src)
    res = CliRunner().invoke(app, ["data", "convert", str(src), str(tmp_path / "o.jsonl"),
                                   "--to", "openrlhf", *(["--margin"] if margin else [])])
    assert res.exit_code == 0, res.output
    assert "OpenRLHF" in " ".join(res.output.split())
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Hello there!"}]
    assert ("margin" in rows[0]) is margin
    # OpenRLHF's PairWiseLoss is the same -log sigma(r_c - r_r - margin), margin 0 if absent.
    flat = [{"prompt": x["prompt"][0]["content"], "chosen": x["chosen"][0]["content"],
             "rejected": x["rejected"][0]["content"], **({"margin": x["margin"]} if margin
                                                         else {})} for x in rows]
    assert trl_loss(flat) == pytest.approx(alignkit_loss(PAIRS, margin), abs=1e-12)


def test_convert_refuses_bad_targets(tmp_path):
    src = tmp_path / "pairs.jsonl"
    write_pairs_jsonl(PAIRS, src)
    with pytest.raises(ValueError, match="--to 'verl'"):
        convert(src, tmp_path / "x.jsonl", to="verl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--margin needs --to"):
        convert(src, tmp_path / "y", margin=True)
    res = CliRunner().invoke(app, ["data", "convert", str(src), str(tmp_path / "z.jsonl"),
                                   "--to", "nope"])
    assert res.exit_code != 0 and "nope" in res.output
