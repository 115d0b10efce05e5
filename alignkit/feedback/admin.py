"""What the admin page and ``alignkit label status`` show: progress, pace, people, agreement.

Computed from the store on request (a labeling run has thousands of rankings, not
millions), so there is no second copy of the numbers to drift out of date.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import median

from alignkit.feedback.agreement import low_agreement_labelers, majority_counts
from alignkit.feedback.pairs import feedback_summary, rankings_by_item
from alignkit.feedback.store import FeedbackStore, Ranking

BREAK_S = 30 * 60  # a gap longer than this between two submissions is a break, not work
MIN_PAIRS_TO_FLAG = 5  # fewer comparable pairs than this says nothing about a labeler


def _seconds_per_item(times: list[datetime]) -> float | None:
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    gaps = [g for g in gaps if 0 <= g <= BREAK_S]
    return round(median(gaps), 1) if gaps else None


def _r(x: float, digits: int = 4) -> float:
    """``round`` under another name: functions here take a ``round`` (feedback round) argument."""
    return float(round(x, digits))


def labeler_stats(rankings: list[Ranking]) -> list[dict]:
    """Per labeler: volume, skips, unsafe flags, pace and agreement with the majority."""
    counts = majority_counts(rankings_by_item([r for r in rankings if not r.skipped]))
    scores = {lab: a / t for lab, (a, t) in counts.items() if t >= MIN_PAIRS_TO_FLAG}
    flagged = set(low_agreement_labelers(scores))
    by_labeler: dict[int, list[Ranking]] = {}
    for r in _submissions(rankings):
        by_labeler.setdefault(r.labeler_id, []).append(r)
    out = []
    for lab_id, rs in sorted(by_labeler.items()):
        agree, total = counts.get(lab_id, (0, 0))
        lab = rs[0].labeler
        out.append({
            "labeler_id": lab_id,
            "name": lab.name,
            "kind": lab.kind,
            "rankings": sum(not r.skipped for r in rs),
            "skipped": sum(r.skipped for r in rs),
            "flagged_unsafe": sum(r.flagged_unsafe for r in rs),
            "agreement_with_majority": round(agree / total, 4) if total else None,
            "comparable_pairs": total,
            "seconds_per_item": _seconds_per_item(sorted(r.created for r in rs)),
            "last_active": max(r.created for r in rs).isoformat(),
            "low_agreement": lab_id in flagged,
        })
    return out


def _submissions(rankings: list[Ranking]) -> list[Ranking]:
    """One ranking per (item, labeler): a two-criteria submission is two rows, one act."""
    return list({(r.item_id, r.labeler_id): r for r in rankings}.values())


def criterion_progress(rankings: list[Ranking], items: int, overlap: int,
                       agreement: dict) -> list[dict]:
    """Per criterion: rankings done against ``items * overlap`` and its agreement numbers."""
    out = []
    for name, block in agreement.get("criteria", {}).items():
        per_item: dict[int, int] = {}
        for r in rankings:
            if r.criterion == name and not r.skipped:
                per_item[r.item_id] = per_item.get(r.item_id, 0) + 1
        needed = items * overlap
        done = sum(min(n, overlap) for n in per_item.values())
        out.append({
            "criterion": name,
            "rankings": block["rankings"],
            "items_complete": sum(n >= overlap for n in per_item.values()),
            "fraction": _r(done / needed) if needed else 0.0,
            "agreement": block["agreement"],
            "kendall_w_mean": block["kendall_w_mean"],
            "krippendorff_alpha": block["krippendorff_alpha"],
        })
    return out


def admin_summary(
    store: FeedbackStore, overlap: int, round: int | None = None, now: datetime | None = None
) -> dict:
    """Everything on the admin page, as one JSON-ready dict."""
    now = now or datetime.now(UTC)
    rankings = store.rankings(round)
    per_item = store.ranking_counts(round)
    needed = len(per_item) * overlap
    done = sum(min(n, overlap) for n in per_item.values())
    kept = [r for r in _submissions(rankings) if not r.skipped]
    times = sorted(r.created for r in _submissions(rankings))
    span_h = (times[-1] - times[0]).total_seconds() / 3600 if len(times) > 1 else 0.0
    stats = labeler_stats(rankings)
    agreement = feedback_summary(store, round)
    items = store.items(round)
    return {
        "progress": {
            "items": len(per_item),
            "items_complete": sum(n >= overlap for n in per_item.values()),
            "overlap": overlap,
            "rankings": len(kept),
            "rankings_needed": needed,
            "fraction": _r(done / needed) if needed else 0.0,
        },
        "throughput": {
            "last_10_min": sum(t >= now - timedelta(minutes=10) for t in times),
            "last_hour": sum(t >= now - timedelta(hours=1) for t in times),
            # A rate over a few seconds of activity says nothing: wait for 10 minutes.
            "per_hour": _r(len(times) / span_h, 1) if span_h >= 1 / 6 else None,
        },
        "labelers": stats,
        "low_agreement_labelers": [s["name"] for s in stats if s["low_agreement"]],
        "agreement": agreement,
        "criteria": criterion_progress(rankings, len(per_item), overlap, agreement),
        "flags": agreement["flags"],
        "sensitive_items": sum(it.sensitive for it in items),
        "labelers_avoiding_sensitive": sum(lab.avoid_sensitive for lab in store.labelers()),
    }


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and format characters (ANSI escapes, carriage
    returns, bidi overrides) shown as ``\\x1b``-style escapes instead of acting."""
    # isprintable() is False for categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs but " ".
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def format_status(summary: dict) -> str:
    """Plain-text status for the terminal (``alignkit label status``); prompts and names
    are model output and labeler input, so they pass through :func:`printable`."""
    p, t, a = summary["progress"], summary["throughput"], summary["agreement"]
    per_criterion = [
        f"  {c['criterion']}: {c['rankings']} rankings ({c['fraction']:.0%}), agreement "
        f"{c['agreement']}, Krippendorff's alpha {c['krippendorff_alpha']}"
        for c in summary.get("criteria", [])
    ] if len(summary.get("criteria", [])) > 1 else []
    f = summary.get("flags") or {}
    lines = [
        f"items {p['items']} ({p['items_complete']} complete at overlap {p['overlap']}), "
        f"rankings {p['rankings']}/{p['rankings_needed']} ({p['fraction']:.0%})",
        f"throughput: {t['last_10_min']} in the last 10 min, {t['last_hour']} in the last hour",
        f"labels from: {a['source'] or '-'}; pairwise agreement {a['agreement']}, "
        f"Kendall's W (mean) {a['kendall_w_mean']}, Krippendorff's alpha {a['krippendorff_alpha']}",
        *per_criterion,
        *([f"safe/unsafe flags: {f['unsafe']} unsafe of {f['flags']}, agreement "
           f"{f['agreement']}"] if f.get("flags") else []),
        "",
        f"{'labeler':<20} {'kind':<10} {'ranked':>6} {'skipped':>7} {'unsafe':>6} "
        f"{'agree':>6} {'s/item':>7}",
    ]
    for s in summary["labelers"]:
        score = s["agreement_with_majority"]
        agree = "-" if score is None else f"{score:.2f}"
        pace = "-" if s["seconds_per_item"] is None else f"{s['seconds_per_item']:.0f}"
        flag = "  <- low agreement" if s["low_agreement"] else ""
        lines.append(f"{printable(s['name'])[:20]:<20} {s['kind']:<10} {s['rankings']:>6} "
                     f"{s['skipped']:>7} {s['flagged_unsafe']:>6} {agree:>6} {pace:>7}{flag}")
    if a["most_disputed"]:
        lines += ["", "most disputed items:"]
        lines += [f"  #{d['item_id']} {d.get('criterion', '')} agreement {d['agreement']}: "
                  f"{printable(d['prompt'])}"
                  for d in a["most_disputed"]]
    return "\n".join(lines)
