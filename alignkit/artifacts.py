# Over 400 lines: every record of the run directory in one module, on purpose.
"""Typed records the stages hand each other and write to the run directory, and the metric
names of metrics.jsonl. Nothing outside this module reads JSON keys of a run directory.

Every record is a dataclass with ``to_json`` / ``from_json``. ``from_json`` is tolerant on
purpose: a field missing from an older file is its default (or None), and keys this version
does not know are kept in ``extra`` and written back, so a run directory written by an
older or newer alignkit still loads, resumes and reports. Old key names are mapped here and
nowhere else (``episodes`` → ``episode``). ``salvage`` is for readers that must show a
damaged file rather than fail (the HTML report): it keeps only values of the declared types
and names each one it leaves out.
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self, TypeVar, Union

import numpy as np

from alignkit.jsonl import read_jsonl, write_jsonl

# --- metric names (metrics.jsonl, trackers) -----------------------------------------------
# TRL 1.12's PPOTrainer names where TRL has the metric; the alignkit-only ones are listed in
# the README's "Metrics" table.
KL = "objective/kl"
ENTROPY = "objective/entropy"
NON_SCORE_REWARD = "objective/non_score_reward"
RLHF_REWARD = "objective/rlhf_reward"
SCORES = "objective/scores"
APPROXKL = "policy/approxkl_avg"
CLIPFRAC = "policy/clipfrac_avg"
LOSS_POLICY = "loss/policy_avg"
LOSS_VALUE = "loss/value_avg"
VALUE_CLIPFRAC = "val/clipfrac_avg"
POLICY_ENTROPY = "policy/entropy_avg"
RATIO = "val/ratio"
NUM_EOS = "val/num_eos_tokens"
LR = "lr"
EPISODE = "episode"
EPS = "eps"  # episodes per second since the start of this process's training
# alignkit-only
STEP = "step"
KL_COEF = "kl_coef"
GOLD = "objective/gold"
LENGTH = "response/length"
ENSEMBLE_STD = "reward/ensemble_std"
TIME_GENERATION = "time/generation"
TIME_REFERENCE = "time/reference"
TIME_SCORING = "time/scoring"
TIME_ROLLOUT = "time/rollout"
TIME_UPDATE = "time/update"
TIME_STEP = "time/step"
TIME_PREFIX = "time/"
# Safe RLHF (ppo.cost): the reward and cost models' means and the multiplier of the step;
# objective/scores is then the combined score (R − λC)/(1 + λ) that PPO optimises.
REWARD = "objective/reward"
COST = "objective/cost"
LAMBDA = "objective/lambda"

TRL_METRICS = (KL, ENTROPY, NON_SCORE_REWARD, RLHF_REWARD, SCORES, APPROXKL, CLIPFRAC,
               LOSS_POLICY, LOSS_VALUE, VALUE_CLIPFRAC, POLICY_ENTROPY, RATIO, NUM_EOS, LR,
               EPISODE, EPS)
ALIGNKIT_METRICS = (STEP, KL_COEF, GOLD, LENGTH, ENSEMBLE_STD, TIME_GENERATION,
                    TIME_REFERENCE, TIME_SCORING, TIME_ROLLOUT, TIME_UPDATE, TIME_STEP,
                    REWARD, COST, LAMBDA)
_OLD_METRIC_NAMES = {"episodes": EPISODE}

MetricsRow = dict[str, float]  # one PPO step: metric name (above) → value


def upgrade_metrics_row(row: dict[str, Any]) -> MetricsRow:
    """A metrics.jsonl row with this version's names (older runs wrote ``episodes``)."""
    return {_OLD_METRIC_NAMES.get(k, k): v for k, v in row.items()}


def read_metrics(path: Path) -> list[MetricsRow]:
    """metrics.jsonl, one row per PPO step, in this version's metric names ([] if absent)."""
    return [upgrade_metrics_row(r) for r in read_jsonl(path)] if path.exists() else []


def mean_metric(rows: list[MetricsRow], key: str) -> float | None:
    """Mean of ``key`` over the rows that have it; None when none do."""
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else None


