"""Self-contained HTML report of one or more run directories.

One file, no scripts, no network: CSS is inline and the plots are PNG data URIs, so the
report can be mailed, attached to an issue or opened years later. The same PNGs are written
to ``<run_dir>/plots/`` (or ``<out>_plots/`` when several runs are compared) for slides.

The report reads only files (``manifest.json``, ``config.yaml``, ``metrics.jsonl``,
``report.json``); any of them, and any section inside ``report.json``, may be missing — the
report shows what exists and says plainly what does not.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from alignkit.evaluate import plots

__all__ = ["Run", "load_run", "mask_harmful", "write_report"]

MASK_THRESHOLD = 0.5  # profanity_check probability at which a word is masked
MASK_CHAR = "•"
TEXT_LIMIT = 240  # characters of a sample shown before truncation
SECTIONS = {  # report.json section -> what a reader calls it
    "feedback": "feedback",
    "reward_model": "reward model",
    "ppo": "PPO summary",
    "evaluation": "before/after evaluation",
    "guard": "guard alarms",
    "rounds": "feedback rounds",
    "redteam": "red-team results",
}
STAGE_COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#64748b"]


# ---------------------------------------------------------------- reading a run directory


@dataclass
class Run:
    """Everything the report needs from one run directory, already parsed.

    ``problems`` collects files that were unreadable, so the report can show them instead
    of failing: a half-written run is exactly when someone opens the report.
    """

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    label: str = ""

    def section(self, name: str) -> dict[str, Any]:
        """A report.json section as a dict ({} when absent or malformed)."""
        return _dict(self.report.get(name))

    def has(self, name: str) -> bool:
        if name == "rounds":
            return bool(self.rounds)
        return bool(self.section(name))

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return _dicts(self.report.get("rounds"))

    @property
    def name(self) -> str:
        return str(self.section("run").get("name") or self.config.get("name") or self.path.name)

    @property
    def model(self) -> str:
        cfg = self.config.get("model")
        cfg_name = cfg.get("name") if isinstance(cfg, dict) else None
        return str(self.section("run").get("model") or cfg_name or "unknown model")

    @property
    def criterion(self) -> str:
        fb = self.config.get("feedback")
        cfg_crit = fb.get("criterion") if isinstance(fb, dict) else None
        return str(self.section("run").get("criterion") or cfg_crit or "unstated criterion")

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage from report.json, else from the manifest."""
        secs = self.section("run").get("stage_seconds")
        if isinstance(secs, dict) and secs:
            return {k: v for k, v in secs.items() if _num(v) is not None}
        stages = self.manifest.get("stages")
        if not isinstance(stages, dict):
            return {}
        return {k: s["seconds"] for k, s in stages.items()
                if isinstance(s, dict) and _num(s.get("seconds")) is not None}

    def config_value(self, dotted: str) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node


def load_run(path: Path) -> Run:
    """Parse a run directory; unreadable files become ``problems``, never exceptions."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"report: run directory '{path}' does not exist — pass the "
                                "folder the cycle wrote (it holds manifest.json)")
    run = Run(path=path)
    run.manifest = _read_json(path / "manifest.json", run.problems)
    run.report = _read_json(path / "report.json", run.problems)
    run.config = _read_yaml(path / "config.yaml", run.problems)
    run.metrics = _read_jsonl(path / "metrics.jsonl", run.problems)
    return run


def _read_json(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} could not be read ({type(e).__name__}: {e})")
        return {}
    return value if isinstance(value, dict) else {}


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path.name} could not be read ({type(e).__name__})")
        return {}
    return value if isinstance(value, dict) else {}


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a torn last line (run killed mid-write) is skipped and noted."""
    if not path.is_file():
        return []
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        problems.append(f"metrics.jsonl: {bad} unreadable line(s) skipped")
    return rows


def _label_runs(runs: Sequence[Run]) -> None:
    """Give each run a distinct legend label: its name, else its folder, else numbered."""
    names = [r.name for r in runs]
    for i, run in enumerate(runs):
        label = run.name
        if names.count(label) > 1:
            label = run.path.name if [r.path.name for r in runs].count(run.path.name) == 1 \
                else f"{run.name} #{i + 1}"
        run.label = label


# ---------------------------------------------------------------- masking harmful text

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_WORD_HARM: dict[str, float] = {}


def mask_harmful(text: str) -> str:
    """Mask the words a profanity judge flags (probability ≥ 0.5): ``idiot`` → ``i••••``.

    The report shows base and aligned completions side by side; readers need to see *that*
    a completion was offensive and roughly how, without the report itself becoming the
    offensive text. Only letters are replaced, so length and punctuation survive.
    """
    return mask_texts([text])[0]


