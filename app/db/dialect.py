"""Every SQL difference between SQLite and PostgreSQL, in one place.

Each helper branches on :class:`Dialect` and ends in ``assert_never`` so a new
dialect cannot be half-supported.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any, assert_never

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Select,
    Table,
    cast,
    extract,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
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
        ranks = [max(1, -(-round(f * 1_000_000) * n // 1_000_000))  # ceil(f * n)
                 for f in fractions]
        if base.whereclause is not None:
            # Filtered: number the matching values in order in one pass and
            # pick the ranks. ``+ 0`` hides the index on ``column``: SQLite,
            # which keeps no statistics, would walk it and read every row to
            # test the filter (seconds for a 24 h range over a million runs).
            ranked = filtered.add_columns(
                func.row_number().over(order_by=column + 0).label("rn")).subquery()
            stmt = select(ranked.c[column.key], ranked.c.rn).where(ranked.c.rn.in_(ranks))
            at = {rn: value for value, rn in conn.execute(stmt)}
            return [int(at[rank]) for rank in ranks]
        # Unfiltered: walk the index on ``column`` (no row is read), from the
        # nearer end: the rank-th smallest is the (n - rank + 1)-th largest.
        out: list[int | None] = []
        for rank in ranks:
            if rank > n - rank + 1:
                stmt = filtered.order_by(column.desc()).limit(1).offset(n - rank)
            else:
                stmt = filtered.order_by(column).limit(1).offset(rank - 1)
            value = conn.execute(stmt).scalar()
            out.append(None if value is None else int(value))
        return out
    assert_never(dialect)


def insert_many(dialect: Dialect, conn: Connection, table: Table,
                rows: list[dict[str, Any]]) -> None:
    """``INSERT`` ``rows`` (each with the keys of the first) in one executemany.

    On SQLite the values go straight to the driver, bound by the columns' own
    types (JSON serialized as SQLAlchemy would), skipping SQLAlchemy's per-row
    parameter bookkeeping, about a fifth of the insert time of a bulk ingest.
    Errors still arrive as SQLAlchemy's ``IntegrityError`` (ingest answers 409).
    PostgreSQL keeps SQLAlchemy's batched path.
    """
    if dialect is Dialect.POSTGRESQL:
        conn.execute(insert(table), rows)
        return
    if dialect is Dialect.SQLITE:
        compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(rows[0]))
        binds = [(key, table.c[key].type.dialect_impl(conn.dialect).bind_processor(conn.dialect))
                 for key in compiled.positiontup or ()]
        conn.exec_driver_sql(compiled.string, [
            tuple(row[key] if bind is None else bind(row[key]) for key, bind in binds)
            for row in rows])
        return
    assert_never(dialect)


@contextmanager
def references_checked(dialect: Dialect, conn: Connection, checked: bool) -> Iterator[None]:
    """Around a transaction on ``conn``: with ``checked`` False, SQLite skips its
    foreign-key checks (a lookup of the parent row for every child row).

    Only for a write whose rows reference nothing but rows it inserts itself
    (the bulk import). SQLite ignores the pragma inside a transaction, so this
    must enclose ``begin``. PostgreSQL always checks.
    """
    if checked or dialect is not Dialect.SQLITE:
        yield
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def groups_by_sorting(dialect: Dialect) -> bool:
    """True when a GROUP BY that no index order serves sorts every row (SQLite has
    no hash aggregate): there, counting each group's index range on its own is
    far cheaper. PostgreSQL hashes in one pass, which beats many range scans."""
    if dialect is Dialect.SQLITE:
        return True
    if dialect is Dialect.POSTGRESQL:
        return False
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


def now_ms_sql(dialect: Dialect) -> ColumnElement[int]:
    """The database server's clock in epoch milliseconds, as a SQL expression.

    Leases are set and judged by this one clock, so workers on machines whose
    clocks disagree still agree on when a lease has expired.
    """
    if dialect is Dialect.SQLITE:
        # julianday('now') carries milliseconds; 2440587.5 is the Unix epoch.
        return cast((func.julianday("now") - 2440587.5) * 86400000.0, BigInteger)
    if dialect is Dialect.POSTGRESQL:
        # clock_timestamp(), not now(): now() is frozen at the transaction's start.
        return cast(extract("epoch", func.clock_timestamp()) * 1000, BigInteger)
    assert_never(dialect)


def claim_one(dialect: Dialect, conn: Connection, table: Table, key: ColumnElement[Any],
              order_by: ColumnElement[Any], where: list[ColumnElement[bool]],
              values: dict[str, Any]) -> Any:
    """Atomically take the first row matching ``where`` (in ``order_by`` order):
    apply ``values`` to it and return it, or None when no row matches.

    Both dialects run one ``UPDATE … WHERE key = (first candidate) RETURNING *``.
    On PostgreSQL the candidate is chosen ``FOR UPDATE SKIP LOCKED``: concurrent
    claimers each take a different row instead of queueing on the same one, and
    a row another transaction is changing is passed over, not waited for. SQLite
    has one writer at a time (``BEGIN IMMEDIATE``), so the statement is atomic
    as it stands.
    """
    candidate = select(key).where(*where).order_by(order_by).limit(1)
    if dialect is Dialect.SQLITE:
        pass
    elif dialect is Dialect.POSTGRESQL:
        candidate = candidate.with_for_update(skip_locked=True)
    else:
        assert_never(dialect)
    stmt = (update(table).where(key == candidate.scalar_subquery()).values(values)
            .returning(*table.c))
    return conn.execute(stmt).mappings().first()



# 100 rows x a few columns stays far below SQLite's limit of 32,766 variables.
_ROWS_PER_INSERT = 100


def insert_rows(dialect: Dialect, conn: Connection, table: Table, columns: tuple[str, ...],
                rows: list[tuple[Any, ...]], *, rows_per_statement: int = _ROWS_PER_INSERT,
                ) -> None:
    """Insert many rows of plain values fast (JSON columns as JSON text).

    For a job's output: a hundred thousand lines a second is the aim, and the
    ORM-free ``executemany`` of SQLite's driver, or PostgreSQL's ``COPY``, is
    several times faster than a compiled multi-row ``INSERT … RETURNING``.
    ``rows_per_statement`` applies to SQLite (see where OTLP tool calls set it).
    """
    if not rows:
        return
    names = ", ".join(columns)
    if dialect is Dialect.SQLITE:
        # Many rows per statement: SQLite then runs one statement per hundred
        # rows instead of one per row, about twice as fast.
        one = "(" + ", ".join("?" * len(columns)) + ")"
        per = rows_per_statement
        full, rest = divmod(len(rows), per)
        if per == 1:
            conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES {one}", rows)
        elif full:
            many = ", ".join([one] * per)
            conn.exec_driver_sql(
                f"INSERT INTO {table.name} ({names}) VALUES {many}",
                [tuple(chain.from_iterable(rows[k:k + per])) for k in range(0, full * per, per)])
        if rest:
            conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES {one}",
                                 rows[full * per:])
        return
    if dialect is Dialect.POSTGRESQL:
        import psycopg

        raw = conn.connection.driver_connection
        assert raw is not None
        statement = f"COPY {table.name} ({names}) FROM STDIN"
        try:
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            # COPY goes around SQLAlchemy, so its errors come unwrapped; wrapped,
            # a failing database is the same 503 as on every other write.
            raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
        return
    assert_never(dialect)