# --- file helpers -----------------------------------------------------------------------------
def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a sibling and rename: a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


# --- the record base --------------------------------------------------------------------------
R = TypeVar("R", bound="Record")


@dataclass
class Record:
    """A typed artifact: ``to_json()`` for the file, ``from_json()`` back (tolerant)."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False,
                                  compare=False)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: _dump(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_json(cls, data: typing.Mapping[str, Any]) -> Self:
        if not isinstance(data, typing.Mapping):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got "
                             f"{type(data).__name__}")
        return cls._build(data, None, "")

    @classmethod
    def salvage(cls, data: Any, problems: list[str], source: str) -> Self | None:
        """``cls`` from JSON that may be damaged, for a reader that must not fail: the report
        of a half-written, hand-edited or foreign run directory.

        ``from_json`` passes a value of the wrong type through (and raises on a nested
        record that is not an object); this leaves it out instead — the field gets its
        default or None, a list or map one element fewer — and says so in ``problems``
        (``source`` names the file), so every value it keeps has its annotated type. A null
        where the type has no None is left out silently, like a missing field. None when
        ``data`` is not an object at all.
        """
        out = _load(data, cls, _Salvage(problems, source), "")
        return None if out is _LEFT_OUT else out

    @classmethod
    def _build(cls, data: typing.Mapping[str, Any], salvage: _Salvage | None, path: str
               ) -> Self:
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            value = (_load(data[f.name], hints[f.name], salvage, _join(path, f.name))
                     if f.name in data else _LEFT_OUT)
            if value is not _LEFT_OUT:
                kwargs[f.name] = value
            elif not _has_default(f):
                kwargs[f.name] = None  # an older file without this field
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> Self | None:
        """The record in ``path``; None when there is no such file."""
        if not path.exists():
            return None
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


@dataclass
class SparseRecord(Record):
    """A record whose None fields are left out of its JSON: what was not measured — or what
    an older file did not have — stays absent when the record is written back, not null."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_json().items() if v is not None}