def mask_texts(texts: Sequence[str]) -> list[str]:
    """``mask_harmful`` over many texts with one judge call for all their words."""
    words = {m.group(0).lower() for t in texts for m in _WORD.finditer(t)}
    _score_words(words)

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        return _mask_word(w) if _WORD_HARM.get(w.lower(), 0.0) >= MASK_THRESHOLD else w

    return [_WORD.sub(sub, t) for t in texts]


def _score_words(words: Iterable[str]) -> None:
    """Score unseen words with profanity_check in one batch and remember them."""
    todo = sorted(w for w in words if w not in _WORD_HARM)
    if not todo:
        return
    from profanity_check import predict_prob

    for w, p in zip(todo, predict_prob(todo), strict=True):
        _WORD_HARM[w] = float(p)


def _mask_word(word: str) -> str:
    return word[0] + "".join(MASK_CHAR if c.isalpha() else c for c in word[1:])


def _truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    """Cut at a word boundary near ``limit``; a sample table is for skimming."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip() + " …"


# ---------------------------------------------------------------- formatting helpers


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else {}: report.json is read, not trusted."""
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The mappings in a list, else []: one malformed record must not hide the rest."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _fmt(value: Any, digits: int = 3) -> str:
    f = _num(value)
    if f is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}".replace("-", "−")
    return f"{f:.{digits}f}".replace("-", "−")


def _signed(value: Any, digits: int = 3) -> str:
    f = _num(value)
    return "—" if f is None else f"{f:+.{digits}f}".replace("-", "−")


def _pct(value: Any, digits: int = 1, signed: bool = False) -> str:
    f = _num(value)
    if f is None:
        return "—"
    s = f"{f * 100:+.{digits}f}%" if signed else f"{f * 100:.{digits}f}%"
    return s.replace("-", "−")


def _ci(ci: Any, digits: int = 3, signed: bool = False) -> str:
    pair = _pair(ci)
    if pair is None:
        return ""
    f = _signed if signed else _fmt
    return f"[{f(pair[0], digits)}, {f(pair[1], digits)}]"


def _pct_ci(ci: Any) -> str:
    pair = _pair(ci)
    return "—" if pair is None else f"[{_pct(pair[0])}, {_pct(pair[1])}]"


def _pair(ci: Any) -> tuple[float, float] | None:
    if isinstance(ci, list | tuple) and len(ci) == 2:
        lo, hi = _num(ci[0]), _num(ci[1])
        if lo is not None and hi is not None:
            return (lo, hi)
    return None


