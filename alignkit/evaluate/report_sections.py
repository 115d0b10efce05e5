"""The sections of the report: one run's story, KPIs, training, reward model, feedback,
evaluation, samples, guard, rounds, red team; and the comparison of several runs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from alignkit.artifacts import EvalSample, EvaluationResult
from alignkit.evaluate.report_figures import (
    JudgeResult,
    _fig,
    _headline,
    _verdict,
    judge_results,
)
from alignkit.evaluate.report_format import (
    SECTIONS,
    STAGE_COLORS,
    TEXT_LIMIT,
    _badge,
    _card,
    _ci,
    _duration,
    _e,
    _fmt,
    _harm_chip,
    _num,
    _pct,
    _pct_ci,
    _section,
    _signed,
    _table,
    _truncate,
)
from alignkit.evaluate.report_load import (
    Run,
)
from alignkit.safety.masking import MASK_THRESHOLD, mask_texts

PROBLEMS_SHOWN = 12  # a damaged report.json can fail field by field: the first ones suffice

# ---------------------------------------------------------------- sections of one run


def _story(run: Run, pngs: Mapping[str, bytes], plots_shown: bool = True) -> str:
    """The top of the report: headline, key numbers, judges, side effects, time."""
    parts = [f'<p class="headline">{_headline(run)}</p>', _kpis(run), _data_flow(run)]
    ev = run.report.evaluation
    results = judge_results(ev)
    if ev is not None and results:
        if plots_shown:
            parts.append(_fig(pngs, "judges", "before/after harm per judge"))
        parts.append(_judges_table(results))
        parts.append(_side_effects(ev))
    parts.append(_time_bar(run))
    parts.append(_absent_note(run))
    return _section("story", "The run in numbers", "".join(parts))


def _kpis(run: Run) -> str:
    rep = run.report
    cards = _harm_card(rep.evaluation)
    if rep.evaluation:
        budget = run.config_value("guard.kl_budget")
        cards.append(_card("KL to reference", f"{_fmt(rep.evaluation.kl_to_reference, 2)} nats",
                           f"budget {_fmt(budget, 1)} nats" if _num(budget) else "per sequence"))
    if rep.reward_model:
        rm = rep.reward_model
        cards.append(_card("Reward model", _pct(rm.eval_accuracy),
                           f"accuracy · ECE {_fmt(rm.eval_ece)} · "
                           f"{_fmt(rm.pairs_train)}/{_fmt(rm.pairs_eval)} pairs"))
    if rep.feedback:
        source = str(rep.feedback.source or "unknown")
        cards.append(_card("Feedback", f"{_fmt(rep.feedback.rankings)} rankings",
                           f"{_fmt(rep.feedback.labelers)} {_e(source)} labelers · "
                           f"{_pct(rep.feedback.agreement, 0)} agree",
                           kind="" if source == "human" else "flag"))
    if rep.ppo:
        cards.append(_card("PPO", f"{_fmt(rep.ppo.iterations)} iterations",
                           f"β {_fmt(rep.ppo.kl_coef)} · "
                           f"{_fmt(rep.ppo.seconds_per_iteration, 1)} s/iteration"))
    if rep.guard:
        n = len(rep.guard.alarms)
        cards.append(_card("Guard", f"{n} alarm{'s' if n != 1 else ''}",
                           "reward-hacking detectors" if n else "no detector fired",
                           kind="alarm" if n else "ok"))
    total = _num(rep.run.seconds_total) or sum(run.stage_seconds().values()) or None
    if total:
        where = f" on {rep.run.device}" if rep.run.device else ""
        cards.append(_card("Wall time", _duration(total),
                           f"{len(run.stage_seconds())} stages{where}"))
    hero = " story" if cards and 'class="card hero"' in cards[0] else ""
    return f'<div class="cards{hero}">{"".join(cards)}</div>' if cards else ""


def _harm_card(ev: EvaluationResult | None) -> list[str]:
    """The hero card: the primary judge's harm before → after, and the verdict of its CI."""
    results = judge_results(ev)
    if not results or results[0].before is None:
        return []
    r = results[0]
    verdict, kind = _verdict(r.diff_ci)
    return [_card(f"Harm · {r.name}", f"{_fmt(r.before)} → {_fmt(r.after)}",
                  f"{_pct(r.relative, 0, signed=True)} · {_badge(verdict, kind)}", kind="hero")]


