"""Stage ppo: PPO on the LoRA adapters against the reward model, watched by the guard —
locally (``rl.ppo.PPOTrainer``) or on Ray rollout workers and learners
(``distributed.runner``). Later rounds continue from the run's latest checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from alignkit import artifacts as A
from alignkit.artifacts import PPOResult
from alignkit.stages.context import StageContext, StageResult
from alignkit.tracking import make_trackers

if TYPE_CHECKING:
    from alignkit.distributed.workers import ScorerSpec
    from alignkit.guard.guard import Guard
    from alignkit.rl.ppo import PPOTrainer

GUARD_VERDICT = "guard:"  # how the guard's stop reasons start (Guard._act)


def run(ctx: StageContext, r: int, resume: bool) -> StageResult:
    total = ctx.cfg.ppo.steps * (r + 1)
    if ctx.cfg.distributed.backend == "ray":
        outcome, steps = _on_ray(ctx, resume or r > 0, total)
    else:
        outcome, steps = _local(ctx, resume, r, total)
    guard_stop = None
    if outcome.startswith(GUARD_VERDICT):  # a guard stop finishes PPO; evaluation goes on
        ctx.console.print(f"PPO stopped by the guard: {outcome}", markup=False)
        guard_stop, outcome = outcome, "steps done"
    if outcome == "steps done" and ctx.policy.use_lora:
        _save_policy(ctx)
    return StageResult(outcome, done=outcome == "steps done",
                       record=PPOResult(outcome, steps, guard_stop))


def _save_policy(ctx: StageContext) -> None:
    """The aligned policy as a PEFT adapter folder for the base model (with SL-CAI: its
    delta and PPO's joined into one adapter, since PPO's alone sits on the SL-CAI model)."""
    if ctx.cfg.sl_cai.enabled and ctx.run.sl_cai_adapter.exists():
        from alignkit.models.build import save_aligned_adapter

        save_aligned_adapter(ctx.policy, ctx.cfg.model, ctx.cfg.seed, ctx.run.sl_cai_adapter,
                             ctx.run.policy)
    else:
        ctx.policy.lm.save_pretrained(ctx.run.policy)


def scorer_spec(ctx: StageContext) -> ScorerSpec:
    from alignkit.distributed.workers import ScorerSpec

    c = ctx.cfg
    return ScorerSpec(c.ppo.reward, c.feedback.judge, str(ctx.run.reward_model), c.model.device)


def cost_spec(ctx: StageContext) -> ScorerSpec | None:
    """Safe RLHF's cost source (``ppo.cost``): the run's cost model, or the synthetic reward
    itself for the known-answer test; None = reward only."""
    from alignkit.distributed.workers import ScorerSpec

    c = ctx.cfg
    if c.ppo.cost == "none":
        return None
    return ScorerSpec(c.ppo.cost, c.feedback.judge, str(ctx.run.cost_model), c.model.device)


def make_trainer(ctx: StageContext) -> PPOTrainer:
    from alignkit.rl.ppo import PPOTrainer

    c, cost = ctx.cfg, cost_spec(ctx)
    return PPOTrainer(ctx.policy, ctx.tokenizer, ctx.prompts.train,
                      scorer_spec(ctx)(ctx.tokenizer), c.ppo, c.generate, ctx.run.path,
                      ctx.stop_ids, c.data.chat_template, gold=ctx.judge.goodness,
                      cost_scorer=cost(ctx.tokenizer) if cost is not None else None)


def _rollout_sampler(ctx: StageContext):
    """vLLM for PPO's rollouts when generate.engine says so (one engine per process)."""
    g = ctx.cfg.generate
    if g.engine == "native":
        return None

    def load():
        from alignkit.generation_vllm import make_sampler

        return make_sampler(g.engine, ctx.policy, ctx.cfg.model.name, ctx.run.vllm_adapters,
                            g.vllm_gpu_memory, ctx.cfg.seed)

    return ctx.model("vllm_sampler", load)


def _printer(ctx: StageContext, total: int, tracker) -> Callable[[A.MetricsRow], None]:
    def show(s: A.MetricsRow) -> None:
        tracker.log(s, step=s[A.STEP])
        gold = f"  gold {s[A.GOLD]:.3f}" if A.GOLD in s else ""
        ctx.console.print(
            f"step {s[A.STEP]:>3}/{total}  score {s[A.SCORES]:+.3f}  "
            f"kl {s[A.KL]:.2f}  β {s[A.KL_COEF]:.3f}{gold}  "
            f"len {s[A.LENGTH]:.1f}  {s[A.TIME_STEP]:.1f}s")

    return show


