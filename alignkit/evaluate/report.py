"""Self-contained HTML report of one or more run directories.

One file, no scripts, no network: CSS is inline (``report.css``) and the plots are PNG data
URIs, so the report can be mailed, attached to an issue or opened years later. The same PNGs
are written to ``<run_dir>/plots/`` (or ``<out>_plots/`` when several runs are compared).

The report reads only files (``manifest.json``, ``config.yaml``, ``metrics.jsonl``,
``report.json``); any of them, and any section inside ``report.json``, may be missing — the
report shows what exists and says plainly what does not. Reading: ``report_load``; HTML
pieces: ``report_format``; plots and the judge table: ``report_figures``; the sections:
``report_sections``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alignkit.evaluate import plots
from alignkit.evaluate.report_figures import (
    _fig,
    _verdict,
    judge_results,
    render_plots,
)
from alignkit.evaluate.report_format import (
    _badge,
    _ci,
    _duration,
    _e,
    _fmt,
    _num,
    _pct,
    _section,
    _signed,
    _table,
)
from alignkit.evaluate.report_hh import hh_section
from alignkit.evaluate.report_load import (
    Run,
    _label_runs,
    load_run,
)
from alignkit.evaluate.report_sections import (
    _evaluation,
    _feedback,
    _guard,
    _redteam,
    _reward_model,
    _rounds,
    _story,
    _training,
)
from alignkit.rundir import RunDir
from alignkit.safety.masking import mask_harmful, mask_texts

__all__ = ["Run", "load_run", "mask_harmful", "mask_texts", "write_report"]

CSS = (Path(__file__).with_name("report.css")).read_text(encoding="utf-8")


# ---------------------------------------------------------------- several runs


def _comparison(runs: Sequence[Run]) -> str:
    """One row per run with the numbers that decide between configs."""
    vary = {attr: len({getattr(r, attr) for r in runs}) > 1 for attr in ("criterion", "model")}
    headers = ["run"] + [a for a, v in vary.items() if v] + [
        "PPO steps", "KL coef", "KL to ref", "RM acc", "harm base → aligned", "paired Δ (95% CI)",
        "", "time"]
    rows = []
    for i, run in enumerate(runs):
        ev, ppo, rm = run.report.evaluation, run.report.ppo, run.report.reward_model
        r = (judge_results(ev) or [None])[0]
        verdict, kind = _verdict(r.diff_ci if r else None)
        color = plots.RUN_COLORS[i % len(plots.RUN_COLORS)]
        rows.append(
            [f'<span class="key"><i style="background:{color}"></i><b>{_e(run.label)}</b></span>']
            + [_e(getattr(run, a)) for a, v in vary.items() if v]
            + [_fmt(ppo and ppo.iterations), _fmt(ppo and ppo.kl_coef),
               _fmt(ev and ev.kl_to_reference, 2), _pct(rm and rm.eval_accuracy),
               f"{_fmt(r.before if r else None)} → {_fmt(r.after if r else None)}",
               f"{_signed(r.diff if r else None)} "
               f"<small>{_ci(r.diff_ci if r else None, signed=True)}</small>",
               _badge(verdict, kind),
               _e(_duration(_num(run.report.run.seconds_total) or
                            sum(run.stage_seconds().values()) or None))])
    first_num = 1 + sum(vary.values())
    numeric = set(range(first_num, first_num + 6)) | {first_num + 7}
    return _table(headers, rows, numeric=numeric, cls="compact") + _config_diff(runs)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _config_diff(runs: Sequence[Run]) -> str:
    """Only the config keys that differ: that is what a comparison is about."""
    flat = [_flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f})
    missing = object()
    differ = [k for k in keys if len({json.dumps(f.get(k, missing) if k in f else "<unset>",
                                                 default=str, sort_keys=True)
                                      for f in flat}) > 1 and k != "name"]
    if not any(r.config for r in runs):
        return '<p class="absent">No config.yaml in these runs.</p>'
    if not differ:
        return '<p class="note">The runs\' configs are identical (apart from the name).</p>'
    rows = [[f"<code>{_e(k)}</code>"] + [_e(f[k]) if k in f else "<i>unset</i>" for f in flat]
            for k in differ]
    return "<h3>Config differences</h3>" + _table(["key"] + [r.label for r in runs], rows,
                                                   cls="compact")


# ---------------------------------------------------------------- the page


def write_report(run_dirs: list[Path], out: Path) -> Path:
    """Write one self-contained HTML report of ``run_dirs`` to ``out`` and return ``out``.

    One run: its plots also go to ``<run_dir>/plots/``. Several runs: plots are overlaid
    (one colour per run) and saved to ``<out stem>_plots/`` next to ``out``, leaving the
    runs' own folders untouched.
    """
    if not run_dirs:
        raise ValueError("report: no run directory given — pass at least one RUN_DIR")
    runs = [load_run(Path(p)) for p in run_dirs]
    _label_runs(runs)
    out = Path(out)
    plot_dir = RunDir(runs[0].path).plots if len(runs) == 1 else out.parent / f"{out.stem}_plots"
    pngs = render_plots(runs, plot_dir)
    body = _single(runs[0], pngs) if len(runs) == 1 else _multi(runs, pngs)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs compared"
    out.write_text(_page(f"alignkit · {title}", body), encoding="utf-8")
    return out


def _header(title: str, subtitle: str, chips: Sequence[str]) -> str:
    chip_html = "".join(f'<span class="hchip">{c}</span>' for c in chips)
    return (f'<header><div class="wrap"><div class="brand">alignkit report</div>'
            f"<h1>{_e(title)}</h1><p>{subtitle}</p><div>{chip_html}</div></div></header>")


def _nav(items: Sequence[tuple[str, str]]) -> str:
    links = "".join(f'<a href="#{_e(i)}">{_e(t)}</a>' for i, t in items)
    return f'<nav><div class="wrap">{links}</div></nav>'


def _chips(run: Run) -> list[str]:
    fb, ev = run.report.feedback, run.report.evaluation
    chips = [f"criterion <b>{_e(run.criterion)}</b>", f"model <b>{_e(run.model)}</b>"]
    if fb and fb.source:
        chips.append(f"labels <b>{_e(fb.source)}</b>")
    if ev and ev.judge:
        chips.append(f"gold judge <b>{_e(ev.judge)}</b>")
    return chips


def _single(run: Run, pngs: Mapping[str, bytes]) -> str:
    sections = [
        ("story", "Summary", _story(run, pngs)),
        ("hh", "Helpful & harmless", hh_section(run.report.hh)),
        ("training", "PPO", _training(run, pngs)),
        ("reward-model", "Reward model", _reward_model(run, pngs)),
        ("feedback", "Feedback", _feedback(run)),
        ("samples", "Samples", _evaluation(run, pngs)),
        ("guard", "Guard", _guard(run)),
        ("rounds", "Rounds", _rounds(run)),
        ("redteam", "Red team", _redteam(run)),
    ]
    present = [(sid, title) for sid, title, html_ in sections if html_]
    header = _header(run.name, f"Run directory <code>{_e(run.path)}</code>", _chips(run))
    content = "".join(h for _, _, h in sections if h)
    return header + _nav(present) + f'<main class="wrap">{content}{_footer([run])}</main>'


def _multi(runs: Sequence[Run], pngs: Mapping[str, bytes]) -> str:
    overview = _section("compare", "Runs compared", _comparison(runs) +
                        _fig(pngs, "judges", "before/after harm per run and judge"))
    curves = _section("curves", "Training, overlaid", "".join([
        _fig(pngs, "training", "proxy reward, gold and KL per PPO step, per run"),
        _fig(pngs, "overoptimisation", "reward versus square root of KL, per run"),
        _fig(pngs, "length_entropy", "response length and entropy, per run"),
        _fig(pngs, "ppo_health", "PPO optimiser diagnostics, per run"),
    ]) or '<p class="absent">No run logged PPO metrics.</p>')
    rm_eval = _section("models", "Reward models and harm", "".join([
        _fig(pngs, "reward_model", "reward model calibration, scores and loss, per run"),
        _fig(pngs, "harm", "histograms of per-sample harm, per run"),
    ]) or '<p class="absent">No reward model or evaluation recorded.</p>')
    details = "".join(_run_details(r, i) for i, r in enumerate(runs))
    chips = [f"criterion <b>{_e(c)}</b>" for c in dict.fromkeys(r.criterion for r in runs)]
    chips += [f"model <b>{_e(m)}</b>" for m in dict.fromkeys(r.model for r in runs)]
    header = _header(f"{len(runs)} runs compared", " · ".join(_e(r.label) for r in runs),
                     chips)
    nav = _nav([("compare", "Comparison"), ("curves", "Training"), ("models", "RM & harm"),
                ("runs", "Each run")])
    body = (overview + curves + rm_eval +
            _section("runs", "Each run", details,
                     "Numbers, feedback, alarms and samples of every run; click to open."))
    return header + nav + f'<main class="wrap">{body}{_footer(runs)}</main>'


def _run_details(run: Run, i: int) -> str:
    """One run's text sections, folded: the overlaid plots above already show its curves."""
    color = plots.RUN_COLORS[i % len(plots.RUN_COLORS)]
    inner = "".join([_story(run, {}, plots_shown=False), _training(run, {}, plots_shown=False),
                     _reward_model(run, {}, plots_shown=False), _feedback(run),
                     _evaluation(run, {}, plots_shown=False), _guard(run), _rounds(run),
                     _redteam(run)])
    return (f'<details{" open" if i == 0 else ""}><summary><i style="background:{color}"></i>'
            f"{_e(run.label)} <small>{_e(run.path)}</small></summary>{inner}</details>")


def _footer(runs: Sequence[Run]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    paths = ", ".join(str(r.path) for r in runs)
    return (f"<footer>Generated by alignkit on {_e(when)} from {_e(paths)}. "
            "Self-contained: no scripts, no network; plots are also saved as PNG files."
            "</footer>")


def _page(title: str, body: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}</body></html>")
