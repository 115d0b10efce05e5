# Over 400 lines: the Ray driver loop with its lag, lost-worker and guard handling.
"""PPO on a Ray cluster: rollout workers sample, learners update, weights flow back.

Per step the driver (this process) splits the step's prompts between the workers by
prompt group, waits for the shards, drops any whose weights trail the learner by more
than ``max_weight_lag`` updates (and resamples them), and hands the shards' tensors to the
learners by reference — they never pass through the driver. With ``num_learners`` > 1 the
learners form a ``ray.util.collective`` group (torch.distributed gloo, or NCCL on GPUs):
each updates on its slice of every minibatch and gradients are averaged, so all ranks keep
the same weights. Rank 0 answers with the step's metrics and the new LoRA weights, which go
to the object store once and reach each worker with its next task. With
``max_weight_lag >= 1`` the next step's rollouts are submitted before the update, so
sampling overlaps learning (one-step off-policy, as in asynchronous RLHF).

A worker that dies is restarted by Ray (``max_restarts``); the shards it held are
resampled, so the run loses at most those rollouts. metrics.jsonl, samples.jsonl and
checkpoints are written by the learner into the run directory, exactly as the local
trainer writes them; distributed.jsonl adds weight versions, drops and losses per step.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from alignkit import artifacts as A
from alignkit import checkpoints
from alignkit.distributed.config import DistributedConfig
from alignkit.distributed.workers import (
    Learner,
    RemoteScorer,
    RolloutMeta,
    RolloutTask,
    RolloutWorker,
    WorkerSpec,
)
from alignkit.rl.ppo import StopRequest
from alignkit.rundir import RunDir

_SHARD_SEED_STRIDE = 1_000_003  # shard k of step s samples with key s + k·stride
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "ALIGNKIT_CACHE", "HF_HOME")


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("distributed.backend 'ray' needs Ray — pip install 'alignkit[ray]' "
                           "(ray==2.60.0)") from e
    return ray


@contextlib.contextmanager
def ray_session(cfg: DistributedConfig) -> Iterator[None]:
    """Join ``cfg.ray_address``, or start a private local cluster and stop it afterwards.

    The private cluster keeps its session files in a temporary folder and authenticates
    with a per-run token held in the environment, so nothing is written under ~/.ray.
    """
    ray = _ray()
    if ray.is_initialized():  # the caller manages the cluster
        yield
        return
    if cfg.ray_address is not None:
        ray.init(address=cfg.ray_address, log_to_driver=True)
        try:
            yield
        finally:
            ray.shutdown()
        return
    # RAY_AUTH_MODE stays unset: ray.init then turns token auth on *and* refreshes its
    # cached config (an explicit mode set after `import ray` is not seen), and finds the
    # token in the environment instead of generating ~/.ray/auth_token.
    env = {"RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {k: os.environ.get(k) for k in (*env, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.pop("RAY_AUTH_MODE", None)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(env)
    _forget_cached_token()
    temp = cfg.temp_dir or tempfile.mkdtemp(prefix="alignkit-ray-", dir="/tmp")
    try:
        # a named namespace: the learners' collective group keeps a (detached) actor in it
        ray.init(num_cpus=cfg.num_cpus, _temp_dir=temp, include_dashboard=False,
                 log_to_driver=True, namespace="alignkit")
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_cached_token()
        if cfg.temp_dir is None:
            shutil.rmtree(temp, ignore_errors=True)


def _forget_cached_token() -> None:
    """Ray caches the token it looked up last; make it read our environment again."""
    try:
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: nothing cached to forget
        pass


def shard_prompts(prompts: list[str], group: int, n: int) -> list[list[str]]:
    """Split a step's prompts into ≤ n contiguous shards of whole groups (the samples of
    one prompt stay together: RLOO/GRPO baselines are computed within a group)."""
    groups = [prompts[i : i + group] for i in range(0, len(prompts), group)]
    n = min(n, len(groups))
    base, extra = divmod(len(groups), n)
    out, start = [], 0
    for k in range(n):
        stop = start + base + (k < extra)
        out.append([p for g in groups[start:stop] for p in g])
        start = stop
    return out


class DriverGuard:
    """The reward-hacking guard on the Ray backend: it runs on the driver, on a local mirror
    trainer (the policy, scorer and held-out prompts the local backend would use) that gets
    the learner's weights, step and β at each guard evaluation. What the guard changes —
    β raised, weights rolled back — goes back to the learners; with ``max_weight_lag`` 1 a
    raised β reaches the rollouts one step later than locally (the next step's rollouts
    were already sampled)."""

    def __init__(self, guard, mirror) -> None:  # guard.Guard, rl.ppo.PPOTrainer
        self.guard, self.mirror = guard, mirror

    def due(self, step: int) -> bool:
        return self.guard.cfg.enabled and step % self.guard.cfg.every == 0

    def __call__(self, stats: dict, prompts: list[str], texts: list[str], weights: dict
                 ) -> tuple[str | None, float, dict | None]:
        """(verdict, β from now on, weights to restore or None)."""
        m = self.mirror
        checkpoints.load_weights(m.policy, weights, "guard mirror: the learner's weights")
        m.step = int(stats[A.STEP])
        m.set_kl_coef(float(stats[A.KL_COEF]))
        rollbacks = self.guard.rollbacks
        verdict = self.guard(stats, prompts, texts)
        restored = m.policy.adapter_state() if self.guard.rollbacks != rollbacks else None
        return verdict, float(m.kl_ctl.value), restored


class RayPPO:
    """The distributed counterpart of ``PPOTrainer``: ``load_checkpoint()``, ``train()``,
    ``adapter_state()``; same metrics, samples and checkpoints in ``out_dir``."""

    def __init__(self, spec: WorkerSpec, prompts: list[str], out_dir: str | Path,
                 cfg: DistributedConfig) -> None:
        ray = _ray()
        if not ray.is_initialized():
            raise RuntimeError("RayPPO needs a Ray session — wrap it in "
                               "`with ray_session(cfg.distributed):`")
        self.spec, self.cfg, self.out_dir = spec, cfg, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        threads = max(1, int(cfg.worker_cpus))
        # Actors on other nodes do not inherit this shell: pass on what loading needs.
        env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
        opts = {"runtime_env": {"env_vars": env}} if env else {}
        separate = cfg.placement == "separate"
        learner_res = ({"num_cpus": cfg.learner_cpus, "num_gpus": cfg.learner_gpus} if separate
                       else {"num_cpus": 0})
        spec_l = _with_threads(spec, max(1, int(cfg.learner_cpus)) if separate else threads)
        n = cfg.num_learners
        self.group = f"alignkit-learners-{secrets.token_hex(4)}" if n > 1 else None
        self.learners = [ray.remote(Learner).options(**learner_res, **opts).remote(
            spec_l, prompts, str(self.out_dir), rank, n, self.group) for rank in range(n)]
        self.learner = self.learners[0]  # rank 0: logs, checkpoints, weights
        if n > 1:
            self._form_learner_group(learner_res)
        self.scorer = (ray.remote(RemoteScorer).options(num_cpus=0, **opts).remote(_with_threads(
            spec, 1)) if separate else None)
        self._worker_cls = ray.remote(RolloutWorker).options(
            num_cpus=cfg.worker_cpus, num_gpus=cfg.worker_gpus, max_restarts=cfg.max_restarts,
            max_task_retries=0, **opts)
        spec_w = _with_threads(spec, threads)
        self.workers = [self._worker_cls.remote(spec_w, self.scorer)
                        for _ in range(cfg.num_rollout_workers)]
        self.step = 0
        self.lost = 0  # shards lost to dead workers, over the run
        self.dropped = 0  # shards older than max_weight_lag, over the run

    def _form_learner_group(self, learner_res: dict) -> None:
        """Declare the learners a collective group and give every rank rank 0's weights."""
        from ray.util import collective

        backend = self.cfg.learner_backend
        if backend == "auto":
            backend = "nccl" if learner_res.get("num_gpus", 0) > 0 else "gloo"
        n = len(self.learners)
        collective.create_collective_group(self.learners, n, list(range(n)), backend=backend,
                                           group_name=self.group)
        ray = _ray()
        weights = ray.get(self.learner.state.remote())[2]
        ray.get([rank.set_weights.remote(weights) for rank in self.learners[1:]])

    # --- state ------------------------------------------------------------------------------
    def load_checkpoint(self) -> bool:
        """Restore the latest checkpoint on every learner (logs cut back to it, as locally)."""
        ray = _ray()
        ok = ray.get([rank.load_checkpoint.remote() for rank in self.learners])[0]
        self.step = ray.get(self.learner.state.remote())[0]
        log = RunDir(self.out_dir).distributed_log
        if log.exists():
            kept = log.read_text().splitlines(keepends=True)[: self.step]
            log.write_text("".join(kept))
        return ok

    def adapter_state(self) -> dict:
        """The learner's current adapter + value-head weights (load into the local policy)."""
        return _ray().get(self.learner.state.remote())[2]

    def sample(self, step: int) -> tuple[list[RolloutMeta], float]:
        """One step's rollouts with the learner's current weights and no update; returns the
        shard metas and the wall time from submission to the last shard (benchmarks)."""
        ray = _ray()
        version, kl_coef, weights = ray.get(self.learner.state.remote())
        ref = ray.put(weights)
        prompts = ray.get(self.learner.batch_prompts.remote([step]))[step]
        shards = shard_prompts(prompts, self.spec.ppo.samples_per_prompt, len(self.workers))
        t0 = time.perf_counter()
        refs = [self.workers[k % len(self.workers)].rollout.options(num_returns=2).remote(
                    RolloutTask(step, k, p, step + k * _SHARD_SEED_STRIDE), [ref], version,
                    kl_coef)[0] for k, p in enumerate(shards)]
        metas = ray.get(refs)
        return metas, time.perf_counter() - t0

    # --- loop -------------------------------------------------------------------------------
    def train(self, steps: int | None = None,
              on_step: Callable[[dict], None] | None = None,
              guard: DriverGuard | None = None) -> str:
        """Run until ``steps`` updates are done; 'steps done', 'interrupted' (Ctrl-C) or the
        guard's verdict (a string starting with 'guard:')."""
        ray = _ray()
        ppo = self.spec.ppo
        total = ppo.steps if steps is None else steps
        version, kl_coef, weights = ray.get(self.learner.state.remote())
        self.step = version
        if self.step >= total:
            return "steps done"
        weights_ref = ray.put(weights)
        plan = ray.get(self.learner.batch_prompts.remote(list(range(self.step, total))))
        pending: dict[int, list] = {}  # step -> [(task, worker, meta ref, payload ref)]

        def submit(step: int, shard: int, prompts: list[str]) -> tuple:
            task = RolloutTask(step, shard, prompts, step + shard * _SHARD_SEED_STRIDE)
            worker = self.workers[shard % len(self.workers)]
            meta, payload = worker.rollout.options(num_returns=2).remote(
                task, [weights_ref], version, kl_coef)
            return task, worker, meta, payload

        def submit_step(step: int) -> None:
            shards = shard_prompts(plan[step], ppo.samples_per_prompt, len(self.workers))
            pending[step] = [submit(step, k, p) for k, p in enumerate(shards)]

        with StopRequest() as stop:
            while self.step < total:
                step = self.step
                t0 = time.perf_counter()
                if step not in pending:
                    submit_step(step)
                metas, payloads, lags = self._collect(pending.pop(step), submit, version)
                # The next step's rollouts start now, with the pre-update weights (lag 1).
                for ahead in range(step + 1, min(step + 1 + self.cfg.max_weight_lag, total)):
                    if ahead not in pending:
                        submit_step(ahead)
                wait = time.perf_counter() - t0
                last = step + 1 == total or stop.requested
                checkpoint = (step + 1) % ppo.checkpoint_every == 0 or last
                refs = [rank.learn.options(num_returns=3).remote(
                    step, metas, wait, checkpoint, *payloads) for rank in self.learners]
                stats = ray.get(refs[0][0])
                weights_ref, batch_ref = refs[0][1], refs[0][2]
                ray.get([r[0] for r in refs[1:]])  # ranks stay in lockstep; errors surface
                version, kl_coef = stats[A.STEP], stats[A.KL_COEF]
                self.step = version
                self._log_distributed(step, metas, lags)
                if on_step:
                    on_step(stats)
                if guard is not None and guard.due(version):
                    verdict, kl_coef, weights_ref = self._guard_step(
                        guard, stats, batch_ref, weights_ref)
                    if verdict:
                        ray.get(self.learner.checkpoint.remote())
                        return verdict
                if stop.requested:
                    return "interrupted"
        return "steps done"

    def _guard_step(self, guard: DriverGuard, stats: dict, batch_ref, weights_ref
                    ) -> tuple[str | None, float, object]:
        """Run the guard on the driver; send a raised β or rolled-back weights to every
        learner. Returns (verdict, β for the next rollouts, their weights' reference)."""
        ray = _ray()
        prompts, texts = ray.get(batch_ref)
        verdict, beta, restored = guard(stats, prompts, texts, ray.get(weights_ref))
        if beta != stats[A.KL_COEF]:
            ray.get([rank.set_kl_coef.remote(beta) for rank in self.learners])
        if restored is not None:
            ray.get([rank.set_weights.remote(restored) for rank in self.learners])
            weights_ref = ray.put(restored)
        return verdict, beta, weights_ref

    def _collect(self, shards: list, submit: Callable, version: int
                 ) -> tuple[list[RolloutMeta], list, list[int]]:
        """Wait for a step's shards; resample those lost to a dead worker or too stale."""
        ray = _ray()
        from ray.exceptions import ActorUnavailableError, RayActorError

        metas, payloads, lags = [], [], []
        queue = list(shards)
        attempts = 0
        while queue:
            task, worker, meta_ref, payload_ref = queue.pop(0)
            try:
                meta: RolloutMeta = ray.get(meta_ref)
            except (RayActorError, ActorUnavailableError):
                self.lost += 1
                attempts += 1
                if attempts > (self.cfg.max_restarts + 1) * len(shards):
                    raise RuntimeError(f"ray: step {task.step} lost {attempts} rollouts to dead "
                                       "workers — see the worker logs; raise "
                                       "distributed.max_restarts if they are transient") from None
                self._await_restart(worker)
                queue.append(submit(task.step, task.shard, task.prompts))
                continue
            lag = version - meta.version
            if lag > self.cfg.max_weight_lag:
                self.dropped += 1
                queue.append(submit(task.step, task.shard, task.prompts))
                continue
            metas.append(meta)
            payloads.append(payload_ref)
            lags.append(lag)
        order = sorted(range(len(metas)), key=lambda i: metas[i].shard)
        return [metas[i] for i in order], [payloads[i] for i in order], [lags[i] for i in order]

    def _await_restart(self, worker, timeout_s: float = 120.0) -> None:
        """Block until Ray has restarted ``worker`` (it reloads the model); a worker out of
        restarts is retired and its shards go to the others."""
        ray = _ray()
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(worker.pid.remote(), timeout=timeout_s)
                return
            except ActorUnavailableError:  # restarting: ask again shortly
                time.sleep(0.5)
            except (RayActorError, GetTimeoutError):
                break
        if worker not in self.workers:
            return
        if len(self.workers) == 1:
            raise RuntimeError("ray: the only rollout worker died and did not come back — see "
                               "its log; raise distributed.max_restarts if this is transient")
        self.workers.remove(worker)

    def _log_distributed(self, step: int, metas: list[RolloutMeta], lags: list[int]) -> None:
        rec = {"step": step + 1, "learners": len(self.learners),
               "weight_versions": [m.version for m in metas],
               "weight_lag_max": max(lags), "shards": len(metas),
               "dropped_total": self.dropped, "lost_total": self.lost,
               "worker_pids": [m.pid for m in metas]}
        with open(RunDir(self.out_dir).distributed_log, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def shutdown(self) -> None:
        ray = _ray()
        for actor in [*self.workers, *self.learners, self.scorer]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        if self.group is not None:  # the group's bookkeeping actor is detached: remove it
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor("info_" + self.group))


