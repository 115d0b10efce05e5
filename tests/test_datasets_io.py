"""Datasets round trips: pairs and completions through JSONL and save_to_disk folders."""

import json

import pytest
from datasets import Dataset, DatasetDict, load_from_disk
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.data.types import Pair, write_pairs_jsonl
from alignkit.datasets_io import (
    completions_to_dataset,
    convert,
    dataset_to_completions,
    dataset_to_pairs,
    load_pairs,
    pairs_to_dataset,
    save_pairs,
)

PAIRS = [
    Pair("Say hi", "Hello!", "Go away.", vote_strength=1.0, source="human", labelers=3),
    Pair("Say hi", "Hi there", "Go away.", vote_strength=0.5, source="simulated", labelers=2),
    Pair("Café? «ok»", "Oui, 🙂", "Non", vote_strength=0.25, source="ai", labelers=1),
]
COMPLETIONS = [{"prompt": "A", "completions": ["a1", "a2", "a3"]},
               {"prompt": "B", "completions": ["b1", "b2", "b3"]}]


def test_pairs_dataset_has_trl_columns_and_round_trips(tmp_path):
    ds = pairs_to_dataset(PAIRS)
    assert ds.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert ds[2] == {"prompt": "Café? «ok»", "chosen": "Oui, 🙂", "rejected": "Non",
                     "vote_strength": 0.25, "source": "ai", "labelers": 1,
                     "criterion": "harmlessness", "chosen_unsafe": None,
                     "rejected_unsafe": None}
    ds.save_to_disk(str(tmp_path / "pairs"))
    assert dataset_to_pairs(load_from_disk(str(tmp_path / "pairs"))) == PAIRS


def test_save_and_load_pairs_both_formats(tmp_path):
    for name in ("p.jsonl", "p_folder"):
        save_pairs(PAIRS, tmp_path / name)
        assert load_pairs(tmp_path / name) == PAIRS


def test_cli_convert_jsonl_to_folder_and_back_is_byte_identical(tmp_path):
    src = tmp_path / "pairs.jsonl"
    write_pairs_jsonl(PAIRS, src)  # the run directory's own pairs format
    res = CliRunner().invoke(app, ["data", "convert", str(src), str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "3 rows" in said and "TRL preference format" in said
    ds = load_from_disk(str(tmp_path / "ds"))
    assert ds["chosen"] == [p.chosen for p in PAIRS]
    res = CliRunner().invoke(app, ["data", "convert", str(tmp_path / "ds"),
                                   str(tmp_path / "back.jsonl")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "back.jsonl").read_bytes() == src.read_bytes()


def test_completions_flatten_to_trl_rows_and_regroup(tmp_path):
    ds = completions_to_dataset(COMPLETIONS)
    assert ds.column_names == ["prompt", "completion"]
    assert ds["completion"] == ["a1", "a2", "a3", "b1", "b2", "b3"]
    assert ds["prompt"] == ["A"] * 3 + ["B"] * 3
    assert dataset_to_completions(ds) == COMPLETIONS
    src = tmp_path / "completions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in COMPLETIONS))
    msg = convert(src, tmp_path / "c")
    assert "6 rows" in msg and "prompt-completion" in msg
    assert dataset_to_completions(load_from_disk(str(tmp_path / "c"))) == COMPLETIONS


def test_trl_style_dataset_without_source_needs_one(tmp_path):
    trl = Dataset.from_dict({"prompt": ["p"], "chosen": ["c"], "rejected": ["r"]})
    with pytest.raises(ValueError, match="no 'source' column"):
        dataset_to_pairs(trl)
    (pair,) = dataset_to_pairs(trl, source="human")
    assert pair == Pair("p", "c", "r", vote_strength=1.0, source="human", labelers=1)
    with pytest.raises(ValueError, match="must be one of"):
        dataset_to_pairs(trl, source="crowd")


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"need column\(s\) \['rejected'\]"):
        dataset_to_pairs(Dataset.from_dict({"prompt": ["p"], "chosen": ["c"], "source": ["ai"]}))
    chat = Dataset.from_dict({"prompt": [[{"role": "user", "content": "hi"}]],
                              "chosen": ["c"], "rejected": ["r"], "source": ["ai"]})
    with pytest.raises(ValueError, match="conversational"):
        dataset_to_pairs(chat)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not JSON"):
        convert(bad, tmp_path / "o")
    DatasetDict({"train": Dataset.from_dict({"prompt": ["p"]})}).save_to_disk(
        str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="holds splits \\['train'\\]"):
        convert(tmp_path / "dd", tmp_path / "o.jsonl")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "f").write_text("x")
    res = CliRunner().invoke(app, ["data", "convert", str(bad), str(tmp_path / "taken")])
    assert res.exit_code == 2 and "exists" in res.output
