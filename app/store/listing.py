"""The executions list: one page in a stable order, by keyset cursor.

Pages fetch ``limit + 1`` rows to know whether another page exists. Ties on
the sort value break on ``id`` in the sort's direction, so a walk never skips
or repeats a row. Rows without a duration come last in both duration sorts;
that is done as two index-friendly queries (rows with a duration, then rows
without) instead of an ``ORDER BY duration_ms IS NULL`` that no index serves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Integer, Select, bindparam, select, tuple_

from app.db.dialect import Dialect
from app.db.models import executions
from app.store.cursor import Cursor
from app.store.filters import ExecutionFilter
from app.store.statements import bound

e = executions.c
_N = bindparam("n", type_=Integer)   # rows to read: the page size, plus one


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
    # The statements are kept (statements.bound) with the cursor and the page size
    # as bind parameters too: every list page and scroll builds the same few.
    page = {"n": limit + 1, "after_value": None, "after_id": None}
    if cursor is not None:
        page.update(after_value=cursor.value, after_id=cursor.id)
    after = cursor is not None
    rows: list[Any]
    if key == "created_at":
        stmt, params = bound(f"list {sort} {after}", dialect, flt, lambda conds: _ordered(
            _base(conds, e.created_at, desc, after), e.created_at, desc).limit(_N))
        rows = list(conn.execute(stmt, {**params, **page}).mappings())
    else:
        rows = []
        if cursor is None or cursor.value is not None:
            stmt, params = bound(
                f"list {sort} {after} timed", dialect, flt, lambda conds: _ordered(_base(
                    [*conds, e.duration_ms.is_not(None)], e.duration_ms, desc, after),
                    e.duration_ms, desc).limit(_N))
            rows = list(conn.execute(stmt, {**params, **page}).mappings())
        if len(rows) <= limit:
            # After a cursor on a timed row, every untimed row is next.
            untimed_after = cursor is not None and cursor.value is None
            stmt, params = bound(
                f"list {sort} {untimed_after} untimed", dialect, flt, lambda conds: _ordered(
                    _untimed(conds, desc, untimed_after), e.id, desc).limit(_N))
            more = conn.execute(stmt, {**params, **page, "n": limit + 1 - len(rows)}).mappings()
            rows.extend(more)
    page_rows = [dict(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = page_rows[-1]
        next_cursor = Cursor(sort, last[key], last["id"])
    return page_rows, next_cursor


def _base(conds: list[ColumnElement[bool]], column: ColumnElement[Any], desc: bool,
          after: bool) -> Select[Any]:
    stmt = select(executions).where(*conds)
    if after:
        stmt = stmt.where(_after(column, desc, bindparam("after_value", type_=column.type),
                                 bindparam("after_id", type_=e.id.type)))
    return stmt


def _untimed(conds: list[ColumnElement[bool]], desc: bool, after: bool) -> Select[Any]:
    stmt = select(executions).where(*conds, e.duration_ms.is_(None))
    if after:
        after_id = bindparam("after_id", type_=e.id.type)
        stmt = stmt.where(e.id < after_id if desc else e.id > after_id)
    return stmt
