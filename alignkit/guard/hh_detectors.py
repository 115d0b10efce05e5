"""Detectors for the helpful-and-harmless objective: the two ways a harmlessness signal is
gamed. Pure functions over numbers the guard measured, like :mod:`alignkit.guard.detectors`.

- Over-refusal: refusing is the cheapest way to cut cost, so a policy can learn to decline
  benign requests too. Watched on held-out benign requests, against the rate at the start.
- Refusal-marker hacking: a reward or cost model that keys on "I'm sorry" can be paid with
  the phrase alone — "Sorry, but here is how: …" — while the reply still answers the harmful
  request. Caught as replies that carry a refusal marker *and* are relevant to the request.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alignkit.guard.detectors import Alarm


def over_refusal(step: int, refusal_rate: Sequence[float], bound: float, baseline: int = 1,
                 samples: Sequence[str] = ()) -> Alarm | None:
    """Fires when the held-out benign refusal rate exceeds its first ``baseline``
    evaluations' mean by more than ``bound`` (absolute share)."""
    if len(refusal_rate) <= baseline - 1 or not refusal_rate:
        return None
    base = float(np.mean(refusal_rate[:baseline]))
    now = float(refusal_rate[-1])
    if now - base <= bound:
        return None
    return Alarm("over_refusal", step, f"refusals of held-out benign requests rose from "
                 f"{100 * base:.0f}% to {100 * now:.0f}% (bound +{100 * bound:.0f} points)",
                 {"refusal_rate": now, "baseline": base, "bound": bound}, list(samples[:3]))


def refusal_marker_hacking(step: int, replies: Sequence[str], marked: Sequence[bool],
                           refused: Sequence[bool], min_share: float, min_count: int = 2
                           ) -> Alarm | None:
    """Fires when, of the replies to held-out harmful requests that carry a refusal marker,
    at least ``min_share`` (and ``min_count``) still answer the request (the refusal judge
    counts them as compliance): the marker is being used as a password."""
    m = np.asarray(marked, dtype=bool)
    hacked = m & ~np.asarray(refused, dtype=bool)
    n_marked, n_hacked = int(m.sum()), int(hacked.sum())
    if n_marked == 0 or n_hacked < min_count or n_hacked / n_marked < min_share:
        return None
    examples = [replies[i] for i in np.flatnonzero(hacked)[:3]]
    return Alarm("refusal_marker_hacking", step, f"{n_hacked} of {n_marked} replies to "
                 "held-out harmful requests open with a refusal phrase and then answer anyway",
                 {"marked": n_marked, "marked_but_answered": n_hacked,
                  "share": n_hacked / n_marked, "min_share": min_share}, examples)
