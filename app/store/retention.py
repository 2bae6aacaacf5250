"""Retention: deleting old finished executions with everything that belongs to them.

Each call is one short transaction that deletes at most ``rows`` rows of one
child table (events first, then tool calls, interactions), and only once those
are gone the jobs and executions themselves. A run with a million events is
therefore pruned over many small transactions instead of one long one that
would hold the write lock (SQLite) or bloat a transaction (PostgreSQL).
Foreign keys cascade, but cascading is exactly the one big delete to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, delete, select

from app.db.models import events, executions, interactions, jobs, tool_calls
from app.store.inputs import TERMINAL


@dataclass
class Pruned:
    """What one step deleted, and whether anything old is left."""

    executions: int = 0
    rows: int = 0
    done: bool = False


def old_runs(conn: Connection, cutoff_ms: int, limit: int) -> list[str]:
    """Ids of finished executions that completed before ``cutoff_ms`` (oldest first)."""
    e = executions.c
    # created_at < cutoff walks the (created_at, id) index; a run that completed
    # before the cutoff was created before it too.
    stmt = (select(e.id).where(e.created_at < cutoff_ms, e.status.in_(TERMINAL),
                               e.completed_at < cutoff_ms)
            .order_by(e.created_at, e.id).limit(limit))
    return list(conn.execute(stmt).scalars())


def _delete_some(conn: Connection, key: ColumnElement[object],
                 owner: ColumnElement[str], ids: list[str], rows: int) -> int:
    table = key.table
    chosen = select(key).where(owner.in_(ids)).limit(rows).scalar_subquery()
    return int(conn.execute(delete(table).where(key.in_(chosen))).rowcount or 0)


def prune_step(conn: Connection, cutoff_ms: int, runs: int = 50, rows: int = 2000) -> Pruned:
    """Delete a bounded slice of what belongs to the oldest prunable runs."""
    ids = old_runs(conn, cutoff_ms, runs)
    if not ids:
        return Pruned(done=True)
    for key, owner in ((events.c.id, events.c.execution_id),
                       (tool_calls.c.id, tool_calls.c.execution_id),
                       (interactions.c.id, interactions.c.execution_id)):
        n = _delete_some(conn, key, owner, ids, rows)
        if n:
            return Pruned(rows=n)
    conn.execute(delete(jobs).where(jobs.c.execution_id.in_(ids)))
    n = int(conn.execute(delete(executions).where(executions.c.id.in_(ids))).rowcount or 0)
    return Pruned(executions=n, rows=n)
