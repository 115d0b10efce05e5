# Over 400 lines: one function per figure of the report, sharing one style.
"""Matplotlib figures of a run (or several runs overlaid) for the HTML report.

Figures are built with ``matplotlib.figure.Figure`` directly, never through pyplot: pyplot
keeps global state and picks a GUI backend, while the report must render headless, in a
thread, inside a training process, without touching anyone else's figures. ``Figure``
renders through Agg when saved.

Every function returns ``None`` when its data is absent, so the report can say what is
missing instead of drawing an empty axis.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.ticker
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from alignkit.artifacts import EvaluationResult, RewardReport, SideResult

# One colour per run when runs are overlaid; a single run uses per-metric colours instead.
RUN_COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626"]
BEFORE_COLOR = "#9ca3af"
AFTER_COLOR = "#2563eb"
ALARM_COLOR = "#dc2626"
METRIC_COLORS = {
    "objective/scores": "#2563eb",
    "objective/gold": "#d97706",
    "objective/kl": "#7c3aed",
    "response/length": "#0891b2",
    "objective/entropy": "#059669",
    "policy/clipfrac_avg": "#db2777",
    "policy/approxkl_avg": "#7c3aed",
    "loss/value_avg": "#2563eb",
    "kl_coef": "#d97706",
}
DPI = 144
WIDTH = 10.0  # inches: with DPI this fills the report column at 2x density

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.titlepad": 8,
    "axes.labelsize": 8.5,
    "axes.labelcolor": "#4b5563",
    "axes.edgecolor": "#d1d5db",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "xtick.color": "#6b7280",
    "ytick.color": "#6b7280",
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}


@dataclass(frozen=True)
class RunSeries:
    """One run's PPO log as the plots need it: a label, the metric rows, alarm steps."""

    label: str
    metrics: Sequence[Mapping[str, Any]]
    alarm_steps: Sequence[int] = field(default_factory=tuple)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``key``, skipping rows where it is missing or not finite.

        Steps come from the ``step`` field when logged, else from the row index, so a log
        that restarts after resume still plots in order.
        """
        xs, ys = [], []
        for i, row in enumerate(self.metrics):
            v = _as_float(row.get(key))
            if v is None:
                continue
            step = _as_float(row.get("step"))
            xs.append(step if step is not None else float(i))
            ys.append(v)
        return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)

    def has(self, key: str) -> bool:
        return self.series(key)[1].size > 0


def _as_float(v: Any) -> float | None:
    """A finite float, or None: logs carry nulls, strings and NaNs after failed steps."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _floats(value: Any) -> list[float]:
    """The finite numbers of a JSON list (others dropped); [] if it is not a list."""
    if not isinstance(value, list):
        return []
    return [f for f in (_as_float(v) for v in value) if f is not None]


@contextmanager
def _style() -> Iterator[None]:
    with mpl.rc_context(_STYLE):
        yield


