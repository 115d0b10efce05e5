"""Tables of the feedback store (SQLAlchemy 2 ORM).

Kept apart from ``store.py`` so the schema can be read in one screen: the store's rules
(validation, transactions, assignment) live there, the shape of the data lives here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

LABELER_KINDS = ("human", "simulated", "ai")


def utcnow() -> datetime:
    """Timezone-aware UTC, so SQLite and PostgreSQL agree on what 'created' means."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ItemRow(Base):
    """One prompt to be ranked under one or more criteria, in one feedback round.

    ``criterion`` is the first criterion (the only one in single-criterion use, and the
    column databases made before multi-criterion items have); ``criteria`` lists them all
    (NULL in those older rows, meaning ``[criterion]``). ``sensitive`` marks a harmful
    request: labelers get a content warning first and may opt out of such items.
    """

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer, default=0, index=True)
    prompt: Mapped[str] = mapped_column(Text)
    criterion: Mapped[str] = mapped_column(String(200))
    criteria: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    completions: Mapped[list[CompletionRow]] = relationship(
        back_populates="item", order_by="CompletionRow.position", cascade="all, delete-orphan"
    )


class CompletionRow(Base):
    """One of an item's K completions; ``position`` is generation order, not display order."""

    __tablename__ = "completions"
    __table_args__ = (UniqueConstraint("item_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    item: Mapped[ItemRow] = relationship(back_populates="completions")


class LabelerRow(Base):
    """A person or program that ranks; only the SHA-256 of its token is kept."""

    __tablename__ = "labelers"
    __table_args__ = (
        CheckConstraint("kind IN ('human', 'simulated', 'ai')", name="labeler_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20), default="human")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Opted out of harmful prompts: never handed a sensitive item.
    avoid_sensitive: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default=false())
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RankingRow(Base):
    """One labeler's ranking of one item under one criterion: ``ranks`` maps completion id
    -> rank (1 = best). A submission for a two-criteria item is two rows, written together;
    a skip is one skipped row per criterion. ``criterion`` is NULL only in rows written
    before multi-criterion items (meaning the item's ``criterion``)."""

    __tablename__ = "rankings"
    __table_args__ = (UniqueConstraint("item_id", "labeler_id", "criterion",
                                       name="one_ranking_per_labeler_criterion"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id"), index=True)
    criterion: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # JSON object keys are strings; the store converts them back to ints on the way out.
    ranks: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    flagged_unsafe: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FlagRow(Base):
    """A labeler's safe/unsafe judgement of one completion (PKU-SafeRLHF's ``is_safe``).

    Per completion, not per item: a cost model needs to know *which* reply was harmful.
    """

    __tablename__ = "flags"

    completion_id: Mapped[int] = mapped_column(
        ForeignKey("completions.id", ondelete="CASCADE"), primary_key=True
    )
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    unsafe: Mapped[bool] = mapped_column(Boolean)


class AssignmentRow(Base):
    """A lease: the item a labeler currently has on screen.

    Without it, several labelers who open the page at once are all handed the same item and
    it ends up ranked more than ``overlap`` times while others wait.
    """

    __tablename__ = "assignments"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id"), primary_key=True)
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CriterionRow(Base):
    """The guideline text labelers read for a criterion (e.g. 'harmlessness')."""

    __tablename__ = "criteria"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    guideline: Mapped[str] = mapped_column(Text, default="")
