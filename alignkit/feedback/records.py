"""The feedback store's plain records: what its methods take and return.

Frozen dataclasses with no database in them, so the agreement, pairs and simulation code
(and its tests) can build and read them without SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

LabelerKind = Literal["human", "simulated", "ai"]
ErrorCode = Literal["invalid", "not_found", "conflict", "forbidden"]


class FeedbackError(ValueError):
    """A refused operation. ``field`` names what was wrong, ``code`` lets the API pick 4xx."""

    def __init__(self, message: str, *, field: str = "", code: ErrorCode = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


@dataclass(frozen=True)
class Completion:
    id: int
    position: int
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    """A prompt and its completions, ranked under each of ``criteria`` (first = primary).

    ``sensitive``: the prompt is a harmful request (content warning, labelers may opt out).
    """

    id: int
    round: int
    prompt: str
    criteria: tuple[str, ...]
    created: datetime
    completions: tuple[Completion, ...]
    sensitive: bool = False

    @property
    def criterion(self) -> str:
        """The first criterion: the only one in single-criterion use."""
        return self.criteria[0]

    @property
    def completion_ids(self) -> list[int]:
        return [c.id for c in self.completions]


@dataclass(frozen=True)
class Labeler:
    id: int
    name: str
    kind: LabelerKind
    created: datetime
    avoid_sensitive: bool = False


@dataclass(frozen=True)
class Ranking:
    """A submitted ranking under one criterion, with its item and labeler attached so
    exports need no lookups. ``unsafe`` holds the labeler's safe/unsafe flags on the item's
    completions (completion id -> True if unsafe), the same for each criterion's ranking
    of one submission; empty when the labeler flagged none either way."""

    id: int
    item: Item
    labeler: Labeler
    ranks: dict[int, int]
    skipped: bool
    flagged_unsafe: bool
    created: datetime
    criterion: str = ""
    unsafe: dict[int, bool] = field(default_factory=dict)

    @property
    def item_id(self) -> int:
        return self.item.id

    @property
    def labeler_id(self) -> int:
        return self.labeler.id


@dataclass(frozen=True)
class RankingInput:
    """One submission for :meth:`FeedbackStore.submit_rankings` (batch of the same checks).

    ``ranks`` ranks a single-criterion item; ``by_criterion`` (criterion -> ranks) must
    rank every criterion of the item instead. ``unsafe`` maps completion ids to a
    safe/unsafe flag (True = unsafe); ``flagged_unsafe`` is the older item-level flag.
    """

    labeler_id: int
    item_id: int
    ranks: Mapping[Any, Any] = field(default_factory=dict)
    skipped: bool = False
    flagged_unsafe: bool = False
    # The web app sets this: a labeler may only rank an item that was handed to them.
    require_assignment: bool = False
    by_criterion: Mapping[str, Mapping[Any, Any]] | None = None
    unsafe: Mapping[Any, Any] | None = None
