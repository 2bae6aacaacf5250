"""Reading the change feed: events after a cursor, and the rows they changed.

The live layer tails ``execution_event`` by id. Writers commit ids in order
(see ``app.db.dialect.lock_feed``), so every id up to the newest one a reader
sees is already committed: reading ``id > cursor`` never passes over a row
that commits later.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select

from app.db.dialect import Dialect
from app.db.models import events, executions, tool_calls
from app.store.filters import ExecutionFilter

# Events after which a run's list row looks different: its status, progress,
# fields, tool-call count, elicitation flag, or error/warn counts changed.
ROW_CHANGE_TYPES = (
    "execution.created", "execution.status", "execution.updated", "execution.progress",
    "tool_call.started", "interaction.requested",
)
COUNTED_LEVELS = ("warn", "error")

# The live hub runs these after nearly every commit: built once, since building
# and cache-keying a statement costs more than SQLite takes to run it.
_AFTER = select(events).where(events.c.id > bindparam("after_id"))
_FEED = _AFTER.order_by(events.c.id).limit(bindparam("limit"))
_FEED_OF_RUN = (_AFTER.where(events.c.execution_id == bindparam("execution_id"))
                .order_by(events.c.id).limit(bindparam("limit")))
_ROWS = select(executions).where(executions.c.id.in_(bindparam("ids", expanding=True)))
_TOOL_PATHS = select(tool_calls.c.execution_id, tool_calls.c.tool_path).where(
    tool_calls.c.execution_id.in_(bindparam("ids", expanding=True))).distinct()


def changes_row(event_type: str, level: str) -> bool:
    """True when an event of this type and level changes the run's list row."""
    return event_type in ROW_CHANGE_TYPES or level in COUNTED_LEVELS


def events_after(conn: Connection, after_id: int, limit: int,
                 execution_id: str | None = None) -> list[dict[str, Any]]:
    """Events with ``id > after_id`` in id order (of one run, when given)."""
    if execution_id is None:
        result = conn.execute(_FEED, {"after_id": after_id, "limit": limit})
    else:
        result = conn.execute(_FEED_OF_RUN, {"after_id": after_id, "limit": limit,
                                             "execution_id": execution_id})
    return [r._asdict() for r in result]


def rows_by_id(conn: Connection, dialect: Dialect, ids: Iterable[str],
               flt: ExecutionFilter | None = None) -> dict[str, dict[str, Any]]:
    """Current execution rows for ``ids`` (only those matching ``flt`` when given)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    stmt = _ROWS if flt is None else _ROWS.where(*flt.conditions(dialect))
    return {r.id: r._asdict() for r in conn.execute(stmt, {"ids": wanted})}


def tool_paths_by_run(conn: Connection, ids: Iterable[str]) -> dict[str, set[str]]:
    """The distinct tool paths each run has called."""
    wanted = list(dict.fromkeys(ids))
    out: dict[str, set[str]] = {i: set() for i in wanted}
    if not wanted:
        return out
    for execution_id, path in conn.execute(_TOOL_PATHS, {"ids": wanted}):
        out[execution_id].add(path)
    return out


def changed_rows_after(conn: Connection, dialect: Dialect, after_id: int,
                       flt: ExecutionFilter, limit: int,
                       ) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
    """Rows changed by events after ``after_id`` that match ``flt``, one per run at
    the id of its newest change, in id order; and the id scanned up to (None
    when the scan reached the end of the feed)."""
    c = events.c
    stmt = (select(c.id, c.execution_id)
            .where(c.id > after_id,
                   or_(c.type.in_(ROW_CHANGE_TYPES), c.level.in_(COUNTED_LEVELS)))
            .order_by(c.id).limit(limit))
    scanned = list(conn.execute(stmt))
    newest: dict[str, int] = {}
    for event_id, execution_id in scanned:
        newest[execution_id] = event_id
    rows = rows_by_id(conn, dialect, newest, flt)
    out = sorted((newest[i], row) for i, row in rows.items())
    reached = scanned[-1][0] if len(scanned) == limit else None
    return out, reached
