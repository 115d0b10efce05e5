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

from sqlalchemy import and_, create_engine, delete, event, func, inspect, or_, select, text
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
    FlagRow,
    ItemRow,
    LabelerRow,
    RankingRow,
    utcnow,
)

ASSIGN_LOCK = 73110001  # PostgreSQL advisory lock key serialising item hand-out
LabelerKind = Literal["human", "simulated", "ai"]
ErrorCode = Literal["invalid", "not_found", "conflict", "forbidden"]
MAX_ID = 2**63 - 1  # ids are 64-bit: a larger number cannot name a row (and overflows SQLite)
MAX_CRITERION_LEN = 200  # the criterion column's width


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
        criteria=tuple(row.criteria or [row.criterion]),
        created=_aware(row.created),
        completions=tuple(
            Completion(id=c.id, position=c.position, text=c.text, meta=dict(c.meta or {}))
            for c in row.completions
        ),
        sensitive=bool(row.sensitive),
    )


def _labeler(row: LabelerRow) -> Labeler:
    return Labeler(id=row.id, name=row.name, kind=row.kind,  # type: ignore[arg-type]
                   created=_aware(row.created), avoid_sensitive=bool(row.avoid_sensitive))


def _is_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and -MAX_ID - 1 <= x <= MAX_ID


