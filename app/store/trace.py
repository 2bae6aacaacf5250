"""Reading one execution's parts: tool calls, interactions and events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from app.db.models import events, interactions, tool_calls


def tool_calls_of(conn: Connection, execution_id: str) -> list[dict[str, Any]]:
    """Every tool call of a run in ``seq`` order."""
    stmt = select(tool_calls).where(tool_calls.c.execution_id == execution_id).order_by(
        tool_calls.c.seq)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def interactions_of(conn: Connection, execution_id: str) -> list[dict[str, Any]]:
    """Every interaction of a run, oldest first."""
    stmt = select(interactions).where(interactions.c.execution_id == execution_id).order_by(
        interactions.c.created_at, interactions.c.id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def events_of(conn: Connection, execution_id: str, *, after_seq: int = 0, limit: int = 200,
              levels: tuple[str, ...] = (), types: tuple[str, ...] = (),
              ) -> tuple[list[dict[str, Any]], int | None]:
    """A page of a run's events after ``after_seq``, and the seq to continue from
    (None when no further matching event exists now)."""
    c = events.c
    stmt = select(events).where(c.execution_id == execution_id, c.seq > after_seq)
    if levels:
        stmt = stmt.where(c.level.in_(levels))
    if types:
        stmt = stmt.where(c.type.in_(types))
    rows = [dict(r) for r in conn.execute(stmt.order_by(c.seq).limit(limit + 1)).mappings()]
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["seq"]
    return rows, None
