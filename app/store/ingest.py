"""Bulk import of history: many executions with their parts in one transaction.

Stored as given: supplied statuses and times win over the live endpoints'
transition rules. Only derived fields are computed (durations, counts,
``namespace``, ``seq``). An execution whose id already exists is skipped with
everything nested under it, so sending the same batch again changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from app.db.dialect import Dialect, insert_many
from app.db.models import events, executions, interactions, tool_calls
from app.ids import new_id
from app.store.errors import Conflict
from app.store.executions import duration, initial_times
from app.store.feed import WriteLog
from app.store.inputs import IngestBatch, IngestExecution
from app.store.steps import namespace_of
from app.times import now_ms

_CHUNK = 500


def _existing_ids(conn: Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        found.update(conn.execute(
            select(executions.c.id).where(executions.c.id.in_(chunk))).scalars())
    return found


def _rows(x: IngestExecution, execution_id: str, scope_id: str, now: int,
          out: dict[str, list[dict[str, Any]]]) -> None:
    created, started, completed = initial_times(
        x.status, x.created_at, x.started_at, x.completed_at, now)
    for seq, tc in enumerate(x.tool_calls, start=1):
        status = tc.status or ("completed" if tc.completed_at is not None else "running")
        t_start = tc.started_at if tc.started_at is not None else started
        out["tool_calls"].append({
            "id": tc.id or new_id(t_start or created), "execution_id": execution_id,
            "parent_id": tc.parent_id, "seq": seq, "tool_path": tc.tool_path,
            "namespace": namespace_of(tc.tool_path), "status": status, "args": tc.args,
            "result": tc.result, "error": tc.error, "started_at": t_start,
            "completed_at": tc.completed_at, "duration_ms": duration(t_start, tc.completed_at),
        })
    for it in x.interactions:
        out["interactions"].append({
            "id": it.id or new_id(it.created_at or created), "execution_id": execution_id,
            "kind": it.kind, "status": it.status, "message": it.message,
            "request": it.request, "action": it.action, "response": it.response,
            "created_at": it.created_at if it.created_at is not None else created,
            "resolved_at": it.resolved_at,
        })
    out["events"].append({
        "execution_id": execution_id, "seq": 1, "ts": created, "level": "info",
        "type": "execution.created", "message": x.name, "data": {"status": x.status},
    })
    for seq, ev in enumerate(x.events, start=2):
        out["events"].append({
            "execution_id": execution_id, "seq": seq,
            "ts": ev.ts if ev.ts is not None else created, "level": ev.level,
            "type": ev.type, "message": ev.message, "data": ev.data,
        })
    out["executions"].append({
        "id": execution_id, "scope_id": scope_id, "status": x.status,
        "trigger_kind": x.trigger_kind, "trigger_meta": x.trigger_meta, "name": x.name,
        "code": x.code, "result": x.result, "error": x.error, "exit_code": x.exit_code,
        "progress_pct": x.progress_pct, "progress_stage": x.progress_stage,
        "tool_call_count": len(x.tool_calls), "had_elicitation": bool(x.interactions),
        "error_count": sum(1 for ev in x.events if ev.level == "error"),
        "warn_count": sum(1 for ev in x.events if ev.level == "warn"),
        "labels": x.labels, "created_at": created, "started_at": started,
        "completed_at": completed, "duration_ms": duration(started, completed),
        "updated_at": now, "rerun_of": x.rerun_of,
    })


def ingest(conn: Connection, log: WriteLog, batch: IngestBatch,
           scope_id: str = "default") -> dict[str, int]:
    """Write the new executions of ``batch``; returns how many rows of each kind were new."""
    now = now_ms()
    ids = [x.id or new_id(x.created_at) for x in batch.executions]
    existing = _existing_ids(conn, [i for i, x in zip(ids, batch.executions, strict=True) if x.id])
    out: dict[str, list[dict[str, Any]]] = {
        "executions": [], "tool_calls": [], "interactions": [], "events": []}
    seen: set[str] = set()
    for execution_id, x in zip(ids, batch.executions, strict=True):
        if execution_id in existing or execution_id in seen:
            continue
        seen.add(execution_id)
        _rows(x, execution_id, scope_id, now, out)
    dialect = Dialect(conn.dialect.name)
    try:
        for name, table in (("executions", executions), ("tool_calls", tool_calls),
                            ("interactions", interactions), ("events", events)):
            if out[name]:
                insert_many(dialect, conn, table, out[name])
    except IntegrityError as exc:
        raise Conflict(
            "a tool call or interaction id in this batch already exists "
            "(ids are unique across executions)", {"error": str(exc.orig)[:200]},
            code="already_exists") from None
    if out["events"]:
        log.last_event_id = conn.execute(select(func.max(events.c.id))).scalar_one()
        log.execution_ids.update(seen)
    return {name: len(rows) for name, rows in out.items()}
