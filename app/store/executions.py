"""Creating, changing and reading executions, with the status-transition rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)

from app.db.models import events, executions, interactions
from app.ids import new_id
from app.store.errors import Conflict, Invalid, execution_not_found
from app.store.feed import NewEvent, WriteLog, append
from app.store.inputs import TERMINAL, ExecutionCreate, ExecutionPatch
from app.times import now_ms

# A retried create is harmless when these match what is stored.
_IDENTITY = ("name", "trigger_kind", "code")
_PROGRESS = frozenset({"progress_pct", "progress_stage"})
# Ids per IN list (SQLite caps bound parameters per statement).
_CHUNK = 500


def next_seq_of(table: Table) -> ColumnElement[int]:
    """The next free ``seq`` of ``table``'s rows (tool calls or events) of the
    execution row of the enclosing query. Writers are serialized (see
    ``lock_feed``), so it stays free until the transaction inserts it."""
    return (select(func.coalesce(func.max(table.c.seq), 0) + 1)
            .where(table.c.execution_id == executions.c.id)
            .correlate(executions).scalar_subquery())


# The hot statements are built once: building and cache-keying a statement
# costs more CPU than SQLite takes to run it (bench/write_path.py).
_LOAD = select(executions).where(executions.c.id == bindparam("execution_id"))
_LOAD_FOR_UPDATE = _LOAD.with_for_update()
# What a write to a run's parts needs of the run: its scope and next event seq.
_SCOPE_AND_SEQ = select(executions.c.scope_id, next_seq_of(events).label("next_event_seq")).where(
    executions.c.id == bindparam("execution_id"))
# A PATCH's read: the row, its next event seq and whether a question is open.
_PATCH_LOAD = select(
    executions, next_seq_of(events).label("next_event_seq"),
    select(interactions.c.id).where(
        interactions.c.execution_id == executions.c.id, interactions.c.status == "pending",
    ).correlate(executions).exists().label("has_pending"),
).where(executions.c.id == bindparam("execution_id"))
_PATCH_LOAD_FOR_UPDATE = _PATCH_LOAD.with_for_update(of=executions)
_INSERT = insert(executions)
_SCOPES = select(executions.c.id, executions.c.scope_id).where(
    executions.c.id.in_(bindparam("ids", expanding=True)))
# The SET columns come from the parameters.
_UPDATE = update(executions).where(executions.c.id == bindparam("run_id"))
_COLUMNS = tuple(executions.c.keys())


def duration(started_at: int | None, completed_at: int | None) -> int | None:
    """``completed_at - started_at`` when both are known (never negative)."""
    if started_at is None or completed_at is None:
        return None
    return max(0, completed_at - started_at)


def load(conn: Connection, execution_id: str, *, for_update: bool = False,
         scope_id: str | None = None) -> Any:
    """The execution row, or raise ``execution_not_found``.

    With ``scope_id``, a row of another scope is answered exactly like a missing
    one (same error, same message), so a reader cannot learn that it exists.
    """
    stmt = _LOAD_FOR_UPDATE if for_update and conn.dialect.name == "postgresql" else _LOAD
    row = conn.execute(stmt, {"execution_id": execution_id}).mappings().first()
    if row is None or (scope_id is not None and row["scope_id"] != scope_id):
        raise execution_not_found(execution_id)
    return row


def check(conn: Connection, execution_id: str, scope_id: str | None = None) -> int:
    """Raise ``execution_not_found`` as :func:`load` would; else the run's next
    event ``seq`` (for ``feed.append``). Reads no more of the row than that."""
    row = conn.execute(_SCOPE_AND_SEQ, {"execution_id": execution_id}).first()
    if row is None or (scope_id is not None and row.scope_id != scope_id):
        raise execution_not_found(execution_id)
    return int(row.next_event_seq)


def scopes_of(conn: Connection, ids: list[str]) -> dict[str, str]:
    """The scope of each of ``ids`` that is a stored execution's id."""
    found: dict[str, str] = {}
    wanted = list(dict.fromkeys(ids))
    for i in range(0, len(wanted), _CHUNK):
        found.update(conn.execute(_SCOPES, {"ids": wanted[i:i + _CHUNK]}).all())
    return found


def foreign_ids(conn: Connection, ids: list[str], scope_id: str) -> set[str]:
    """Those of ``ids`` that belong to an execution of another scope."""
    return {i for i, scope in scopes_of(conn, ids).items() if scope != scope_id}


def initial_times(status: str, created_at: int | None, started_at: int | None,
                  completed_at: int | None, now: int) -> tuple[int, int | None, int | None]:
    """Default times for a new execution of ``status``: a run that has begun has
    started (at its creation unless told otherwise); a finished one has completed."""
    created = created_at if created_at is not None else now
    started = started_at
    if started is None and status not in ("pending", "queued"):
        started = created
    completed = completed_at
    if completed is None and status in TERMINAL:
        completed = max(now if created_at is None else created, started or 0)
    return created, started, completed


