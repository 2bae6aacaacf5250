"""The executions list: one page in a stable order, by keyset cursor.

Pages fetch ``limit + 1`` rows to know whether another page exists. Ties on
the sort value break on ``id`` in the sort's direction, so a walk never skips
or repeats a row. Rows without a duration come last in both duration sorts;
that is done as two index-friendly queries (rows with a duration, then rows
without) instead of an ``ORDER BY duration_ms IS NULL`` that no index serves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select, tuple_

from app.db.dialect import Dialect
from app.db.models import executions
from app.store.cursor import Cursor
from app.store.filters import ExecutionFilter

e = executions.c


def _after(column: ColumnElement[Any], desc: bool, value: Any, id_: str) -> ColumnElement[bool]:
    if desc:
        return tuple_(column, e.id) < tuple_(value, id_)
    return tuple_(column, e.id) > tuple_(value, id_)


def _ordered(stmt: Select[Any], column: ColumnElement[Any], desc: bool) -> Select[Any]:
    if desc:
        return stmt.order_by(column.desc(), e.id.desc())
    return stmt.order_by(column.asc(), e.id.asc())


def list_page(
    conn: Connection, dialect: Dialect, flt: ExecutionFilter, sort: str, limit: int,
    cursor: Cursor | None,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of execution rows and the cursor of the next page (or None)."""
    key, direction = sort.split(":")
    desc = direction == "desc"
    conds = flt.conditions(dialect)
    base = select(executions).where(*conds)
    rows: list[Any]
    if key == "created_at":
        stmt = base
        if cursor is not None:
            stmt = stmt.where(_after(e.created_at, desc, cursor.value, cursor.id))
        rows = list(conn.execute(_ordered(stmt, e.created_at, desc).limit(limit + 1)).mappings())
    else:
        rows = []
        if cursor is None or cursor.value is not None:
            stmt = base.where(e.duration_ms.is_not(None))
            if cursor is not None:
                stmt = stmt.where(_after(e.duration_ms, desc, cursor.value, cursor.id))
            rows = list(conn.execute(
                _ordered(stmt, e.duration_ms, desc).limit(limit + 1)).mappings())
        if len(rows) <= limit:
            stmt = base.where(e.duration_ms.is_(None))
            if cursor is not None and cursor.value is None:
                stmt = stmt.where(e.id < cursor.id if desc else e.id > cursor.id)
            more = conn.execute(
                _ordered(stmt, e.id, desc).limit(limit + 1 - len(rows))).mappings()
            rows.extend(more)
    page = [dict(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = Cursor(sort, last[key], last["id"])
    return page, next_cursor


