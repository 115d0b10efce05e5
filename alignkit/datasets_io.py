"""Data in and out as JSONL and Hugging Face ``datasets``, with TRL's column names.

Preference pairs are TRL's "preference" format (``prompt``, ``chosen``, ``rejected``) plus
our ``vote_strength``, ``source``, ``labelers``, ``criterion`` and safe/unsafe flags (no
``margin``: TRL's reward trainer subtracts a ``margin`` column inside its loss, so it is
written only for a reward model trained with one); completions are TRL's
"prompt-completion" format (``prompt``, ``completion``), one row per completion. So a
dataset written here trains in TRL, and one made for TRL trains here, without conversion.

Provenance is never invented: pairs read from a dataset without a ``source`` column
need the caller to say who labelled them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

from alignkit.data.types import PAIR_FIELDS, SOURCES, Pair, pair_from_record, pair_record
from alignkit.jsonl import read_jsonl, write_jsonl

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
COMPLETION_COLUMNS = ("prompt", "completion")


# --- pairs ----------------------------------------------------------------------------------

def pairs_to_dataset(pairs: Iterable[Pair], margin: bool = False) -> Dataset:
    """Pairs as a TRL preference dataset (extra columns: vote_strength, source, labelers,
    criterion, chosen_unsafe, rejected_unsafe; ``margin`` only with ``margin=True``)."""
    rows = [pair_record(p, margin) for p in pairs]
    if not rows:
        return Dataset.from_dict({k: [] for k in PAIR_FIELDS})
    return Dataset.from_list(rows)


def _check_text_columns(ds: Dataset, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{what} need column(s) {missing}; the dataset has "
                         f"{ds.column_names} — rename them to TRL's names {list(columns)}")
    for c in columns:
        dtype = getattr(ds.features[c], "dtype", None)
        if dtype not in ("string", "large_string"):
            raise ValueError(f"column '{c}' is {ds.features[c]}, not text — conversational "
                             "(list of messages) datasets must be rendered to strings first")


def dataset_to_pairs(ds: Dataset, source: str | None = None) -> list[Pair]:
    """A TRL preference dataset as pairs; ``source`` fills a missing ``source`` column."""
    _check_text_columns(ds, PAIR_COLUMNS, "pairs")
    has_source = "source" in ds.column_names
    if not has_source and source is None:
        raise ValueError("the dataset has no 'source' column — say who labelled it: "
                         "source='human', 'simulated' or 'ai'")
    if source is not None and source not in SOURCES:
        raise ValueError(f"source '{source}' must be one of {', '.join(SOURCES)}")
    return [pair_from_record(row, f"row {i}", source) for i, row in enumerate(ds)]


# --- completions ----------------------------------------------------------------------------

def flatten_completions(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """completions.jsonl records ({prompt, completions: [...]}) → TRL {prompt, completion}
    rows; rows already flat pass through unchanged."""
    rows = []
    for i, rec in enumerate(records):
        if "prompt" not in rec:
            raise ValueError(f"record {i}: no 'prompt' field — completions need prompt and "
                             "completion(s)")
        if "completions" in rec:
            if not isinstance(rec["completions"], list):
                raise ValueError(f"record {i}: 'completions' must be a list of strings")
            rows += [{"prompt": rec["prompt"], "completion": c} for c in rec["completions"]]
        elif "completion" in rec:
            rows.append(rec)
        else:
            raise ValueError(f"record {i}: needs 'completion' (TRL) or 'completions' (a list)")
    return rows


def completions_to_dataset(records: Iterable[dict[str, Any]]) -> Dataset:
    """Completions (grouped or flat) as a TRL prompt-completion dataset."""
    rows = flatten_completions(records)
    if not rows:
        return Dataset.from_dict({k: [] for k in COMPLETION_COLUMNS})
    return Dataset.from_list(rows)


def dataset_to_completions(ds: Dataset) -> list[dict[str, Any]]:
    """A prompt-completion dataset grouped back to {prompt, completions} in first-seen order."""
    _check_text_columns(ds, COMPLETION_COLUMNS, "completions")
    groups: dict[str, list[str]] = {}
    for row in ds:
        groups.setdefault(row["prompt"], []).append(row["completion"])
    return [{"prompt": p, "completions": c} for p, c in groups.items()]


# --- files and folders ----------------------------------------------------------------------

def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in
                                 ("dataset_info.json", "state.json", "dataset_dict.json"))


def load_dataset_any(path: str | Path) -> Dataset:
    """A .jsonl file or a save_to_disk folder as one Dataset (completions flattened)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"'{path}' not found — give a .jsonl file or a datasets folder")
    if path.is_dir():
        if not is_dataset_dir(path):
            raise ValueError(f"'{path}' is a folder but not a datasets save_to_disk folder "
                             "(no dataset_info.json/state.json)")
        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            raise ValueError(f"'{path}' holds splits {list(ds)} — convert one of them, e.g. "
                             f"'{path / next(iter(ds))}'")
        return ds
    records = read_jsonl(path)
    if records and "completions" in records[0]:
        return completions_to_dataset(records)
    if not records:
        raise ValueError(f"'{path}' has no records")
    return Dataset.from_list(records)


def save_pairs(pairs: Iterable[Pair], path: str | Path) -> None:
    """Pairs to a .jsonl file, or to a datasets folder for any other path."""
    path = Path(path)
    if path.suffix == ".jsonl":
        write_jsonl((pair_record(p) for p in pairs), path)
    else:
        pairs_to_dataset(pairs).save_to_disk(str(path))


def load_pairs(path: str | Path, source: str | None = None) -> list[Pair]:
    """Pairs from a .jsonl file or a datasets folder; see ``dataset_to_pairs`` for source."""
    return dataset_to_pairs(load_dataset_any(path), source)


def _format_name(columns: list[str]) -> str:
    if set(PAIR_COLUMNS) <= set(columns):
        return "TRL preference format"
    if set(COMPLETION_COLUMNS) <= set(columns):
        return "TRL prompt-completion format"
    if "prompt" in columns:
        return "TRL prompt-only format"
    return "no TRL format recognised (columns kept as they are)"


def convert(src: str | Path, dst: str | Path) -> str:
    """JSONL file ↔ datasets folder, columns kept (run completions flattened to TRL's
    prompt/completion rows); returns a one-line summary."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and (dst.is_file() or any(dst.iterdir())):
        raise FileExistsError(f"'{dst}' exists — choose a new output path")
    ds = load_dataset_any(src)
    if src.is_dir():
        if dst.suffix not in (".jsonl", ".json"):
            raise ValueError(f"output '{dst}' must end in .jsonl when the input is a datasets "
                             "folder")
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(ds.to_list(), dst)
        what = f"{len(ds)} rows → {dst}"
    else:
        ds.save_to_disk(str(dst))
        what = f"{len(ds)} rows → datasets folder {dst} (load_from_disk)"
    return f"{what}; columns {ds.column_names}; {_format_name(ds.column_names)}"