def _figure(ncols: int, height: float, nrows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def smooth(y: np.ndarray, frac: float = 0.12) -> np.ndarray:
    """Exponential moving average over ~``frac`` of the series.

    PPO metrics are noisy per step (one rollout of a few dozen samples); the trend is what
    a reader needs, with the raw points kept faint behind it.
    """
    y = np.asarray(y, dtype=float)
    if y.size < 8:
        return y
    alpha = 2.0 / (max(2.0, y.size * frac) + 1.0)
    out = np.empty_like(y)
    acc = y[0]
    for i, v in enumerate(y):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def _color(runs: Sequence[RunSeries], i: int, key: str) -> str:
    if len(runs) == 1:
        return METRIC_COLORS.get(key, RUN_COLORS[0])
    return RUN_COLORS[i % len(RUN_COLORS)]


def _plot_metric(ax: Axes, runs: Sequence[RunSeries], key: str, title: str,
                 ylabel: str = "") -> bool:
    """Raw points faint, smoothed line bold, guard alarms as red ticks; False if no data."""
    drawn = False
    for i, run in enumerate(runs):
        x, y = run.series(key)
        if y.size == 0:
            continue
        c = _color(runs, i, key)
        ax.plot(x, y, color=c, alpha=0.25, lw=0.9)
        ax.plot(x, smooth(y), color=c, lw=2.0, label=run.label)
        drawn = True
    ax.set_title(title)
    ax.set_xlabel("PPO step")
    if ylabel:
        ax.set_ylabel(ylabel)
    if not drawn:
        _empty(ax, f"{key} not logged")
        return False
    for i, run in enumerate(runs):
        for s in run.alarm_steps:
            ax.axvline(s, color=ALARM_COLOR if len(runs) == 1 else _color(runs, i, ""),
                       lw=0.9, ls=(0, (2, 2)), alpha=0.8)
    return True


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color="#9ca3af", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _legend(fig: Figure, axes: Sequence[Axes], runs: Sequence[RunSeries],
            alarms: bool = True) -> None:
    """One figure-level legend (runs, guard alarms) instead of one per panel."""
    from matplotlib.lines import Line2D

    handles = []
    if len(runs) > 1:
        handles += [Line2D([], [], color=RUN_COLORS[i % len(RUN_COLORS)], lw=2, label=r.label)
                    for i, r in enumerate(runs)]
    if alarms and any(r.alarm_steps for r in runs):
        handles.append(Line2D([], [], color=ALARM_COLOR if len(runs) == 1 else "#6b7280",
                              lw=0.9, ls=(0, (2, 2)), label="guard alarm"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))


def training_curves(runs: Sequence[RunSeries]) -> Figure | None:
    """Proxy reward, gold score and KL per step: the three numbers that tell if PPO worked.

    Proxy up with gold flat or down is reward hacking; KL says how far the policy moved.
    """
    return _metric_panels(runs, [("objective/scores", "Proxy reward (RM score)", "score"),
                                 ("objective/gold", "Gold judge goodness", "1 − harm"),
                                 ("objective/kl", "KL to reference", "nats / sequence")], 2.9)


def _metric_panels(runs: Sequence[RunSeries], panels: list[tuple[str, str, str]],
                   height: float) -> Figure | None:
    """One panel per (metric key, title, y label), every run overlaid; None without data."""
    if not any(r.has(key) for r in runs for key, _, _ in panels):
        return None
    with _style():
        fig, axes = _figure(len(panels), height)
        for ax, (key, title, ylabel) in zip(axes, panels, strict=True):
            _plot_metric(ax, runs, key, title, ylabel)
        _legend(fig, axes, runs)
    return fig


def overoptimisation(runs: Sequence[RunSeries]) -> Figure | None:
    """Reward against √KL, the axis on which Gao et al. found over-optimisation regular.

    Proxy keeps rising with distance from the reference; gold rises then bends down. The
    gold peak is marked: past it, more optimisation buys a worse policy.
    """
    if not any(r.has("objective/kl") for r in runs):
        return None
    with _style():
        fig, axes = _figure(2, 2.9)
        titles = {"objective/scores": "Proxy reward vs √KL", "objective/gold": "Gold vs √KL"}
        for ax, key in zip(axes, titles, strict=True):
            drawn = False
            for i, run in enumerate(runs):
                pts = _joined(run, "objective/kl", key)
                if pts is None:
                    continue
                x, y = pts
                c = _color(runs, i, key)
                ax.scatter(x, y, s=9, color=c, alpha=0.3, lw=0)
                xs, ys = smooth(x), smooth(y)
                ax.plot(xs, ys, color=c, lw=2.0)
                if key == "objective/gold" and ys.size >= 3:
                    k = int(np.argmax(ys))
                    ax.plot(xs[k], ys[k], "o", color=c, ms=7, mfc="white", mew=2)
                    if len(runs) == 1:
                        ax.annotate("gold peak", (xs[k], ys[k]), xytext=(6, 8),
                                    textcoords="offset points", fontsize=8, color="#374151")
                drawn = True
            ax.set_title(titles[key])
            ax.set_xlabel("√KL  (√nats)")
            if not drawn:
                _empty(ax, f"{key} not logged")
        _legend(fig, axes, runs, alarms=False)
    return fig


def _joined(run: RunSeries, xkey: str, ykey: str) -> tuple[np.ndarray, np.ndarray] | None:
    """√KL and the reward from the same rows; k1 KL can dip below 0, so clip at 0 first."""
    xs, ys = [], []
    for row in run.metrics:
        kl, y = _as_float(row.get(xkey)), _as_float(row.get(ykey))
        if kl is not None and y is not None:
            xs.append(math.sqrt(max(kl, 0.0)))
            ys.append(y)
    if not xs:
        return None
    return np.asarray(xs), np.asarray(ys)


def length_entropy(runs: Sequence[RunSeries]) -> Figure | None:
    """Response length and entropy: the cheapest hacks (shorter, repetitive) show here first."""
    return _metric_panels(runs, [("response/length", "Response length", "tokens"),
                                 ("objective/entropy", "Policy entropy", "nats / token")], 2.7)


def ppo_health(runs: Sequence[RunSeries]) -> Figure | None:
    """Clip fraction, approximate KL of an update, value loss and β: is the optimiser sane."""
    keys = {"policy/clipfrac_avg": "Policy clip fraction",
            "policy/approxkl_avg": "Approx. KL per update",
            "loss/value_avg": "Value loss", "kl_coef": "KL coefficient β"}
    if not any(r.has(k) for r in runs for k in keys):
        return None
    with _style():
        fig, axes = _figure(4, 2.4)
        for ax, (key, title) in zip(axes, keys.items(), strict=True):
            _plot_metric(ax, runs, key, title)
        _legend(fig, axes, runs)
    return fig


def reward_model(rms: Sequence[tuple[str, RewardReport | None]]) -> Figure | None:
    """Calibration, score histogram and training loss of the reward model(s).

    Calibration matters because PPO follows the RM's confidence: an over-confident RM
    pushes hard on pairs it only guesses.
    """
    present = [(label, rm) for label, rm in rms if rm is not None]
    if not present:
        return None
    with _style():
        fig, axes = _figure(3, 2.9)
        many = len(present) > 1
        drawn = [_calibration(axes[0], present, many), _score_hist(axes[1], present, many),
                 _train_loss(axes[2], present, many)]
        if not any(drawn):
            return None
        if many:
            from matplotlib.lines import Line2D

            fig.legend(handles=[Line2D([], [], color=RUN_COLORS[i % len(RUN_COLORS)], lw=2,
                                       label=label) for i, (label, _) in enumerate(present)],
                       loc="outside lower center", ncols=min(len(present), 6))
    return fig


def _calibration(ax: Axes, rms: Sequence[tuple[str, RewardReport]], many: bool) -> bool:
    ax.plot([0.5, 1], [0.5, 1], color="#9ca3af", ls="--", lw=1)
    accs, drawn = [], False
    for i, (_, rm) in enumerate(rms):
        bins = [b for b in rm.calibration if _as_float(b.p_mean) is not None
                and _as_float(b.acc) is not None]
        c = RUN_COLORS[i % len(RUN_COLORS)]
        if bins:
            p = [b.p_mean for b in bins]
            a = [b.acc for b in bins]
            n = np.asarray([max(_as_float(b.n) or 1.0, 1.0) for b in bins])
            ax.plot(p, a, color=c, lw=1.8)
            ax.scatter(p, a, s=12 + 60 * n / n.max(), color=c, zorder=3, lw=0)
            drawn = True
        acc = _as_float(rm.eval_accuracy)
        if acc is not None:
            accs.append(f"{acc:.1%}")
    title = "RM calibration"
    if accs:
        title += f" — accuracy {', '.join(accs)}"
    ax.set_title(title)
    ax.set_xlabel("predicted P(chosen ≻ rejected)")
    ax.set_ylabel("observed accuracy")
    if not drawn:
        _empty(ax, "no calibration bins")
    elif not many and (ece := _as_float(rms[0][1].eval_ece)) is not None:
        ax.text(0.97, 0.05, f"ECE {ece:.3f}", transform=ax.transAxes,
                ha="right", color="#4b5563", fontsize=8)
    return drawn


def _score_hist(ax: Axes, rms: Sequence[tuple[str, RewardReport]], many: bool) -> bool:
    drawn = False
    for i, (_, rm) in enumerate(rms):
        edges, counts = _floats(rm.score_hist.get("edges")), _floats(rm.score_hist.get("counts"))
        if len(edges) != len(counts) + 1 or not counts:
            continue
        c = RUN_COLORS[i % len(RUN_COLORS)]
        if many:
            ax.stairs(counts, edges, color=c, lw=1.8)
        else:
            ax.stairs(counts, edges, fill=True, color=c, alpha=0.75)
        drawn = True
    ax.set_title("RM scores on eval pairs")
    ax.set_xlabel("score (logit)")
    ax.set_ylabel("count")
    if not drawn:
        _empty(ax, "no score histogram")
    return drawn


def _train_loss(ax: Axes, rms: Sequence[tuple[str, RewardReport]], many: bool) -> bool:
    drawn = False
    for i, (_, rm) in enumerate(rms):
        loss = np.asarray(_floats(rm.train_loss), dtype=float)
        if loss.size == 0:
            continue
        c = RUN_COLORS[i % len(RUN_COLORS)]
        ax.plot(loss, color=c, alpha=0.25, lw=0.9)
        ax.plot(smooth(loss), color=c, lw=2.0)
        drawn = True
    ax.set_title("RM training loss")
    ax.set_xlabel("step")
    if not drawn:
        _empty(ax, "no training loss")
        return False
    ax.axhline(math.log(2), color="#9ca3af", ls="--", lw=1)
    ax.text(0.98, math.log(2), "chance (ln 2)", transform=ax.get_yaxis_transform(),
            ha="right", va="bottom", fontsize=7.5, color="#6b7280")
    return True


def harm_histograms(evals: Sequence[tuple[str, EvaluationResult | None]]) -> Figure | None:
    """Per-sample judge harm before and after, one panel per run.

    A mean can fall because a few very toxic samples vanished or because everything moved
    a little; the histogram tells which. Counts are on a log scale so the rare high-harm
    tail — the part that matters — stays visible next to the mass near zero.
    """
    panels = [(label, ev) for label, ev in evals
              if ev is not None and (_harm(ev.before) or _harm(ev.after))]
    if not panels:
        return None
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    with _style():
        fig, axes = _figure(ncols, 2.7 * nrows, nrows)
        bins = np.linspace(0, 1, 21)
        width = (bins[1] - bins[0]) * 0.42
        centers = (bins[:-1] + bins[1:]) / 2
        for ax, (label, ev) in zip(axes, panels, strict=False):
            for side, name, color, shift in ((ev.before, "base", BEFORE_COLOR, -0.5),
                                             (ev.after, "aligned", AFTER_COLOR, 0.5)):
                h = _harm(side)
                if not h:
                    continue
                counts, _ = np.histogram(np.clip(h, 0, 1), bins=bins)
                ax.bar(centers + shift * width, counts, width=width, color=color,
                       label=f"{name} (mean {np.mean(h):.3f})")
                ax.axvline(float(np.mean(h)), color=color, lw=1.4, ls="--")
            ax.set_yscale("log", nonpositive="clip")
            ax.set_ylim(bottom=0.7)
            ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlim(0, 1)
            judge = ev.judge or "judge"
            ax.set_title(f"{label} — harm by {judge}" if len(panels) > 1 else
                         f"Per-sample harm by {judge}, before vs after")
            ax.set_xlabel("harm (probability offensive)")
            ax.set_ylabel("samples (log)")
            ax.legend(loc="upper right")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
    return fig


def _harm(side: SideResult | None) -> list[float]:
    return _floats(side.harm) if side is not None else []


@dataclass(frozen=True)
class JudgeRow:
    """One before/after comparison of one run under one judge, for the headline chart."""

    judge: str
    run: str
    before: float
    before_ci: tuple[float, float] | None
    after: float
    after_ci: tuple[float, float] | None


def judge_effects(rows: Sequence[JudgeRow]) -> Figure | None:
    """Before → after mean harm with 95% CIs: one panel per judge, one row per run.

    Judges get their own x-axis because their scales differ (a profanity probability near
    0.1 and a sentiment-derived score near 0.4 would squash each other on a shared axis).
    """
    if not rows:
        return None
    judges = list(dict.fromkeys(r.judge for r in rows))
    runs = list(dict.fromkeys(r.run for r in rows))
    ncols = min(len(judges), 3)
    nrows = math.ceil(len(judges) / ncols)
    with _style():
        fig, axes = _figure(ncols, nrows * (0.95 + 0.38 * len(runs)), nrows)
        for ax, judge in zip(axes, judges, strict=False):
            _dumbbells(ax, [r for r in rows if r.judge == judge], runs)
            ax.set_title(judge)
        for ax in axes[len(judges):]:
            ax.set_visible(False)
        from matplotlib.lines import Line2D

        fig.legend(handles=[Line2D([], [], marker="o", ls="", color=BEFORE_COLOR, label="base"),
                            Line2D([], [], marker="o", ls="", color=AFTER_COLOR,
                                   label="aligned"),
                            Line2D([], [], color="#9ca3af", lw=5, alpha=0.5, label="95% CI")],
                   loc="outside upper right", ncols=3)
    return fig


def _dumbbells(ax: Axes, rows: Sequence[JudgeRow], runs: Sequence[str]) -> None:
    """Grey base dot → blue aligned dot per run, CI bands behind, on the judge's own scale."""
    ypos = {run: len(runs) - 1 - i for i, run in enumerate(runs)}
    lo, hi = math.inf, -math.inf
    for r in rows:
        y = ypos[r.run]
        ax.annotate("", xy=(r.after, y), xytext=(r.before, y),
                    arrowprops={"arrowstyle": "-|>", "color": "#6b7280", "lw": 1.2,
                                "shrinkA": 6, "shrinkB": 6})
        for v, ci, c in ((r.before, r.before_ci, BEFORE_COLOR),
                         (r.after, r.after_ci, AFTER_COLOR)):
            if ci is not None:
                ax.plot(ci, [y, y], color=c, lw=6, alpha=0.35, solid_capstyle="round")
                lo, hi = min(lo, ci[0]), max(hi, ci[1])
            ax.plot(v, y, "o", color=c, ms=8, zorder=3)
            lo, hi = min(lo, v), max(hi, v)
    pad = 0.12 * ((hi - lo) or 1.0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-0.7, len(runs) - 0.3)
    ax.set_yticks(list(ypos.values()), list(ypos) if len(runs) > 1 else [""] * len(runs))
    ax.grid(axis="y", visible=False)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("mean harm (lower is better)")


def to_png(fig: Figure) -> bytes:
    """Render through Agg to PNG bytes (the report embeds them as data URIs)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_png(fig: Figure, path: Path) -> bytes:
    """Write the PNG next to the run's other artifacts and return its bytes for embedding."""
    data = to_png(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data
