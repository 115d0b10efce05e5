"""How much one reading of the helpful-and-harmless bars is worth: a finished run's
``evaluate_hh`` stage read again with other evaluation seeds, the trained models unchanged.

``evaluate_hh`` answers each held-out prompt once with ``evaluate.seed``; with 40 prompts a
set, another seed moves a rate by 10–20 points (README). This copies the run directory to a
temporary one, reruns only that stage there once per seed and prints, per set and judge,
the mean over all readings (the run's own first) with the smallest and largest. The run
directory itself is left as it is.

    .venv/bin/python benchmarks/evaluation_seeds.py runs/default --seeds 1 2 3   # ~2 min a seed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH

SETS = ("harmful_heldout", "harmbench", "jailbreak", "benign_refusal", "lookalike_refusal")
MODELS = ("base", "sl_cai", "aligned")


def read(run: Path) -> dict:
    path = run / "hh_evaluation.json"
    if not path.exists():
        raise SystemExit(f"{run}: no hh_evaluation.json — finish the run's evaluate_hh stage "
                         f"first (`alignkit run --out {run}`)")
    return json.loads(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished run directory (data.prompts: hh)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                    help="evaluation seeds to read the run with, besides its own")
    a = ap.parse_args()

    import yaml

    from alignkit.config import RunConfig
    from alignkit.cycle import run_cycle

    readings = [read(a.run)]
    cfg = RunConfig.model_validate(yaml.safe_load((a.run / "config.yaml").read_text()) or {})
    seeds = [cfg.evaluate.seed, *a.seeds]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(a.run, copy)
        for seed in a.seeds:
            cfg.evaluate.seed = seed
            status = run_cycle(cfg, copy, stages=("evaluate_hh",))
            if status != "done":
                raise SystemExit(f"evaluate_hh with seed {seed}: {status}")
            readings.append(read(copy))

    print(f"\n{a.run}: helpful-and-harmless evaluation read with seeds {seeds} "
          f"(n a reading); mean over the readings [min, max], percent")
    for name in SETS:
        for judge, first in readings[0].get(name, {}).items():
            cells = []
            for m in MODELS:
                vals = [100 * r[name][judge][m] for r in readings if r[name][judge].get(m)
                        is not None]
                if vals:
                    cells.append(f"{m} {sum(vals) / len(vals):5.1f} "
                                 f"[{min(vals):.1f}, {max(vals):.1f}]")
            print(f"{name:<18} {judge:<18} (n={first['n']}) " + "  ".join(cells))


if __name__ == "__main__":
    main()