# Columns added after the first release: (table, column, DDL type and default).
_ADDED_COLUMNS = (
    ("items", "criteria", "JSON"),
    ("items", "sensitive", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("labelers", "avoid_sensitive", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("rankings", "criterion", "VARCHAR(200)"),
)


def _upgrade(engine: Engine) -> bool:
    """Add the columns an older feedback database lacks; True if its rankings table still
    has the old one-ranking-per-(item, labeler) constraint (single-criterion items only).

    Old rows read as before: NULL ``criteria`` means ``[criterion]``, NULL ranking
    ``criterion`` the item's. Rebuilding the constraint would copy the table; an old
    database keeps working for the single-criterion items it was made for.
    """
    insp = inspect(engine)
    tables = set(insp.get_table_names())
    with engine.begin() as conn:
        for table, column, ddl in _ADDED_COLUMNS:
            if table in tables and column not in {c["name"] for c in insp.get_columns(table)}:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
    if "rankings" not in tables:
        return False
    return any(sorted(u["column_names"]) == ["item_id", "labeler_id"]
               for u in insp.get_unique_constraints("rankings"))


class FeedbackStore:
    """Typed access to the feedback database; safe to share between threads."""

    def __init__(self, url: str = "sqlite:///feedback.db") -> None:
        self.url = normalize_url(url)
        self.engine = _make_engine(self.url)
        self._writer = self.engine.execution_options(alignkit_write=True)
        self._legacy_unique = _upgrade(self.engine)
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
        self._legacy_unique = False

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
        items: Sequence[tuple[str, Sequence[str]]],
        criteria: Sequence[str] | str | None = None,
        round: int = 0,
        guidelines: Mapping[str, str] | None = None,
        sensitive: Sequence[bool] | None = None,
        metas: Sequence[Sequence[Mapping[str, Any]]] | None = None,
        *,
        criterion: str | None = None,
        guideline: str | None = None,
    ) -> list[int]:
        """Add prompts with their K completions (K >= 2); returns the new item ids in order.

        Every item is ranked under each of ``criteria`` (e.g. ``["helpfulness",
        "harmlessness"]``, PKU-SafeRLHF's two); ``guidelines[c]`` is the text labelers read
        for criterion c. ``sensitive[i]`` marks item i's prompt as a harmful request.
        The older single-criterion call, ``add_items(items, "harmlessness",
        guideline=...)`` or ``criterion=``, still works. ``metas[i][k]`` (optional,
        JSON-able) is kept with completion k of item i, e.g. the policy checkpoint and
        sampling settings that produced it. Everything is checked before anything is written.
        """
        names = self._criteria_arg(criteria, criterion)
        guides = self._guidelines_arg(names, guidelines, guideline)
        if metas is not None and (
            len(metas) != len(items)
            or any(len(m) != len(rec[1]) for m, rec in zip(metas, items, strict=False))
        ):
            raise FeedbackError("metas must give one dict per completion of every item",
                                field="metas")
        if sensitive is not None and (
            isinstance(sensitive, str | bytes) or len(sensitive) != len(items)
            or not all(isinstance(x, bool) for x in sensitive)
        ):
            raise FeedbackError(f"sensitive must give one true/false per item ({len(items)})",
                                field="sensitive")
        if len(names) > 1 and self._legacy_unique:
            raise FeedbackError("this feedback database was made before multi-criterion items "
                                "(one ranking per item and labeler) — use a new database "
                                "for two criteria", field="criteria")
        for i, rec in enumerate(items):
            if not isinstance(rec, tuple | list) or len(rec) != 2:
                raise FeedbackError(f"items[{i}] is not a (prompt, completions) pair",
                                    field="items")
            prompt, completions = rec
            if not isinstance(prompt, str) or not prompt.strip():
                raise FeedbackError(f"items[{i}]: prompt is empty — give the prompt text",
                                    field="prompt")
            if isinstance(completions, str) or len(completions) < 2:
                raise FeedbackError(f"items[{i}]: needs a list of at least 2 completions to "
                                    "rank", field="completions")
            if not all(isinstance(c, str) for c in completions):
                raise FeedbackError(f"items[{i}]: every completion must be a string",
                                    field="completions")
        with self._write() as s:
            rows = [
                ItemRow(
                    round=round,
                    prompt=prompt,
                    criterion=names[0],
                    criteria=list(names),
                    sensitive=bool(sensitive[i]) if sensitive is not None else False,
                    completions=[
                        CompletionRow(position=k, text=t,
                                      meta=dict(metas[i][k]) if metas is not None else {})
                        for k, t in enumerate(comps)
                    ],
                )
                for i, (prompt, comps) in enumerate(items)
            ]
            s.add_all(rows)
            for name, text_ in guides.items():
                s.merge(CriterionRow(name=name, guideline=text_))
            s.flush()
            return [r.id for r in rows]

    @staticmethod
    def _criteria_arg(criteria: Sequence[str] | str | None, criterion: str | None
                      ) -> tuple[str, ...]:
        if criteria is not None and criterion is not None:
            raise FeedbackError("give criteria or criterion, not both", field="criteria")
        raw = criterion if criteria is None else criteria
        names = (raw,) if isinstance(raw, str) else tuple(raw or ())
        if not names:
            raise FeedbackError("criteria is empty — name the alignment criteria, e.g. "
                                "['helpfulness', 'harmlessness']", field="criteria")
        for c in names:
            if not isinstance(c, str) or not c.strip():
                raise FeedbackError("criterion is empty — name the alignment criterion, "
                                    "e.g. 'harmlessness'", field="criterion")
            if len(c) > MAX_CRITERION_LEN or c != c.strip():
                raise FeedbackError(f"criterion {c[:40]!r} must be at most {MAX_CRITERION_LEN} "
                                    "characters without surrounding spaces", field="criterion")
        if len(set(names)) != len(names):
            raise FeedbackError(f"criteria {list(names)} repeat a name — list each once",
                                field="criteria")
        return names

    @staticmethod
    def _guidelines_arg(names: tuple[str, ...], guidelines: Mapping[str, str] | None,
                        guideline: str | None) -> dict[str, str]:
        if guideline is not None:
            if guidelines is not None or len(names) != 1:
                raise FeedbackError("guideline= is for one criterion — pass guidelines="
                                    "{criterion: text} for several", field="guideline")
            guidelines = {names[0]: guideline}
        out = dict(guidelines or {})
        unknown = [k for k in out if k not in names]
        if unknown:
            raise FeedbackError(f"guidelines for {unknown} name no criterion of these items "
                                f"{list(names)}", field="guidelines")
        if not all(isinstance(v, str) for v in out.values()):
            raise FeedbackError("every guideline must be text", field="guidelines")
        return out

    def guideline(self, criterion: str) -> str:
        with self._read() as s:
            row = s.get(CriterionRow, criterion)
            return row.guideline if row else ""

    def guidelines(self, criteria: Sequence[str]) -> dict[str, str]:
        """Guideline text per criterion ('' where none was set), in the order given."""
        with self._read() as s:
            rows = {r.name: r.guideline for r in s.scalars(
                select(CriterionRow).where(CriterionRow.name.in_(list(criteria))))}
        return {c: rows.get(c, "") for c in criteria}

    def item(self, item_id: int) -> Item:
        with self._read() as s:
            row = (s.get(ItemRow, item_id, options=[selectinload(ItemRow.completions)])
                   if _is_id(item_id) else None)
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

    def set_avoid_sensitive(self, labeler_id: int, avoid: bool) -> Labeler:
        """Opt a labeler out of (or back into) harmful prompts.

        Opting out also drops a lease they hold on a sensitive item, so the page's next
        item is a benign one straight away.
        """
        if not isinstance(avoid, bool):
            raise FeedbackError("avoid_sensitive must be true or false", field="avoid_sensitive")
        with self._write() as s:
            row = s.get(LabelerRow, labeler_id) if _is_id(labeler_id) else None
            if row is None:
                raise FeedbackError(f"labeler_id {labeler_id} is unknown", field="labeler_id",
                                    code="not_found")
            row.avoid_sensitive = avoid
            if avoid:
                s.execute(delete(AssignmentRow).where(
                    AssignmentRow.labeler_id == labeler_id,
                    AssignmentRow.item_id.in_(select(ItemRow.id).where(ItemRow.sensitive))))
            s.flush()
            return _labeler(row)

    # -- rankings ---------------------------------------------------------------------------

    def submit_ranking(
        self,
        labeler_id: int,
        item_id: int,
        ranks: Mapping[Any, Any] | None = None,
        skipped: bool = False,
        flagged_unsafe: bool = False,
        require_assignment: bool = False,
        *,
        by_criterion: Mapping[str, Mapping[Any, Any]] | None = None,
        unsafe: Mapping[Any, Any] | None = None,
    ) -> int:
        """Store one submission (1 = best, ties share a rank); returns its first row's id.

        Refused with :class:`FeedbackError` (nothing written) unless every criterion of the
        item is ranked (``ranks`` for a single-criterion item, else ``by_criterion``) with
        exactly the item's completion ids and integer ranks in 1..K, every flag in
        ``unsafe`` names one of its completions, and the labeler has not already submitted
        this item. A skipped item carries no ranks. With ``require_assignment`` the item
        must also be leased to this labeler (by :meth:`next_item_for`) and the lease not
        expired.
        """
        return self.submit_rankings([RankingInput(
            labeler_id, item_id, ranks or {}, skipped, flagged_unsafe, require_assignment,
            by_criterion=by_criterion, unsafe=unsafe)])[0]

    def submit_rankings(self, batch: Sequence[RankingInput]) -> list[int]:
        """Store several submissions in one transaction: all are accepted or none is.

        Returns one id per submission: that of its first criterion's ranking row.
        """
        if not batch:
            return []
        try:
            with self._write() as s:
                groups, flags = self._checked_rows(s, batch)
                rows = [r for g in groups for r in g]
                s.add_all(rows)
                s.add_all(flags)
                s.flush()
                # The labelers are done with these items: release their leases.
                done = {(g[0].item_id, g[0].labeler_id) for g in groups}
                leased = s.execute(select(AssignmentRow.item_id, AssignmentRow.labeler_id)
                                   .where(AssignmentRow.labeler_id.in_({k[1] for k in done}))
                                   ).all()
                for item_id, labeler_id in leased:
                    if (item_id, labeler_id) in done:
                        s.execute(delete(AssignmentRow).where(
                            AssignmentRow.item_id == item_id,
                            AssignmentRow.labeler_id == labeler_id))
                return [g[0].id for g in groups]
        except IntegrityError:
            # Two concurrent submissions of the same item by the same labeler: the UNIQUE
            # constraint lets exactly one through.
            raise FeedbackError("this labeler already ranked this item — ask for the next item",
                                field="item_id", code="conflict") from None

    def _checked_rows(self, s: Session, batch: Sequence[RankingInput]
                      ) -> tuple[list[list[RankingRow]], list[FlagRow]]:
        """Validate a batch inside the write transaction (a few queries, not a few per row)."""
        for r in batch:
            for name in ("labeler_id", "item_id"):
                v = getattr(r, name)
                if isinstance(v, bool) or not isinstance(v, int):
                    raise FeedbackError(f"{name} {v!r} is not an integer id", field=name)
        # Out-of-range ids name no row: keep them out of the query (SQLite overflows).
        labeler_ids = {r.labeler_id for r in batch if _is_id(r.labeler_id)}
        item_ids = {r.item_id for r in batch if _is_id(r.item_id)}
        known_labelers = set(s.scalars(select(LabelerRow.id).where(
            LabelerRow.id.in_(labeler_ids))))
        items = {
            row.id: _item(row)
            for row in s.scalars(select(ItemRow).options(selectinload(ItemRow.completions))
                                 .where(ItemRow.id.in_(item_ids)))
        }
        submitted = set(s.execute(select(RankingRow.item_id, RankingRow.labeler_id).where(
            RankingRow.item_id.in_(item_ids), RankingRow.labeler_id.in_(labeler_ids))).all())
        handed = set(s.execute(select(AssignmentRow.item_id, AssignmentRow.labeler_id).where(
            AssignmentRow.item_id.in_(item_ids), AssignmentRow.labeler_id.in_(labeler_ids),
            AssignmentRow.expires > utcnow(),
        )).all()) if any(r.require_assignment for r in batch) else set()
        groups: list[list[RankingRow]] = []
        flags: list[FlagRow] = []
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
                raise FeedbackError(f"item_id {r.item_id} is not leased to this labeler (never "
                                    "handed out, or the lease expired) — fetch the next item "
                                    "and rank that one", field="item_id", code="forbidden")
            submitted.add(key)
            item = items[r.item_id]
            per = criterion_ranks(item, r.ranks, r.by_criterion, r.skipped)
            marks = validate_flags(r.unsafe, item)
            flagged = bool(r.flagged_unsafe) or any(marks.values())
            groups.append([
                RankingRow(item_id=r.item_id, labeler_id=r.labeler_id, criterion=c,
                           ranks={str(k): v for k, v in ranks.items()},
                           skipped=bool(r.skipped), flagged_unsafe=flagged)
                for c, ranks in per.items()
            ])
            flags += [FlagRow(completion_id=cid, labeler_id=r.labeler_id, item_id=r.item_id,
                              unsafe=u) for cid, u in marks.items()]
        return groups, flags

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
        A labeler who opted out of harmful prompts is never handed a sensitive item.
        """
        if overlap < 1:
            raise FeedbackError("overlap must be at least 1", field="overlap")
        if not _is_id(labeler_id):
            return None
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
                       *self._allowed(s, labeler_id),
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

    @staticmethod
    def _allowed(s: Session, labeler_id: int) -> list[Any]:
        """Item filters this labeler's preferences ask for (none, or: no harmful prompts)."""
        avoid = s.scalar(select(LabelerRow.avoid_sensitive).where(LabelerRow.id == labeler_id))
        return [ItemRow.sensitive.is_(False)] if avoid else []

    def _candidate(
        self, s: Session, labeler_id: int, overlap: int, now: datetime | None, round: int | None
    ) -> int | None:
        # Labelers, not rows: a two-criteria submission is two rows.
        ranked = (
            select(RankingRow.item_id, func.count(RankingRow.labeler_id.distinct()).label("n"))
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
        q = q.where(and_(~ItemRow.id.in_(self._seen(labeler_id)), load < overlap,
                         *self._allowed(s, labeler_id)))
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
        criterion: str | None = None,
    ) -> list[Ranking]:
        """Submitted rankings in submission order (one per criterion of a submission), each
        with its item, labeler and that labeler's safe/unsafe flags on the item."""
        crit = func.coalesce(RankingRow.criterion, ItemRow.criterion)
        with self._read() as s:
            q = select(RankingRow, crit).join(ItemRow, ItemRow.id == RankingRow.item_id)
            if round is not None:
                q = q.where(ItemRow.round == round)
            if labeler_id is not None:
                q = q.where(RankingRow.labeler_id == labeler_id)
            if not include_skipped:
                q = q.where(RankingRow.skipped.is_(False))
            if criterion is not None:
                q = q.where(crit == criterion)
            rows = list(s.execute(q.order_by(RankingRow.id)))
            item_ids = {r.item_id for r, _ in rows}
            items: dict[int, Item] = {}
            marks: dict[tuple[int, int], dict[int, bool]] = {}
            if item_ids:
                for ir in s.scalars(select(ItemRow).options(selectinload(ItemRow.completions))
                                    .where(ItemRow.id.in_(item_ids))):
                    items[ir.id] = _item(ir)
                for f in s.scalars(select(FlagRow).where(FlagRow.item_id.in_(item_ids))):
                    marks.setdefault((f.item_id, f.labeler_id), {})[f.completion_id] = f.unsafe
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
                    criterion=c,
                    unsafe=dict(marks.get((r.item_id, r.labeler_id), {})),
                )
                for r, c in rows
            ]

    def ranking_counts(self, round: int | None = None) -> dict[int, int]:
        """Labelers who ranked (did not skip) each item (0 for items nobody ranked yet)."""
        with self._read() as s:
            q = (
                select(ItemRow.id, func.count(RankingRow.labeler_id.distinct()))
                .outerjoin(RankingRow, and_(RankingRow.item_id == ItemRow.id,
                                            RankingRow.skipped.is_(False)))
                .group_by(ItemRow.id)
            )
            if round is not None:
                q = q.where(ItemRow.round == round)
            return {int(i): int(n) for i, n in s.execute(q)}

    def counts(self) -> dict[str, int]:
        """Totals for status lines and checks: items, completions, labelers, ranking rows
        (one per criterion), skipped rows, item-level unsafe flags, per-completion flags."""
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
                "flags": n(select(func.count()).select_from(FlagRow)),
                "assignments": n(select(func.count()).select_from(AssignmentRow)),
            }


def _completion_id(k: Any) -> int | None:
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
        cid = _completion_id(k)
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
        cid = _completion_id(k)
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
