"""Checks on one submission against its item: ranks per criterion, safe/unsafe flags.

Pure functions over the store's records; each refusal is a :class:`FeedbackError` that
names the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alignkit.feedback.records import FeedbackError, Item


def completion_id(k: Any) -> int | None:
    """A completion id from a JSON key: an int, or its canonical digit string ('7', not
    '07' or ' 7', which would silently collide with '7')."""
    if isinstance(k, bool):
        return None
    if isinstance(k, int):
        return k
    if isinstance(k, str) and k.isascii() and k.isdigit() and str(int(k)) == k:
        return int(k)
    return None


def criterion_ranks(
    item: Item,
    ranks: Mapping[Any, Any] | None,
    by_criterion: Mapping[str, Mapping[Any, Any]] | None,
    skipped: bool = False,
) -> dict[str, dict[int, int]]:
    """One submission's ranks per criterion of ``item``, each checked by :func:`validate_ranks`.

    ``ranks`` alone ranks a single-criterion item; an item with several criteria needs
    ``by_criterion`` with each of them (errors name ``rankings.<criterion>``).
    """
    crit = item.criteria
    if by_criterion is None:
        if len(crit) > 1 and not skipped:
            raise FeedbackError(f"rankings.{crit[0]}: this item is ranked for each of "
                                f"{list(crit)} — send rankings={{criterion: ranks}} with all "
                                "of them", field=f"rankings.{crit[0]}")
        return {c: validate_ranks(ranks or {}, item.completion_ids, skipped) for c in crit}
    if not isinstance(by_criterion, Mapping):
        raise FeedbackError("rankings must be an object {criterion: {completion_id: rank}}",
                            field="rankings")
    if ranks:
        raise FeedbackError("ranks: give either ranks (one criterion) or rankings (per "
                            "criterion), not both", field="ranks")
    unknown = [c for c in by_criterion if c not in crit]
    if unknown:
        raise FeedbackError(f"rankings.{unknown[0]}: '{unknown[0]}' is not a criterion of this "
                            f"item — its criteria are {list(crit)}",
                            field=f"rankings.{unknown[0]}")
    out = {}
    for c in crit:
        if c not in by_criterion and not skipped:
            raise FeedbackError(f"rankings.{c}: criterion '{c}' is missing — rank the "
                                f"completions for each of {list(crit)}", field=f"rankings.{c}")
        try:
            out[c] = validate_ranks(by_criterion.get(c, {}), item.completion_ids, skipped)
        except FeedbackError as e:
            raise FeedbackError(f"rankings.{c}: {e}", field=f"rankings.{c}") from None
    return out


def validate_flags(unsafe: Mapping[Any, Any] | None, item: Item) -> dict[int, bool]:
    """Per-completion safe/unsafe flags (True = unsafe) checked against ``item``."""
    if unsafe is None:
        return {}
    if not isinstance(unsafe, Mapping):
        raise FeedbackError("unsafe must be an object {completion_id: true/false}",
                            field="unsafe")
    ids = set(item.completion_ids)
    out: dict[int, bool] = {}
    for k, v in unsafe.items():
        cid = completion_id(k)
        if cid is None or cid not in ids:
            raise FeedbackError(f"unsafe.{k}: {k!r} is not a completion of item {item.id} — "
                                f"flag only its completions {sorted(ids)}", field=f"unsafe.{k}")
        if cid in out:
            raise FeedbackError(f"unsafe.{k}: completion {cid} is flagged twice", field="unsafe")
        if not isinstance(v, bool):
            raise FeedbackError(f"unsafe.{k} = {v!r} must be true (unsafe) or false (safe)",
                                field=f"unsafe.{k}")
        out[cid] = v
    return out


def validate_ranks(
    ranks: Mapping[Any, Any], completion_ids: Sequence[int], skipped: bool = False
) -> dict[int, int]:
    """Check one ranking against its item's completion ids; return it with int keys.

    Keys may be ints or digit strings (JSON object keys are strings). Raises
    :class:`FeedbackError` naming the field and the fix.
    """
    if not isinstance(ranks, Mapping):
        raise FeedbackError("ranks must be an object {completion_id: rank}", field="ranks")
    if skipped:
        if ranks:
            raise FeedbackError("ranks: a skipped item carries no ranks — send ranks={} with "
                                "skipped=true", field="ranks")
        return {}
    out: dict[int, int] = {}
    for k, v in ranks.items():
        cid = completion_id(k)
        if cid is None:
            raise FeedbackError(f"ranks: key {k!r} is not a completion id — use the item's "
                                "completion ids as keys, written plainly ('12', not '012')",
                                field="ranks")
        if cid in out:
            raise FeedbackError(f"ranks: completion {cid} is ranked twice — give each "
                                "completion one rank", field="ranks")
        out[cid] = v
    expected = set(completion_ids)
    k_total = len(expected)
    if len(out) != len(ranks) or set(out) != expected:
        missing = sorted(expected - set(out))
        unknown = sorted(set(out) - expected)
        detail = "; ".join(
            p for p in (f"missing {missing}" if missing else "",
                        f"unknown {unknown}" if unknown else "") if p
        ) or "duplicate keys"
        raise FeedbackError(f"ranks must rank exactly this item's completions "
                            f"{sorted(expected)} ({detail}) — give every completion one rank",
                            field="ranks")
    for cid, v in out.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= k_total:
            raise FeedbackError(f"ranks[{cid}] = {v!r} is not an integer rank in 1..{k_total} "
                                "— use 1 for best, ties share a rank", field="ranks")
    return out
