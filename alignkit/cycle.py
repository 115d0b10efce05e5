"""Run the RLHF stages in order, skipping those already done with the same config.

generate → feedback → pairs → reward → ppo → evaluate → report. Each stage reads the
previous stages' artifacts from the run directory, so any of them can be re-run alone.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.progress import Progress

from alignkit.config import RunConfig
from alignkit.data.prompts import load_prompts, split_prompts
from alignkit.data.types import read_pairs_jsonl, write_pairs_jsonl
from alignkit.distributed.device import describe, pick_device
from alignkit.evaluate.before_after import judge_comparison
from alignkit.evaluate.metrics import distinct_n
from alignkit.evaluate.summary import build_report, mean_key
from alignkit.generation import Generation, encode_prompts, sample
from alignkit.jsonl import read_jsonl, write_jsonl
from alignkit.models.loading import load_causal_lm, load_tokenizer, set_threads, stop_token_ids
from alignkit.models.policy import Policy
from alignkit.reward.model import RewardEnsemble, RewardModel, load_backbone
from alignkit.reward.train import train_reward_model
from alignkit.rl.ppo import PPOTrainer
from alignkit.rundir import RunDir, write_json_atomic
from alignkit.safety.judges import JUDGES, get_judge
from alignkit.tracking import check_trackers, make_trackers

STAGES = ("generate", "feedback", "pairs", "reward", "ppo", "evaluate", "report")
ROUND_STAGES = ("generate", "feedback", "pairs", "reward", "ppo")  # repeated each round
# Config sections each stage depends on (its own and every upstream one).
_INPUTS = {
    "generate": ("model", "data", "generate"),
    "feedback": ("model", "data", "generate", "feedback"),
    "pairs": ("model", "data", "generate", "feedback"),
    "reward": ("model", "data", "generate", "feedback", "reward"),
    "ppo": ("model", "data", "generate", "feedback", "reward", "ppo", "guard"),
    "evaluate": ("model", "data", "generate", "feedback", "reward", "ppo", "guard", "evaluate"),
    "report": ("model", "data", "generate", "feedback", "reward", "ppo", "guard", "evaluate"),
}


class Cycle:
    def __init__(self, cfg: RunConfig, out: str | Path, console: Console | None = None) -> None:
        self.cfg = cfg
        self.run = RunDir(out)
        self.console = console or Console()
        set_threads(cfg.threads)
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        prompts = load_prompts(cfg.data.prompts)
        self.train_prompts, self.eval_prompts = split_prompts(
            prompts, cfg.data.eval_prompts, cfg.data.seed)
        if cfg.data.max_train_prompts:
            self.train_prompts = self.train_prompts[: cfg.data.max_train_prompts]
        self.judge = get_judge(cfg.feedback.judge)
        check_trackers(cfg.report_to)  # a missing tracker package fails now, not after PPO
        self._tok = None
        self._policy: Policy | None = None
        self._stop_ids: list[int] = []
        self._rm: RewardModel | None = None
        self.round = 0
        self.stop_reason = "steps done"
        self._guard_stop: str | None = None
        self._round_pairs: dict[int, dict] = {}
        self._policy_loaded_step = 0
        self._sampler = None  # vLLM rollout engine, built on first use

    # --- lazily loaded models -------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tok is None:
            self._tok = load_tokenizer(self.cfg.model.name)
        return self._tok

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            m = self.cfg.model
            with self.console.status(f"loading policy {m.name}"):
                lm = load_causal_lm(m.name, self.tokenizer, m.dtype, m.tiny_layers,
                                    m.tiny_hidden, self.cfg.seed)
                self._stop_ids = stop_token_ids(self.tokenizer, lm)
                self._policy = Policy(lm, m)
            self.console.print(f"policy {m.name} on {describe(self._policy.device)}")
        return self._policy

    @property
    def reward_model(self) -> RewardModel:
        if self._rm is None:
            self._rm = RewardModel.load(self.run.reward_model, self.cfg.model.device)
        return self._rm

    # --- the cycle ------------------------------------------------------------------------
    def run_all(self, stages: tuple[str, ...] = STAGES) -> str:
        """Run every stage not yet done, round after round; returns 'done' or why it paused."""
        self.run.config.write_text(yaml.safe_dump(self.cfg.model_dump(), sort_keys=False))
        per_round = [s for s in stages if s in ROUND_STAGES]
        for r in range(self.cfg.rounds):
            self.round = r
            for name in per_round:
                outcome = self._run_stage(name, r)
                if outcome != "done":
                    return outcome
            if "ppo" in per_round:
                reason = self._close_round(r)
                if reason:
                    self.stop_reason = reason
                    break
        for name in stages:
            if name not in ROUND_STAGES:
                outcome = self._run_stage(name, None)
                if outcome != "done":
                    return outcome
        return "done"

    def _run_stage(self, name: str, r: int | None) -> str:
        key = name if not r else f"{name}@{r}"
        h = self.cfg.section_hash(*_INPUTS[name]) + (f":r{r}" if r else "")
        if name in ("evaluate", "report"):
            h += f":rounds{self.cfg.rounds}"
        if self.run.is_done(key, h):
            self.console.print(f"[dim]✓ {key}: done earlier with the same config, skipped")
            return "done"
        self.console.rule(f"[bold]{key}" + (f"  (round {r + 1}/{self.cfg.rounds})"
                                             if r is not None and self.cfg.rounds > 1 else ""))
        previous = self.run.stage(key)
        resume = previous.get("config_hash") == h
        self.run.mark(key, "running", h)
        t0 = time.perf_counter()
        try:
            outcome = getattr(self, f"stage_{name}")(resume) or "done"
        except BaseException as e:
            self.run.mark(key, "failed", h, error=f"{type(e).__name__}: {e}"[:500])
            raise
        seconds = time.perf_counter() - t0 + (previous.get("seconds", 0.0) if resume else 0.0)
        status = "done" if outcome in ("done", "steps done") else outcome
        self.run.mark(key, status, h, seconds=seconds, outcome=outcome)
        if status != "done":
            self.console.print(f"[yellow]{key} stopped: {outcome}. Run the same command "
                               "again to resume.")
        return status

    def _close_round(self, r: int) -> str | None:
        """Record the round (pairs added, RM accuracy on them, gold, proxy, KL); decide whether
        to stop: target reached, KL budget spent, guard stop, no gain, or rounds exhausted."""
        rows = read_jsonl(self.run.metrics) if self.run.metrics.exists() else []
        end = min(len(rows), self.cfg.ppo.steps * (r + 1))  # this round's last PPO step
        last = rows[max(0, end - 3) : end]
        rounds = json.loads(self.run.rounds.read_text()) if self.run.rounds.exists() else []
        earlier = {x["round"]: x for x in rounds}.get(r, {})  # a resumed run skipped the stages
        rounds = [x for x in rounds if x["round"] != r and x["round"] < self.cfg.rounds]
        pairs_info = dict(self._round_pairs.get(r) or {
            k: earlier[k] for k in ("pairs_added", "rm_accuracy_new") if k in earlier})
        if "pairs_added" not in pairs_info:
            from alignkit.feedback.pairs import rankings_to_pairs

            pairs_info["pairs_added"] = len(rankings_to_pairs(self._store(), round=r))
        entry = {"round": r, "steps": end, **pairs_info,
                 "gold": mean_key(last, "objective/gold"),
                 "proxy": mean_key(last, "objective/scores"),
                 "kl": mean_key(last, "objective/kl")}
        rounds = sorted([*rounds, entry], key=lambda x: x["round"])
        write_json_atomic(self.run.rounds, rounds)
        gold = entry["gold"]
        if self._guard_stop:
            return f"guard stop ({self._guard_stop})"
        if self.cfg.target_gold is not None and gold is not None and gold >= self.cfg.target_gold:
            return f"reward target reached (gold {gold:.3f} >= {self.cfg.target_gold})"
        if entry["kl"] is not None and entry["kl"] >= self.cfg.guard.kl_budget:
            return f"KL budget spent ({entry['kl']:.2f} >= {self.cfg.guard.kl_budget})"
        golds = [x["gold"] for x in rounds if x["round"] <= r and x["gold"] is not None]
        p = self.cfg.patience
        if len(golds) > p and max(golds[-p:]) <= max(golds[:-p]):
            return f"no gold improvement for {p} rounds"
        if r == self.cfg.rounds - 1:
            return "rounds exhausted" if self.cfg.rounds > 1 else "steps done"
        return None

    # --- generate -------------------------------------------------------------------------
    def _sample(self, prompts: list[str], batch_size: int, seed: int, reference: bool = False,
                desc: str = "sampling") -> tuple[list[str], list[Generation]]:
        g = self.cfg.generate
        pol = self.policy
        rng = torch.Generator().manual_seed(seed)
        texts: list[str] = []
        gens: list[Generation] = []
        with Progress(console=self.console, transient=True) as bar:
            task = bar.add_task(desc, total=len(prompts))
            for i in range(0, len(prompts), batch_size):
                chunk = prompts[i : i + batch_size]
                q, m = encode_prompts(self.tokenizer, chunk, self.cfg.data.chat_template)
                if reference:
                    with pol.reference():
                        gen = sample(pol, q, m, g.max_new_tokens, self._stop_ids,
                                     self.tokenizer.pad_token_id, g.temperature, g.top_p, rng,
                                     reference=True)
                else:
                    with pol.merged():
                        gen = sample(pol, q, m, g.max_new_tokens, self._stop_ids,
                                     self.tokenizer.pad_token_id, g.temperature, g.top_p, rng)
                texts += gen.texts(self.tokenizer)
                gens.append(gen)
                bar.update(task, advance=len(chunk))
        return texts, gens

    def _completions(self, r: int) -> Path:
        return self.run.completions if r == 0 else self.run.path / f"completions_r{r}.jsonl"

    def stage_generate(self, resume: bool) -> str:
        """K completions per prompt from the *current* policy (the base in round 0)."""
        g, r = self.cfg.generate, self.round
        if r > 0:
            self._load_trained_policy()
        rng = random.Random(self.cfg.seed + 1000 * r)
        chosen = rng.sample(self.train_prompts, min(g.prompts, len(self.train_prompts)))
        flat = [p for p in chosen for _ in range(g.k)]
        texts, _ = self._sample(flat, g.batch_size, self.cfg.seed + r, desc=f"{g.k} completions")
        records = [{"prompt": p, "completions": texts[i * g.k : (i + 1) * g.k]}
                   for i, p in enumerate(chosen)]
        write_jsonl(records, self._completions(r))
        self.console.print(f"{len(records)} prompts × {g.k} completions → "
                           f"{self._completions(r).name}")
        return "done"

    # --- feedback and pairs -----------------------------------------------------------------
    def _store(self):
        from alignkit.feedback.store import FeedbackStore

        return FeedbackStore(self.cfg.feedback.db or f"sqlite:///{self.run.feedback_db}")

    def stage_feedback(self, resume: bool) -> str:
        f = self.cfg.feedback
        r = self.round
        store = self._store()
        if not resume or not store.items(round=r):
            if r == 0 and not f.db:
                store.reset()  # the run's own database: the completions may have changed
            records = read_jsonl(self._completions(r))
            store.add_items([(x["prompt"], x["completions"]) for x in records], f.criterion,
                            round=r, guideline=f.guideline)
        if f.source == "simulated":
            from alignkit.feedback.simulate import simulate_feedback

            s = simulate_feedback(store, self.judge.goodness, n_labelers=f.labelers,
                                  overlap=f.overlap, target_agreement=f.target_agreement,
                                  seed=f.seed + r, round=r)
            self.console.print(f"simulated labelers ({f.labelers}, judge '{f.judge}' + noise "
                               f"σ={s.sigma:.2f}): {s.rankings} rankings, pairwise agreement "
                               f"{s.agreement:.2f} — these labels are SIMULATED, not human")
            return "done"
        if f.source == "human":
            return self._wait_for_humans(store)
        return self._ai_feedback(store)

    def _ai_feedback(self, store) -> str:
        """RLAIF: the policy (current weights) ranks the items as a log-prob labeler."""
        from alignkit.safety.ai_feedback import ai_feedback
        from alignkit.safety.constitution import load_constitution

        f = self.cfg.feedback
        with self.policy.merged():
            s = ai_feedback(store, self.policy.lm, self.tokenizer,
                            load_constitution(f.constitution), principles_per_pair=f.ai_principles,
                            round=self.round, goodness=self.judge.goodness, seed=f.seed)
        write_pairs_jsonl(s.pairs, self.run.ai_pairs)
        write_json_atomic(self.run.ai_feedback, {
            "labeler": s.labeler, "rankings": s.rankings, "gold_agreement": s.gold,
            "principles": s.principles})
        self.console.print(f"AI labeler: {s.rankings} rankings, agreement with the gold judge "
                           f"{s.gold['agreement']:.2f} on {s.gold['pairs']} pairs — AI labels, "
                           "not human")
        return "done"

    def _wait_for_humans(self, store) -> str:
        """Serve the labeling app and block until every item has ``overlap`` rankings."""
        import os
        import secrets

        from alignkit.feedback.app import create_app, hosts_for
        from alignkit.feedback.serve import BackgroundServer, wait_for_rankings

        f = self.cfg.feedback
        token = os.environ.get("ALIGNKIT_ADMIN_TOKEN") or secrets.token_urlsafe(18)
        app = create_app(store, admin_token=token, overlap=f.overlap,
                         allowed_hosts=hosts_for(f.host))
        with BackgroundServer(app, host=f.host, port=f.port) as server:
            db = f.db or f"sqlite:///{self.run.feedback_db}"
            self.console.print(
                f"labeling app: {server.url}/admin#token={token}\n"
                f"add labelers with: alignkit label add-labeler NAME --db {db}\n"
                f"waiting for {f.overlap} rankings per item (Ctrl-C pauses; rerun to resume)")
            try:
                done = wait_for_rankings(store, f.overlap, poll_s=5.0, timeout_s=f.wait_timeout_s)
            except KeyboardInterrupt:
                done = False
        return "done" if done else "waiting for human feedback"

    def stage_pairs(self, resume: bool) -> str:
        from alignkit.feedback.pairs import rankings_to_pairs

        store, r, f = self._store(), self.round, self.cfg.feedback
        if f.source == "ai" and f.ai_soft_labels and self.run.ai_pairs.exists():
            pairs = read_pairs_jsonl(self.run.ai_pairs)
        else:
            pairs = rankings_to_pairs(store)
        if f.filter_judge:
            from alignkit.safety.redteam import filter_pairs

            pairs, rep = filter_pairs(pairs, get_judge(f.filter_judge), f.filter_threshold,
                                      f.filter_action)
            write_json_atomic(self.run.filter_report, rep.as_dict())
            self.console.print(f"filter '{f.filter_judge}': {rep.removed} removed, "
                               f"{rep.flagged} flagged of {rep.total} pairs")
        # TRL reads a `margin` column as its loss margin: write one only if we train with it.
        write_pairs_jsonl(pairs, self.run.pairs, margin=self.cfg.reward.margin)
        new = rankings_to_pairs(store, round=r)
        info: dict = {"pairs_added": len(new)}
        if r > 0 and self.run.reward_model.exists():
            # How well last round's RM ranks the new policy's samples: its drift.
            from alignkit.reward.losses import pair_accuracy
            from alignkit.reward.train import evaluate_pairs

            c, rj = evaluate_pairs(self.reward_model, new)
            info["rm_accuracy_new"] = pair_accuracy(c, rj) if c.numel() else None
        self._round_pairs[r] = info
        self.console.print(f"{len(pairs)} pairs ({len(new)} from this round) → "
                           f"{self.run.pairs.name}")
        return "done"

    # --- reward model ----------------------------------------------------------------------
    def stage_reward(self, resume: bool) -> str:
        """Train ``reward.ensemble`` models (seeds seed, seed+1, …); member 0 is reported."""
        r, m = self.cfg.reward, self.cfg.model
        pairs = read_pairs_jsonl(self.run.pairs)
        paths = RewardEnsemble.member_paths(self.run.reward_model, r.ensemble)
        stale = RewardEnsemble.member_paths(self.run.reward_model, 64)[r.ensemble:]
        for extra in stale:  # fewer members than a previous run: drop the rest
            shutil.rmtree(extra, ignore_errors=True)
        reports = []
        for i, path in enumerate(paths):
            backbone, tok = load_backbone(r.backbone, m.name, m.tiny_layers, m.tiny_hidden)
            rm = RewardModel(backbone, tok, r.max_length, device=m.device)
            reports.append(train_reward_model(rm, pairs, r.model_copy(update={"seed": r.seed + i})))
            rm.save(path, {"backbone": r.backbone, "member": i})
            if i == 0:
                self._rm = rm
        report = reports[0]
        data = {"backbone": r.backbone, **report.__dict__,
                "ensemble_accuracies": [x.eval_accuracy for x in reports]}
        write_json_atomic(self.run.reward_report, data)
        self.console.print(f"reward model: {report.pairs_train} train / {report.pairs_eval} "
                           f"held-out pairs, held-out accuracy {report.eval_accuracy:.3f}, "
                           f"ECE {report.eval_ece:.3f}"
                           + (f"; ensemble of {r.ensemble}: accuracies "
                              + ", ".join(f"{x.eval_accuracy:.3f}" for x in reports)
                              if r.ensemble > 1 else ""))
        return "done"

    # --- PPO --------------------------------------------------------------------------------
    def _scorer_spec(self):
        from alignkit.distributed.workers import ScorerSpec

        return ScorerSpec(self.cfg.ppo.reward, self.cfg.feedback.judge, str(self.run.reward_model),
                          self.cfg.model.device)

    def _trainer(self) -> PPOTrainer:
        return PPOTrainer(self.policy, self.tokenizer, self.train_prompts,
                          self._scorer_spec()(self.tokenizer), self.cfg.ppo, self.cfg.generate,
                          self.run.path, self._stop_ids, self.cfg.data.chat_template,
                          gold=self.judge.goodness)

    def _rollout_sampler(self):
        """vLLM for PPO's rollouts when generate.engine says so (one engine per process)."""
        if self._sampler is None and self.cfg.generate.engine != "native":
            from alignkit.generation_vllm import make_sampler

            g = self.cfg.generate
            self._sampler = make_sampler(g.engine, self.policy, self.cfg.model.name,
                                         self.run.path / "vllm_adapters", g.vllm_gpu_memory,
                                         self.cfg.seed)
        return self._sampler

    def _step_printer(self, total: int, tracker) -> Callable[[dict], None]:
        def show(s: dict) -> None:
            tracker.log(s, step=s["step"])
            gold = f"  gold {s['objective/gold']:.3f}" if "objective/gold" in s else ""
            self.console.print(
                f"step {s['step']:>3}/{total}  score {s['objective/scores']:+.3f}  "
                f"kl {s['objective/kl']:.2f}  β {s['kl_coef']:.3f}{gold}  "
                f"len {s['response/length']:.1f}  {s['time/step']:.1f}s")

        return show

    def stage_ppo(self, resume: bool) -> str:
        total = self.cfg.ppo.steps * (self.round + 1)
        if self.cfg.distributed.backend == "ray":
            outcome = self._ppo_on_ray(resume, total)
        else:
            outcome = self._ppo_local(resume, total)
        if outcome == "steps done" and self.policy.use_lora:
            self.policy.lm.save_pretrained(self.run.policy)  # a PEFT adapter folder
        return outcome

    def _ppo_local(self, resume: bool, total: int) -> str:
        trainer = self._trainer()
        trainer.sampler = self._rollout_sampler()  # only PPO's rollouts use vLLM
        if (resume or self.round > 0) and trainer.load_checkpoint():
            self.console.print(f"continuing PPO from step {trainer.step}"
                               if not resume else f"resuming PPO from step {trainer.step}")
        else:
            for stale in (self.run.metrics, self.run.samples):
                stale.unlink(missing_ok=True)
            shutil.rmtree(self.run.checkpoints, ignore_errors=True)
        tracker = make_trackers(self.cfg.report_to, self.run.path, self.cfg.model_dump(),
                                resume_step=trainer.step)
        guard = self._guard(trainer, resume or self.round > 0)
        try:
            outcome = trainer.train(steps=total, on_step=self._step_printer(total, tracker),
                                    guard=guard)
        finally:
            tracker.close()
        self._policy_loaded_step = trainer.step
        return self._after_guard(outcome)

    def _after_guard(self, outcome: str) -> str:
        """A guard stop finishes PPO; evaluation goes on."""
        if outcome.startswith("guard:"):
            self.console.print(f"PPO stopped by the guard: {outcome}", markup=False)
            self._guard_stop = outcome
            return "steps done"
        return outcome

    def _ppo_on_ray(self, resume: bool, total: int) -> str:
        """The same PPO on Ray rollout workers and learner actors (alignkit.distributed); the
        guard runs here, on this process's policy as a mirror of the learners'."""
        from alignkit.distributed.runner import DriverGuard, train_on_ray
        from alignkit.distributed.workers import WorkerSpec

        c = self.cfg
        spec = WorkerSpec(model=c.model, ppo=c.ppo, generate=c.generate,
                          scorer=self._scorer_spec(), gold_judge=c.feedback.judge, seed=c.seed,
                          chat_template=c.data.chat_template)
        trackers: list = []

        def start(step: int) -> None:
            trackers.append(make_trackers(c.report_to, self.run.path, c.model_dump(),
                                          resume_step=step))

        def show(s: dict) -> None:
            self._step_printer(total, trackers[0])(s)

        def make_guard(step: int) -> DriverGuard | None:
            if not c.guard.enabled:
                return None
            mirror = self._trainer()
            if step > 0:  # continuing: the guard's history is cut back to this step
                mirror.load_checkpoint(keep_logs=True)
            guard = self._guard(mirror, step > 0)
            return DriverGuard(guard, mirror)

        try:
            outcome, weights = train_on_ray(spec, self.train_prompts, self.run.path,
                                            c.distributed, resume or self.round > 0,
                                            on_start=start, on_step=show, steps=total,
                                            make_guard=make_guard)
        finally:
            for t in trackers:
                t.close()
        outcome = self._after_guard(outcome)
        self.policy.load_state_dict(weights, strict=False)
        self._policy_loaded_step = -1  # evaluation reloads the learner's final checkpoint
        return outcome

    def _guard(self, trainer: PPOTrainer, resume: bool):
        from alignkit.guard.guard import Guard, HeldoutEval

        g = self.cfg.guard
        if not g.enabled:
            return None
        heldout = (HeldoutEval(trainer, self.eval_prompts[: g.heldout_prompts])
                   if g.heldout_prompts else None)
        ensemble = None
        if self.cfg.ppo.reward == "model" and self.cfg.reward.ensemble > 1:
            members = RewardEnsemble.load(self.run.reward_model, self.cfg.model.device)
            ensemble = lambda p, t: members.member_scores(p, t).numpy()  # noqa: E731
        guard = Guard(g, trainer, heldout=heldout, ensemble=ensemble, state_path=self.run.guard,
                      log=lambda m: self.console.print(m, markup=False))
        if resume and trainer.step > 0:
            guard.load_state()
        else:
            self.run.guard.unlink(missing_ok=True)
            guard.baseline()
        return guard

    def _load_trained_policy(self) -> None:
        """Put the latest PPO weights into the in-memory policy (no-op if already there)."""
        trainer = self._trainer()
        pointer = self.run.checkpoints / "latest"
        if not pointer.exists():
            raise RuntimeError("no PPO checkpoint in the run directory — run the ppo stage")
        step = int(pointer.read_text().strip().removeprefix("step_"))
        if self._policy_loaded_step != step:
            trainer.load_checkpoint(keep_logs=True)
            self._policy_loaded_step = step

    # --- evaluate ---------------------------------------------------------------------------
    def stage_evaluate(self, resume: bool) -> str:
        e = self.cfg.evaluate
        self._load_trained_policy()
        prompts = [p for p in self.eval_prompts for _ in range(e.samples_per_prompt)]
        # The same seed before and after: common random numbers sharpen the paired test.
        before, gens_b = self._sample(prompts, e.batch_size, e.seed, reference=True,
                                      desc="evaluate: base policy")
        after, gens_a = self._sample(prompts, e.batch_size, e.seed, desc="evaluate: aligned")
        n, k = len(self.eval_prompts), e.samples_per_prompt
        main = judge_comparison(self.judge, before, after, k, e.bootstrap, e.seed)
        proxy = ({"before": self.reward_model.score(prompts, before).numpy(),
                  "after": self.reward_model.score(prompts, after).numpy()}
                 if self.run.reward_model.exists() else {})
        lengths = {"before": gens_b, "after": gens_a}
        result: dict = {"judge": self.judge.name, "judge_source": self.judge.source,
                        "judge_blind_spots": self.judge.blind_spots, "prompts": n,
                        "samples_per_prompt": k}
        for side, texts in (("before", before), ("after", after)):
            result[side] = {
                **main[side],
                "proxy_mean": float(proxy[side].mean()) if proxy else None,
                "length_mean": float(torch.cat([g.response_mask.sum(1)
                                                for g in lengths[side]]).mean()),
                "distinct2": distinct_n(texts, 2),
            }
        result.update(relative_change=main["relative_change"],
                      paired_diff_mean=main["paired_diff_mean"],
                      paired_diff_ci95=main["paired_diff_ci95"],
                      kl_to_reference=self._kl_to_reference(gens_a),
                      other_judges={name: judge_comparison(j, before, after, k, e.bootstrap,
                                                           e.seed)
                                    for name, j in JUDGES.items() if name != self.judge.name})
        harm_b, harm_a = result["before"]["harm"], result["after"]["harm"]
        lo, hi = result["paired_diff_ci95"]
        result["samples"] = [
            {"prompt": prompts[i], "before": before[i], "after": after[i],
             "harm_before": harm_b[i], "harm_after": harm_a[i]}
            for i in range(0, len(prompts), k)][: e.show_samples]
        write_jsonl([
            {"prompt": p, "before": b, "after": a, "harm_before": hb, "harm_after": ha}
            for p, b, a, hb, ha in zip(prompts, before, after, harm_b, harm_a, strict=True)],
            self.run.eval_samples)
        write_json_atomic(self.run.evaluation, result)
        self.console.print(
            f"held-out {self.judge.name} harm: {result['before']['mean']:.3f} → "
            f"{result['after']['mean']:.3f} ({100 * (result['relative_change'] or 0):+.0f}%), "
            f"paired diff 95% CI [{lo:+.3f}, {hi:+.3f}], KL {result['kl_to_reference']:.2f}")
        return "done"

    @torch.no_grad()
    def _kl_to_reference(self, gens: list[Generation]) -> float:
        """Mean summed k1 KL(π‖π_ref) of the aligned policy's own samples."""
        from alignkit.rl.rollout import response_forward

        total, count = 0.0, 0
        for g in gens:
            with self.policy.reference():
                ref, _, _ = response_forward(self.policy, g.query_ids, g.query_mask,
                                             g.response_ids, g.response_mask,
                                             self.cfg.generate.temperature, reference=True,
                                             with_values=False)
            total += float(((g.logprobs - ref) * g.response_mask).sum())
            count += g.response_ids.size(0)
        return total / max(count, 1)

    # --- report -----------------------------------------------------------------------------
    def stage_report(self, resume: bool) -> str:
        report = build_report(self.run, self.cfg)
        report["run"]["stop_reason"] = self.stop_reason
        report["run"]["device"] = describe(self._policy.device if self._policy is not None
                                           else pick_device(self.cfg.model.device))
        write_json_atomic(self.run.report_json, report)
        try:
            from alignkit.evaluate.report import write_report

            write_report([self.run.path], self.run.report_html)
            self.console.print(f"report: {self.run.report_html}")
        except NotImplementedError:
            self.console.print("[dim]HTML report not available yet")
        return "done"


def run_cycle(cfg: RunConfig, out: str | Path, console: Console | None = None,
              stages: tuple[str, ...] = STAGES) -> str:
    return Cycle(cfg, out, console).run_all(stages)

