"""The store: the only code that touches the database.

Web, API, live and runner call :class:`Store`; each method is one transaction
(``write_each`` runs several requests' writes in one: group commit).
Writes hold the feed lock (see ``app.db.dialect.lock_feed``) and, after they
commit, tell the ``on_commit`` callback what they appended, which is how the
live layer learns of changes without the store importing it.

Scopes: every read or write of one run takes ``scope_id`` (the principal's
``read_scope``; None sees every scope). A run of another scope is answered
exactly like a missing one (``execution_not_found``), so a reader cannot learn
it exists. Lists take the scope in ``ExecutionFilter.scope_id``; their cursors
are signed with ``cursor_key`` for that scope and sort (``app.store.cursor``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, func, select, text

from app.db import models
from app.db.dialect import lock_feed, notify_feed, references_checked
from app.db.engine import Database
from app.store import (
    changes,
    jobs,
    leases,
    listing,
    meta,
    questions,
    retention,
    runview,
    spans,
    tokens,
    trace,
    writes,
)
from app.store import executions as execs
from app.store import ingest as bulk
from app.store.cursor import Cursor
from app.store.errors import Conflict, StoreError, execution_not_found
from app.store.feed import WriteLog
from app.store.inputs import (
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    InteractionAsk,
    InteractionResolve,
    JobSubmit,
    ToolCallFinish,
    ToolCallStart,
)
from app.store.params import ListQuery
from app.store.records import event_out, execution_out, interaction_out, tool_call_out
from app.store.reuse import Reuse

CommitCallback = Callable[[WriteLog], None]
T = TypeVar("T")


class Store:
    """Reads and writes of executions and everything that belongs to them."""

    def __init__(self, db: Database, on_commit: CommitCallback | None = None,
                 reuse_s: float = 0.0) -> None:
        self.db = db
        self.dialect = db.dialect
        self._on_commit = on_commit
        # The page's aggregates, reused for reuse_s while writes pour in (0: never).
        self._reuse = Reuse(reuse_s)
        # Signs list cursors. Random per process unless the app sets a persisted
        # secret (then cursors survive a restart and work across replicas).
        self.cursor_key: bytes = secrets.token_bytes(32)

    @contextmanager
    def _write(self, *, check_references: bool = True, requests: int = 1,
               ) -> Iterator[tuple[Connection, WriteLog]]:
        log = WriteLog()
        with (self.db.write_engine.connect() as conn, self.db.writer_turn(),
              references_checked(self.dialect, conn, check_references), conn.begin()):
            lock_feed(self.dialect, conn)
            yield conn, log
            if log.last_event_id:
                notify_feed(self.dialect, conn, log.last_event_id)
        self._reuse.wrote(requests)
        if log.last_event_id and self._on_commit is not None:
            self._on_commit(log)

    def write_one(self, op: writes.WriteOp[T]) -> T:
        """Run one write operation (``app.store.writes``) in a transaction of its own."""
        with self._write() as (conn, log):
            return op(conn, log)

    def write_each(self, ops: Sequence[writes.WriteOp[Any]]) -> list[Any]:
        """Run several write operations in one transaction (group commit); each
        one's answer, in order, or the ``StoreError`` it was refused with.

        A refused operation changes nothing: each runs in a savepoint, and what
        it added to the write log goes with it. Anything else an operation
        raises (the database failing, a bug) rolls back every one and is raised.
        """
        if len(ops) == 1:
            try:
                return [self.write_one(ops[0])]
            except StoreError as exc:
                return [exc]
        out: list[Any] = []
        with self._write(requests=len(ops)) as (conn, log):
            for op in ops:
                before = (log.last_event_id, set(log.execution_ids))
                try:
                    with conn.begin_nested():
                        out.append(op(conn, log))
                except StoreError as exc:
                    log.last_event_id, log.execution_ids = before
                    out.append(exc)
        return out

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
        return self.write_one(writes.create_execution(data, scope_id))

    def update_execution(self, execution_id: str, data: ExecutionPatch, *,
                         scope_id: str | None = None) -> dict[str, Any]:
        """Apply a PATCH under the status-transition rules."""
        return self.write_one(writes.update_execution(execution_id, data, scope_id))

    def get_execution(self, execution_id: str, *, scope_id: str | None = None,
                      ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The execution and its oldest pending interaction (or None)."""
        with self._read() as conn:
            row = execs.load(conn, execution_id, scope_id=scope_id)
            pending = questions.pending_for(conn, execution_id)
        return execution_out(row), (interaction_out(pending) if pending else None)

    def _page(self, conn: Connection, query: ListQuery,
              ) -> tuple[list[dict[str, Any]], str | None]:
        scope = query.filter.scope_id
        after = (Cursor.decode(query.cursor, self.cursor_key, scope, query.sort)
                 if query.cursor else None)
        rows, cursor = listing.list_page(
            conn, self.dialect, query.filter, query.sort, query.limit, after)
        return rows, (cursor.encode(self.cursor_key, scope) if cursor else None)

    def list_executions(self, query: ListQuery) -> dict[str, Any]:
        """A page of executions, the next cursor and (when asked) ``meta``."""
        with self._read() as conn:
            rows, cursor = self._page(conn, query)
            out: dict[str, Any] = {
                "executions": [execution_out(r) for r in rows],
                "next_cursor": cursor,
            }
            if query.meta:
                out["meta"] = meta.compute(conn, self.dialect, query.filter)
        return out

    def list_rows(self, query: ListQuery) -> tuple[list[dict[str, Any]], str | None]:
        """Like :meth:`list_executions` but raw rows (times as epoch ms), no meta."""
        with self._read() as conn:
            return self._page(conn, query)

    def list_meta(self, query: ListQuery) -> dict[str, Any]:
        """Only the ``meta`` object of a list."""
        with self._read() as conn:
            return meta.compute(conn, self.dialect, query.filter)

    # -- tool calls ----------------------------------------------------------
    def start_tool_call(self, execution_id: str, data: ToolCallStart, *,
                        scope_id: str | None = None) -> tuple[dict[str, Any], bool]:
        """Start a tool call; ``(object, created)``."""
        return self.write_one(writes.start_tool_call(execution_id, data, scope_id))

    def finish_tool_call(self, execution_id: str, tool_call_id: str,
                         data: ToolCallFinish, *, scope_id: str | None = None,
                         ) -> dict[str, Any]:
        """Finish a tool call."""
        return self.write_one(writes.finish_tool_call(execution_id, tool_call_id, data,
                                                      scope_id))

    def tool_calls(self, execution_id: str, *,
                   scope_id: str | None = None) -> list[dict[str, Any]]:
        """A run's tool calls in ``seq`` order."""
        with self._read() as conn:
            execs.load(conn, execution_id, scope_id=scope_id)
            return [tool_call_out(r) for r in trace.tool_calls_of(conn, execution_id)]

    # -- interactions --------------------------------------------------------
    def ask(self, execution_id: str, data: InteractionAsk, *,
            scope_id: str | None = None) -> tuple[dict[str, Any], bool]:
        """Open an interaction; ``(object, created)``."""
        return self.write_one(writes.ask(execution_id, data, scope_id))

    def resolve(self, execution_id: str, interaction_id: str,
                data: InteractionResolve, *, scope_id: str | None = None,
                actor: jobs.Actor = None) -> dict[str, Any]:
        """Answer an interaction (``actor``: who, recorded when it is a job's gate)."""
        with self._write() as (conn, log):
            # A job's approval gate queues or cancels the job (issue 5).
            row = jobs.resolve_interaction(conn, log, execution_id, interaction_id, data,
                                           scope_id=scope_id, actor=actor)
        return interaction_out(row)

    def interactions(self, execution_id: str, *,
                     scope_id: str | None = None) -> list[dict[str, Any]]:
        """A run's interactions, oldest first."""
        with self._read() as conn:
            execs.load(conn, execution_id, scope_id=scope_id)
            return [interaction_out(r) for r in trace.interactions_of(conn, execution_id)]

    # -- events --------------------------------------------------------------
    def append_events(self, execution_id: str, data: EventsAppend, *,
                      scope_id: str | None = None) -> list[dict[str, int]]:
        """Append recorded events (log, stdout, stderr, artifact) to a run."""
        return self.write_one(writes.append_events(execution_id, data, scope_id))

    def events(self, execution_id: str, *, scope_id: str | None = None,
               **page: Any) -> tuple[list[dict[str, Any]], int | None]:
        """A page of a run's events and ``next_after_seq``."""
        with self._read() as conn:
            execs.load(conn, execution_id, scope_id=scope_id)
            rows, next_after = trace.events_of(conn, execution_id, **page)
        return [event_out(r) for r in rows], next_after

    # -- bulk ----------------------------------------------------------------
    def ingest(self, batch: dict[str, Any], scope_id: str = "default") -> dict[str, int]:
        """Bulk import of history in one transaction; counts of new rows.

        ``batch`` is an ingest body as ``inputs.parse_ingest`` returns it.

        An execution id already stored in another scope fails the whole batch
        with 409 ``already_exists`` (naming only the id): skipping it, as a
        re-sent id of this scope is skipped, would drop the client's data silently.
        """
        # Every row it inserts belongs to an execution it inserts: the
        # per-row foreign-key lookups can go (SQLite; 6% of a bulk load).
        with self._write(check_references=False) as (conn, log):
            # One lookup for both: ids of this scope are skipped, another's refused.
            stored = execs.scopes_of(conn, [x["id"] for x in batch["executions"] if x.get("id")])
            foreign = sorted(i for i, scope in stored.items() if scope != scope_id)
            if foreign:
                raise Conflict(f"an execution with id {foreign[0]!r} already exists",
                               {"execution_id": foreign[0]}, code="already_exists")
            return bulk.ingest(conn, log, batch, scope_id, existing=stored.keys())

    def is_empty(self) -> bool:
        """True when no execution is stored."""
        with self._read() as conn:
            return conn.execute(select(models.executions.c.id).limit(1)).first() is None

    def last_event_id(self) -> int:
        """The newest event id (0 when none): the head of the change feed."""
        with self._read() as conn:
            return conn.execute(select(func.max(models.events.c.id))).scalar() or 0

    # -- change feed (for app.live) -----------------------------------------
    def feed_after(self, after_id: int, limit: int = 1000,
                   execution_id: str | None = None) -> list[dict[str, Any]]:
        """Raw event rows after ``after_id`` in id order (of one run, when given)."""
        with self._read() as conn:
            return changes.events_after(conn, after_id, limit, execution_id)

    def rows_and_tools(self, ids: list[str], with_tools: bool,
                       ) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
        """Current rows of ``ids`` and, when asked, the tool paths each has called."""
        with self._read() as conn:
            rows = changes.rows_by_id(conn, self.dialect, ids)
            tools = changes.tool_paths_by_run(conn, rows) if with_tools else {}
        return rows, tools

    def changed_rows_after(self, after_id: int, query: ListQuery, limit: int = 500,
                           ) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
        """Rows matching ``query`` changed after ``after_id`` (see ``changes``)."""
        with self._read() as conn:
            return changes.changed_rows_after(
                conn, self.dialect, after_id, query.filter, limit)

    def execution_status(self, execution_id: str, *, scope_id: str | None = None) -> str:
        """The current status of a run (``execution_not_found`` when unknown)."""
        with self._read() as conn:
            return str(execs.load(conn, execution_id, scope_id=scope_id)["status"])


    # -- reads for the runs page (issue 3) ------------------------------------
    def run_detail(self, execution_id: str, *, tab: str = "overview", ev_after: int = 0,
                   ev_levels: tuple[str, ...] = (), ev_limit: int = 200,
                   scope_id: str | None = None) -> dict[str, Any]:
        """One run (raw row) with its counts and what its drawer tab shows."""
        with self._read() as conn:
            return runview.run_detail(conn, execution_id, tab=tab, ev_after=ev_after,
                                      ev_levels=ev_levels, ev_limit=ev_limit,
                                      scope_id=scope_id)

    def events_page(self, execution_id: str, *, after: int = 0,
                    levels: tuple[str, ...] = (), limit: int = 200,
                    scope_id: str | None = None,
                    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of a run's events as raw rows, and the seq to continue from."""
        with self._read() as conn:
            return runview.events_page(conn, execution_id, after=after, levels=levels,
                                       limit=limit, scope_id=scope_id)

    def full_value(self, execution_id: str, part: str, ref: str, *,
                   scope_id: str | None = None) -> Any:
        """One whole stored value of a run (for "show all")."""
        with self._read() as conn:
            return runview.full_value(conn, execution_id, part, ref, scope_id=scope_id)

    def known_values(self, kind: str, cap: int = 1000, *,
                     scope_id: str | None = None) -> list[str]:
        """Distinct tool paths or trigger kinds (at most ``cap``), in index order;
        with ``scope_id``, only those its runs used."""
        with self._read() as conn:
            return runview.known_values(conn, kind, cap, scope_id)

    def tool_counts(self, flt: runview.ExecutionFilter, paths: list[str],
                    limit: int = 20) -> list[dict[str, Any]]:
        """Disjunctive run counts for chosen tool paths (the rail's tool search)."""
        with self._read() as conn:
            return runview.tool_counts(conn, self.dialect, flt, paths, limit)

    def tool_call(self, execution_id: str, tool_call_id: str, *,
                  scope_id: str | None = None) -> dict[str, Any]:
        """One tool call of a run as a raw row (args, result and error included)."""
        with self._read() as conn:
            return runview.tool_call(conn, execution_id, tool_call_id, scope_id=scope_id)

    def page_meta(self, flt: runview.ExecutionFilter) -> dict[str, Any]:
        """Total, facets and timeline (one snapshot, but for the tool facet: see
        ``app.store.meta``), plus the page's slow threshold. While writes pour
        in, up to ``reuse_s`` old (``app.store.reuse``); not to be changed."""
        def compute() -> dict[str, Any]:
            with self._read() as conn:
                return runview.page_meta(conn, self.dialect, flt)
        return self._reuse.get("page", flt, compute)

    def count_runs(self, flt: runview.ExecutionFilter) -> int:
        """How many runs match a filter (for the page: reused as ``page_meta``)."""
        def compute() -> int:
            with self._read() as conn:
                return runview.count_runs(conn, self.dialect, flt)
        return self._reuse.get("count", flt, compute)


    # -- jobs (issue 5) -------------------------------------------------------
    @contextmanager
    def _write_quiet(self) -> Iterator[Connection]:
        """A write that appends no event, so it skips the feed lock: lease renewals
        are frequent and must never queue behind a burst of feed writes."""
        with self.db.write_engine.connect() as conn, self.db.writer_turn(), conn.begin():
            yield conn

    # ``actor`` on the job methods: who acts (``Principal.actor``), kept in the
    # job's record (trigger_meta, the approval's and the cancel's events).
    def submit_job(self, data: JobSubmit, limits: jobs.Limits, scope_id: str = "default",
                   *, actor: jobs.Actor = None) -> tuple[dict[str, Any], bool]:
        """Queue a command (or hold it for approval); ``(answer, created)``."""
        with self._write() as (conn, log):
            return jobs.submit(conn, log, data, limits, scope_id=scope_id, actor=actor)

    def rerun_job(self, execution_id: str, limits: jobs.Limits,
                  trigger_kind: str = "http", *, scope_id: str | None = None,
                  actor: jobs.Actor = None) -> dict[str, Any]:
        """A new execution of a job's command, linked by ``rerun_of``."""
        with self._write() as (conn, log):
            return jobs.rerun(conn, log, execution_id, limits, trigger_kind,
                              scope_id=scope_id, actor=actor)

    def decide_approval(self, execution_id: str, accept: bool,
                        reason: str | None = None, *, scope_id: str | None = None,
                        actor: jobs.Actor = None) -> dict[str, Any]:
        """Approve (queue) or reject (cancel) a job waiting for approval."""
        with self._write() as (conn, log):
            return jobs.decide(conn, log, execution_id, accept, reason, scope_id=scope_id,
                               actor=actor)

    def cancel_job(self, execution_id: str, reason: str | None = None, *,
                   scope_id: str | None = None, actor: jobs.Actor = None,
                   ) -> tuple[dict[str, Any], str | None]:
        """Cancel a job; ``(answer, lease owner to stop it or None)``."""
        with self._write() as (conn, log):
            return jobs.request_cancel(conn, log, execution_id, reason, scope_id=scope_id,
                                       actor=actor)

    def job_view(self, execution_id: str, *,
                 scope_id: str | None = None) -> dict[str, Any] | None:
        """A job's controls for the drawer (None for a run that is not a job)."""
        with self._read() as conn:
            return jobs.job_view(conn, execs.load(conn, execution_id, scope_id=scope_id))

    def is_job_gate(self, execution_id: str, interaction_id: str, *,
                    scope_id: str | None = None) -> bool:
        """True when the interaction is the approval a job waits on: answering it
        runs (or cancels) a command, so it needs the right to run commands.
        ``execution_not_found`` for a run of another scope."""
        with self._read() as conn:
            if scope_id is not None:
                execs.load(conn, execution_id, scope_id=scope_id)
            return jobs.is_gate(conn, execution_id, interaction_id)

    def has_queued_jobs(self) -> bool:
        """True when a job waits to be claimed (a read: cheap to ask often)."""
        with self._read() as conn:
            return leases.has_queued(conn)

    def claim_job(self, owner: str, lease_ms: int) -> leases.Claimed | None:
        """Claim the oldest queued job for ``owner``, or None."""
        with self._write() as (conn, log):
            return leases.claim(conn, log, self.dialect, owner, lease_ms)

    def renew_leases(self, owner: str, ids: list[str],
                     lease_ms: int) -> dict[str, tuple[bool, str]]:
        """Extend ``owner``'s leases; ``{id: (cancel_requested, status)}`` of those held."""
        if not ids:
            return {}
        with self._write_quiet() as conn:
            return leases.renew(conn, self.dialect, owner, ids, lease_ms)

    def append_job_output(self, execution_id: str, owner: str, out: leases.Output) -> None:
        """Append a batch of a job's output (``LeaseLost`` when no longer held)."""
        with self._write() as (conn, log):
            leases.append_output(conn, log, self.dialect, execution_id, owner, out)

    def finish_job(self, execution_id: str, owner: str, out: leases.Output,
                   ending: leases.Ending) -> bool:
        """Record the last output and how the job ended; False when not held."""
        with self._write() as (conn, log):
            return leases.finish(conn, log, self.dialect, execution_id, owner, out, ending)

    def release_job(self, execution_id: str, owner: str, out: leases.Output, error: str,
                    why: str) -> str | None:
        """Give an unfinished job back: retried or failed with ``error``."""
        with self._write() as (conn, log):
            return leases.release(conn, log, self.dialect, execution_id, owner, out, error,
                                  why)

    def expired_leases(self, limit: int = 100) -> list[dict[str, Any]]:
        """Leased jobs whose lease ran out."""
        with self._read() as conn:
            return leases.expired(conn, self.dialect, limit)

    def leases_held_by(self, owner_prefix: str) -> list[dict[str, Any]]:
        """Leased jobs whose owner id starts with ``owner_prefix``."""
        with self._read() as conn:
            return leases.held_by(conn, owner_prefix)

    def take_over_job(self, execution_id: str, lost_owner: str, owner: str, lease_ms: int,
                      only_if_expired: bool = True) -> dict[str, Any] | None:
        """Move a lost worker's lease to ``owner``; the job row as it was, or None."""
        with self._write_quiet() as conn:
            return leases.take_over(conn, self.dialect, execution_id, lost_owner, owner,
                                    lease_ms, only_if_expired=only_if_expired)

    def recover_job(self, execution_id: str, owner: str, lost_owner: str) -> str | None:
        """Retry or fail (``worker_lost``) a job taken over; its new status."""
        with self._write() as (conn, log):
            return leases.recover(conn, log, execution_id, owner, lost_owner)

    def prune_step(self, cutoff_ms: int, runs: int = 50,
                   rows: int = 2000) -> retention.Pruned:
        """One short transaction of retention (see ``app.store.retention``)."""
        # The feed lock: an append to a run must not race its deletion.
        with self._write() as (conn, _log):
            return retention.prune_step(conn, cutoff_ms, runs, rows)

    # -- OpenTelemetry (issue 6) ---------------------------------------------
    def write_traces(self, traces: list[Any], scope_id: str = "default") -> dict[str, int]:
        """Write mapped OTLP traces (``app.otlp.mapping.Trace``) in one transaction;
        idempotent on trace and span ids. Counts of rows newly written, and
        ``rejected_spans``: spans of a trace whose run belongs to another scope
        (a trace id is global; they must not land in, or reveal, that run)."""
        with self._write() as (conn, log):
            foreign = execs.foreign_ids(conn, [t.execution_id for t in traces], scope_id)
            kept = [t for t in traces if t.execution_id not in foreign]
            counts = spans.write_traces(conn, log, kept, scope_id) if kept else {
                "executions": 0, "tool_calls": 0, "interactions": 0, "events": 0}
        rejected = sum(len(t.roots) + len(t.calls) for t in traces
                       if t.execution_id in foreign)
        return {**counts, "rejected_spans": rejected}


    # -- access tokens (issue 7) ----------------------------------------------
    # Tokens are not runs: these writes take no feed lock and append no events.
    def create_token(self, name: str, roles: Sequence[str],
                     scope_id: str | None = None) -> tuple[dict[str, Any], str]:
        """A new token: ``(row without the hash, the token, shown this once)``."""
        with self._write_quiet() as conn:
            return tokens.create(conn, name, roles, scope_id)

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token (revoked ones too), oldest first; never the secret."""
        with self._read() as conn:
            return tokens.list_all(conn)

    def revoke_token(self, id_or_name: str) -> dict[str, Any]:
        """Revoke a token by id, or by a name only one active token has."""
        with self._write_quiet() as conn:
            return tokens.revoke(conn, id_or_name)

    def token_by_secret(self, token: str) -> dict[str, Any] | None:
        """The active token whose secret is ``token``, or None."""
        with self._read() as conn:
            return tokens.by_secret(conn, token)

    def token_by_id(self, token_id: str) -> dict[str, Any] | None:
        """A token by id, revoked or not (check ``revoked_at``), or None."""
        with self._read() as conn:
            return tokens.by_id(conn, token_id)

    def has_tokens(self) -> bool:
        """True once any token exists, revoked or not: then every request needs one."""
        with self._read() as conn:
            return tokens.any_token(conn)

    def server_secret(self) -> bytes:
        """The server's signing key, created once and kept in the database."""
        # A read first: a server on a read-only database must still start.
        with self._read() as conn:
            secret = tokens.read_secret(conn)
        if secret is not None:
            return secret
        with self._write_quiet() as conn:
            return tokens.create_secret(conn, self.dialect)

__all__ = ["Store", "execution_not_found"]

