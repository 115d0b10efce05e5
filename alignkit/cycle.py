"""Run the stages in order, skipping those already done with the same config.

generate → feedback → pairs → reward → ppo (each round) → evaluate → report. Each stage
reads the previous stages' artifacts from the run directory, so any of them can be re-run
alone. The stages themselves live in ``alignkit.stages``; this module only loops over
rounds and stages, decides skip or resume from the manifest, and records the outcome.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import yaml
from pydantic import ValidationError
from rich.console import Console

from alignkit.config import RunConfig
from alignkit.models.loading import configure_process
from alignkit.rundir import RunDir
from alignkit.stages import (
    ROUND_STAGES,
    STAGES,
    Stage,
    StageContext,
    after_rounds,
    phases,
)
from alignkit.stages.rounds import close_round

__all__ = ["ROUND_STAGES", "STAGES", "Cycle", "run_cycle"]


class Cycle:
    def __init__(self, cfg: RunConfig, out: str | Path, console: Console | None = None) -> None:
        from alignkit.tracking import check_trackers

        self.cfg = cfg
        self.run = RunDir(out)
        self.console = console or Console()
        configure_process(cfg.threads, cfg.keep_freed_memory)
        self.ctx = StageContext(cfg, self.run, self.console)
        _ = self.ctx.prompts, self.ctx.judge  # a missing prompt file or judge fails now
        check_trackers(cfg.report_to)  # a missing tracker package fails now, not after PPO
        self._earlier = self._earlier_config()  # before run_all rewrites config.yaml

    # The run's state for callers that run the cycle in-process (tests, notebooks).
    stop_reason = property(lambda self: self.ctx.stop_reason)
    policy = property(lambda self: self.ctx.policy)
    tokenizer = property(lambda self: self.ctx.tokenizer)
    _stop_ids = property(lambda self: self.ctx.stop_ids)

    def run_all(self, stages: tuple[str, ...] = STAGES) -> str:
        """Run every stage not yet done, round after round; returns 'done' or why it paused."""
        self.run.config.write_text(yaml.safe_dump(self.cfg.model_dump(), sort_keys=False))
        before, per_round, after = phases(stages)
        for stage in before:
            if (status := self._run_stage(stage, None)) != "done":
                return status
        for r in range(self.cfg.rounds if per_round else 0):
            for stage in per_round:
                if (status := self._run_stage(stage, r)) != "done":
                    return status
            if "ppo" in (s.name for s in per_round):
                reason = close_round(self.ctx, r)
                if reason:
                    self.ctx.stop_reason = reason
                    break
        for stage in after:
            if (status := self._run_stage(stage, None)) != "done":
                return status
        return "done"

    def config_hash(self, stage: Stage, r: int | None) -> str:
        """The hash a finished stage is recorded with: its config sections, and its round
        (per-round stages after the first) or the number of rounds (stages after them)."""
        return self.cfg.section_hash(*stage.inputs) + self._suffix(stage, r)

    def _suffix(self, stage: Stage, r: int | None) -> str:
        return (f":r{r}" if r else "") + (f":rounds{self.cfg.rounds}" if after_rounds(stage)
                                           else "")

    def _earlier_config(self) -> dict | None:
        """config.yaml as the run that last used this directory wrote it, or None."""
        try:
            raw = yaml.safe_load(self.run.config.read_text()) if self.run.config.exists() \
                else None
        except (yaml.YAMLError, UnicodeDecodeError):
            return None
        return raw if isinstance(raw, dict) else None

    def _same_config(self, recorded: str | None, stage: Stage, r: int | None) -> bool:
        """The manifest's hash stands for this config: it is the current hash, or the hash an
        older alignkit computed for the same settings before the config gained fields (the
        earlier config.yaml, read with today's defaults, equals today's config)."""
        if recorded is None or recorded == self.config_hash(stage, r):
            return recorded is not None
        raw = self._earlier
        if raw is None:
            return False
        # RunConfig.section_hash's formula over the sections the earlier file has (a section
        # it lacks did not exist then, so that alignkit could not have hashed it)
        blob = json.dumps({n: raw[n] for n in stage.inputs if n in raw}, sort_keys=True)
        if recorded != hashlib.sha256(blob.encode()).hexdigest()[:16] + self._suffix(stage, r):
            return False
        try:
            earlier = RunConfig.model_validate(raw)
        except ValidationError:
            return False
        return earlier.section_hash(*stage.inputs) == self.cfg.section_hash(*stage.inputs)

    def _run_stage(self, stage: Stage, r: int | None) -> str:
        key = stage.name if not r else f"{stage.name}@{r}"
        h = self.config_hash(stage, r)
        previous = self.run.stage(key)
        resume = self._same_config(previous.config_hash, stage, r)
        if resume and previous.status == "done":
            if previous.config_hash != h:
                self.run.rehash(key, h)  # recorded by an older alignkit: today's hash
            self.console.print(f"[dim]✓ {key}: done earlier with the same config, skipped")
            return "done"
        rounds = self.cfg.rounds
        self.console.rule(f"[bold]{key}" + (f"  (round {r + 1}/{rounds})"
                                             if r is not None and rounds > 1 else ""))
        self.run.mark(key, "running", h)
        t0 = time.perf_counter()
        try:
            result = stage.run(self.ctx, r, resume)
        except BaseException as e:
            self.run.mark(key, "failed", h, error=f"{type(e).__name__}: {e}"[:500])
            raise
        self.ctx.results[(stage.name, r)] = result
        seconds = time.perf_counter() - t0 + ((previous.seconds or 0.0) if resume else 0.0)
        status = "done" if result.done else result.outcome
        self.run.mark(key, status, h, seconds=seconds, outcome=result.outcome)
        if status != "done":
            self.console.print(f"[yellow]{key} stopped: {result.outcome}. Run the same "
                               "command again to resume.")
        return status


def run_cycle(cfg: RunConfig, out: str | Path, console: Console | None = None,
              stages: tuple[str, ...] = STAGES) -> str:
    return Cycle(cfg, out, console).run_all(stages)
