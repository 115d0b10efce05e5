"""The report's judge table data and its plots (PNG bytes, also written to plots/)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from alignkit.artifacts import EvaluationResult, JudgeComparison, SideResult
from alignkit.evaluate import plots
from alignkit.evaluate.report_format import (
    _ci,
    _e,
    _figure,
    _fmt,
    _num,
    _pair,
    _pct,
    _signed,
)
from alignkit.evaluate.report_load import (
    Run,
)

# ---------------------------------------------------------------- judges and verdicts


@dataclass(frozen=True)
class JudgeResult:
    """Before/after under one judge, with where that judge's numbers come from."""

    name: str
    source: str
    blind_spots: str
    before: float | None
    before_ci: tuple[float, float] | None
    after: float | None
    after_ci: tuple[float, float] | None
    diff: float | None
    diff_ci: tuple[float, float] | None
    relative: float | None


def judge_results(ev: EvaluationResult | None) -> list[JudgeResult]:
    """The evaluation's primary judge first, then the other judges, in one shape."""
    if ev is None:
        return []
    out = []
    if ev.before is not None or ev.after is not None:
        out.append(_judge_result(ev.judge or "judge", ev.judge_source, ev.judge_blind_spots,
                                 ev))
    out += [_judge_result(name, o.source, o.blind_spots, o) for name, o in ev.other_judges.items()]
    return out


def _judge_result(name: str, source: str | None, blind_spots: str | None,
                  c: EvaluationResult | JudgeComparison) -> JudgeResult:
    """One judge's before/after; the difference and relative change are computed from the
    means when the file does not carry them (an older or partial evaluation)."""
    b, a = _mean(c.before), _mean(c.after)
    diff, relative = _num(c.paired_diff_mean), _num(c.relative_change)
    return JudgeResult(
        name=str(name), source=str(source or ""), blind_spots=str(blind_spots or ""),
        before=b, before_ci=_pair(c.before.ci95 if c.before else None), after=a,
        after_ci=_pair(c.after.ci95 if c.after else None),
        diff=diff if diff is not None else (a - b if a is not None and b is not None else None),
        diff_ci=_pair(c.paired_diff_ci95),
        relative=relative if relative is not None else (a / b - 1 if a is not None and b
                                                         else None))


def _mean(side: SideResult | None) -> float | None:
    return _num(side.mean) if side is not None else None


def _verdict(diff_ci: tuple[float, float] | None) -> tuple[str, str]:
    """Read the paired CI: harm is lower-is-better, so an interval below 0 is a gain."""
    if diff_ci is None:
        return ("no CI", "muted")
    lo, hi = diff_ci
    if hi < 0:
        return ("lower harm", "good")
    if lo > 0:
        return ("higher harm", "bad")
    return ("no clear change", "muted")


def _headline(run: Run) -> str:
    """One sentence a reader can repeat: what moved, by how much, how sure."""
    results = judge_results(run.report.evaluation)
    if not results or results[0].before is None or results[0].after is None:
        return (f"{_e(run.criterion.capitalize())} run on <b>{_e(run.model)}</b>. "
                "No before/after evaluation was recorded, so there is no headline result yet.")
    r = results[0]
    moved = "fell" if r.after < r.before else "rose" if r.after > r.before else "stayed"
    text = (f"Mean harm by <b>{_e(r.name)}</b> {moved} from <b>{_fmt(r.before)}</b> to "
            f"<b>{_fmt(r.after)}</b>")
    if r.relative is not None:
        text += f" ({_pct(r.relative, 0, signed=True)})"
    text += f" after {_e(run.criterion)} training of <b>{_e(run.model)}</b>."
    if r.diff_ci is not None:
        lo, hi = r.diff_ci
        where = ("entirely below zero — a real reduction" if hi < 0 else
                 "entirely above zero — harm increased" if lo > 0 else
                 "spanning zero — not distinguishable from no change")
        text += (f" Paired difference {_signed(r.diff)}, 95% CI {_ci(r.diff_ci, signed=True)}, "
                 f"{where}.")
    return text


# ---------------------------------------------------------------- plots


def _series(run: Run) -> plots.RunSeries:
    alarms = run.report.guard.alarms if run.report.guard else []
    steps = [a.step for a in alarms if a.step is not None]
    return plots.RunSeries(label=run.label, metrics=run.metrics, alarm_steps=steps)


def _judge_rows(runs: Sequence[Run]) -> list[plots.JudgeRow]:
    rows = []
    for run in runs:
        for r in judge_results(run.report.evaluation):
            if r.before is None or r.after is None:
                continue
            rows.append(plots.JudgeRow(r.name, run.label, r.before, r.before_ci, r.after,
                                       r.after_ci))
    return rows


def render_plots(runs: Sequence[Run], plot_dir: Path) -> dict[str, bytes]:
    """Draw every figure the data allows, save each as ``plot_dir/<name>.png``."""
    series = [_series(r) for r in runs]
    figures = {
        "judges": plots.judge_effects(_judge_rows(runs)),
        "training": plots.training_curves(series),
        "overoptimisation": plots.overoptimisation(series),
        "length_entropy": plots.length_entropy(series),
        "ppo_health": plots.ppo_health(series),
        "reward_model": plots.reward_model([(r.label, r.report.reward_model) for r in runs]),
        "harm": plots.harm_histograms([(r.label, r.report.evaluation) for r in runs]),
    }
    return {name: plots.save_png(fig, plot_dir / f"{name}.png")
            for name, fig in figures.items() if fig is not None}


CAPTIONS = {
    "judges": "Mean judge harm of the base (grey) and aligned (blue) policy on the same "
              "held-out prompts and sampling seeds. Bars are 95% bootstrap CIs of each mean; "
              "the paired difference in the table is tighter because it removes prompt "
              "difficulty.",
    "training": "Faint line: each PPO step; bold: moving average. Proxy rising while the gold "
                "judge is flat or falling is reward hacking. Dashed verticals mark guard alarms.",
    "overoptimisation": "Over-optimisation view (Gao et al., 2022): as the policy moves away "
                        "from the reference (√KL), the proxy keeps climbing while the gold score "
                        "rises, peaks and bends down. Past the marked gold peak, more "
                        "optimisation buys a worse policy.",
    "length_entropy": "Shrinking responses or collapsing entropy are the cheapest ways to "
                      "please a reward model; they show here before they show in samples.",
    "ppo_health": "Optimiser health: clip fraction and per-update KL should stay small "
                  "(≈0.0–0.2 and < 0.05); a value loss that does not fall means the critic "
                  "is not learning the returns.",
    "reward_model": "Left: predicted preference probability vs how often it was right on "
                    "held-out pairs (diagonal = perfectly calibrated; dot size = pairs per bin). "
                    "Middle: spread of RM scores. Right: Bradley–Terry loss; ln 2 is chance.",
    "harm": "Per-sample harm of base and aligned completions (log counts, so the rare "
            "high-harm tail stays visible); dashed lines are the means.",
}


def _fig(pngs: Mapping[str, bytes], name: str, alt: str) -> str:
    return _figure(pngs.get(name), alt, CAPTIONS[name])