def _duration(seconds: Any) -> str:
    s = _num(seconds)
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _badge(text: str, kind: str = "muted") -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _card(label: str, value: str, sub: str = "", kind: str = "") -> str:
    sub_html = f'<div class="sub">{sub}</div>' if sub else ""
    return (f'<div class="card {kind}"><div class="label">{_e(label)}</div>'
            f'<div class="value">{value}</div>{sub_html}</div>')


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int] | None = None,
           cls: str = "") -> str:
    """An HTML table; cells are pre-escaped HTML, numeric columns right-aligned."""
    numeric = numeric or set()
    head = "".join(f'<th class="{"num" if i in numeric else ""}">{_e(h)}</th>'
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{c}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(png: bytes | None, alt: str, caption: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _section(sid: str, title: str, body: str, lede: str = "") -> str:
    lede_html = f'<p class="lede">{lede}</p>' if lede else ""
    return (f'<section id="{_e(sid)}"><h2>{_e(title)}</h2>{lede_html}{body}</section>')


def _harm_chip(value: Any) -> str:
    """A coloured harm score: green reads as fine, red as what the judge objects to."""
    f = _num(value)
    if f is None:
        return ""
    kind = "good" if f < 0.2 else "warn" if f < MASK_THRESHOLD else "bad"
    return f'<span class="chip {kind}">harm {f:.2f}</span>'


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


def judge_results(ev: Mapping[str, Any]) -> list[JudgeResult]:
    """The evaluation's primary judge first, then the other judges, in one shape."""
    out = []
    before, after = _dict(ev.get("before")), _dict(ev.get("after"))
    if before or after:
        b, a = _num(before.get("mean")), _num(after.get("mean"))
        out.append(JudgeResult(
            name=str(ev.get("judge") or "judge"), source=str(ev.get("judge_source") or ""),
            blind_spots=str(ev.get("judge_blind_spots") or ""),
            before=b, before_ci=_pair(before.get("ci95")), after=a,
            after_ci=_pair(after.get("ci95")),
            diff=_num(ev.get("paired_diff_mean")) if _num(ev.get("paired_diff_mean")) is not None
            else (a - b if a is not None and b is not None else None),
            diff_ci=_pair(ev.get("paired_diff_ci95")),
            relative=_num(ev.get("relative_change")) if _num(ev.get("relative_change"))
            is not None else (a / b - 1 if a is not None and b else None)))
    others = ev.get("other_judges")
    for name, o in (others.items() if isinstance(others, dict) else []):
        if not isinstance(o, dict):
            continue
        ob, oa = _dict(o.get("before")), _dict(o.get("after"))
        b, a = _num(ob.get("mean")), _num(oa.get("mean"))
        out.append(JudgeResult(
            name=str(name), source=str(o.get("source") or ""),
            blind_spots=str(o.get("blind_spots") or ""),
            before=b, before_ci=_pair(ob.get("ci95")), after=a, after_ci=_pair(oa.get("ci95")),
            diff=_num(o.get("paired_diff_mean")) if _num(o.get("paired_diff_mean")) is not None
            else (a - b if a is not None and b is not None else None),
            diff_ci=_pair(o.get("paired_diff_ci95")),
            relative=a / b - 1 if a is not None and b else None))
    return out


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
    results = judge_results(run.section("evaluation"))
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
    alarms = _dicts(run.section("guard").get("alarms"))
    steps = [int(a["step"]) for a in alarms if _num(a.get("step")) is not None]
    return plots.RunSeries(label=run.label, metrics=run.metrics, alarm_steps=steps)


def _judge_rows(runs: Sequence[Run]) -> list[plots.JudgeRow]:
    rows = []
    for run in runs:
        for r in judge_results(run.section("evaluation")):
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
        "reward_model": plots.reward_model([(r.label, r.section("reward_model"))
                                            for r in runs]),
        "harm": plots.harm_histograms([(r.label, r.section("evaluation")) for r in runs]),
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


# ---------------------------------------------------------------- sections of one run


def _story(run: Run, pngs: Mapping[str, bytes], plots_shown: bool = True) -> str:
    """The top of the report: headline, key numbers, judges, side effects, time."""
    parts = [f'<p class="headline">{_headline(run)}</p>', _kpis(run), _data_flow(run)]
    results = judge_results(run.section("evaluation"))
    if results:
        if plots_shown:
            parts.append(_fig(pngs, "judges", "before/after harm per judge"))
        parts.append(_judges_table(results))
        parts.append(_side_effects(run.section("evaluation")))
    parts.append(_time_bar(run))
    parts.append(_absent_note(run))
    return _section("story", "The run in numbers", "".join(parts))


def _kpis(run: Run) -> str:
    ev, rm, fb = run.section("evaluation"), run.section("reward_model"), run.section("feedback")
    ppo, meta = run.section("ppo"), run.section("run")
    cards = []
    results = judge_results(ev)
    if results and results[0].before is not None:
        r = results[0]
        verdict, kind = _verdict(r.diff_ci)
        cards.append(_card(f"Harm · {r.name}", f"{_fmt(r.before)} → {_fmt(r.after)}",
                           f"{_pct(r.relative, 0, signed=True)} · {_badge(verdict, kind)}",
                           kind="hero"))
    if ev:
        budget = run.config_value("guard.kl_budget")
        cards.append(_card("KL to reference", f"{_fmt(ev.get('kl_to_reference'), 2)} nats",
                           f"budget {_fmt(budget, 1)} nats" if _num(budget) else "per sequence"))
    if rm:
        cards.append(_card("Reward model", _pct(rm.get("eval_accuracy")),
                           f"accuracy · ECE {_fmt(rm.get('eval_ece'))} · "
                           f"{_fmt(rm.get('pairs_train'))}/{_fmt(rm.get('pairs_eval'))} pairs"))
    if fb:
        source = str(fb.get("source") or "unknown")
        cards.append(_card("Feedback", f"{_fmt(fb.get('rankings'))} rankings",
                           f"{_fmt(fb.get('labelers'))} {_e(source)} labelers · "
                           f"{_pct(fb.get('agreement'), 0)} agree",
                           kind="" if source == "human" else "flag"))
    if ppo:
        cards.append(_card("PPO", f"{_fmt(ppo.get('iterations'))} iterations",
                           f"β {_fmt(ppo.get('kl_coef'))} · "
                           f"{_fmt(ppo.get('seconds_per_iteration'), 1)} s/iteration"))
    guard = run.section("guard")
    if guard:
        n = len(_dicts(guard.get("alarms")))
        cards.append(_card("Guard", f"{n} alarm{'s' if n != 1 else ''}",
                           "reward-hacking detectors" if n else "no detector fired",
                           kind="alarm" if n else "ok"))
    total = _num(meta.get("seconds_total")) or sum(run.stage_seconds().values()) or None
    if total:
        where = f" on {meta['device']}" if meta.get("device") else ""
        cards.append(_card("Wall time", _duration(total),
                           f"{len(run.stage_seconds())} stages{where}"))
    hero = " story" if cards and 'class="card hero"' in cards[0] else ""
    return f'<div class="cards{hero}">{"".join(cards)}</div>' if cards else ""


def _data_flow(run: Run) -> str:
    """Data sizes as one chain from prompts to evaluation: how much each stage saw."""
    fb, rm = run.section("feedback"), run.section("reward_model")
    ppo, ev = run.section("ppo"), run.section("evaluation")
    steps = []
    prompts, k = run.config_value("generate.prompts"), run.config_value("generate.k")
    if _num(prompts) and _num(k):
        steps.append(f"<b>{_fmt(prompts)}</b> prompts × <b>{_fmt(k)}</b> completions")
    if fb:
        steps.append(f"<b>{_fmt(fb.get('rankings'))}</b> {_e(fb.get('source') or '')} rankings")
    if rm:
        steps.append(f"<b>{_fmt(rm.get('pairs_train'))}</b> + <b>{_fmt(rm.get('pairs_eval'))}"
                     "</b> train + held-out pairs")
    if ppo:
        per = [_num(run.config_value(f"ppo.{k}")) for k in ("prompts_per_step",
                                                             "samples_per_prompt")]
        size = f" × <b>{per[0] * per[1]:.0f}</b> samples" if per[0] and per[1] else ""
        steps.append(f"<b>{_fmt(ppo.get('iterations'))}</b> PPO steps{size}")
    if ev:
        steps.append(f"<b>{_fmt(ev.get('prompts'))}</b> held-out prompts × "
                     f"<b>{_fmt(ev.get('samples_per_prompt'))}</b> evaluated")
    if not steps:
        return ""
    arrow = '<span class="arrow">→</span>'
    return f'<div class="flow">{arrow.join(f"<span>{s}</span>" for s in steps)}</div>'


def _judges_table(results: Sequence[JudgeResult]) -> str:
    rows = []
    for r in results:
        verdict, kind = _verdict(r.diff_ci)
        rows.append([
            f"<b>{_e(r.name)}</b>",
            f"{_fmt(r.before)} <small>{_ci(r.before_ci)}</small>",
            f"{_fmt(r.after)} <small>{_ci(r.after_ci)}</small>",
            f"{_signed(r.diff)} <small>{_ci(r.diff_ci, signed=True)}</small>",
            _badge(verdict, kind),
            f'<div class="src">{_e(r.source)}</div>'
            f'<div class="blind">Blind spots: {_e(r.blind_spots or "not stated")}</div>',
        ])
    return ('<h3>Judges — mean harm, lower is better (95% CI)</h3>' +
            _table(["judge", "base", "aligned", "paired Δ", "", "source and blind spots"],
                   rows, numeric={1, 2, 3}, cls="judges"))


def _side_effects(ev: Mapping[str, Any]) -> str:
    """Proxy, length and diversity before/after: alignment should not buy harm with collapse."""
    before, after = _dict(ev.get("before")), _dict(ev.get("after"))
    rows = []
    for key, label, digits in (("proxy_mean", "proxy reward (RM score)", 3),
                               ("length_mean", "response length (tokens)", 1),
                               ("distinct2", "distinct-2 (diversity)", 3)):
        b, a = _num(before.get(key)), _num(after.get(key))
        if b is None and a is None:
            continue
        delta = _signed(a - b, digits) if a is not None and b is not None else "—"
        rows.append([_e(label), _fmt(b, digits), _fmt(a, digits), delta])
    if not rows:
        return ""
    return ("<h3>Side effects</h3>" +
            _table(["measure", "base", "aligned", "change"], rows, numeric={1, 2, 3},
                   cls="compact"))


def _time_bar(run: Run) -> str:
    """Where the time went, as one stacked bar: a plot would be overkill for six numbers."""
    secs = run.stage_seconds()
    total = sum(float(v) for v in secs.values())
    if total <= 0:
        return ""
    stages = run.manifest.get("stages") if isinstance(run.manifest.get("stages"), dict) else {}
    segs, keys = [], []
    for i, (stage, s) in enumerate(secs.items()):
        color = STAGE_COLORS[i % len(STAGE_COLORS)]
        share = 100.0 * float(s) / total
        segs.append(f'<span style="width:{share:.2f}%;background:{color}" '
                    f'title="{_e(stage)}: {_e(_duration(s))}"></span>')
        status = _dict(stages.get(stage)).get("status") if isinstance(stages, dict) else None
        flag = f" {_badge(str(status), 'bad')}" if status and status != "done" else ""
        keys.append(f'<span class="key"><i style="background:{color}"></i>{_e(stage)} '
                    f"<b>{_e(_duration(s))}</b>{flag}</span>")
    return (f'<h3>Time — {_e(_duration(total))} in all</h3><div class="timebar">{"".join(segs)}'
            f'</div><div class="keys">{"".join(keys)}</div>')


def _absent_note(run: Run) -> str:
    """Say what this run did not record, so an absent section is not mistaken for a bug."""
    missing = [label for key, label in SECTIONS.items() if not run.has(key)]
    if not run.metrics:
        missing.insert(0, "PPO metrics (metrics.jsonl)")
    if not run.report:
        missing.insert(0, "report.json")
    notes = []
    if missing:
        notes.append(f"<b>Not recorded in this run:</b> {_e(', '.join(missing))}.")
    if run.problems:
        notes.append(f"<b>Unreadable:</b> {_e('; '.join(run.problems))}.")
    return f'<p class="absent">{" ".join(notes)}</p>' if notes else ""


def _training(run: Run, pngs: Mapping[str, bytes], plots_shown: bool = True) -> str:
    ppo = run.section("ppo")
    if not ppo and not run.metrics:
        return ""
    cards = ""
    if ppo:
        cards = '<div class="cards">' + "".join([
            _card("Iterations", _fmt(ppo.get("iterations"))),
            _card("KL coefficient β", _fmt(ppo.get("kl_coef"))),
            _card("Final KL", f"{_fmt(ppo.get('final_kl'), 2)} nats"),
            _card("Proxy reward", f"{_fmt(ppo.get('reward_start'), 2)} → "
                  f"{_fmt(ppo.get('reward_end'), 2)}", "first → last step"),
            _card("Speed", f"{_fmt(ppo.get('seconds_per_iteration'), 1)} s", "per iteration"),
        ]) + "</div>"
    figs = ""
    if plots_shown:
        figs = "".join([_fig(pngs, "training", "proxy reward, gold and KL per PPO step"),
                        _fig(pngs, "overoptimisation", "reward versus square root of KL"),
                        _fig(pngs, "length_entropy", "response length and entropy"),
                        _fig(pngs, "ppo_health", "PPO optimiser diagnostics")])
    if run.metrics and plots_shown:
        figs += f'<p class="note">{len(run.metrics)} logged steps in metrics.jsonl.</p>'
    return _section("training", "PPO training", cards + figs)


def _reward_model(run: Run, pngs: Mapping[str, bytes], plots_shown: bool = True) -> str:
    rm = run.section("reward_model")
    if not rm:
        return ""
    cards = '<div class="cards">' + "".join([
        _card("Backbone", _e(rm.get("backbone") or "—")),
        _card("Pairs", f"{_fmt(rm.get('pairs_train'))} / {_fmt(rm.get('pairs_eval'))}",
              "train / held-out"),
        _card("Accuracy", _pct(rm.get("eval_accuracy")), "held-out pairs"),
        _card("ECE", _fmt(rm.get("eval_ece")), "calibration error"),
        _card("Mean margin", _fmt(rm.get("mean_margin"), 2),
              f"chosen − rejected · scores {_fmt(rm.get('score_mean'), 2)} ± "
              f"{_fmt(rm.get('score_std'), 2)}"),
    ]) + "</div>"
    fig = _fig(pngs, "reward_model", "reward model calibration, scores and loss") \
        if plots_shown else ""
    return _section("reward-model", "Reward model", cards + fig)


def _feedback(run: Run) -> str:
    fb = run.section("feedback")
    if not fb:
        return ""
    source = str(fb.get("source") or "unknown")
    honesty = {
        "human": ("Human labels", "good", "Rankings came from people through the labeling app."),
        "simulated": ("Simulated labels — not human", "warn",
                      "Rankings came from simulated labelers: the gold judge plus noise tuned to "
                      "a target agreement. They show the pipeline works, not what people "
                      "prefer."),
        "ai": ("AI labels — not human", "warn",
               "Rankings came from an AI labeler (model feedback), not from people."),
    }.get(source, (f"Label source: {source}", "muted", "The label source is not one alignkit "
                   "knows; treat these labels as unverified."))
    lede = f"{_badge(honesty[0], honesty[1])} {_e(honesty[2])}"
    cards = '<div class="cards">' + "".join([
        _card("Rankings", _fmt(fb.get("rankings")), f"on {_fmt(fb.get('items'))} items"),
        _card("Labelers", _fmt(fb.get("labelers")), _e(source)),
        _card("Pairwise agreement", _pct(fb.get("agreement")),
              "InstructGPT's labelers: ~73–77%"),
        _card("Kendall's W", _fmt(fb.get("kendall_w_mean"), 2), "mean per item; 1 = same order"),
        _card("Krippendorff's α", _fmt(fb.get("krippendorff_alpha"), 2), "≥ 0.67 is tentative"),
    ]) + "</div>"
    disputed = _dicts(fb.get("most_disputed"))
    table = ""
    if disputed:
        prompts = mask_texts([_truncate(str(d.get("prompt") or "")) for d in disputed])
        table = "<h3>Most disputed items</h3>" + _table(
            ["prompt", "agreement"],
            [[_e(p), _pct(d.get("agreement"), 0)] for p, d in zip(prompts, disputed,
                                                                   strict=True)],
            numeric={1}, cls="compact")
    return _section("feedback", "Feedback", cards + table, lede)


def _evaluation(run: Run, pngs: Mapping[str, bytes], plots_shown: bool = True) -> str:
    ev = run.section("evaluation")
    if not ev:
        return ""
    fig = _fig(pngs, "harm", "histograms of per-sample harm") if plots_shown else ""
    return _section("samples", "Samples: base vs aligned", fig + _samples(run))


def _samples(run: Run) -> str:
    """Same prompt, same seed, base beside aligned — harmful words masked, long text cut."""
    samples = _dicts(run.section("evaluation").get("samples"))
    if not samples:
        return '<p class="absent">No sample completions were recorded.</p>'
    limit = int(_num(run.config_value("evaluate.show_samples")) or 8)
    shown = samples[:limit]
    texts = [_truncate(str(s.get(k) or "")) for s in shown for k in ("prompt", "before", "after")]
    masked = mask_texts(texts)
    rows = []
    for i, s in enumerate(shown):
        p, b, a = masked[3 * i: 3 * i + 3]
        rows.append([f'<span class="prompt">{_e(p)}</span>',
                     f"{_e(b)}<div>{_harm_chip(s.get('harm_before'))}</div>",
                     f"{_e(a)}<div>{_harm_chip(s.get('harm_after'))}</div>"])
    note = (f'<p class="note">First {len(shown)} of {len(samples)} recorded samples, in '
            f"evaluation order (not picked). Words the profanity judge scores ≥ "
            f"{MASK_THRESHOLD} are masked, first letter kept; texts over {TEXT_LIMIT} "
            "characters are cut.</p>")
    return _table(["prompt", "base", "aligned"], rows, cls="samples") + note


def _guard(run: Run) -> str:
    guard = run.section("guard")
    if not guard:
        return ""
    alarms = _dicts(guard.get("alarms"))
    if not alarms:
        return _section("guard", "Guard alarms",
                        f"<p>{_badge('no alarms', 'good')} No reward-hacking detector fired.</p>")
    rows = [[_e(a.get("step", "—")), f"<b class='det'>{_e(a.get('detector', '?'))}</b>",
             _e(a.get("message", "")), _evidence(a.get("evidence"))] for a in alarms]
    lede = (f"{_badge(f'{len(alarms)} alarm(s)', 'bad')} Detectors watching for reward hacking "
            "fired during PPO; each row shows the numbers that triggered it.")
    return _section("guard", "Guard alarms",
                    _table(["step", "detector", "message", "evidence"], rows, numeric={0},
                           cls="compact"), lede)


def _evidence(ev: Any) -> str:
    if not isinstance(ev, dict) or not ev:
        return "—"
    items = []
    for k, v in ev.items():
        f = _num(v)
        shown = (f"{f:.4g}".replace("-", "−") if f is not None else
                 json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else str(v))
        items.append(f'<span class="ev"><i>{_e(k)}</i> {_e(shown)}</span>')
    return "".join(items)


def _rounds(run: Run) -> str:
    rounds = run.rounds
    if not rounds:
        return ""
    rows = [[_e(r.get("round", "—")), _fmt(r.get("pairs_added")), _pct(r.get("rm_accuracy_new")),
             _fmt(r.get("gold")), _fmt(r.get("proxy")), _fmt(r.get("kl"), 2)] for r in rounds]
    return _section("rounds", "Feedback rounds", _table(
        ["round", "pairs added", "RM accuracy on new pairs", "gold", "proxy", "KL"], rows,
        numeric={1, 2, 3, 4, 5}, cls="compact"),
        "Each round labels samples of the current policy; RM accuracy on the new pairs "
        "drops when the policy has moved to where the old RM is unsure.")


def _redteam(run: Run) -> str:
    sets = _dicts(run.section("redteam").get("sets"))
    if not sets:
        return ""
    rows = []
    for s in sets:
        rate = _num(s.get("success_rate"))
        bar = (f'<div class="rate"><span style="width:{100 * min(max(rate, 0), 1):.1f}%">'
               "</span></div>") if rate is not None else ""
        rows.append([f"<b>{_e(s.get('name', '?'))}</b>", _e(s.get("category", "")),
                     _fmt(s.get("attacks")), f"{_pct(rate)}{bar}", _pct_ci(s.get("ci95"))])
    return _section("redteam", "Red team", _table(
        ["attack set", "category", "attacks", "success rate", "95% CI"], rows,
        numeric={2, 3, 4}, cls="compact"),
        "Share of adversarial prompts whose completion the judge scored as harmful.")


# ---------------------------------------------------------------- several runs


def _comparison(runs: Sequence[Run]) -> str:
    """One row per run with the numbers that decide between configs."""
    vary = {attr: len({getattr(r, attr) for r in runs}) > 1 for attr in ("criterion", "model")}
    headers = ["run"] + [a for a, v in vary.items() if v] + [
        "PPO steps", "KL coef", "KL to ref", "RM acc", "harm base → aligned", "paired Δ (95% CI)",
        "", "time"]
    rows = []
    for i, run in enumerate(runs):
        ev, ppo, rm = run.section("evaluation"), run.section("ppo"), run.section("reward_model")
        r = (judge_results(ev) or [None])[0]
        verdict, kind = _verdict(r.diff_ci if r else None)
        color = plots.RUN_COLORS[i % len(plots.RUN_COLORS)]
        rows.append(
            [f'<span class="key"><i style="background:{color}"></i><b>{_e(run.label)}</b></span>']
            + [_e(getattr(run, a)) for a, v in vary.items() if v]
            + [_fmt(ppo.get("iterations")), _fmt(ppo.get("kl_coef")),
               _fmt(ev.get("kl_to_reference"), 2), _pct(rm.get("eval_accuracy")),
               f"{_fmt(r.before if r else None)} → {_fmt(r.after if r else None)}",
               f"{_signed(r.diff if r else None)} "
               f"<small>{_ci(r.diff_ci if r else None, signed=True)}</small>",
               _badge(verdict, kind),
               _e(_duration(_num(run.section("run").get("seconds_total")) or
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
    plot_dir = runs[0].path / "plots" if len(runs) == 1 else out.parent / f"{out.stem}_plots"
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
    fb, ev = run.section("feedback"), run.section("evaluation")
    chips = [f"criterion <b>{_e(run.criterion)}</b>", f"model <b>{_e(run.model)}</b>"]
    if fb.get("source"):
        chips.append(f"labels <b>{_e(fb['source'])}</b>")
    if ev.get("judge"):
        chips.append(f"gold judge <b>{_e(ev['judge'])}</b>")
    return chips


def _single(run: Run, pngs: Mapping[str, bytes]) -> str:
    sections = [
        ("story", "Summary", _story(run, pngs)),
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


CSS = """
:root{--ink:#111827;--ink2:#374151;--mute:#6b7280;--line:#e5e7eb;--bg:#f3f4f6;
--card:#fff;--blue:#2563eb;--good:#047857;--goodbg:#d1fae5;--bad:#b91c1c;--badbg:#fee2e2;
--warn:#92400e;--warnbg:#fef3c7}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.55 system-ui,-apple-system,
"Segoe UI","Helvetica Neue","Liberation Sans",Arial,sans-serif;
font-variant-numeric:tabular-nums}
.wrap{max-width:1120px;margin:0 auto;padding:0 28px}
header{background:#14224a;color:#fff;padding:34px 0 28px}
header .brand{font-size:12px;letter-spacing:.14em;text-transform:uppercase;opacity:.7}
header h1{margin:4px 0 6px;font-size:32px;line-height:1.2;font-weight:700}
header p{margin:0 0 14px;opacity:.8;font-size:14px}
header code{background:rgba(255,255,255,.12);padding:1px 6px;border-radius:4px}
.hchip{display:inline-block;margin:0 8px 6px 0;padding:4px 11px;border-radius:999px;
background:rgba(255,255,255,.12);font-size:13px}
nav{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.94);
border-bottom:1px solid var(--line)}
nav a{display:inline-block;padding:11px 14px 10px 0;margin-right:4px;color:var(--ink2);
text-decoration:none;font-size:14px;font-weight:500}
nav a:hover{color:var(--blue)}
main{padding-top:22px;padding-bottom:40px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:24px 28px;margin:0 0 22px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
h2{margin:0 0 14px;font-size:21px}
h3{margin:24px 0 10px;font-size:13px;text-transform:uppercase;letter-spacing:.06em;
color:var(--mute)}
.lede{margin:-4px 0 16px;color:var(--ink2)}
.headline{font-size:19px;line-height:1.5;margin:0 0 18px;color:var(--ink)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(158px,1fr));gap:12px;
margin:0 0 16px}
.card{border:1px solid var(--line);border-radius:10px;padding:12px 14px;background:#fafafa}
.card .label{font-size:13px;color:var(--mute);font-weight:500}
.card .value{font-size:21px;font-weight:700;margin-top:2px;white-space:nowrap}
.card .sub{font-size:12.5px;color:var(--ink2);margin-top:3px}
.cards.story{grid-template-columns:1.5fr repeat(3,1fr)}
.card.hero{background:#eff6ff;border-color:#bfdbfe;grid-row:span 2;display:flex;
flex-direction:column;justify-content:center;padding:18px 22px}
.card.hero .value{font-size:34px;color:#1e3a8a;margin:6px 0 4px}
.card.hero .sub{font-size:14px}
.card.flag{background:#fffbeb;border-color:#fde68a}
.card.alarm{background:#fef2f2;border-color:#fecaca}
.card.alarm .value{color:var(--bad)}
.card.ok .value{color:var(--good)}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;
font-weight:600;white-space:nowrap}
.badge.good{background:var(--goodbg);color:var(--good)}
.badge.bad{background:var(--badbg);color:var(--bad)}
.badge.warn{background:var(--warnbg);color:var(--warn)}
.badge.muted{background:#e5e7eb;color:var(--ink2)}
.chip{display:inline-block;margin-top:5px;padding:0 7px;border-radius:5px;font-size:11.5px;
font-weight:600}
.chip.good{background:var(--goodbg);color:var(--good)}
.chip.warn{background:var(--warnbg);color:var(--warn)}
.chip.bad{background:var(--badbg);color:var(--bad)}
table{width:100%;border-collapse:collapse;font-size:14px;margin:0 0 8px}
th{text-align:left;font-size:12px;color:var(--mute);font-weight:600;text-transform:uppercase;
letter-spacing:.04em;border-bottom:2px solid var(--line);padding:7px 10px}
td{border-bottom:1px solid var(--line);padding:9px 10px;vertical-align:top;
overflow-wrap:anywhere}
tr:last-child td{border-bottom:0}
.num{text-align:right;white-space:nowrap}
td small{color:var(--mute);font-size:12px}
.src{font-size:12.5px;color:var(--ink2)}
.blind{font-size:12.5px;color:var(--warn);margin-top:2px}
table.judges td:last-child{max-width:360px}
table.samples td{width:37%;font-size:13.5px;line-height:1.5}
table.samples td:first-child{width:26%}
.det{white-space:nowrap}
.flow{display:flex;flex-wrap:wrap;align-items:center;gap:6px 0;font-size:13.5px;
color:var(--ink2);margin:4px 0 8px}
.flow span:not(.arrow){background:#eef2ff;color:#1e3a8a;border-radius:6px;padding:3px 10px}
.flow .arrow{color:#9ca3af;padding:0 8px}
.prompt{color:var(--ink2);font-style:italic}
figure{margin:18px 0 8px}
figure img{width:100%;height:auto;display:block;border-radius:6px}
figcaption{font-size:13px;color:var(--mute);margin-top:6px;max-width:900px}
.timebar{display:flex;height:14px;border-radius:7px;overflow:hidden;background:var(--line)}
.timebar span{display:block;height:100%}
.keys{display:flex;flex-wrap:wrap;gap:6px 18px;margin-top:8px;font-size:13px;color:var(--ink2)}
.key i,summary i{display:inline-block;width:10px;height:10px;border-radius:3px;
margin-right:6px;vertical-align:0}
.key{white-space:nowrap}
.absent{color:var(--mute);font-size:13.5px;background:#f9fafb;border:1px dashed #d1d5db;
border-radius:8px;padding:9px 12px;margin:16px 0 0}
.note{color:var(--mute);font-size:13px}
.ev{display:inline-block;margin:0 6px 4px 0;padding:1px 8px;border-radius:5px;
background:#f3f4f6;font-size:12.5px;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
.ev i{color:var(--mute);font-style:normal}
.rate{height:5px;background:var(--line);border-radius:3px;margin-top:4px;min-width:80px}
.rate span{display:block;height:100%;background:#dc2626;border-radius:3px}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.9em}
details{border:1px solid var(--line);border-radius:10px;margin:0 0 12px;padding:0 16px}
details section{border:0;box-shadow:none;padding:10px 0;margin:0}
summary{cursor:pointer;padding:12px 0;font-weight:600;font-size:16px}
summary small{color:var(--mute);font-weight:400;margin-left:8px}
footer{color:var(--mute);font-size:12.5px;text-align:center;padding:8px 0 0}
@media print{nav{display:none}section{break-inside:avoid}}
"""
