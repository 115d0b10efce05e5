"""The report's helpful-and-harmless section: rates per set and judge for base, SL-CAI and
aligned, the helpfulness–harmlessness plot (one point per checkpoint), the judges with their
blind spots, and masked samples."""

from __future__ import annotations

import io

from alignkit.artifacts import HHEvaluation, RateResult
from alignkit.evaluate.report_format import _e, _figure, _section, _table

MODELS = (("base", "base"), ("sl_cai", "SL-CAI"), ("aligned", "aligned"))
SETS = (("harmful_heldout", "harmful requests, held out (complied)"),
        ("harmbench", "HarmBench, never trained (complied)"),
        ("jailbreak", "jailbreak-wrapped held-out requests (complied)"),
        ("benign_refusal", "benign requests (refused)"),
        ("lookalike_refusal", "benign look-alikes, held out (refused)"))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _ci(lo_hi: list[float]) -> str:
    return f"[{100 * lo_hi[0]:+.0f}, {100 * lo_hi[1]:+.0f}]" if len(lo_hi) == 2 else "—"


def _rate_rows(hh: HHEvaluation) -> list[list[str]]:
    rows = []
    for name, label in SETS:
        results: dict[str, RateResult] = getattr(hh, name)
        for judge, x in results.items():
            rows.append([_e(label), f"<code>{_e(judge)}</code>", _pct(x.base), _pct(x.sl_cai),
                         f"<b>{_pct(x.aligned)}</b>", _ci(x.paired_diff_ci95), str(x.n)])
    return rows


def tradeoff_png(hh: HHEvaluation, judge: str) -> bytes | None:
    """Harmful compliance (x, lower is better) against benign helpfulness (y), per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = hh.harmful_heldout.get(judge)
    if rate is None:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    for key, label in MODELS:
        x, y = getattr(rate, key), getattr(hh.benign_helpfulness, key)
        if x is None or y is None:
            continue
        ax.scatter([x], [y], s=60)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel(f"harmful compliance, held out ({judge})")
    ax.set_ylabel("benign helpfulness")
    ax.set_xlim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def hh_section(hh: HHEvaluation | None) -> str:
    if hh is None:
        return ""
    head = ["set", "judge", "base", "SL-CAI", "aligned", "Δ aligned−base, points (95% CI)", "n"]
    rates = _table(head, _rate_rows(hh), numeric={2, 3, 4, 5, 6}, cls="compact")
    h, p = hh.benign_helpfulness, hh.rtp_profanity
    extra = [["benign helpfulness (mean)", f"{h.base:.3f}", _num(h.sl_cai),
              f"<b>{h.aligned:.3f}</b>", _ci_abs(h.paired_diff_ci95)]]
    if p is not None:
        extra.append(["RealToxicityPrompts P(offensive) (mean)", f"{p.base:.3f}",
                      _num(p.sl_cai), f"<b>{p.aligned:.3f}</b>", _ci_abs(p.paired_diff_ci95)])
    extra.append(["honesty: false claims disputed", _pct(hh.honesty.get("base")),
                  _pct(hh.honesty.get("sl_cai")), f"<b>{_pct(hh.honesty.get('aligned'))}</b>",
                  "measured only"])
    means = _table(["measure", "base", "SL-CAI", "aligned", "Δ (95% CI)"], extra,
                   numeric={1, 2, 3}, cls="compact")
    judges = "".join(f"<li><b>{_e(n)}</b>: {_e(j.source)}. <i>Blind spots:</i> "
                     f"{_e(j.blind_spots)}</li>" for n, j in hh.judge_notes.items())
    first = hh.judges[0] if hh.judges else ""
    plot = _figure(tradeoff_png(hh, first), "helpfulness–harmlessness",
                   "one point per checkpoint: down-left is safer, up is more helpful")
    samples = _table(["set", "prompt", *[label for _, label in MODELS]], [
        [_e(s.set), _e(s.prompt), *[_e(s.replies.get(k, "—")) for k, _ in MODELS]]
        for s in hh.samples], cls="samples")
    note = ('<p class="note">Replies to harmful requests show their first words only (enough '
            "to tell a refusal from a compliance); the rest is masked. The simulated labelers "
            "followed the Zou et al. prefix list; the MitigationBypass list and the "
            "reference-answer helpfulness were never used in training.</p>")
    lede = ("Each checkpoint answered every held-out prompt once with the same seed; rates "
            "are shares of replies the judge counted, with paired bootstrap CIs of the "
            "difference.")
    return _section("hh", "Helpful and harmless", rates + means + plot +
                    f"<h3>Judges</h3><ul>{judges}</ul><h3>Samples</h3>" + samples + note, lede)


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _ci_abs(lo_hi: list[float]) -> str:
    return f"[{lo_hi[0]:+.3f}, {lo_hi[1]:+.3f}]" if len(lo_hi) == 2 else "—"