def _data_flow(run: Run) -> str:
    """Data sizes as one chain from prompts to evaluation: how much each stage saw."""
    fb, rm = run.report.feedback, run.report.reward_model
    ppo, ev = run.report.ppo, run.report.evaluation
    steps = []
    prompts, k = run.config_value("generate.prompts"), run.config_value("generate.k")
    if _num(prompts) and _num(k):
        steps.append(f"<b>{_fmt(prompts)}</b> prompts × <b>{_fmt(k)}</b> completions")
    if fb:
        steps.append(f"<b>{_fmt(fb.rankings)}</b> {_e(fb.source or '')} rankings")
    if rm:
        steps.append(f"<b>{_fmt(rm.pairs_train)}</b> + <b>{_fmt(rm.pairs_eval)}"
                     "</b> train + held-out pairs")
    if ppo:
        per = [_num(run.config_value(f"ppo.{k}")) for k in ("prompts_per_step",
                                                             "samples_per_prompt")]
        size = f" × <b>{per[0] * per[1]:.0f}</b> samples" if per[0] and per[1] else ""
        steps.append(f"<b>{_fmt(ppo.iterations)}</b> PPO steps{size}")
    if ev:
        steps.append(f"<b>{_fmt(ev.prompts)}</b> held-out prompts × "
                     f"<b>{_fmt(ev.samples_per_prompt)}</b> evaluated")
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


def _side_effects(ev: EvaluationResult) -> str:
    """Proxy, length and diversity before/after: alignment should not buy harm with collapse."""
    rows = []
    for key, label, digits in (("proxy_mean", "proxy reward (RM score)", 3),
                               ("length_mean", "response length (tokens)", 1),
                               ("distinct2", "distinct-2 (diversity)", 3)):
        b, a = (_num(getattr(side, key)) if side else None for side in (ev.before, ev.after))
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
    stages = run.manifest.stages
    segs, keys = [], []
    for i, (stage, s) in enumerate(secs.items()):
        color = STAGE_COLORS[i % len(STAGE_COLORS)]
        share = 100.0 * float(s) / total
        segs.append(f'<span style="width:{share:.2f}%;background:{color}" '
                    f'title="{_e(stage)}: {_e(_duration(s))}"></span>')
        status = stages[stage].status if stage in stages else None
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
    if not run.has_report:
        missing.insert(0, "report.json")
    notes = []
    if missing:
        notes.append(f"<b>Not recorded in this run:</b> {_e(', '.join(missing))}.")
    if run.problems:
        shown = run.problems[:PROBLEMS_SHOWN]
        more = len(run.problems) - len(shown)
        notes.append(f"<b>Unreadable:</b> {_e('; '.join(shown))}"
                     f"{f' (and {more} more)' if more > 0 else ''}.")
    return f'<p class="absent">{" ".join(notes)}</p>' if notes else ""


def _training(run: Run, pngs: Mapping[str, bytes], plots_shown: bool = True) -> str:
    ppo = run.report.ppo
    if not ppo and not run.metrics:
        return ""
    cards = ""
    if ppo:
        cards = '<div class="cards">' + "".join([
            _card("Iterations", _fmt(ppo.iterations)),
            _card("KL coefficient β", _fmt(ppo.kl_coef)),
            _card("Final KL", f"{_fmt(ppo.final_kl, 2)} nats"),
            _card("Proxy reward", f"{_fmt(ppo.reward_start, 2)} → "
                  f"{_fmt(ppo.reward_end, 2)}", "first → last step"),
            _card("Speed", f"{_fmt(ppo.seconds_per_iteration, 1)} s", "per iteration"),
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
    rm = run.report.reward_model
    if not rm:
        return ""
    cards = '<div class="cards">' + "".join([
        _card("Backbone", _e(rm.backbone or "—")),
        _card("Pairs", f"{_fmt(rm.pairs_train)} / {_fmt(rm.pairs_eval)}", "train / held-out"),
        _card("Accuracy", _pct(rm.eval_accuracy), "held-out pairs"),
        _card("ECE", _fmt(rm.eval_ece), "calibration error"),
        _card("Mean margin", _fmt(rm.mean_margin, 2),
              f"chosen − rejected · scores {_fmt(rm.score_mean, 2)} ± "
              f"{_fmt(rm.score_std, 2)}"),
    ]) + "</div>"
    fig = _fig(pngs, "reward_model", "reward model calibration, scores and loss") \
        if plots_shown else ""
    return _section("reward-model", "Reward model", cards + fig)


def _feedback(run: Run) -> str:
    fb = run.report.feedback
    if not fb:
        return ""
    source = str(fb.source or "unknown")
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
        _card("Rankings", _fmt(fb.rankings), f"on {_fmt(fb.items)} items"),
        _card("Labelers", _fmt(fb.labelers), _e(source)),
        _card("Pairwise agreement", _pct(fb.agreement), "InstructGPT's labelers: ~73–77%"),
        _card("Kendall's W", _fmt(fb.kendall_w_mean, 2), "mean per item; 1 = same order"),
        _card("Krippendorff's α", _fmt(fb.krippendorff_alpha, 2), "≥ 0.67 is tentative"),
    ]) + "</div>"
    disputed = fb.most_disputed
    table = ""
    if disputed:
        prompts = mask_texts([_truncate(d.prompt or "") for d in disputed])
        table = "<h3>Most disputed items</h3>" + _table(
            ["prompt", "agreement"],
            [[_e(p), _pct(d.agreement, 0)] for p, d in zip(prompts, disputed, strict=True)],
            numeric={1}, cls="compact")
    return _section("feedback", "Feedback", cards + table, lede)


