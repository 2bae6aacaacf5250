"""Bulk import of history: many executions with their parts in one transaction.

Stored as given: supplied statuses and times win over the live endpoints'
transition rules. Only derived fields are computed (durations, counts,
``namespace``, ``seq``). An execution whose id already exists is skipped with
everything nested under it, so sending the same batch again changes nothing.

This is the path a history backfill takes, a million runs at a time, so rows
are built as tuples in column order and handed to ``insert_rows`` (the
driver's ``executemany``, or PostgreSQL's ``COPY``) without SQLAlchemy's
per-row parameter handling, and each JSON value is encoded once: here, where
it is also cut to ``MAX_VALUE_BYTES`` (``parse_ingest`` leaves the cut to this
step so the value is not encoded twice).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from app.db.dialect import Dialect, insert_rows
from app.db.models import events, executions, interactions, tool_calls
from app.ids import new_id
from app.limits.values import stored_json
from app.store.errors import Conflict
from app.store.executions import duration, initial_times
from app.store.feed import WriteLog
from app.store.inputs import INGEST_DEFAULTS
from app.store.steps import namespace_of
from app.times import now_ms

_EXECUTION_COLUMNS = (
    "id", "scope_id", "status", "trigger_kind", "trigger_meta", "name", "code", "result",
    "error", "exit_code", "progress_pct", "progress_stage", "tool_call_count",
    "had_elicitation", "error_count", "warn_count", "labels", "created_at", "started_at",
    "completed_at", "duration_ms", "updated_at", "rerun_of")
_TOOL_CALL_COLUMNS = (
    "id", "execution_id", "parent_id", "seq", "tool_path", "namespace", "status", "args",
    "result", "error", "started_at", "completed_at", "duration_ms")
_INTERACTION_COLUMNS = (
    "id", "execution_id", "kind", "status", "message", "request", "action", "response",
    "created_at", "resolved_at")
_EVENT_COLUMNS = ("execution_id", "seq", "ts", "level", "type", "message", "data")
_EXECUTION, _TOOL_CALL, _INTERACTION, _EVENT = (
    INGEST_DEFAULTS[kind] for kind in ("execution", "tool_call", "interaction", "event"))


class _Rows:
    """The rows of one batch, table by table, as tuples in column order."""

    def __init__(self) -> None:
        self.executions: list[tuple[Any, ...]] = []
        self.tool_calls: list[tuple[Any, ...]] = []
        self.interactions: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []

    def add(self, given: dict[str, Any], execution_id: str, scope_id: str, now: int) -> None:
        """Add one execution of the batch (as ``parse_ingest`` returned it)."""
        x = {**_EXECUTION, **given}
        status = x["status"]
        created, started, completed = initial_times(
            status, x["created_at"], x["started_at"], x["completed_at"], now)
        for seq, given_call in enumerate(x["tool_calls"], start=1):
            tc = {**_TOOL_CALL, **given_call}
            t_start = tc["started_at"] if tc["started_at"] is not None else started
            ended = tc["completed_at"]
            self.tool_calls.append((
                tc["id"] or new_id(t_start or created), execution_id, tc["parent_id"], seq,
                tc["tool_path"], namespace_of(tc["tool_path"]),
                tc["status"] or ("completed" if ended is not None else "running"),
                stored_json(tc["args"]), stored_json(tc["result"]), tc["error"], t_start, ended,
                duration(t_start, ended)))
        for given_interaction in x["interactions"]:
            it = {**_INTERACTION, **given_interaction}
            self.interactions.append((
                it["id"] or new_id(it["created_at"] or created), execution_id, it["kind"],
                it["status"], it["message"], stored_json(it["request"]), it["action"],
                stored_json(it["response"]),
                it["created_at"] if it["created_at"] is not None else created,
                it["resolved_at"]))
        # The change event every write appends: status is one of a fixed set of
        # plain words, so its JSON text needs no encoder.
        self.events.append((execution_id, 1, created, "info", "execution.created", x["name"],
                            f'{{"status": "{status}"}}'))
        errors = warns = 0
        for seq, given_event in enumerate(x["events"], start=2):
            ev = {**_EVENT, **given_event}
            level = ev["level"]
            errors += level == "error"
            warns += level == "warn"
            self.events.append((
                execution_id, seq, ev["ts"] if ev["ts"] is not None else created, level,
                ev["type"], ev["message"], stored_json(ev["data"])))
        self.executions.append((
            execution_id, scope_id, status, x["trigger_kind"], stored_json(x["trigger_meta"]),
            x["name"], x["code"], stored_json(x["result"]), x["error"], x["exit_code"],
            x["progress_pct"], x["progress_stage"], len(x["tool_calls"]),
            bool(x["interactions"]), errors, warns, stored_json(x["labels"]), created, started,
            completed, duration(started, completed), now, x["rerun_of"]))


def ingest(conn: Connection, log: WriteLog, batch: dict[str, Any], scope_id: str,
           existing: Collection[str]) -> dict[str, int]:
    """Write the new executions of ``batch`` (from ``parse_ingest``); returns how
    many rows of each kind were new. ``existing``: the ids of ``batch`` already
    stored (all of this scope), skipped with everything under them."""
    now = now_ms()
    given = batch["executions"]
    ids = [x.get("id") or new_id(x.get("created_at")) for x in given]
    rows = _Rows()
    seen: set[str] = set()
    for execution_id, x in zip(ids, given, strict=True):
        if execution_id in existing or execution_id in seen:
            continue
        seen.add(execution_id)
        rows.add(x, execution_id, scope_id, now)
    dialect = Dialect(conn.dialect.name)
    try:
        for table, columns, values in (
                (executions, _EXECUTION_COLUMNS, rows.executions),
                (tool_calls, _TOOL_CALL_COLUMNS, rows.tool_calls),
                (interactions, _INTERACTION_COLUMNS, rows.interactions),
                (events, _EVENT_COLUMNS, rows.events)):
            insert_rows(dialect, conn, table, columns, values)
    except IntegrityError as exc:
        raise Conflict(
            "a tool call or interaction id in this batch already exists "
            "(ids are unique across executions)", {"error": str(exc.orig)[:200]},
            code="already_exists") from None
    if rows.events:
        log.last_event_id = conn.execute(select(func.max(events.c.id))).scalar_one()
        log.execution_ids.update(seen)
    return {"executions": len(rows.executions), "tool_calls": len(rows.tool_calls),
            "interactions": len(rows.interactions), "events": len(rows.events)}
