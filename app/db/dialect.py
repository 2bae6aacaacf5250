"""Every SQL difference between SQLite and PostgreSQL, in one place.

Each helper branches on :class:`Dialect` and ends in ``assert_never`` so a new
dialect cannot be half-supported.
"""

from __future__ import annotations

import enum
from typing import Any, assert_never

from sqlalchemy import ColumnElement, Connection, Select, Table, func, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

# Any constant works; it only has to be the same in every process.
FEED_LOCK_KEY = 0x52554E59  # "RUNY"


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


def insert_ignoring_conflicts(dialect: Dialect, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for idempotent bulk writes."""
    if dialect is Dialect.SQLITE:
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect is Dialect.POSTGRESQL:
        return postgresql.insert(table).on_conflict_do_nothing()
    assert_never(dialect)


def glob_match(dialect: Dialect, column: ColumnElement[str], pattern: str) -> ColumnElement[bool]:
    """Case-sensitive glob: ``*`` any run of characters (dots too), ``?`` one character."""
    if "*" not in pattern and "?" not in pattern:
        return column == pattern
    if dialect is Dialect.SQLITE:
        # GLOB is case-sensitive (LIKE is not, on SQLite); only '[' needs escaping.
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    if dialect is Dialect.POSTGRESQL:
        like = "".join(
            "%" if ch == "*" else "_" if ch == "?" else "\\" + ch if ch in "%_\\" else ch
            for ch in pattern
        )
        return column.like(like, escape="\\")
    assert_never(dialect)


def json_text_at(dialect: Dialect, column: ColumnElement[Any], key: str) -> ColumnElement[str]:
    """The text value at top-level ``key`` of a JSON object column."""
    if dialect is Dialect.SQLITE:
        # json_each rather than json_extract(column, '$."key"'): a path has no escape
        # for '"', and SQLite before 3.45 compares a path's key with the key as stored
        # (JSON-escaped, so a non-ASCII or '"' key never matched).
        pairs = func.json_each(column).table_valued("key", "value")
        return select(pairs.c.value).where(pairs.c.key == key).scalar_subquery()
    if dialect is Dialect.POSTGRESQL:
        return column.op("->>")(literal(key))
    assert_never(dialect)


def percentiles(
    dialect: Dialect, conn: Connection, column: ColumnElement[int], base: Select[Any],
    fractions: tuple[float, ...],
) -> list[int | None]:
    """Nearest-rank percentiles of ``column`` over the rows of ``base`` (non-null only).

    Nearest rank: the smallest value with at least p% of the rows at or below it,
    which is exactly PostgreSQL's ``percentile_disc``.
    """
    if dialect is Dialect.POSTGRESQL:
        rows = base.where(column.is_not(None)).subquery()
        value = rows.c[column.key]
        stmt = select(*[func.percentile_disc(f).within_group(value) for f in fractions])
        row = conn.execute(stmt).one()
        return [None if v is None else int(v) for v in row]
    if dialect is Dialect.SQLITE:
        filtered = base.where(column.is_not(None))
        n = conn.execute(select(func.count()).select_from(filtered.subquery())).scalar_one()
        if n == 0:
            return [None] * len(fractions)
        out: list[int | None] = []
        for f in fractions:
            rank = max(1, -(-round(f * 1_000_000) * n // 1_000_000))  # ceil(f * n)
            value = conn.execute(filtered.order_by(column).limit(1).offset(rank - 1)).scalar()
            out.append(None if value is None else int(value))
        return out
    assert_never(dialect)


def lock_feed(dialect: Dialect, conn: Connection) -> None:
    """Serialize writers that append to the event feed, for the rest of the transaction.

    On PostgreSQL, ids from a sequence can commit out of order; a reader that
    tails ``id > cursor`` could pass over a row that commits a moment later.
    With every feed-appending transaction holding this lock, ids commit in
    order. SQLite already has one writer at a time (BEGIN IMMEDIATE).
    """
    if dialect is Dialect.SQLITE:
        return
    if dialect is Dialect.POSTGRESQL:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FEED_LOCK_KEY})
        return
    assert_never(dialect)


FEED_CHANNEL = "runyard_feed"


def notify_feed(dialect: Dialect, conn: Connection, last_event_id: int) -> None:
    """Tell other processes that events up to ``last_event_id`` exist.

    PostgreSQL delivers a NOTIFY at commit, so listeners never hear of rows
    they cannot read yet. SQLite has no such channel; readers there poll the
    newest event id instead.
    """
    if dialect is Dialect.SQLITE:
        return
    if dialect is Dialect.POSTGRESQL:
        conn.execute(text("SELECT pg_notify(:c, :p)"),
                     {"c": FEED_CHANNEL, "p": str(last_event_id)})
        return
    assert_never(dialect)