def _local(ctx: StageContext, resume: bool, r: int, total: int) -> tuple[str, int | None]:
    trainer = make_trainer(ctx)
    trainer.sampler = _rollout_sampler(ctx)  # only PPO's rollouts use vLLM
    go_on = resume or r > 0  # continue from the checkpoint: resuming, or a later round
    say = lambda m: ctx.console.print(m, markup=False)  # noqa: E731
    if go_on and trainer.load_checkpoint(log=say):
        ctx.console.print(f"resuming PPO from step {trainer.step}" if resume
                          else f"continuing PPO from step {trainer.step}")
    else:
        ctx.run.clear_ppo()
    tracker = make_trackers(ctx.cfg.report_to, ctx.run.path, ctx.cfg.model_dump(),
                            resume_step=trainer.step)
    guard = make_guard(ctx, trainer, go_on)
    try:
        outcome = trainer.train(steps=total, on_step=_printer(ctx, total, tracker), guard=guard)
    finally:
        tracker.close()
    ctx.policy_step = trainer.step
    return outcome, trainer.step


def _on_ray(ctx: StageContext, go_on: bool, total: int) -> tuple[str, int | None]:
    """The same PPO on Ray rollout workers and learner actors; the guard runs here, on this
    process's policy as a mirror of the learners'."""
    from alignkit.distributed.runner import DriverGuard, train_on_ray
    from alignkit.distributed.workers import WorkerSpec

    c = ctx.cfg
    spec = WorkerSpec(model=c.model, ppo=c.ppo, generate=c.generate, scorer=scorer_spec(ctx),
                      gold_judge=c.feedback.judge, seed=c.seed,
                      chat_template=c.data.chat_template,
                      keep_freed_memory=c.keep_freed_memory)
    trackers: list = []

    def start(step: int) -> None:
        trackers.append(make_trackers(c.report_to, ctx.run.path, c.model_dump(),
                                      resume_step=step))

    def show(s: A.MetricsRow) -> None:
        _printer(ctx, total, trackers[0])(s)

    def driver_guard(step: int) -> DriverGuard | None:
        if not c.guard.enabled:
            return None
        mirror = make_trainer(ctx)
        if step > 0:  # continuing: the guard's history is cut back to this step
            mirror.load_checkpoint(keep_logs=True)
        return DriverGuard(make_guard(ctx, mirror, step > 0), mirror)

    try:
        outcome, weights = train_on_ray(spec, ctx.prompts.train, ctx.run.path, c.distributed,
                                        go_on, on_start=start, on_step=show, steps=total,
                                        make_guard=driver_guard)
    finally:
        for t in trackers:
            t.close()
    from alignkit import checkpoints

    checkpoints.load_weights(ctx.policy, weights, "the Ray learner's final weights")
    ctx.policy_step = None  # evaluation reloads the learner's final checkpoint
    return outcome, None


def make_guard(ctx: StageContext, trainer: PPOTrainer, resume: bool) -> Guard | None:
    """The reward-hacking guard over ``trainer`` (None when guard.enabled is off)."""
    from alignkit.guard.guard import Guard, HeldoutEval

    g, c = ctx.cfg.guard, ctx.cfg
    if not g.enabled:
        return None
    heldout = (HeldoutEval(trainer, ctx.prompts.eval[: g.heldout_prompts])
               if g.heldout_prompts else None)
    ensemble = None
    if c.ppo.reward == "model" and c.reward.ensemble > 1:
        from alignkit.reward.model import RewardEnsemble

        members = RewardEnsemble.load(ctx.run.reward_model, c.model.device)
        ensemble = lambda p, t: members.member_scores(p, t).numpy()  # noqa: E731
    probe = None
    if c.data.prompts == "hh" and g.hh_heldout_prompts:
        from alignkit.guard.hh_probe import HHProbe

        n = g.hh_heldout_prompts
        probe = HHProbe(trainer, [p.text for p in ctx.hh_sets.guard_benign[:n]],
                        [p.text for p in ctx.hh_sets.guard_harmful[:n]])
    guard = Guard(g, trainer, heldout=heldout, ensemble=ensemble, state_path=ctx.run.guard,
                  log=lambda m: ctx.console.print(m, markup=False), hh_probe=probe)
    if resume and trainer.step > 0:
        guard.load_state()
    else:
        ctx.run.guard.unlink(missing_ok=True)
        guard.baseline()
    return guard
