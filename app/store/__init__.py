"""The store: the only code that touches the database.

Web, API, live and runner call :class:`Store`; each method is one transaction.
Writes hold the feed lock (see ``app.db.dialect.lock_feed``) and, after they
commit, tell the ``on_commit`` callback what they appended, which is how the
live layer learns of changes without the store importing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, func, select, text

from app.db.dialect import lock_feed
from app.db.engine import Database
from app.db import models
from app.store import executions as execs
from app.store import ingest as bulk
from app.store import listing, meta, questions, steps, trace
from app.store.errors import execution_not_found
from app.store.feed import NewEvent, WriteLog, append
from app.store.inputs import (
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    IngestBatch,
    InteractionAsk,
    InteractionResolve,
    ToolCallFinish,
    ToolCallStart,
)
from app.store.params import ListQuery
from app.store.records import event_out, execution_out, interaction_out, tool_call_out

CommitCallback = Callable[[WriteLog], None]


class Store:
    """Reads and writes of executions and everything that belongs to them."""

    def __init__(self, db: Database, on_commit: CommitCallback | None = None) -> None:
        self.db = db
        self.dialect = db.dialect
        self._on_commit = on_commit

    @contextmanager
    def _write(self) -> Iterator[tuple[Connection, WriteLog]]:
        log = WriteLog()
        with self.db.write_engine.begin() as conn:
            lock_feed(self.dialect, conn)
            yield conn, log
        if log.last_event_id and self._on_commit is not None:
            self._on_commit(log)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.db.read_engine.connect() as conn:
            yield conn

    # -- health --------------------------------------------------------------
    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        with self._read() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    # -- executions ----------------------------------------------------------
    def create_execution(self, data: ExecutionCreate,
                         scope_id: str = "default") -> tuple[dict[str, Any], bool]:
        """Create (or harmlessly re-create) an execution; ``(object, created)``."""
        with self._write() as (conn, log):
            row, created = execs.create(conn, log, data, scope_id)
        return execution_out(row), created

    def update_execution(self, execution_id: str, data: ExecutionPatch) -> dict[str, Any]:
        """Apply a PATCH under the status-transition rules."""
        with self._write() as (conn, log):
            row = execs.patch(conn, log, execution_id, data)
        return execution_out(row)

    def get_execution(self, execution_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The execution and its oldest pending interaction (or None)."""
        with self._read() as conn:
            row = execs.load(conn, execution_id)
            pending = questions.pending_for(conn, execution_id)
        return execution_out(row), (interaction_out(pending) if pending else None)

    def list_executions(self, query: ListQuery) -> dict[str, Any]:
        """A page of executions, the next cursor and (when asked) ``meta``."""
        with self._read() as conn:
            rows, cursor = listing.list_page(
                conn, self.dialect, query.filter, query.sort, query.limit, query.cursor)
            out: dict[str, Any] = {
                "executions": [execution_out(r) for r in rows],
                "next_cursor": cursor.encode() if cursor else None,
            }
            if query.meta:
                out["meta"] = meta.compute(conn, self.dialect, query.filter)
        return out

    def list_rows(self, query: ListQuery) -> tuple[list[dict[str, Any]], str | None]:
        """Like :meth:`list_executions` but raw rows (times as epoch ms), no meta."""
        with self._read() as conn:
            rows, cursor = listing.list_page(
                conn, self.dialect, query.filter, query.sort, query.limit, query.cursor)
        return rows, (cursor.encode() if cursor else None)

    def list_meta(self, query: ListQuery) -> dict[str, Any]:
        """Only the ``meta`` object of a list."""
        with self._read() as conn:
            return meta.compute(conn, self.dialect, query.filter)

    # -- tool calls ----------------------------------------------------------
    def start_tool_call(self, execution_id: str,
                        data: ToolCallStart) -> tuple[dict[str, Any], bool]:
        """Start a tool call; ``(object, created)``."""
        with self._write() as (conn, log):
            row, created = steps.start(conn, log, execution_id, data)
        return tool_call_out(row), created

    def finish_tool_call(self, execution_id: str, tool_call_id: str,
                         data: ToolCallFinish) -> dict[str, Any]:
        """Finish a tool call."""
        with self._write() as (conn, log):
            row = steps.finish(conn, log, execution_id, tool_call_id, data)
        return tool_call_out(row)

    def tool_calls(self, execution_id: str) -> list[dict[str, Any]]:
        """A run's tool calls in ``seq`` order."""
        with self._read() as conn:
            execs.load(conn, execution_id)
            return [tool_call_out(r) for r in trace.tool_calls_of(conn, execution_id)]

    # -- interactions --------------------------------------------------------
    def ask(self, execution_id: str, data: InteractionAsk) -> tuple[dict[str, Any], bool]:
        """Open an interaction; ``(object, created)``."""
        with self._write() as (conn, log):
            row, created = questions.ask(conn, log, execution_id, data)
        return interaction_out(row), created

    def resolve(self, execution_id: str, interaction_id: str,
                data: InteractionResolve) -> dict[str, Any]:
        """Answer an interaction."""
        with self._write() as (conn, log):
            row = questions.resolve(conn, log, execution_id, interaction_id, data)
        return interaction_out(row)

    def interactions(self, execution_id: str) -> list[dict[str, Any]]:
        """A run's interactions, oldest first."""
        with self._read() as conn:
            execs.load(conn, execution_id)
            return [interaction_out(r) for r in trace.interactions_of(conn, execution_id)]

    # -- events --------------------------------------------------------------
    def append_events(self, execution_id: str, data: EventsAppend) -> list[dict[str, int]]:
        """Append recorded events (log, stdout, stderr, artifact) to a run."""
        with self._write() as (conn, log):
            execs.load(conn, execution_id)
            return append(conn, log, execution_id, [
                NewEvent(e.type, e.message, e.level, e.data, e.ts) for e in data.events])

    def events(self, execution_id: str, **page: Any) -> tuple[list[dict[str, Any]], int | None]:
        """A page of a run's events and ``next_after_seq``."""
        with self._read() as conn:
            execs.load(conn, execution_id)
            rows, next_after = trace.events_of(conn, execution_id, **page)
        return [event_out(r) for r in rows], next_after

    # -- bulk ----------------------------------------------------------------
    def ingest(self, batch: IngestBatch, scope_id: str = "default") -> dict[str, int]:
        """Bulk import of history in one transaction; counts of new rows."""
        with self._write() as (conn, log):
            return bulk.ingest(conn, log, batch, scope_id)

    def is_empty(self) -> bool:
        """True when no execution is stored."""
        with self._read() as conn:
            return conn.execute(select(models.executions.c.id).limit(1)).first() is None

    def last_event_id(self) -> int:
        """The newest event id (0 when none): the head of the change feed."""
        with self._read() as conn:
            return conn.execute(select(func.max(models.events.c.id))).scalar() or 0


__all__ = ["Store", "execution_not_found"]
