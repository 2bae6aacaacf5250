"""Tool calls: starting and finishing the steps of a run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, select, update

from app.db.models import events, executions, tool_calls
from app.ids import new_id
from app.store.errors import Conflict, Invalid, NotFound, execution_not_found
from app.store.executions import duration, next_seq_of
from app.store.feed import NewEvent, WriteLog, append
from app.store.inputs import ToolCallFinish, ToolCallStart
from app.times import now_ms

# Built once; each write reads what it needs of the run and the call in one
# query (the scope, the next seqs, the call with that id) instead of three or four.
_call = tool_calls.alias("found_call")
_COLUMNS = tuple(tool_calls.c.keys())
_START_READ = (
    select(executions.c.scope_id, next_seq_of(events).label("next_event_seq"),
           next_seq_of(tool_calls).label("next_call_seq"), *_call.c)
    # Tool call ids are global: the same id in another run is found too (a 409).
    .select_from(executions.outerjoin(_call, _call.c.id == bindparam("tool_call_id")))
    .where(executions.c.id == bindparam("execution_id")))
_FINISH_READ = (
    select(executions.c.scope_id, next_seq_of(events).label("next_event_seq"), *_call.c)
    .select_from(executions.outerjoin(_call, and_(
        _call.c.id == bindparam("tool_call_id"), _call.c.execution_id == executions.c.id)))
    .where(executions.c.id == bindparam("execution_id")))
_PARENT = select(tool_calls.c.id).where(tool_calls.c.id == bindparam("parent_id"),
                                        tool_calls.c.execution_id == bindparam("execution_id"))
_INSERT = insert(tool_calls)
# The SET columns come from the parameters.
_UPDATE = update(tool_calls).where(tool_calls.c.id == bindparam("call_id"))
_COUNT_CALL = (update(executions).where(executions.c.id == bindparam("run_id"))
               .values(tool_call_count=executions.c.tool_call_count + 1))
_TOUCH = update(executions).where(executions.c.id == bindparam("run_id"))


def namespace_of(tool_path: str) -> str:
    """The first dotted segment: ``github`` for ``github.issues.list``."""
    return tool_path.split(".", 1)[0]


def _read(conn: Connection, stmt: Any, execution_id: str, tool_call_id: str | None,
          scope_id: str | None) -> tuple[Any, dict[str, Any] | None]:
    """The run's part of a ``_START_READ``/``_FINISH_READ`` row and the tool call
    found (None when none); ``execution_not_found`` as ``executions.load`` says it."""
    row = conn.execute(stmt, {"execution_id": execution_id,
                              "tool_call_id": tool_call_id}).mappings().first()
    if row is None or (scope_id is not None and row["scope_id"] != scope_id):
        raise execution_not_found(execution_id)
    return row, ({k: row[k] for k in _COLUMNS} if row["id"] is not None else None)


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
    run, existing = _read(conn, _START_READ, execution_id, data.id, scope_id)
    if existing is not None:
        if (existing["execution_id"], existing["tool_path"]) != (execution_id, data.tool_path):
            raise Conflict(f"a tool call with id {data.id!r} already exists",
                           {"tool_call_id": data.id}, code="already_exists")
        return existing, False
    if data.parent_id is not None:
        parent = conn.execute(_PARENT, {"parent_id": data.parent_id,
                                        "execution_id": execution_id}).first()
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
    seq = run["next_call_seq"]
    row = {
        "id": data.id or new_id(started), "execution_id": execution_id,
        "parent_id": data.parent_id, "seq": seq, "tool_path": data.tool_path,
        "namespace": namespace_of(data.tool_path), "status": data.status, "args": data.args,
        "result": data.result, "error": data.error, "started_at": started,
        "completed_at": completed, "duration_ms": duration(started, completed),
    }
    conn.execute(_INSERT, row)
    conn.execute(_COUNT_CALL, {"run_id": execution_id, "updated_at": now})
    new = [NewEvent("tool_call.started", data.tool_path, ts=started, data={
        "tool_call_id": row["id"], "tool_path": data.tool_path, "seq": seq,
        "parent_id": data.parent_id})]
    if completed is not None:
        new.append(_finished_event(row))
    append(conn, log, execution_id, new, seq=run["next_event_seq"])
    return row, True


def finish(conn: Connection, log: WriteLog, execution_id: str, tool_call_id: str,
           data: ToolCallFinish, *, scope_id: str | None = None) -> dict[str, Any]:
    """Finish a running tool call; finishing it again the same way is a no-op."""
    run, current = _read(conn, _FINISH_READ, execution_id, tool_call_id, scope_id)
    if current is None:
        raise NotFound(f"no tool call {tool_call_id!r} in execution {execution_id!r}",
                       {"execution_id": execution_id, "tool_call_id": tool_call_id},
                       code="tool_call_not_found")
    if current["status"] != "running":
        if current["status"] == data.status:
            return current
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
    conn.execute(_UPDATE, {"call_id": tool_call_id, **changes})
    conn.execute(_TOUCH, {"run_id": execution_id, "updated_at": now})
    row = {**current, **changes}
    append(conn, log, execution_id, [_finished_event(row)], seq=run["next_event_seq"])
    return row
