"""Plain data types that cross package boundaries: a preference pair and its file format.

Below ``feedback``, ``reward``, ``safety`` and ``rl`` so each can use a pair without
importing the others (the feedback store, SQLAlchemy, the labeling app).

Column meanings follow TRL: ``prompt``, ``chosen``, ``rejected`` are TRL's preference
columns, and ``margin`` is TRL's loss margin (``-log sigma(r_c - r_r - margin)``). So the
labelers' vote strength is *not* called ``margin``: it is ``vote_strength``, and a
``margin`` column is written only when the reward model trains with one (then with the
value used), see :func:`pair_record`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Source = Literal["human", "simulated", "ai"]
SOURCES: tuple[str, ...] = ("human", "simulated", "ai")
DEFAULT_CRITERION = "harmlessness"


@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` beat ``rejected`` for ``prompt`` under ``criterion``.

    ``vote_strength`` in [0, 1] says how strongly the labelers agreed (1 = unanimous);
    ``source`` who judged (simulated and AI labels are never reported as human);
    ``labelers`` how many voted. ``chosen_unsafe`` / ``rejected_unsafe``: the majority of
    the safe/unsafe flags the item's labelers gave that completion (an even split counts as
    unsafe: half the labelers saw harm), ``None`` when nobody flagged it either way.
    """

    prompt: str
    chosen: str
    rejected: str
    vote_strength: float = 1.0
    source: Source = "human"
    labelers: int = 1
    criterion: str = DEFAULT_CRITERION
    chosen_unsafe: bool | None = None
    rejected_unsafe: bool | None = None


PAIR_FIELDS: tuple[str, ...] = tuple(Pair.__dataclass_fields__)


def pair_record(p: Pair, margin: bool = False) -> dict[str, Any]:
    """One JSONL row: every field, plus TRL's ``margin`` (= vote strength) when trained so.

    alignkit's reward loss with ``reward.margin: true`` is ``-log sigma(r_c - r_r -
    vote_strength)``; writing that value as ``margin`` makes TRL compute the same loss, and
    leaving the column out otherwise keeps TRL from subtracting a margin we never used.
    """
    rec: dict[str, Any] = {k: getattr(p, k) for k in PAIR_FIELDS}
    if margin:
        rec["margin"] = p.vote_strength
    return rec


def _opt_bool(value: Any, field: str, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{where}: '{field}' must be true, false or null, got {value!r}")


def pair_from_record(rec: Mapping[str, Any], where: str = "pair",
                     source: str | None = None) -> Pair:
    """A pair from a row written by any alignkit version (or a TRL preference dataset).

    Old files have ``margin`` (then meaning vote strength) and no ``vote_strength``,
    ``criterion`` or flags: ``margin`` becomes the vote strength, the criterion the
    default. ``source`` fills a missing ``source`` column (provenance is never invented:
    without either it is an error).
    """
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in rec]
    if missing:
        raise ValueError(f"{where}: pair is missing field(s) {missing} — each row needs "
                         "prompt, chosen, rejected")
    for k in ("prompt", "chosen", "rejected"):
        if not isinstance(rec[k], str):
            raise ValueError(f"{where}: '{k}' must be text, got {type(rec[k]).__name__} — "
                             "render conversational datasets to strings first")
    strength = rec.get("vote_strength", rec.get("margin"))
    if strength is None or (isinstance(strength, float) and math.isnan(strength)):
        strength = 1.0
    src = rec.get("source") if rec.get("source") is not None else source
    if src not in SOURCES:
        raise ValueError(f"{where}: source {src!r} must be one of {', '.join(SOURCES)} — "
                         "say who labelled the pairs")
    labelers = rec.get("labelers")
    return Pair(
        prompt=rec["prompt"], chosen=rec["chosen"], rejected=rec["rejected"],
        vote_strength=float(strength), source=src,  # type: ignore[arg-type]
        labelers=1 if labelers is None else int(labelers),
        criterion=str(rec.get("criterion") or DEFAULT_CRITERION),
        chosen_unsafe=_opt_bool(rec.get("chosen_unsafe"), "chosen_unsafe", where),
        rejected_unsafe=_opt_bool(rec.get("rejected_unsafe"), "rejected_unsafe", where),
    )


def write_pairs_jsonl(pairs: Iterable[Pair], path: str | Path, margin: bool = False) -> int:
    """Write pairs as JSONL; ``margin=True`` only when the reward model trains with one."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(pair_record(p, margin), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_pairs_jsonl(path: str | Path) -> list[Pair]:
    """Pairs from JSONL written by this or an older alignkit (see :func:`pair_from_record`)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not JSON ({e.msg}) — one pair object per line"
                                 ) from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object with prompt, chosen, "
                                 "rejected")
            # Pairs files always defaulted a missing source to human (the Pair default).
            pairs.append(pair_from_record(rec, where, source="human"))
    return pairs
