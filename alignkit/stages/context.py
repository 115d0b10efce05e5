"""What every stage gets (``StageContext``) and gives back (``StageResult``).

The context holds the config, the run directory and the console, and loads the expensive
things on first use only — tokenizer, policy, reward model, judge, prompt split, feedback
store — so a stage that is skipped costs nothing. A stage that trains a model puts it back
with ``ctx.set_model`` so the next stage does not reload it from disk; a new kind of model
(a cost model) is one more ``ctx.model(name, loader)`` call.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from rich.console import Console

from alignkit.artifacts import Record
from alignkit.config import RunConfig
from alignkit.rundir import RunDir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from alignkit.data.hh import HHSets
    from alignkit.feedback.store import FeedbackStore
    from alignkit.models.policy import Policy
    from alignkit.reward.model import RewardModel
    from alignkit.safety.judges import Judge

T = TypeVar("T")


@dataclass
class StageResult:
    """A stage's answer: finished or not, the manifest's outcome text, and its record.

    ``done`` False pauses the cycle (``outcome`` then says why: 'interrupted', 'waiting for
    human feedback'); the same command resumes it. ``record`` is the typed artifact the
    stage produced, kept in ``ctx.results`` for the stages after it in this process.
    """

    outcome: str = "done"
    done: bool = True
    record: Record | None = None


@dataclass
class PromptSplit:
    train: list[str]
    eval: list[str]


class StageContext:
    def __init__(self, cfg: RunConfig, run: RunDir, console: Console | None = None) -> None:
        self.cfg, self.run = cfg, run
        self.console = console or Console()
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.results: dict[tuple[str, int | None], StageResult] = {}
        self.policy_step: int | None = None  # PPO step whose weights the policy holds
        self.stop_reason = "steps done"  # why the rounds ended (set by the cycle)
        self._models: dict[str, Any] = {}

    # --- what a stage produced earlier in this process ------------------------------------
    def result(self, stage: str, round: int | None) -> Record | None:
        got = self.results.get((stage, round))
        return got.record if got is not None else None

    # --- lazily built things --------------------------------------------------------------
    def model(self, name: str, load: Callable[[], T]) -> T:
        """The cached object ``name``, built by ``load()`` on first use."""
        if name not in self._models:
            self._models[name] = load()
        return self._models[name]

    def set_model(self, name: str, value: Any) -> None:
        self._models[name] = value

    def has_model(self, name: str) -> bool:
        return name in self._models

    @property
    def prompts(self) -> PromptSplit:
        def load() -> PromptSplit:
            from alignkit.data.prompts import load_prompts, split_prompts

            d = self.cfg.data
            if d.prompts == "hh":  # train on every hh training request; RTP held out
                return PromptSplit([p.text for p in self.hh_sets.train], self.hh_sets.rtp)
            train, held = split_prompts(load_prompts(d.prompts), d.eval_prompts, d.seed)
            return PromptSplit(train[: d.max_train_prompts] if d.max_train_prompts else train,
                               held)

        return self.model("prompts", load)

    @property
    def hh_sets(self) -> HHSets:
        """The helpful-and-harmless split (``data.prompts: hh``): train and held-out sets."""
        def load() -> HHSets:
            from alignkit.data.hh import hh_sets

            d = self.cfg.data
            if d.prompts != "hh":
                raise ValueError(f"this stage needs data.prompts: hh (got {d.prompts!r})")
            return hh_sets(d.seed, **d.hh.model_dump())

        return self.model("hh_sets", load)

    @property
    def base_policy(self) -> Policy:
        """The untrained base model: the policy's own reference, unless SL-CAI moved the
        reference to the SL-CAI model — then a second, fresh copy of the base."""
        if not self.cfg.sl_cai.enabled:
            return self.policy

        def load() -> Policy:
            from alignkit.models.build import build_policy

            return build_policy(self.cfg.model, self.cfg.seed).policy

        return self.model("base_policy", load)

    @property
    def judge(self) -> Judge:
        from alignkit.safety.judges import get_judge

        return self.model("judge", lambda: get_judge(self.cfg.feedback.judge))

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._built().tokenizer

    @property
    def policy(self) -> Policy:
        return self._built().policy

    @property
    def stop_ids(self) -> list[int]:
        return self._built().stop_ids

    def _built(self):
        def load():
            from alignkit.models.build import build_policy
            from alignkit.models.device import describe

            m = self.cfg.model
            with self.console.status(f"loading policy {m.name}"):
                built = build_policy(m, self.cfg.seed)
                if self.cfg.sl_cai.enabled and self.run.sl_cai_adapter.exists():
                    from alignkit.models.build import apply_warm_start

                    apply_warm_start(built.policy, self.run.sl_cai_adapter)
            sampler = ("; samples from a bf16 twin" if built.policy.sampling_dtype
                       == torch.bfloat16 and not built.policy.low_precision_base else "")
            where = describe(built.policy.device, built.policy.compute_dtype)
            self.console.print(f"policy {m.name} on {where}{sampler}")
            return built

        return self.model("policy", load)

    @property
    def reward_model(self) -> RewardModel:
        from alignkit.reward.model import RewardModel

        return self.model("reward_model", lambda: RewardModel.load(self.run.reward_model,
                                                                   self.cfg.model.device))

    def store(self) -> FeedbackStore:
        from alignkit.feedback.store import FeedbackStore

        return FeedbackStore(self.db_url)

    @property
    def db_url(self) -> str:
        return self.cfg.feedback.db or f"sqlite:///{self.run.feedback_db}"

    def load_trained_policy(self) -> None:
        """Put the latest PPO weights into the in-memory policy (no-op if already there)."""
        from alignkit import checkpoints

        found = checkpoints.load_latest(self.run.checkpoints,
                                        log=lambda m: self.console.print(m, markup=False))
        if found is None:
            raise RuntimeError("no PPO checkpoint in the run directory — run the ppo stage")
        path, state = found
        if self.policy_step != state.step:
            checkpoints.load_weights(self.policy, state.weights, f"checkpoint {path}")
            self.policy_step = state.step