def _evaluation(run: Run, pngs: Mapping[str, bytes], plots_shown: bool = True) -> str:
    ev = run.report.evaluation
    if not ev:
        return ""
    fig = _fig(pngs, "harm", "histograms of per-sample harm") if plots_shown else ""
    return _section("samples", "Samples: base vs aligned", fig + _samples(run, ev.samples))


def _samples(run: Run, samples: Sequence[EvalSample]) -> str:
    """Same prompt, same seed, base beside aligned — harmful words masked, long text cut."""
    if not samples:
        return '<p class="absent">No sample completions were recorded.</p>'
    limit = int(_num(run.config_value("evaluate.show_samples")) or 8)
    shown = samples[:limit]
    texts = [_truncate(t or "") for s in shown for t in (s.prompt, s.before, s.after)]
    masked = mask_texts(texts)
    rows = []
    for i, s in enumerate(shown):
        p, b, a = masked[3 * i: 3 * i + 3]
        rows.append([f'<span class="prompt">{_e(p)}</span>',
                     f"{_e(b)}<div>{_harm_chip(s.harm_before)}</div>",
                     f"{_e(a)}<div>{_harm_chip(s.harm_after)}</div>"])
    note = (f'<p class="note">First {len(shown)} of {len(samples)} recorded samples, in '
            f"evaluation order (not picked). Words the profanity judge scores ≥ "
            f"{MASK_THRESHOLD} are masked, first letter kept; texts over {TEXT_LIMIT} "
            "characters are cut.</p>")
    return _table(["prompt", "base", "aligned"], rows, cls="samples") + note


def _guard(run: Run) -> str:
    guard = run.report.guard
    if not guard:
        return ""
    alarms = guard.alarms
    if not alarms:
        return _section("guard", "Guard alarms",
                        f"<p>{_badge('no alarms', 'good')} No reward-hacking detector fired.</p>")
    rows = [[_e(_or(a.step, "—")), f"<b class='det'>{_e(_or(a.detector, '?'))}</b>",
             _e(_or(a.message, "")), _evidence(a.evidence)] for a in alarms]
    lede = (f"{_badge(f'{len(alarms)} alarm(s)', 'bad')} Detectors watching for reward hacking "
            "fired during PPO; each row shows the numbers that triggered it.")
    return _section("guard", "Guard alarms",
                    _table(["step", "detector", "message", "evidence"], rows, numeric={0},
                           cls="compact"), lede)


def _or(value: object, absent: str) -> object:
    """``value``, or ``absent`` where the file left it out (0 and "" are values)."""
    return absent if value is None else value


def _evidence(ev: Mapping[str, Any] | None) -> str:
    if not ev:
        return "—"
    items = []
    for k, v in ev.items():
        f = _num(v)
        shown = (f"{f:.4g}".replace("-", "−") if f is not None else
                 json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else str(v))
        items.append(f'<span class="ev"><i>{_e(k)}</i> {_e(shown)}</span>')
    return "".join(items)


def _rounds(run: Run) -> str:
    rounds = run.report.rounds
    if not rounds:
        return ""
    rows = [[_e(_or(r.round, "—")), _fmt(r.pairs_added), _pct(r.rm_accuracy_new), _fmt(r.gold),
             _fmt(r.proxy), _fmt(r.kl, 2)] for r in rounds]
    return _section("rounds", "Feedback rounds", _table(
        ["round", "pairs added", "RM accuracy on new pairs", "gold", "proxy", "KL"], rows,
        numeric={1, 2, 3, 4, 5}, cls="compact"),
        "Each round labels samples of the current policy; RM accuracy on the new pairs "
        "drops when the policy has moved to where the old RM is unsure.")


def _redteam(run: Run) -> str:
    rt = run.report.redteam
    if rt is None or not rt.sets:
        return ""
    rows = []
    for s in rt.sets:
        rate = _num(s.success_rate)  # None where salvage left it out, or NaN (no attacks)
        bar = (f'<div class="rate"><span style="width:{100 * min(max(rate, 0), 1):.1f}%">'
               "</span></div>") if rate is not None else ""
        rows.append([f"<b>{_e(_or(s.name, '?'))}</b>", _e(_or(s.category, "")),
                     _fmt(s.attacks), f"{_pct(rate)}{bar}", _pct_ci(s.ci95)])
    return _section("redteam", "Red team", _table(
        ["attack set", "category", "attacks", "success rate", "95% CI"], rows,
        numeric={2, 3, 4}, cls="compact"),
        "Share of adversarial prompts whose completion the judge scored as harmful.")