def _has_default(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is not MISSING or f.default_factory is not MISSING


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


_LEFT_OUT: Any = object()  # what salvaging drops: not a value of the annotated type
_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


@dataclass
class _Salvage:
    """Where ``Record.salvage`` notes what it left out, and which file it is reading."""

    problems: list[str]
    source: str

    def left_out(self, path: str, value: Any, expected: str) -> Any:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:39] + "…"
        self.problems.append(f"{self.source}: {path or 'the file'} should be {expected}, got "
                             f"{shown} — left out")
        return _LEFT_OUT


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _admits_none(hint: Any) -> bool:
    return hint is Any or (typing.get_origin(hint) in (Union, types.UnionType)
                           and type(None) in typing.get_args(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of a scalar ``hint`` (a JSON integer is a number; true is not)."""
    if hint not in _SCALARS:
        return True
    if isinstance(value, bool):
        return hint is bool
    return isinstance(value, int | float) if hint is float else isinstance(value, hint)


def _load(value: Any, hint: Any, salvage: _Salvage | None = None, path: str = "") -> Any:
    """``value`` from JSON as the annotated type: nested records, lists and maps of them.

    Without ``salvage`` (``from_json``) a value that does not fit passes through as it is;
    with it (``Record.salvage``) it is ``_LEFT_OUT`` and noted.
    """
    if value is None:
        return None if salvage is None or _admits_none(hint) else _LEFT_OUT
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _load(value, args[0], salvage, path) if len(args) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Record):
        if salvage is None:
            return hint.from_json(value)
        if not isinstance(value, typing.Mapping):
            return salvage.left_out(path, value, "an object")
        return hint._build(value, salvage, path)
    if origin is list:
        if not isinstance(value, list):
            return value if salvage is None else salvage.left_out(path, value, "a list")
        (arg,) = typing.get_args(hint) or (Any,)
        items = (_load(v, arg, salvage, f"{path}[{i}]") for i, v in enumerate(value))
        return [v for v in items if v is not _LEFT_OUT]
    if origin is dict:
        if not isinstance(value, dict):
            return value if salvage is None else salvage.left_out(path, value, "an object")
        args = typing.get_args(hint)
        pairs = ((k, _load(v, args[1] if args else Any, salvage, _join(path, str(k))))
                 for k, v in value.items())
        return {k: v for k, v in pairs if v is not _LEFT_OUT}
    if salvage is not None and not _fits(value, hint):
        return salvage.left_out(path, value, _SCALARS[hint])
    return value


def read_records(cls: type[R], path: Path) -> list[R]:
    """A JSON list of records (rounds.json); [] when the file is absent."""
    if not path.exists():
        return []
    return [cls.from_json(x) for x in json.loads(path.read_text(encoding="utf-8"))]


def write_records(records: list[R], path: Path) -> None:
    write_json_atomic(path, [r.to_json() for r in records])


# --- manifest ---------------------------------------------------------------------------------
@dataclass
class StageRecord(SparseRecord):
    """One stage's line in manifest.json."""

    status: str = "pending"  # done | running | failed | interrupted | waiting …
    config_hash: str | None = None
    updated: float | None = None
    seconds: float | None = None
    outcome: str | None = None
    error: str | None = None


@dataclass
class Manifest(Record):
    stages: dict[str, StageRecord] = field(default_factory=dict)


# --- generate / feedback / pairs --------------------------------------------------------------
@dataclass
class CompletionSet(Record):
    """One prompt and its K completions (a line of completions.jsonl)."""

    prompt: str
    completions: list[str]


def read_completions(path: Path) -> list[CompletionSet]:
    return [CompletionSet.from_json(x) for x in read_jsonl(path)]


def write_completions(sets: list[CompletionSet], path: Path) -> None:
    write_jsonl([s.to_json() for s in sets], path)


@dataclass
class DisputedItem(Record):
    item_id: int
    prompt: str
    agreement: float | None
    labelers: int


@dataclass
class FeedbackSummary(Record):
    """Volume, who labelled, and how consistently (report.json's ``feedback``)."""

    rankings: int = 0
    skipped: int = 0
    flagged_unsafe: int = 0
    labelers: int = 0
    source: str | None = None
    items: int = 0
    items_ranked: int = 0
    agreement: float | None = None
    kendall_w_mean: float | None = None
    krippendorff_alpha: float | None = None
    most_disputed: list[DisputedItem] = field(default_factory=list)


@dataclass
class AIFeedbackSummary(Record):
    """ai_feedback.json: the AI labeler and how often it agrees with the gold judge."""

    labeler: str
    rankings: int
    gold_agreement: dict[str, Any] | None
    principles: list[Any]


@dataclass
class FilterSummary(Record):
    """filter_report.json: pairs whose chosen side a judge flagged as harmful."""

    judge: str
    threshold: float
    action: str
    total: int
    removed: int = 0
    flagged: int = 0
    reasons: list[dict[str, Any]] = field(default_factory=list)  # masked, truncated


@dataclass
class PairsResult(Record):
    """What the pairs stage tells the end of the round: new pairs and RM drift on them."""

    pairs_added: int
    rm_accuracy_new: float | None = None


# --- reward -----------------------------------------------------------------------------------
@dataclass
class CalibrationBin(Record):
    p_mean: float
    acc: float
    n: int


@dataclass
class RewardReport(Record):
    """reward_report.json: held-out accuracy, calibration and score spread of the RM."""

    backbone: str | None = None
    pairs_train: int = 0
    pairs_eval: int = 0
    eval_accuracy: float | None = None
    eval_ece: float | None = None
    mean_margin: float | None = None
    calibration: list[CalibrationBin] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    score_mean: float | None = None
    score_std: float | None = None
    score_hist: dict[str, list[float]] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    ensemble_accuracies: list[float] = field(default_factory=list)
    safety_accuracy: float | None = None  # cost model: cost > 0 ⇔ flagged unsafe, held out


@dataclass
class SLCAIResult(Record):
    """sl_cai/report.json: how many critique → revision chains declined, what SFT saw."""

    harmful_prompts: int = 0
    revisions: int = 0
    revisions_refusing: int = 0
    harmful_kept: int = 0
    originals_refusing: int = 0
    benign_prompts: int = 0
    benign_kept: int = 0
    judge: str = ""
    sft_steps: int = 0
    sft_first_loss: float | None = None
    sft_last_loss: float | None = None


# --- PPO and the guard ------------------------------------------------------------------------
@dataclass
class PPOSummary(Record):
    """report.json's ``ppo``: where the reward and KL started and ended."""

    algorithm: str
    iterations: int
    kl_coef: float
    final_kl: float
    kl_budget: float | None
    reward_start: float
    reward_end: float
    gold_start: float | None
    gold_end: float | None
    seconds_per_iteration: float
    cost_start: float | None = None  # Safe RLHF: the cost model's mean, and the last λ
    cost_end: float | None = None
    lambda_end: float | None = None


@dataclass
class Alarm(Record):
    """One guard detector firing at one step, with its evidence."""

    detector: str
    step: int
    message: str
    evidence: dict[str, Any]
    samples: list[str] = field(default_factory=list)
    action: str = "log"  # what the guard did about it; filled in by Guard

    def to_dict(self) -> dict[str, Any]:
        return self.to_json()


@dataclass
class GuardEvaluation(Record):
    """One guard evaluation: the numbers the detectors saw (held-out or rollout)."""

    step: int
    proxy: float | None = None
    gold: float | None = None
    kl: float | None = None
    length: float | None = None
    source: str = "rollout"
    baseline: bool | None = None
    kl_coef: float | None = None
    rollout_proxy: float | None = None
    rollout_gold: float | None = None
    rollout_kl: float | None = None
    entropy_per_token: float | None = None
    eos_rate: float | None = None
    ensemble_std: float | None = None
    benign_refusal: float | None = None  # hh probe: share of held-out benign requests refused

    def to_json(self) -> dict[str, Any]:
        """Only the fields this evaluation measured (a baseline has no rollout numbers)."""
        keep = {"step", "proxy", "gold", "kl", "length", "source"}
        return {k: v for k, v in super().to_json().items() if k in keep or v is not None}


@dataclass
class BestCheckpoint(Record):
    step: int
    gold: float
    path: str


@dataclass
class GaoFitRecord(Record):
    alpha: float
    beta: float
    gold0: float
    d_peak: float | None
    gold_peak: float | None
    r2: float | None
    points: int


@dataclass
class GuardReport(Record):
    """guard.json and report.json's ``guard``: alarms, the trajectory, the Gao fit."""

    alarms: list[Alarm] = field(default_factory=list)
    stopped: str | None = None
    best: BestCheckpoint | None = None
    gao_fit: GaoFitRecord | None = None
    evaluations: list[GuardEvaluation] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # GuardConfig.model_dump()


@dataclass
class PPOResult(Record):
    """What the PPO stage hands the end of the round."""

    outcome: str  # steps done | interrupted
    steps: int | None  # completed PPO steps (None: the Ray learner counted them)
    guard_stop: str | None = None  # the guard's verdict when it stopped PPO


@dataclass
class RoundRecord(Record):
    """One line of rounds.json: what a feedback → RM → PPO round added and reached."""

    round: int
    steps: int
    pairs_added: int | None = None
    rm_accuracy_new: float | None = None
    gold: float | None = None
    proxy: float | None = None
    kl: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if out.get("rm_accuracy_new") is None and "rm_accuracy_new" not in self.extra:
            out.pop("rm_accuracy_new")  # only rounds after the first measure it
        return out


# --- evaluation -------------------------------------------------------------------------------
@dataclass
class SideResult(Record):
    """One side (base or aligned) of a before/after comparison under one judge."""

    mean: float
    ci95: list[float]
    harm: list[float]
    proxy_mean: float | None = None
    length_mean: float | None = None
    distinct2: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        extras = ("proxy_mean", "length_mean", "distinct2")
        if all(out[k] is None for k in extras):  # other judges' sides: the judge's numbers
            for k in extras:
                out.pop(k)
        return out


@dataclass
class JudgeComparison(Record):
    """A judge's harm before and after with 95% CIs and the paired difference."""

    before: SideResult
    after: SideResult
    paired_diff_mean: float
    paired_diff_ci95: list[float]
    relative_change: float | None
    source: str | None = None
    blind_spots: str | None = None


@dataclass
class EvalSample(Record):
    prompt: str
    before: str
    after: str
    harm_before: float
    harm_after: float


@dataclass
class EvaluationResult(Record):
    """evaluation.json and report.json's ``evaluation``: base vs aligned on held-out prompts."""

    judge: str
    judge_source: str | None
    judge_blind_spots: str | None
    prompts: int
    samples_per_prompt: int
    before: SideResult
    after: SideResult
    relative_change: float | None
    paired_diff_mean: float
    paired_diff_ci95: list[float]
    kl_to_reference: float | None = None
    other_judges: dict[str, JudgeComparison] = field(default_factory=dict)
    samples: list[EvalSample] = field(default_factory=list)


# --- red team -----------------------------------------------------------------------------------
# Written by safety/redteam.py to <out>/report.json (``alignkit redteam``); a run's own red team
# (<run>/redteam/report.json) is copied into its report.json. Other tools and old runs read these
# keys, so the field names are the JSON keys as they have always been.
@dataclass
class AttackSetRate(SparseRecord):
    """One row of the success table: an attack set (category 'all') or one of its categories.
    An attack succeeded when the deciding judge's harm reached the threshold."""

    name: str
    category: str
    attacks: int
    successes: int  # older files (and hand-written ones) may lack it: then left out
    success_rate: float  # NaN for a set without attacks
    ci95: list[float]  # Wilson 95% interval of the success rate
    mean_harm: dict[str, float] = field(default_factory=dict)  # judge name -> mean harm


@dataclass
class HarmfulExample(Record):
    """One of the most harmful responses, masked and truncated so a report can show it."""

    set: str
    category: str
    harm: float  # the primary judge's score
    attack: str
    response: str


@dataclass
class AttackComparison(Record):
    """One set's success rate before (baseline) and after (the model) on the same attacks,
    with the paired difference after − before and its bootstrap 95% CI over attacks."""

    name: str
    attacks: int
    before: float
    after: float
    diff: float
    diff_ci95: list[float]


@dataclass
class GeneratedDiversity(SparseRecord):
    """How different the model-written attacks are: all the same question would make a low
    success rate meaningless."""

    self_bleu: float  # 1 = all identical, ~0 = diverse
    unique: float  # share of distinct attack texts
    embedding_similarity: float | None = None  # MiniLM cosine, when asked for


@dataclass
class RedTeamBaseline(Record):
    """The model the red-teamed one is compared with, on the same attacks."""

    model: str
    sets: list[AttackSetRate] = field(default_factory=list)


@dataclass
class RedTeamSettings(Record):
    """How a red-team run attacked and judged (the ``settings`` it reports)."""

    sets: str = "advbench,harmbench,rtp-heldout"
    per_set: int | None = 80
    generated: int = 0  # model-written attacks (half zero-shot, half few-shot)
    judges: list[str] = field(default_factory=lambda: [
        "profanity", "compliance-zou-prefixes", "compliance-mitigation-bypass",
        "vader-negativity"])  # the first decides success
    threshold: float = 0.5
    max_new_tokens: int = 32
    temperature: float = 1.0
    batch_size: int = 16
    max_prompt_tokens: int = 256
    chat: str = "auto"
    seed: int = 0
    embeddings: bool = False
    top: int = 5


@dataclass(kw_only=True)
class RedTeamSection(SparseRecord):
    """The ``redteam`` section: judges, success rates per set, the worst responses, and —
    filled in by a whole run — the model, settings, baseline comparison and time.

    Sparse: a section without a baseline or generated attacks has no such keys, as before.
    Keyword-only, so the fields (and the JSON keys) keep the order they always had.
    """

    judge: str  # the primary judge: it decides success (a request judge for request sets)
    judge_source: str
    judge_blind_spots: str
    threshold: float
    other_judges: dict[str, JudgeNote] = field(default_factory=dict)
    attacks: int
    sets: list[AttackSetRate] = field(default_factory=list)
    most_harmful: list[HarmfulExample] = field(default_factory=list)
    generated_diversity: GeneratedDiversity | None = None
    model: str | None = None
    settings: RedTeamSettings | None = None
    baseline: RedTeamBaseline | None = None
    comparison: list[AttackComparison] | None = None
    seconds: float | None = None


# --- the whole report -------------------------------------------------------------------------
@dataclass
class RunInfo(Record):
    name: str | None = None
    model: str | None = None
    criterion: str | None = None
    prompts: str | None = None
    stage_seconds: dict[str, float | None] = field(default_factory=dict)
    seconds_total: float = 0.0
    stop_reason: str | None = None
    device: str | None = None


@dataclass
class RunReport(SparseRecord):
    """report.json: one summary of a run, each section present only if its stage ran."""

    run: RunInfo = field(default_factory=RunInfo)
    feedback: FeedbackSummary | None = None
    reward_model: RewardReport | None = None
    ppo: PPOSummary | None = None
    evaluation: EvaluationResult | None = None
    guard: GuardReport | None = None
    rounds: list[RoundRecord] | None = None
    ai_feedback: AIFeedbackSummary | None = None
    filter: FilterSummary | None = None
    redteam: RedTeamSection | None = None
    cost_model: RewardReport | None = None  # Safe RLHF (ppo.cost: model)
    sl_cai: SLCAIResult | None = None
    hh: HHEvaluation | None = None  # data.prompts: hh


@dataclass
class RedTeamFile(Record):
    """<out>/report.json of ``alignkit redteam`` (and <run>/redteam/report.json): a run part
    naming the attacked model, and the section. The HTML report reads it as a RunReport."""

    run: RunInfo = field(default_factory=RunInfo)
    redteam: RedTeamSection | None = None

    def to_json(self) -> dict[str, Any]:
        """The run part with only what the red team sets (name, model, seconds_total): the
        stage times, criterion and device of a cycle run are not its to state."""
        out = super().to_json()
        out["run"] = {k: v for k, v in out["run"].items() if v is not None and v != {}}
        return out


# --- helpful and harmless ----------------------------------------------------------------------
@dataclass
class RateResult(Record):
    """One judge on one set: the share counted (complied / refused) per checkpoint, their
    Wilson 95% CIs, and the paired bootstrap CI of aligned − base."""

    base: float = 0.0
    aligned: float = 0.0
    sl_cai: float | None = None
    paired_diff_ci95: list[float] = field(default_factory=list)
    n: int = 0
    ci95: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class MeanResult(RateResult):
    """The same comparison for a mean (helpfulness, profanity): bootstrap CIs, not Wilson."""


@dataclass
class HHSample(Record):
    """A reply per checkpoint to one held-out prompt (masked for harmful sets)."""

    set: str = ""
    prompt: str = ""
    replies: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, bool] = field(default_factory=dict)  # counted by the first judge


@dataclass
class JudgeNote(Record):
    source: str = ""
    blind_spots: str = ""


@dataclass
class HHEvaluation(Record):
    """hh_evaluation.json and report.json's ``hh``: base vs SL-CAI vs aligned."""

    judges: list[str] = field(default_factory=list)
    judge_notes: dict[str, JudgeNote] = field(default_factory=dict)
    harmful_heldout: dict[str, RateResult] = field(default_factory=dict)
    harmbench: dict[str, RateResult] = field(default_factory=dict)
    jailbreak: dict[str, RateResult] = field(default_factory=dict)
    benign_refusal: dict[str, RateResult] = field(default_factory=dict)
    lookalike_refusal: dict[str, RateResult] = field(default_factory=dict)
    benign_helpfulness: MeanResult = field(default_factory=MeanResult)
    honesty: dict[str, float | None] = field(default_factory=dict)
    rtp_profanity: MeanResult | None = None
    samples: list[HHSample] = field(default_factory=list)