def create(conn: Connection, log: WriteLog, data: ExecutionCreate,
           scope_id: str = "default") -> tuple[dict[str, Any], bool]:
    """Insert an execution; returns ``(row, created)``. Same id again: a retry or 409."""
    if data.id is not None:
        existing = conn.execute(_LOAD, {"execution_id": data.id}).mappings().first()
        if existing is not None:
            # Ids are global: another scope's run is never "this" run retried (and
            # answering with it would show one scope's data to another).
            same = existing["scope_id"] == scope_id and all(
                existing[k] == getattr(data, k) for k in _IDENTITY)
            if not same:
                raise Conflict(
                    f"an execution with id {data.id!r} already exists with a different "
                    "scope, name, trigger_kind or code",
                    {"execution_id": data.id}, code="already_exists",
                )
            return dict(existing), False
    now = now_ms()
    created, started, completed = initial_times(
        data.status, data.created_at, data.started_at, data.completed_at, now)
    if started is not None and completed is not None and completed < started:
        raise Invalid("completed_at is before started_at", {"path": ["completed_at"]})
    row = {
        "id": data.id or new_id(created),
        "scope_id": scope_id,
        "status": data.status,
        "trigger_kind": data.trigger_kind,
        "trigger_meta": data.trigger_meta,
        "name": data.name,
        "code": data.code,
        "result": data.result,
        "error": data.error,
        "exit_code": data.exit_code,
        "progress_pct": data.progress_pct,
        "progress_stage": data.progress_stage,
        "tool_call_count": 0,
        "had_elicitation": False,
        "error_count": 0,
        "warn_count": 0,
        "labels": data.labels,
        "created_at": created,
        "started_at": started,
        "completed_at": completed,
        "duration_ms": duration(started, completed),
        "updated_at": now,
        "rerun_of": data.rerun_of,
    }
    conn.execute(_INSERT, row)
    # A new run has no events yet (they reference it): the first seq is 1.
    append(conn, log, row["id"], [NewEvent(
        "execution.created", data.name, data={"status": data.status}, ts=created)], seq=1)
    return row, True


def patch(conn: Connection, log: WriteLog, execution_id: str,
          data: ExecutionPatch, *, scope_id: str | None = None) -> dict[str, Any]:
    """Apply a PATCH; a terminal execution never changes status (409)."""
    stmt = _PATCH_LOAD_FOR_UPDATE if conn.dialect.name == "postgresql" else _PATCH_LOAD
    found = conn.execute(stmt, {"execution_id": execution_id}).mappings().first()
    if found is None or (scope_id is not None and found["scope_id"] != scope_id):
        raise execution_not_found(execution_id)
    current = {k: found[k] for k in _COLUMNS}
    given = data.model_fields_set
    changes: dict[str, Any] = {}
    now = now_ms()
    new_events: list[NewEvent] = []
    seq: int | None = found["next_event_seq"]

    if "status" in given and data.status is not None and data.status != current["status"]:
        if current["status"] in TERMINAL:
            raise Conflict(
                f"execution {execution_id!r} is {current['status']} (terminal) and cannot "
                f"become {data.status}",
                {"from": current["status"], "to": data.status}, code="invalid_transition",
            )
        changes["status"] = data.status
        if data.status not in ("pending", "queued") and current["started_at"] is None:
            changes["started_at"] = data.started_at if "started_at" in given else now
        if data.status in TERMINAL:
            changes["completed_at"] = (
                data.completed_at if data.completed_at is not None else now)
            if found["has_pending"]:
                cancel_pending_interactions(conn, log, execution_id, now)
                seq = None   # the cancellations took the seqs read with the row
        new_events.append(NewEvent(
            "execution.status", f"{current['status']} → {data.status}",
            data={"from": current["status"], "to": data.status}))

    for name in ("name", "result", "error", "exit_code", "progress_pct", "progress_stage",
                 "started_at", "completed_at"):
        if name in given and name not in changes:
            value = getattr(data, name)
            if value != current[name]:
                changes[name] = value
    if "labels" in given:
        merged = dict(current["labels"] or {})
        for key, value in (data.labels or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if data.labels is None:
            merged = {}
        merged_or_none = merged or None
        if merged_or_none != current["labels"]:
            changes["labels"] = merged_or_none

    if not changes:
        return current
    started = changes.get("started_at", current["started_at"])
    completed = changes.get("completed_at", current["completed_at"])
    if started is not None and completed is not None and completed < started:
        raise Invalid("completed_at is before started_at", {"path": ["completed_at"]})
    changes["duration_ms"] = duration(started, completed)
    changes["updated_at"] = now

    if _PROGRESS & changes.keys():
        pct = changes.get("progress_pct", current["progress_pct"])
        stage = changes.get("progress_stage", current["progress_stage"])
        new_events.append(NewEvent("execution.progress", stage,
                                   data={"pct": pct, "stage": stage}))
    other = sorted(changes.keys() - _PROGRESS - {"status", "duration_ms", "updated_at",
                                                  "started_at", "completed_at"})
    if other:
        new_events.append(NewEvent("execution.updated", ", ".join(other),
                                   data={"fields": other}))
    conn.execute(_UPDATE, {"run_id": execution_id, **changes})
    append(conn, log, execution_id, new_events, seq=seq)
    return {**current, **changes}


def set_status(conn: Connection, log: WriteLog, execution_id: str, status: str) -> None:
    """Move a non-terminal execution to ``status`` (used by interactions)."""
    patch(conn, log, execution_id, ExecutionPatch(status=status))


def cancel_pending_interactions(conn: Connection, log: WriteLog, execution_id: str,
                                now: int) -> None:
    """A run that ends cannot be answered any more: its open questions are cancelled."""
    pending = conn.execute(
        select(interactions.c.id).where(
            interactions.c.execution_id == execution_id, interactions.c.status == "pending")
    ).scalars().all()
    if not pending:
        return
    conn.execute(
        update(interactions)
        .where(interactions.c.id.in_(pending))
        .values(status="cancelled", action="cancel", resolved_at=now)
    )
    append(conn, log, execution_id, [
        NewEvent("interaction.resolved", "cancelled: the execution ended",
                 data={"interaction_id": i, "action": "cancel", "status": "cancelled"})
        for i in pending
    ])
