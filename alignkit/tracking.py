"""Optional experiment trackers fed every PPO step, through each library's own API.

Off by default (``report_to: []``) so a run needs no account, server or extra package.
TensorBoard writes event files into the run directory; MLflow logs to
``MLFLOW_TRACKING_URI`` or, when unset, a file store in the run directory; W&B follows its
own environment (``WANDB_PROJECT``, ``WANDB_MODE=offline``...). MLflow and W&B are
imported only when asked for, and a missing package is a one-line error at start-up,
not a crash after an hour of training.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

TRACKERS = ("tensorboard", "mlflow", "wandb")
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class TrackerError(RuntimeError):
    """A tracker cannot start; the message names the report_to entry and the fix."""


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def close(self) -> None: ...


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of a metrics dict (the step counter itself excluded)."""
    out = {}
    for k, v in metrics.items():
        if k == "step" or isinstance(v, bool):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"ppo": {"lr": 1e-3}} → {"ppo.lr": 1e-3}: the flat params trackers show as columns."""
    flat: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return flat


class TensorBoardTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard"
        # On resume, steps after the checkpoint are logged again: purge the old ones so
        # TensorBoard shows one curve, not two overlapping ones.
        self.writer = SummaryWriter(log_dir=str(self.log_dir),
                                    purge_step=resume_step + 1 if resume_step else None)
        lines = [f"    {k}: {v}" for k, v in flatten(config).items()]  # indented = code block
        self.writer.add_text("config", "\n".join(lines), 0)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for k, v in scalars(metrics).items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class MLflowTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int = 0) -> None:
        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((Path(run_dir) / "mlruns").resolve().as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "alignkit"))
        self.run = mlflow.start_run(run_name=str(config.get("name", "alignkit")))
        params = {k: ("" if v is None else v) for k, v in flatten(config).items()}
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.mlflow.log_metrics(scalars(metrics), step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class WandbTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int = 0) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "alignkit"),
                              name=str(config.get("name", "alignkit")), config=config,
                              dir=str(run_dir))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(scalars(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


class Trackers:
    """All requested trackers behind one ``log``/``close``; with none it does nothing."""

    def __init__(self, trackers: Iterable[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        self.trackers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_trackers(report_to: list[str]) -> None:
    """Fail at start-up, before hours of work, if a requested tracker cannot be imported."""
    for name in report_to:
        if name not in _CLASSES:
            raise TrackerError(f"report_to: unknown tracker '{name}' — use one of "
                               f"{', '.join(TRACKERS)}")
        pkg = _PACKAGES[name]
        if importlib.util.find_spec(pkg) is None:
            raise TrackerError(f"report_to: '{name}' needs the {pkg} package (not installed) "
                               f"— `pip install {pkg}` or remove '{name}' from report_to")


def make_trackers(report_to: list[str], run_dir: str | Path, config: dict[str, Any],
                  resume_step: int = 0) -> Trackers:
    """Start every tracker named in ``report_to``; fail in one line if one cannot start.

    ``resume_step``: the PPO step a resumed run restarts after (TensorBoard drops its
    later events, which the resumed run logs again).
    """
    started: list[Tracker] = []
    try:
        for name in dict.fromkeys(report_to):  # keep order, drop repeats
            if name not in _CLASSES:
                raise TrackerError(f"report_to: unknown tracker '{name}' — use one of "
                                   f"{', '.join(TRACKERS)}")
            try:
                started.append(_CLASSES[name](Path(run_dir), config, resume_step))
            except ModuleNotFoundError as e:
                pkg = _PACKAGES[name]
                raise TrackerError(f"report_to: '{name}' needs the {pkg} package ({e.name} is "
                                   f"not installed) — `pip install {pkg}` or remove '{name}' "
                                   "from report_to") from None
    except BaseException:
        for t in started:
            t.close()
        raise
    return Trackers(started)
