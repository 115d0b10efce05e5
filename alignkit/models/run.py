"""A finished run's trained policy rebuilt in memory: the run's own base model and LoRA
layout (``build_policy`` with the run's config and seed) plus its latest good checkpoint.
Export, chat and the red team all load a run this way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from transformers import PreTrainedTokenizerBase

from alignkit import checkpoints
from alignkit.config import RunConfig
from alignkit.models.build import build_policy
from alignkit.models.policy import Policy
from alignkit.rundir import RunDir


@dataclass
class RunPolicy:
    """A run's trained policy rebuilt in memory, with what generation needs."""

    cfg: RunConfig
    tokenizer: PreTrainedTokenizerBase
    policy: Policy
    stop_ids: list[int]
    checkpoint: Path


def latest_checkpoint(run: RunDir) -> Path:
    """The newest checkpoint of the run that reads back (see ``checkpoints.load_latest``)."""
    found = checkpoints.load_latest(run.checkpoints, log=print)
    if found is None:
        raise FileNotFoundError(f"run directory '{run.path}' has no checkpoints/latest — finish "
                                f"the ppo stage first (`alignkit run --out {run.path}`)")
    return found[0]


def load_run_policy(run_dir: str | Path, checkpoint: str | Path | None = None) -> RunPolicy:
    """Rebuild the policy exactly as the run built it, then load its PPO checkpoint.

    The base model comes from the run's own config (same name, dtype, tiny size and
    seed), so a random tiny model is re-created bit-for-bit; the checkpoint holds only
    what training changed (LoRA + value head, or all weights without LoRA).
    """
    run = RunDir(run_dir) if Path(run_dir).is_dir() else None
    if run is None or not run.config.exists():
        raise FileNotFoundError(f"'{run_dir}' is not a run directory (no config.yaml) — pass "
                                "the --out folder of `alignkit run`")
    cfg = RunConfig.model_validate(yaml.safe_load(run.config.read_text()) or {})
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run)
    m = cfg.model
    built = build_policy(m, cfg.seed)
    tok, policy, stop_ids = built.tokenizer, built.policy, built.stop_ids
    state = checkpoints.load_state(path)
    try:
        checkpoints.load_weights(policy, state.weights, f"checkpoint {path}")
    except checkpoints.CheckpointError as e:
        raise RuntimeError(f"{e} (model.name '{m.name}' in {run.config})") from None
    expected = set(state.weights)
    trained = {k for k in policy.state_dict() if "lora_" in k or "value_head" in k}
    if m.use_lora and not trained <= expected:
        raise RuntimeError(f"checkpoint {path} lacks adapter weights "
                           f"{sorted(trained - expected)[:3]} — was it written by this config?")
    policy.eval()
    return RunPolicy(cfg, tok, policy, stop_ids, path)
