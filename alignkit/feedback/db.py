"""The feedback database's engine: URL spelling, SQLite settings, upgrading old files.

Kept apart from the store so its rules (transactions, validation, hand-out) read without
the connection plumbing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

MAX_ID = 2**63 - 1  # ids are 64-bit: a larger number cannot name a row (and overflows SQLite)


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` (what people type) and route it to psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
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


def aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we stored was UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def is_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and -MAX_ID - 1 <= x <= MAX_ID


# Columns added after the first release: (table, column, DDL type and default).
_ADDED_COLUMNS = (
    ("items", "criteria", "JSON"),
    ("items", "sensitive", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("labelers", "avoid_sensitive", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("rankings", "criterion", "VARCHAR(200)"),
)


def upgrade(engine: Engine) -> bool:
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
