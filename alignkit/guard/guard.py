"""The guard: runs the detectors every ``guard.every`` PPO steps and acts on their alarms.

``Guard`` is the ``guard=`` callback of ``PPOTrainer.train``: it gets the step's stats
(TRL metric names), prompts and texts, and returns a stop reason or None. Actions, per
detector: log (record only), stop, rollback (restore the best checkpoint by gold, then
stop) and, for the KL budget, raise_beta (β ← β × factor). Proxy, gold and KL come from a
fixed held-out prompt set sampled with a fixed seed (``HeldoutEval``) when one is given,
so successive evaluations differ by the policy, not by the prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from alignkit import checkpoints
from alignkit.artifacts import GuardReport
from alignkit.guard import detectors as D
from alignkit.guard.config import GuardConfig

if TYPE_CHECKING:
    from alignkit.rl.collect import RolloutCollector
    from alignkit.rl.ppo import PPOTrainer

# (prompts, texts) -> [members, samples] rewards of an RM ensemble
EnsembleFn = Callable[[list[str], list[str]], np.ndarray]


@dataclass
class HeldoutResult:
    proxy: float
    gold: float | None
    kl: float
    length: float
    prompts: list[str]
    texts: list[str]
    sample_proxy: list[float]
    sample_lengths: list[float]


class HeldoutEval:
    """Samples the policy on fixed prompts with a fixed seed; returns proxy, gold,
    KL(π‖π_ref) and lengths. Common random numbers across evaluations make a change in
    gold a change of the policy, not of the draw. ``source`` is a ``PPOTrainer`` or its
    ``RolloutCollector`` (policy, tokenizer, scorer, gold, sampling config)."""

    def __init__(self, source: PPOTrainer | RolloutCollector, prompts: list[str],
                 seed: int = 4242) -> None:
        if not prompts:
            raise ValueError("guard.heldout_prompts: no held-out prompts — set it to 0 to use "
                             "rollout stats, or give prompts")
        self.collector = getattr(source, "collector", source)
        self.prompts, self.seed = list(prompts), seed

    @torch.no_grad()
    def __call__(self) -> HeldoutResult:
        from alignkit.rl.collect import sample_with_reference

        c = self.collector
        # always the native sampler: a vLLM engine is only for PPO's rollouts
        s = sample_with_reference(c.policy, c.tok, self.prompts, c.gen_cfg, c.stop_ids,
                                  c.cfg.kl_estimator, self.seed, c.chat_template)
        texts = s.gen.texts(c.tok)
        proxy = c.scorer(self.prompts, texts, s.gen).float()
        gold = None if c.gold is None else float(np.mean(c.gold(texts)))
        lengths = s.gen.response_mask.sum(1)
        return HeldoutResult(float(proxy.mean()), gold, float(s.kl.sum(1).mean()),
                             float(lengths.mean()), self.prompts, texts, proxy.tolist(),
                             lengths.tolist())


class Guard:
    """Reward-hacking guard over one PPO run. Call it as ``trainer.train(guard=guard)``."""

    def __init__(self, cfg: GuardConfig, trainer: PPOTrainer | None = None,
                 heldout: HeldoutEval | Callable[[], HeldoutResult] | None = None,
                 ensemble: EnsembleFn | None = None, state_path: Path | None = None,
                 log: Callable[[str], None] | None = print) -> None:
        self.cfg, self.trainer, self.heldout, self.ensemble = cfg, trainer, heldout, ensemble
        self.state_path = state_path
        self.log = log or (lambda _msg: None)
        self.alarms: list[D.Alarm] = []
        self.evaluations: list[dict] = []  # one record per evaluation: the detectors' inputs
        self.best: dict | None = None  # {"step", "gold", "path"}
        self.stopped: str | None = None
        self.rollbacks = 0  # weights restored so far (a remote learner must be told)
        self._active: set[str] = set()  # detectors firing at the previous evaluation
        self._batch: tuple[list[str], list[str]] = ([], [])
        self._samples: tuple = ([], [], None, None)

    # --- the callback ------
    def __call__(self, stats: dict, prompts: list[str], texts: list[str]) -> str | None:
        step = int(stats.get("step", len(self.evaluations) + 1))
        if not self.cfg.enabled or step % self.cfg.every:
            return None
        rec = self._record(step, stats, prompts, texts)
        self._track_best(rec)
        alarms = self._detect(rec)
        verdict = None
        firing = set()
        for alarm in alarms:
            firing.add(alarm.detector)
            verdict = self._act(alarm) or verdict
        self._active = firing
        self._save_state()
        if verdict:
            self.stopped = verdict
            self._save_state()
        return verdict

    def baseline(self) -> None:
        """Evaluate the held-out set before PPO (KL = 0): anchors the Gao fit at d = 0, gives
        the trend detectors their starting point, and makes the starting policy a rollback
        target. Call it once before ``trainer.train``; a no-op without ``heldout``."""
        if not self.cfg.enabled or self.heldout is None:
            return
        step = int(self.trainer.step) if self.trainer is not None else 0
        if any(r["step"] == step for r in self.evaluations):
            return  # resumed: already measured
        h = self.heldout()
        rec = {"step": step, "proxy": h.proxy, "gold": h.gold, "kl": h.kl, "length": h.length,
               "source": "heldout", "baseline": True}
        self.evaluations.append(rec)
        self._track_best(rec)
        self._save_state()

    # --- inputs ------
    def _record(self, step: int, stats: dict, prompts: list[str], texts: list[str]) -> dict:
        """Gather this evaluation's numbers: held-out ones when available, rollout otherwise."""
        length = float(stats.get("response/length", 0.0))
        rec: dict = {
            "step": step, "kl_coef": stats.get("kl_coef"),
            "rollout_proxy": stats.get("objective/scores"),
            "rollout_gold": stats.get("objective/gold"),
            "rollout_kl": stats.get("objective/kl"),
            "entropy_per_token": (float(stats["objective/entropy"]) / length
                                  if "objective/entropy" in stats and length > 0 else None),
            "eos_rate": (float(stats["val/num_eos_tokens"]) / len(texts)
                         if "val/num_eos_tokens" in stats and texts else None),
        }
        h = self.heldout() if self.heldout is not None else None
        if h is not None:
            rec.update(proxy=h.proxy, gold=h.gold, kl=h.kl, length=h.length, source="heldout")
            self._samples = (h.prompts, h.texts, h.sample_proxy, h.sample_lengths)
        else:
            rec.update(proxy=rec["rollout_proxy"], gold=rec["rollout_gold"],
                       kl=rec["rollout_kl"], length=length, source="rollout")
            self._samples = (prompts, texts, None, None)
        if self.ensemble is not None:
            r = np.asarray(self.ensemble(prompts, texts), dtype=np.float64)
            rec["ensemble_std"] = float(r.std(axis=0).mean()) if r.ndim == 2 and len(r) > 1 \
                else None
        elif "reward/ensemble_std" in stats:
            rec["ensemble_std"] = float(stats["reward/ensemble_std"])
        self.evaluations.append(rec)
        self._batch = (prompts, texts)
        return rec

    def _series(self, key: str) -> tuple[list[int], list[float]]:
        rows = [r for r in self.evaluations if r.get(key) is not None]
        return [r["step"] for r in rows], [float(r[key]) for r in rows]

    # --- detectors ------
    def _detect(self, rec: dict) -> list[D.Alarm]:
        c, step = self.cfg, rec["step"]
        prompts, texts = self._batch
        h_prompts, h_texts, s_proxy, s_len = self._samples
        out: list[D.Alarm | None] = []
        _, kl = self._series("kl")
        out.append(D.kl_budget(step, kl, c.kl_budget, h_texts))
        rows = [r for r in self.evaluations
                if None not in (r.get("proxy"), r.get("gold"), r.get("kl"))]
        if rows:
            out.append(D.proxy_gold_divergence(
                step, [r["step"] for r in rows], [r["proxy"] for r in rows],
                [r["gold"] for r in rows], [r["kl"] for r in rows], c.window, c.proxy_rise,
                c.gold_stall, h_texts))
        rows = [r for r in self.evaluations if None not in (r.get("proxy"), r.get("length"))]
        out.append(D.length_exploitation(
            step, [r["proxy"] for r in rows], [r["length"] for r in rows], c.length_corr,
            c.length_drift, sample_rewards=s_proxy, sample_lengths=s_len, samples=h_texts))
        _, ent = self._series("entropy_per_token")
        _, eos = self._series("eos_rate")
        out.append(D.collapse(step, prompts, texts, ent, eos, c.entropy_floor,
                              c.distinct_floor, c.same_answer_share, c.eos_rate_change))
        _, dis = self._series("ensemble_std")
        out.append(D.ensemble_disagreement(step, dis, c.ensemble_rise, samples=texts))
        return [a for a in out if a is not None]

    # --- actions ------
    def _act(self, alarm: D.Alarm) -> str | None:
        """Apply the detector's action; record the alarm when it starts firing (a detector
        that stays on is recorded once, except raise_beta, which acts every time)."""
        action = self.cfg.action(alarm.detector)
        new = alarm.detector not in self._active
        verdict = None
        if action == "raise_beta":
            verdict = self._raise_beta(alarm)
        elif action == "stop":
            alarm.action = "stop"
            verdict = f"guard: {alarm.detector} at step {alarm.step}: {alarm.message}"
        elif action == "rollback":
            verdict = self._rollback(alarm)
        if new or action != "log":
            self.alarms.append(alarm)
            self.log(f"guard: step {alarm.step} {alarm.detector}: {alarm.message} "
                     f"→ {alarm.action}")
        return verdict

    def _raise_beta(self, alarm: D.Alarm) -> str | None:
        ctl = self.trainer.kl_ctl if self.trainer is not None else None
        if ctl is None:
            alarm.action = "log (no trainer to raise β on)"
            return None
        old = float(ctl.value)
        if old >= self.cfg.max_beta:
            alarm.action = "stop"
            return (f"guard: kl_budget at step {alarm.step}: {alarm.message}, β already at "
                    f"max_beta {self.cfg.max_beta}")
        ctl.set(min(self.cfg.max_beta, old * self.cfg.raise_beta_factor if old > 0
                    else self.cfg.raise_beta_min))
        alarm.action = f"raise_beta {old:.4g} → {ctl.value:.4g}"
        alarm.evidence.update(beta_before=old, beta_after=float(ctl.value))
        return None

    # --- best checkpoint and rollback ------
    @property
    def best_dir(self) -> Path | None:
        return self.trainer.ckpt_dir / checkpoints.BEST if self.trainer is not None else None

    def _track_best(self, rec: dict) -> None:
        """Keep the adapters of the best evaluation by gold in ``checkpoints/best``.

        Only the weights are stored: a rollback restores the policy and stops, and
        metrics.jsonl keeps the steps that were rolled back, as evidence.
        """
        gold = rec.get("gold")
        if gold is None or self.trainer is None:
            return
        if self.best is not None and gold <= self.best["gold"]:
            return
        target = self.best_dir
        checkpoints.save_weights(target, self.trainer.policy.adapter_state(), step=rec["step"],
                                 gold=gold)
        self.best = {"step": rec["step"], "gold": float(gold), "path": str(target)}

    def _rollback(self, alarm: D.Alarm) -> str:
        if self.best is None or self.trainer is None:
            alarm.action = "stop (no gold-scored checkpoint to roll back to)"
            return f"guard: {alarm.detector} at step {alarm.step}: {alarm.message}"
        state = checkpoints.load_weights_file(Path(self.best["path"]))
        checkpoints.load_weights(self.trainer.policy, state["weights"],
                                 "guard: best checkpoint")
        self.rollbacks += 1
        alarm.action = f"rollback to step {self.best['step']} (gold {self.best['gold']:.3f})"
        alarm.evidence.update(rolled_back_to=self.best["step"], best_gold=self.best["gold"])
        return (f"guard: {alarm.detector} at step {alarm.step}; rolled back to step "
                f"{self.best['step']} (gold {self.best['gold']:.3f})")

    # --- report ------
    def report(self) -> dict:
        """report.json's ``guard`` section: alarms with evidence, the trajectory, the fit."""
        rows = [r for r in self.evaluations if None not in (r.get("gold"), r.get("kl"))]
        fit = D.gao_fit([r["kl"] for r in rows], [r["gold"] for r in rows]) if rows else None
        return {
            "alarms": [a.to_dict() for a in self.alarms],
            "stopped": self.stopped,
            "best": self.best,
            "gao_fit": None if fit is None else fit.to_json(),
            "evaluations": self.evaluations,
            "config": self.cfg.model_dump(),
        }

    def record(self) -> GuardReport:
        """The typed guard.json (``report()`` is the same as a plain dict)."""
        return GuardReport.from_json(self.report())

    def _save_state(self) -> None:
        if self.state_path is not None:
            self.record().write(self.state_path)

    def load_state(self) -> bool:
        """Resume: reload alarms, evaluations and the best checkpoint from ``state_path``."""
        rep = GuardReport.read(self.state_path) if self.state_path is not None else None
        if rep is None:
            return False
        self.alarms = rep.alarms
        self.evaluations = [e.to_json() for e in rep.evaluations]
        if self.trainer is not None:  # the trainer resumed at its checkpoint: drop later ones
            self.evaluations = [r for r in self.evaluations if r["step"] <= self.trainer.step]
            self.alarms = [a for a in self.alarms if a.step <= self.trainer.step]
        self.best = rep.best.to_json() if rep.best is not None else None
        if self.best is not None and not Path(self.best["path"]).exists():
            self.best = None
        return True
