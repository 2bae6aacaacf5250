"""The live endpoints' writes, as operations one transaction can run several of.

Each function here takes one request's parsed input and returns a
:data:`WriteOp`: given the transaction's connection and write log, it makes
that request's change and returns its answer as the API gives it. ``Store``
runs one in a transaction of its own (``Store.write_one``, behind its named
methods) or several in one (``Store.write_each``, what the API's group commit
calls: ``app.api.live_writes``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

from app.store import executions as execs
from app.store import questions, steps
from app.store.feed import NewEvent, WriteLog, append
from app.store.inputs import (
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    InteractionAsk,
    ToolCallFinish,
    ToolCallStart,
)
from app.store.records import execution_out, interaction_out, tool_call_out

T = TypeVar("T")
WriteOp = Callable[[Connection, WriteLog], T]
Created = tuple[dict[str, Any], bool]


def create_execution(data: ExecutionCreate, scope_id: str) -> WriteOp[Created]:
    """Create (or harmlessly re-create) an execution; ``(object, created)``."""
    def op(conn: Connection, log: WriteLog) -> Created:
        row, created = execs.create(conn, log, data, scope_id)
        return execution_out(row), created
    return op


def update_execution(execution_id: str, data: ExecutionPatch,
                     scope_id: str | None) -> WriteOp[dict[str, Any]]:
    """Apply a PATCH under the status-transition rules."""
    def op(conn: Connection, log: WriteLog) -> dict[str, Any]:
        return execution_out(execs.patch(conn, log, execution_id, data, scope_id=scope_id))
    return op


def start_tool_call(execution_id: str, data: ToolCallStart,
                    scope_id: str | None) -> WriteOp[Created]:
    """Start a tool call; ``(object, created)``."""
    def op(conn: Connection, log: WriteLog) -> Created:
        row, created = steps.start(conn, log, execution_id, data, scope_id=scope_id)
        return tool_call_out(row), created
    return op


def finish_tool_call(execution_id: str, tool_call_id: str, data: ToolCallFinish,
                     scope_id: str | None) -> WriteOp[dict[str, Any]]:
    """Finish a tool call."""
    def op(conn: Connection, log: WriteLog) -> dict[str, Any]:
        return tool_call_out(steps.finish(conn, log, execution_id, tool_call_id, data,
                                          scope_id=scope_id))
    return op


def ask(execution_id: str, data: InteractionAsk, scope_id: str | None) -> WriteOp[Created]:
    """Open an interaction; ``(object, created)``."""
    def op(conn: Connection, log: WriteLog) -> Created:
        row, created = questions.ask(conn, log, execution_id, data, scope_id=scope_id)
        return interaction_out(row), created
    return op


def append_events(execution_id: str, data: EventsAppend,
                  scope_id: str | None) -> WriteOp[list[dict[str, int]]]:
    """Append recorded events (log, stdout, stderr, artifact) to a run."""
    def op(conn: Connection, log: WriteLog) -> list[dict[str, int]]:
        seq = execs.check(conn, execution_id, scope_id)
        return append(conn, log, execution_id, [
            NewEvent(e.type, e.message, e.level, e.data, e.ts) for e in data.events], seq)
    return op
