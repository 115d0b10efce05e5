"""HTML building blocks of the report: escaping, numbers, CIs, cards, tables, figures."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from alignkit.safety.masking import MASK_THRESHOLD

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
