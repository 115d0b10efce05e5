"""PPO checkpoints: save, find the latest good one, load weights that must match the model.

Layout under ``<run>/checkpoints``: ``step_NNNNN/state.pt`` (the last two are kept),
``latest`` (a one-line pointer to the newest step folder) and ``best/state.pt`` (the
guard's best-by-gold adapters). A step folder is written under a temporary name and
renamed, and ``latest`` is replaced atomically, so a crash or a full disk while writing
leaves the previous checkpoint and its pointer as they were. A checkpoint that cannot be
read back (truncated, corrupted) is skipped for the one before it, and the caller is told.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

STATE = "state.pt"
LATEST = "latest"
BEST = "best"
KEEP = 2  # step folders kept: the newest and one to fall back on


@dataclass
class TrainState:
    """What a PPO checkpoint holds: enough to continue exactly where training stopped."""

    weights: dict[str, Tensor]  # trained tensors only: LoRA + value head (or all, no LoRA)
    step: int
    optimizer: dict[str, Any] = field(default_factory=dict)
    kl_ctl: dict[str, Any] = field(default_factory=dict)
    metrics_lines: int = 0  # metrics.jsonl / samples.jsonl lengths at this step, so a
    samples_lines: int = 0  # resumed run cuts the logs of steps it will redo
    safety: dict[str, Any] = field(default_factory=dict)  # Safe RLHF's λ (ppo.cost)

    def to_file(self) -> dict[str, Any]:
        return {"weights": self.weights, "optimizer": self.optimizer, "kl_ctl": self.kl_ctl,
                "step": self.step, "metrics_lines": self.metrics_lines,
                "samples_lines": self.samples_lines, "safety": self.safety}

    @classmethod
    def from_file(cls, data: dict[str, Any]) -> TrainState:
        return cls(data["weights"], int(data["step"]), data.get("optimizer") or {},
                   data.get("kl_ctl") or {}, int(data.get("metrics_lines", 0)),
                   int(data.get("samples_lines", 0)), data.get("safety") or {})


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or does not match the model it is loaded into."""


def step_dir(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step_{step:05d}"


def _write_dir(target: Path, payload: dict[str, Any]) -> None:
    """``target/state.pt`` via a temporary sibling folder; nothing changes if writing fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp_{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        torch.save(payload, tmp / STATE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half checkpoint
        raise
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def save(ckpt_dir: Path, state: TrainState, keep: int = KEEP) -> Path:
    """Write ``step_N`` and then point ``latest`` at it; keep the newest ``keep`` steps."""
    final = step_dir(ckpt_dir, state.step)
    _write_dir(final, state.to_file())
    pointer_tmp = ckpt_dir / f"{LATEST}.tmp"
    pointer_tmp.write_text(final.name)
    pointer_tmp.replace(ckpt_dir / LATEST)
    for old in sorted(ckpt_dir.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_path(ckpt_dir: Path) -> Path | None:
    """The folder ``latest`` points at (unchecked); None when there is no pointer."""
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return ckpt_dir / name if name else None


def _read(path: Path) -> dict[str, Any]:
    """state.pt of a checkpoint folder, mapped to the CPU (a GPU run resumes on a laptop)."""
    try:
        data = torch.load(path / STATE, weights_only=False, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no {STATE}") from None
    except Exception as e:  # truncated zip, bad pickle, …
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: "
                              f"{str(e)[:120]})") from None
    if not isinstance(data, dict) or "weights" not in data:
        raise CheckpointError(f"checkpoint {path} holds no weights")
    return data


def load_latest(ckpt_dir: Path, log: Callable[[str], None] | None = None
                ) -> tuple[Path, TrainState] | None:
    """The newest checkpoint that reads back: ``latest`` first, then older step folders.

    A bad one is reported through ``log`` and skipped; None when there is none at all.
    """
    first = latest_path(ckpt_dir)
    candidates = [first] if first is not None else []
    candidates += [p for p in sorted(ckpt_dir.glob("step_*"), reverse=True)
                   if p != first and (first is None or p.name < first.name)]
    for path in candidates:
        try:
            state = TrainState.from_file(_read(path))
        except CheckpointError as e:
            if log is not None:
                log(f"{e}; falling back to the previous checkpoint")
            continue
        if path != first and log is not None:
            log(f"resuming from {path.name}, the newest checkpoint that reads back")
        return path, state
    return None


def load_state(path: Path) -> TrainState:
    """The checkpoint in folder ``path`` (raises CheckpointError when unreadable)."""
    return TrainState.from_file(_read(path))


def load_weights(module: nn.Module, weights: dict[str, Tensor], where: str) -> None:
    """Copy ``weights`` into ``module``; refuse keys the module does not have.

    Missing keys are fine (a checkpoint holds only the trained tensors); unexpected ones
    mean the checkpoint was written for another model or config.
    """
    result = module.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{where} does not match the model: unexpected "
                              f"{result.unexpected_keys[:3]} — same model config?")


def save_weights(target: Path, weights: dict[str, Tensor], **meta: float | int) -> None:
    """A weights-only checkpoint (the guard's best): ``target/state.pt``, atomically."""
    _write_dir(target, {"weights": weights, **meta})


def load_weights_file(target: Path) -> dict[str, Any]:
    """The payload of a weights-only checkpoint written by ``save_weights``."""
    return _read(target)