def train_on_ray(spec: WorkerSpec, prompts: list[str], out_dir: str | Path,
                 cfg: DistributedConfig, resume: bool,
                 on_start: Callable[[int], None] | None = None,
                 on_step: Callable[[dict], None] | None = None,
                 steps: int | None = None,
                 make_guard: Callable[[int], DriverGuard | None] | None = None
                 ) -> tuple[str, dict]:
    """The whole PPO stage on Ray, for the cycle: join or start the cluster, resume from
    the run's checkpoint (``resume``) or clear stale logs, train, stop the actors.

    ``on_start(step)`` runs once the starting step is known (trackers resume there), then
    ``make_guard(step)`` builds the driver-side guard (after stale checkpoints are cleared,
    so the guard's baseline checkpoint survives);
    ``steps`` is the step count to reach (default ``spec.ppo.steps``; later rounds of the
    cycle pass more and ``resume=True`` to continue from the checkpoint).
    Returns (outcome, the learner's final adapter + value-head weights).
    """
    out = Path(out_dir)
    with ray_session(cfg):
        runner = RayPPO(spec, prompts, out, cfg)
        try:
            if not (resume and runner.load_checkpoint()):
                RunDir(out).clear_ppo()
            if on_start:
                on_start(runner.step)
            guard = make_guard(runner.step) if make_guard else None
            outcome = runner.train(steps, on_step=on_step, guard=guard)
            return outcome, runner.adapter_state()
        finally:
            runner.shutdown()


def _with_threads(spec: WorkerSpec, threads: int) -> WorkerSpec:
    from dataclasses import replace

    return replace(spec, threads=threads)
