# Over 400 lines: the store's schema queries and their transactions, one database API.
"""The feedback store: prompts, completions, labelers and their rankings, in one database.

SQLite (the default, one file in the run directory) or PostgreSQL (a labeler team on a
shared server), chosen by URL. Every write is one transaction, and every submission is
validated inside that transaction, so a refused submission leaves nothing behind and an
accepted one is durable once the call returns.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import and_, create_engine, delete, event, func, or_, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.pool import StaticPool

from alignkit.feedback.schema import (
    LABELER_KINDS,
    AssignmentRow,
    Base,
    CompletionRow,
    CriterionRow,
    ItemRow,
    LabelerRow,
    RankingRow,
    utcnow,
)

ASSIGN_LOCK = 73110001  # PostgreSQL advisory lock key serialising item hand-out
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
    id: int
    round: int
    prompt: str
    criterion: str
    created: datetime
    completions: tuple[Completion, ...]

    @property
    def completion_ids(self) -> list[int]:
        return [c.id for c in self.completions]


@dataclass(frozen=True)
class Labeler:
    id: int
    name: str
    kind: LabelerKind
    created: datetime


@dataclass(frozen=True)
class Ranking:
    """A submitted ranking, with its item and labeler attached so exports need no lookups."""

    id: int
    item: Item
    labeler: Labeler
    ranks: dict[int, int]
    skipped: bool
    flagged_unsafe: bool
    created: datetime

    @property
    def item_id(self) -> int:
        return self.item.id

    @property
    def labeler_id(self) -> int:
        return self.labeler.id


@dataclass(frozen=True)
class RankingInput:
    """One submission for :meth:`FeedbackStore.submit_rankings` (batch of the same checks)."""

    labeler_id: int
    item_id: int
    ranks: Mapping[int, int]
    skipped: bool = False
    flagged_unsafe: bool = False
    # The web app sets this: a labeler may only rank an item that was handed to them.
    require_assignment: bool = False


def hash_token(token: str) -> str:
    """SHA-256 hex: tokens are high-entropy random strings, so a plain hash suffices."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` (what people type) and route it to psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _make_engine(url: str) -> Engine:
    u = make_url(normalize_url(url))
    if u.get_backend_name() != "sqlite":
        return create_engine(u, pool_pre_ping=True, pool_size=10, max_overflow=20)
    memory = u.database in (None, "", ":memory:")
    if not memory:
        Path(u.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    if memory:
        # One shared connection, or each thread would see its own empty database.
        engine = create_engine(
            u, connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
    else:
        engine = create_engine(
            u,
            connect_args={"check_same_thread": False, "timeout": 30.0},
            pool_size=20,
            max_overflow=30,
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            # WAL: readers never block the writer, and a killed server keeps every commit.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write transaction takes the write lock up front (IMMEDIATE): a deferred one that
        # reads first and writes later fails with SQLITE_BUSY instead of waiting its turn.
        write = conn.get_execution_options().get("alignkit_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we stored was UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _item(row: ItemRow) -> Item:
    return Item(
        id=row.id,
        round=row.round,
        prompt=row.prompt,
        criterion=row.criterion,
        created=_aware(row.created),
        completions=tuple(
            Completion(id=c.id, position=c.position, text=c.text, meta=dict(c.meta or {}))
            for c in row.completions
        ),
    )


def _labeler(row: LabelerRow) -> Labeler:
    return Labeler(id=row.id, name=row.name, kind=row.kind, created=_aware(row.created))  # type: ignore[arg-type]


class FeedbackStore:
    """Typed access to the feedback database; safe to share between threads."""

    def __init__(self, url: str = "sqlite:///feedback.db") -> None:
        self.url = normalize_url(url)
        self.engine = _make_engine(self.url)
        self._writer = self.engine.execution_options(alignkit_write=True)
        Base.metadata.create_all(self.engine)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def reset(self) -> None:
        """Delete every item, labeler and ranking (drop and recreate the tables).

        Use this rather than deleting an SQLite file: in WAL mode the file has ``-wal`` and
        ``-shm`` companions, and a stale ``-wal`` left next to a new database file can
        replay old pages into it.
        """
        Base.metadata.drop_all(self.engine)
        Base.metadata.create_all(self.engine)

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions ---------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        with Session(self._writer, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    # -- items ------------------------------------------------------------------------------

    def add_items(
        self,
        prompts_and_completions: Sequence[tuple[str, Sequence[str]]],
        criterion: str,
        round: int = 0,
        guideline: str | None = None,
        metas: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    ) -> list[int]:
        """Add prompts with their K completions (K >= 2); returns the new item ids in order.

        ``metas[i][k]`` (optional, JSON-able) is kept with completion k of item i, e.g. the
        policy checkpoint and sampling settings that produced it.
        """
        if metas is not None and (
            len(metas) != len(prompts_and_completions)
            or any(len(m) != len(rec[1]) for m, rec in zip(metas, prompts_and_completions,
                                                           strict=False))
        ):
            raise FeedbackError("metas must give one dict per completion of every item",
                                field="metas")
        if not criterion or not criterion.strip():
            raise FeedbackError("criterion is empty — name the alignment criterion, "
                                "e.g. 'harmlessness'", field="criterion")
        for i, rec in enumerate(prompts_and_completions):
            if not isinstance(rec, tuple | list) or len(rec) != 2:
                raise FeedbackError(f"prompts_and_completions[{i}] is not a (prompt, "
                                    "completions) pair", field="prompts_and_completions")
            prompt, completions = rec
            if not isinstance(prompt, str) or not prompt.strip():
                raise FeedbackError(f"prompts_and_completions[{i}]: prompt is empty — give "
                                    "the prompt text", field="prompt")
            if isinstance(completions, str) or len(completions) < 2:
                raise FeedbackError(f"prompts_and_completions[{i}]: needs a list of at least 2 "
                                    "completions to rank", field="completions")
            if not all(isinstance(c, str) for c in completions):
                raise FeedbackError(f"prompts_and_completions[{i}]: every completion must be "
                                    "a string", field="completions")
        with self._write() as s:
            rows = [
                ItemRow(
                    round=round,
                    prompt=prompt,
                    criterion=criterion,
                    completions=[
                        CompletionRow(position=k, text=t,
                                      meta=dict(metas[i][k]) if metas is not None else {})
                        for k, t in enumerate(comps)
                    ],
                )
                for i, (prompt, comps) in enumerate(prompts_and_completions)
            ]
            s.add_all(rows)
            if guideline is not None:
                s.merge(CriterionRow(name=criterion, guideline=guideline))
            s.flush()
            return [r.id for r in rows]

    def guideline(self, criterion: str) -> str:
        with self._read() as s:
            row = s.get(CriterionRow, criterion)
            return row.guideline if row else ""

    def item(self, item_id: int) -> Item:
        with self._read() as s:
            row = s.get(ItemRow, item_id, options=[selectinload(ItemRow.completions)])
            if row is None:
                raise FeedbackError(f"item_id {item_id} does not exist — ask for the next item",
                                    field="item_id", code="not_found")
            return _item(row)

    def items(self, round: int | None = None) -> list[Item]:
        with self._read() as s:
            q = select(ItemRow).options(selectinload(ItemRow.completions)).order_by(ItemRow.id)
            if round is not None:
                q = q.where(ItemRow.round == round)
            return [_item(r) for r in s.scalars(q)]

    def rounds(self) -> list[int]:
        with self._read() as s:
            return list(s.scalars(select(ItemRow.round).distinct().order_by(ItemRow.round)))

    # -- labelers ---------------------------------------------------------------------------

    def add_labeler(self, name: str, kind: LabelerKind = "human") -> tuple[int, str]:
        """Register a labeler; returns (id, token). The token is shown once, only its hash kept."""
        if not name or not name.strip():
            raise FeedbackError("name is empty — give the labeler a name", field="name")
        if kind not in LABELER_KINDS:
            raise FeedbackError(f"kind '{kind}' is unknown — use one of {', '.join(LABELER_KINDS)}",
                                field="kind")
        token = secrets.token_urlsafe(24)
        try:
            with self._write() as s:
                if s.scalar(select(LabelerRow.id).where(LabelerRow.name == name)) is not None:
                    raise FeedbackError(f"labeler name '{name}' is taken — choose another name",
                                        field="name", code="conflict")
                row = LabelerRow(name=name, kind=kind, token_hash=hash_token(token))
                s.add(row)
                s.flush()
                return row.id, token
        except IntegrityError:
            raise FeedbackError(f"labeler name '{name}' is taken — choose another name",
                                field="name", code="conflict") from None

    def labeler_by_token(self, token: str | None) -> Labeler | None:
        if not token:
            return None
        with self._read() as s:
            row = s.scalar(select(LabelerRow).where(LabelerRow.token_hash == hash_token(token)))
            return _labeler(row) if row else None

    def labeler_by_name(self, name: str) -> Labeler | None:
        with self._read() as s:
            row = s.scalar(select(LabelerRow).where(LabelerRow.name == name))
            return _labeler(row) if row else None

    def labelers(self) -> list[Labeler]:
        with self._read() as s:
            return [_labeler(r) for r in s.scalars(select(LabelerRow).order_by(LabelerRow.id))]

    # -- rankings ---------------------------------------------------------------------------

    def submit_ranking(
        self,
        labeler_id: int,
        item_id: int,
        ranks: Mapping[int, int],
        skipped: bool = False,
        flagged_unsafe: bool = False,
        require_assignment: bool = False,
    ) -> int:
        """Store one ranking (1 = best, ties share a rank); returns its id.

        Refused with :class:`FeedbackError` (nothing written) unless ``ranks`` covers exactly
        the item's completion ids with integer ranks in 1..K and the labeler has not already
        submitted this item. A skipped item carries no ranks. With ``require_assignment``
        the item must also have been handed to this labeler by :meth:`next_item_for`.
        """
        return self.submit_rankings(
            [RankingInput(labeler_id, item_id, ranks, skipped, flagged_unsafe, require_assignment)]
        )[0]

    def submit_rankings(self, batch: Sequence[RankingInput]) -> list[int]:
        """Store several rankings in one transaction: all are accepted or none is."""
        if not batch:
            return []
        try:
            with self._write() as s:
                rows = self._checked_rows(s, batch)
                s.add_all(rows)
                s.flush()
                # The labelers are done with these items: release their leases.
                labeler_ids = {r.labeler_id for r in rows}
                leased = s.execute(select(AssignmentRow.item_id, AssignmentRow.labeler_id)
                                   .where(AssignmentRow.labeler_id.in_(labeler_ids))).all()
                done = {(r.item_id, r.labeler_id) for r in rows}
                for item_id, labeler_id in leased:
                    if (item_id, labeler_id) in done:
                        s.execute(delete(AssignmentRow).where(
                            AssignmentRow.item_id == item_id,
                            AssignmentRow.labeler_id == labeler_id))
                return [r.id for r in rows]
        except IntegrityError:
            # Two concurrent submissions of the same item by the same labeler: the UNIQUE
            # constraint lets exactly one through.
            raise FeedbackError("this labeler already ranked this item — ask for the next item",
                                field="item_id", code="conflict") from None

    def _checked_rows(self, s: Session, batch: Sequence[RankingInput]) -> list[RankingRow]:
        """Validate a batch inside the write transaction (a few queries, not a few per row)."""
        labeler_ids = {r.labeler_id for r in batch}
        item_ids = {r.item_id for r in batch}
        for name, ids in (("labeler_id", labeler_ids), ("item_id", item_ids)):
            bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int)]
            if bad:
                raise FeedbackError(f"{name} {bad[0]!r} is not an integer id", field=name)
        known_labelers = set(s.scalars(select(LabelerRow.id).where(
            LabelerRow.id.in_(labeler_ids))))
        items = {
            row.id: [c.id for c in row.completions]
            for row in s.scalars(select(ItemRow).options(selectinload(ItemRow.completions))
                                 .where(ItemRow.id.in_(item_ids)))
        }
        submitted = set(s.execute(select(RankingRow.item_id, RankingRow.labeler_id).where(
            RankingRow.item_id.in_(item_ids), RankingRow.labeler_id.in_(labeler_ids))).all())
        handed = set(s.execute(select(AssignmentRow.item_id, AssignmentRow.labeler_id).where(
            AssignmentRow.item_id.in_(item_ids), AssignmentRow.labeler_id.in_(labeler_ids)
        )).all()) if any(r.require_assignment for r in batch) else set()
        rows = []
        for r in batch:
            if r.labeler_id not in known_labelers:
                raise FeedbackError(f"labeler_id {r.labeler_id} is unknown — register the "
                                    "labeler first", field="labeler_id", code="not_found")
            if r.item_id not in items:
                raise FeedbackError(f"item_id {r.item_id} does not exist — ask for the next "
                                    "item", field="item_id", code="not_found")
            key = (r.item_id, r.labeler_id)
            if key in submitted:
                raise FeedbackError(f"item_id {r.item_id} was already ranked by this labeler — "
                                    "ask for the next item", field="item_id", code="conflict")
            if r.require_assignment and key not in handed:
                raise FeedbackError(f"item_id {r.item_id} was not handed to this labeler — "
                                    "fetch the next item and rank that one", field="item_id",
                                    code="forbidden")
            submitted.add(key)
            ranks = validate_ranks(r.ranks, items[r.item_id], r.skipped)
            rows.append(RankingRow(
                item_id=r.item_id,
                labeler_id=r.labeler_id,
                ranks={str(k): v for k, v in ranks.items()},
                skipped=bool(r.skipped),
                flagged_unsafe=bool(r.flagged_unsafe),
            ))
        return rows

    def next_item_for(
        self,
        labeler_id: int,
        overlap: int,
        lease_s: float | None = None,
        round: int | None = None,
    ) -> Item | None:
        """An item this labeler has not seen and that fewer than ``overlap`` labelers ranked.

        Items closest to complete come first (so finished items accumulate), ties broken by
        a per-labeler shuffle (so a team does not all start on the same item). With
        ``lease_s`` the item is reserved for this labeler for that long and counts toward
        ``overlap`` meanwhile, so labelers who open the page together get different items;
        asking again returns the same reserved item. Skipped rankings do not count toward
        ``overlap`` (someone else must rank the item) but the labeler never sees it again.
        """
        if overlap < 1:
            raise FeedbackError("overlap must be at least 1", field="overlap")
        if lease_s is None:
            with self._read() as s:
                item_id = self._candidate(s, labeler_id, overlap, None, round)
                return self._load(s, item_id)
        now = utcnow()
        with self._write() as s:
            if self.backend == "postgresql":
                # READ COMMITTED lets concurrent hand-outs all see the same counts and give
                # one item to everyone; this lock (released at commit) takes turns, as
                # SQLite's BEGIN IMMEDIATE does.
                s.execute(select(func.pg_advisory_xact_lock(ASSIGN_LOCK)))
            held = s.scalar(
                select(AssignmentRow.item_id)
                .join(ItemRow, ItemRow.id == AssignmentRow.item_id)
                .where(AssignmentRow.labeler_id == labeler_id, AssignmentRow.expires > now,
                       ~AssignmentRow.item_id.in_(self._seen(labeler_id)),
                       *([ItemRow.round == round] if round is not None else []))
                .order_by(AssignmentRow.item_id)
                .limit(1)
            )
            item_id = held if held is not None else self._candidate(
                s, labeler_id, overlap, now, round)
            s.execute(delete(AssignmentRow).where(
                AssignmentRow.labeler_id == labeler_id,
                or_(AssignmentRow.expires <= now, AssignmentRow.item_id != (item_id or -1)),
            ))
            if item_id is not None:
                s.merge(AssignmentRow(item_id=item_id, labeler_id=labeler_id,
                                      expires=now + timedelta(seconds=lease_s)))
            return self._load(s, item_id)

    @staticmethod
    def _seen(labeler_id: int) -> Any:
        return select(RankingRow.item_id).where(RankingRow.labeler_id == labeler_id)

    def _candidate(
        self, s: Session, labeler_id: int, overlap: int, now: datetime | None, round: int | None
    ) -> int | None:
        ranked = (
            select(RankingRow.item_id, func.count().label("n"))
            .where(RankingRow.skipped.is_(False))
            .group_by(RankingRow.item_id)
            .subquery()
        )
        load = func.coalesce(ranked.c.n, 0)
        q = select(ItemRow.id).outerjoin(ranked, ranked.c.item_id == ItemRow.id)
        if now is not None:
            leased = (
                select(AssignmentRow.item_id, func.count().label("n"))
                .where(AssignmentRow.expires > now, AssignmentRow.labeler_id != labeler_id)
                .group_by(AssignmentRow.item_id)
                .subquery()
            )
            q = q.outerjoin(leased, leased.c.item_id == ItemRow.id)
            load = load + func.coalesce(leased.c.n, 0)
        shuffle = (ItemRow.id * 7919 + labeler_id * 104729) % 1000003
        q = q.where(and_(~ItemRow.id.in_(self._seen(labeler_id)), load < overlap))
        if round is not None:
            q = q.where(ItemRow.round == round)
        q = q.order_by(func.coalesce(ranked.c.n, 0).desc(), shuffle, ItemRow.id).limit(1)
        return s.scalar(q)

    @staticmethod
    def _load(s: Session, item_id: int | None) -> Item | None:
        if item_id is None:
            return None
        row = s.get(ItemRow, item_id, options=[selectinload(ItemRow.completions)])
        return _item(row) if row else None

    def rankings(
        self,
        round: int | None = None,
        *,
        labeler_id: int | None = None,
        include_skipped: bool = True,
    ) -> list[Ranking]:
        """Submitted rankings in submission order, each with its item and labeler."""
        with self._read() as s:
            q = select(RankingRow, ItemRow.round).join(ItemRow, ItemRow.id == RankingRow.item_id)
            if round is not None:
                q = q.where(ItemRow.round == round)
            if labeler_id is not None:
                q = q.where(RankingRow.labeler_id == labeler_id)
            if not include_skipped:
                q = q.where(RankingRow.skipped.is_(False))
            rows = [r for r, _ in s.execute(q.order_by(RankingRow.id))]
            item_ids = {r.item_id for r in rows}
            items: dict[int, Item] = {}
            if item_ids:
                for ir in s.scalars(select(ItemRow).options(selectinload(ItemRow.completions))
                                    .where(ItemRow.id.in_(item_ids))):
                    items[ir.id] = _item(ir)
            labelers = {lr.id: _labeler(lr) for lr in s.scalars(select(LabelerRow))}
            return [
                Ranking(
                    id=r.id,
                    item=items[r.item_id],
                    labeler=labelers[r.labeler_id],
                    ranks={int(k): int(v) for k, v in (r.ranks or {}).items()},
                    skipped=r.skipped,
                    flagged_unsafe=r.flagged_unsafe,
                    created=_aware(r.created),
                )
                for r in rows
            ]

    def ranking_counts(self, round: int | None = None) -> dict[int, int]:
        """Non-skipped rankings per item id (0 for items nobody ranked yet)."""
        with self._read() as s:
            q = (
                select(ItemRow.id, func.count(RankingRow.id))
                .outerjoin(RankingRow, and_(RankingRow.item_id == ItemRow.id,
                                            RankingRow.skipped.is_(False)))
                .group_by(ItemRow.id)
            )
            if round is not None:
                q = q.where(ItemRow.round == round)
            return {int(i): int(n) for i, n in s.execute(q)}

    def counts(self) -> dict[str, int]:
        """Totals for status lines: items, completions, labelers, rankings, skipped, flagged."""
        with self._read() as s:
            def n(q: Any) -> int:
                return int(s.scalar(q) or 0)

            return {
                "items": n(select(func.count()).select_from(ItemRow)),
                "completions": n(select(func.count()).select_from(CompletionRow)),
                "labelers": n(select(func.count()).select_from(LabelerRow)),
                "rankings": n(select(func.count()).select_from(RankingRow)
                              .where(RankingRow.skipped.is_(False))),
                "skipped": n(select(func.count()).select_from(RankingRow)
                             .where(RankingRow.skipped.is_(True))),
                "flagged_unsafe": n(select(func.count()).select_from(RankingRow)
                                    .where(RankingRow.flagged_unsafe.is_(True))),
            }


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
        try:
            cid = int(k) if not isinstance(k, bool) else None
        except (TypeError, ValueError):
            cid = None
        if cid is None or str(cid) != str(k).strip():
            raise FeedbackError(f"ranks: key {k!r} is not a completion id — use the item's "
                                "completion ids as keys", field="ranks")
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
