"""Tool calls: starting and finishing the steps of a run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from app.db.models import executions, tool_calls
from app.ids import new_id
from app.store.errors import Conflict, Invalid, NotFound
from app.store.executions import duration, load
from app.store.feed import NewEvent, WriteLog, append
from app.store.inputs import ToolCallFinish, ToolCallStart
from app.times import now_ms


def namespace_of(tool_path: str) -> str:
    """The first dotted segment: ``github`` for ``github.issues.list``."""
    return tool_path.split(".", 1)[0]


def _load(conn: Connection, execution_id: str, tool_call_id: str) -> Any:
    row = conn.execute(
        select(tool_calls).where(
            tool_calls.c.id == tool_call_id, tool_calls.c.execution_id == execution_id)
    ).mappings().first()
    if row is None:
        raise NotFound(f"no tool call {tool_call_id!r} in execution {execution_id!r}",
                       {"execution_id": execution_id, "tool_call_id": tool_call_id},
                       code="tool_call_not_found")
    return row


def _finished_event(row: dict[str, Any]) -> NewEvent:
    return NewEvent(
        "tool_call.finished", f"{row['tool_path']} {row['status']}",
        level="info",
        data={"tool_call_id": row["id"], "tool_path": row["tool_path"], "status": row["status"],
              "duration_ms": row["duration_ms"]},
        ts=row["completed_at"],
    )


def start(conn: Connection, log: WriteLog, execution_id: str, data: ToolCallStart, *,
          scope_id: str | None = None) -> tuple[dict[str, Any], bool]:
    """Record a tool call; returns ``(row, created)``. The same id again is a retry."""
    load(conn, execution_id, scope_id=scope_id)
    if data.id is not None:
        existing = conn.execute(
            select(tool_calls).where(tool_calls.c.id == data.id)).mappings().first()
        if existing is not None:
            if (existing["execution_id"], existing["tool_path"]) != (execution_id, data.tool_path):
                raise Conflict(f"a tool call with id {data.id!r} already exists",
                               {"tool_call_id": data.id}, code="already_exists")
            return dict(existing), False
    if data.parent_id is not None:
        parent = conn.execute(select(tool_calls.c.id).where(
            tool_calls.c.id == data.parent_id, tool_calls.c.execution_id == execution_id)).first()
        if parent is None:
            raise Invalid(f"parent_id {data.parent_id!r} is not a tool call of this execution",
                          {"path": ["parent_id"]})
    now = now_ms()
    started = data.started_at if data.started_at is not None else now
    completed = None
    if data.status != "running":
        completed = data.completed_at if data.completed_at is not None else max(now, started)
        if completed < started:
            raise Invalid("completed_at is before started_at", {"path": ["completed_at"]})
    seq = (conn.execute(select(func.max(tool_calls.c.seq)).where(
        tool_calls.c.execution_id == execution_id)).scalar() or 0) + 1
    row = {
        "id": data.id or new_id(started), "execution_id": execution_id,
        "parent_id": data.parent_id, "seq": seq, "tool_path": data.tool_path,
        "namespace": namespace_of(data.tool_path), "status": data.status, "args": data.args,
        "result": data.result, "error": data.error, "started_at": started,
        "completed_at": completed, "duration_ms": duration(started, completed),
    }
    conn.execute(insert(tool_calls), row)
    conn.execute(update(executions).where(executions.c.id == execution_id).values(
        tool_call_count=executions.c.tool_call_count + 1, updated_at=now))
    new = [NewEvent("tool_call.started", data.tool_path, ts=started, data={
        "tool_call_id": row["id"], "tool_path": data.tool_path, "seq": seq,
        "parent_id": data.parent_id})]
    if completed is not None:
        new.append(_finished_event(row))
    append(conn, log, execution_id, new)
    return row, True


def finish(conn: Connection, log: WriteLog, execution_id: str, tool_call_id: str,
           data: ToolCallFinish, *, scope_id: str | None = None) -> dict[str, Any]:
    """Finish a running tool call; finishing it again the same way is a no-op."""
    load(conn, execution_id, scope_id=scope_id)
    current = _load(conn, execution_id, tool_call_id)
    if current["status"] != "running":
        if current["status"] == data.status:
            return dict(current)
        raise Conflict(
            f"tool call {tool_call_id!r} already finished as {current['status']}",
            {"from": current["status"], "to": data.status}, code="invalid_transition")
    now = now_ms()
    completed = data.completed_at if data.completed_at is not None else max(
        now, current["started_at"] or now)
    if current["started_at"] is not None and completed < current["started_at"]:
        raise Invalid("completed_at is before the call started", {"path": ["completed_at"]})
    changes = {
        "status": data.status, "result": data.result, "error": data.error,
        "completed_at": completed, "duration_ms": duration(current["started_at"], completed),
    }
    conn.execute(update(tool_calls).where(tool_calls.c.id == tool_call_id).values(changes))
    conn.execute(update(executions).where(executions.c.id == execution_id).values(updated_at=now))
    row = {**dict(current), **changes}
    append(conn, log, execution_id, [_finished_event(row)])
    return row
