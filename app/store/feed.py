"""Appending rows to ``execution_event``: the trace of a run and the change feed.

Every write path calls :func:`append` inside its own transaction, so a change
and its event commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from app.db.dialect import Dialect, insert_rows
from app.db.models import events, executions
from app.times import now_ms


@dataclass
class NewEvent:
    """An event about to be written (``seq`` and ``id`` are assigned on insert)."""

    type: str
    message: str | None = None
    level: str = "info"
    data: Any = None
    ts: int | None = None


@dataclass
class WriteLog:
    """What one write transaction appended, handed to the commit callback."""

    last_event_id: int = 0
    execution_ids: set[str] = field(default_factory=set)


# Built once (building a statement costs more than running it, on SQLite).
_MAX_SEQ = select(func.max(events.c.seq)).where(events.c.execution_id == bindparam("of"))
# Without sort_by_parameter_order: SQLite cannot promise that RETURNING gives
# the rows of a multi-row INSERT in order, so SQLAlchemy would insert them one
# statement per row; they are put in order by seq below instead.
_INSERT = insert(events).returning(events.c.id, events.c.seq)
_COUNT = (update(executions).where(executions.c.id == bindparam("of"))
          .values(error_count=executions.c.error_count + bindparam("errors"),
                  warn_count=executions.c.warn_count + bindparam("warns")))


def _by_seq(row: dict[str, int]) -> int:
    return row["seq"]


def next_seq(conn: Connection, execution_id: str) -> int:
    """The next free ``seq`` of an execution (writers are serialized, see ``lock_feed``)."""
    current = conn.execute(_MAX_SEQ, {"of": execution_id}).scalar()
    return (current or 0) + 1


def append(conn: Connection, log: WriteLog, execution_id: str,
           new: Sequence[NewEvent], seq: int | None = None) -> list[dict[str, int]]:
    """Insert events for one execution in order; returns their ``id`` and ``seq``.

    ``seq`` is the execution's next free one when the caller read it already
    (``executions.check``), in this transaction. Keeps the execution's
    ``error_count`` / ``warn_count`` in step.
    """
    if not new:
        return []
    if seq is None:
        seq = next_seq(conn, execution_id)
    now = now_ms()
    rows = [
        {
            "execution_id": execution_id, "seq": seq + i, "ts": e.ts if e.ts is not None else now,
            "level": e.level, "type": e.type, "message": e.message, "data": e.data,
        }
        for i, e in enumerate(new)
    ]
    result = conn.execute(_INSERT, rows[0] if len(rows) == 1 else rows)
    written = sorted(({"id": r.id, "seq": r.seq} for r in result), key=_by_seq)
    errors = sum(1 for e in new if e.level == "error")
    warns = sum(1 for e in new if e.level == "warn")
    if errors or warns:
        conn.execute(_COUNT, {"of": execution_id, "errors": errors, "warns": warns,
                              "updated_at": now})
    log.last_event_id = max(log.last_event_id, written[-1]["id"])
    log.execution_ids.add(execution_id)
    return written



# A job's output line on its way in: (type, message, level, data, ts). Plain
# tuples, not NewEvent objects: a busy command makes a hundred thousand a second.
EventRow = tuple[str, str | None, str, Any, int | None]
_BULK_COLUMNS = ("execution_id", "seq", "ts", "level", "type", "message", "data")


def append_rows(conn: Connection, log: WriteLog, dialect: Dialect, execution_id: str,
                new: Sequence[EventRow]) -> int:
    """Like :func:`append` for big batches (a job's output): the same rows and
    counters, inserted by ``insert_rows``, without their ids. Returns how many."""
    if not new:
        return 0
    seq = next_seq(conn, execution_id)
    now = now_ms()
    dumps = json.dumps
    rows = [(execution_id, seq + i, now if ts is None else ts, level, type_, message,
             None if data is None else dumps(data))
            for i, (type_, message, level, data, ts) in enumerate(new)]
    insert_rows(dialect, conn, events, _BULK_COLUMNS, rows)
    last_id = conn.execute(select(events.c.id).where(
        events.c.execution_id == execution_id, events.c.seq == seq + len(rows) - 1)).scalar_one()
    errors = sum(1 for e in new if e[2] == "error")
    warns = sum(1 for e in new if e[2] == "warn")
    if errors or warns:
        conn.execute(
            update(executions)
            .where(executions.c.id == execution_id)
            .values(error_count=executions.c.error_count + errors,
                    warn_count=executions.c.warn_count + warns, updated_at=now))
    log.last_event_id = max(log.last_event_id, last_id)
    log.execution_ids.add(execution_id)
    return len(rows)
