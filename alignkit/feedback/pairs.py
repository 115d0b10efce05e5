"""Pairwise preference data: the unit the reward model trains on."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Source = Literal["human", "simulated", "ai"]


@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` beat ``rejected`` for ``prompt``.

    ``margin`` is the vote strength in [0, 1] (1 = unanimous), ``source`` says who judged
    (simulated and AI labels are never reported as human), ``labelers`` how many voted.
    """

    prompt: str
    chosen: str
    rejected: str
    margin: float = 1.0
    source: Source = "human"
    labelers: int = 1


def write_pairs_jsonl(pairs: list[Pair], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")


def read_pairs_jsonl(path: str | Path) -> list[Pair]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            missing = {"prompt", "chosen", "rejected"} - rec.keys()
            if missing:
                raise ValueError(
                    f"{path}:{lineno}: pair is missing field(s) {sorted(missing)} — each line "
                    "needs prompt, chosen, rejected"
                )
            known = {k: rec[k] for k in Pair.__dataclass_fields__ if k in rec}
            pairs.append(Pair(**known))
    return pairs
