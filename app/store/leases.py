"""The queue's hand-over between workers: claim, lease renewal, output, endings, recovery.

A worker that claims a job holds a lease on it (``lease_owner``,
``lease_expires_at``) and renews it while the command runs. Every write a
worker makes about a job is fenced by that lease: a worker that lost its lease
(paused too long, its job recovered by another) writes nothing more. Lease
times come from the database's clock (``now_ms_sql``), so machines whose
clocks disagree still agree on expiry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, update

from app.db.dialect import Dialect, claim_one, now_ms_sql
from app.db.models import executions, jobs
from app.store import executions as execs
from app.store.feed import EventRow, NewEvent, WriteLog, append, append_rows
from app.store.inputs import TERMINAL, ExecutionPatch
from app.times import now_ms

_CLEARED = {"lease_owner": None, "lease_expires_at": None, "pid": None, "pid_start": None}


class LeaseLost(Exception):
    """This worker no longer holds the job: another may be running it."""


@dataclass(frozen=True)
class Claimed:
    """A job a worker has claimed, with everything needed to run it."""

    execution_id: str
    command: dict[str, Any]
    cwd: str | None
    env: dict[str, str] | None
    timeout_s: float | None
    attempt: int
    max_attempts: int


@dataclass(frozen=True)
class Ending:
    """How an attempt ended, as the execution will record it."""

    status: str
    exit_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Output:
    """Events a worker appends in one transaction, and the newest progress in them."""

    events: Sequence[EventRow] = ()
    progress: tuple[float | None, str | None] | None = None
    process: tuple[int, int | None] | None = None   # (pid, start ticks) once spawned


def claim(conn: Connection, log: WriteLog, dialect: Dialect, owner: str,
          lease_ms: int) -> Claimed | None:
    """Take the oldest queued job and mark its execution ``running``."""
    c = jobs.c
    while True:
        row = claim_one(dialect, conn, jobs, c.execution_id, c.queued_at,
                        [c.queued_at.is_not(None), c.lease_owner.is_(None)],
                        {"lease_owner": owner, "lease_expires_at": now_ms_sql(dialect) + lease_ms,
                         "attempt": c.attempt + 1, "queued_at": None,
                         "pid": None, "pid_start": None})
        if row is None:
            return None
        execution = execs.load(conn, row["execution_id"])
        if execution["status"] in TERMINAL:
            # Ended while queued by a write that is not a cancel (a PATCH): drop it.
            conn.execute(update(jobs).where(c.execution_id == row["execution_id"])
                         .values(_CLEARED))
            continue
        execs.patch(conn, log, row["execution_id"], ExecutionPatch(status="running"))
        return Claimed(row["execution_id"], row["command"], row["cwd"], row["env"],
                       row["timeout_s"], row["attempt"], row["max_attempts"])


def has_queued(conn: Connection) -> bool:
    """True when some job waits to be claimed (a cheap read before a claim)."""
    c = jobs.c
    return conn.execute(select(c.execution_id).where(
        c.queued_at.is_not(None), c.lease_owner.is_(None)).limit(1)).first() is not None


def renew(conn: Connection, dialect: Dialect, owner: str, ids: Sequence[str],
          lease_ms: int) -> dict[str, tuple[bool, str]]:
    """Extend the leases ``owner`` holds on ``ids``; for each job still held,
    ``(cancel_requested, execution status)``. A job missing from the answer is
    no longer held."""
    c = jobs.c
    held = conn.execute(
        update(jobs).where(c.lease_owner == owner, c.execution_id.in_(list(ids)))
        .values(lease_expires_at=now_ms_sql(dialect) + lease_ms)
        .returning(c.execution_id, c.cancel_requested)).all()
    if not held:
        return {}
    status = dict(conn.execute(select(executions.c.id, executions.c.status).where(
        executions.c.id.in_([r[0] for r in held]))).all())
    return {r[0]: (bool(r[1]), status.get(r[0], "cancelled")) for r in held}


def _write_output(conn: Connection, log: WriteLog, dialect: Dialect, execution_id: str,
                  out: Output) -> None:
    if out.process is not None:
        conn.execute(update(jobs).where(jobs.c.execution_id == execution_id)
                     .values(pid=out.process[0], pid_start=out.process[1]))
    append_rows(conn, log, dialect, execution_id, out.events)
    if out.progress is not None:
        pct, stage = out.progress
        conn.execute(update(executions).where(executions.c.id == execution_id).values(
            progress_pct=pct, progress_stage=stage, updated_at=now_ms()))


def append_output(conn: Connection, log: WriteLog, dialect: Dialect, execution_id: str,
                  owner: str, out: Output) -> None:
    """Append a batch of output while ``owner`` holds the job (else ``LeaseLost``)."""
    held = conn.execute(select(jobs.c.lease_owner).where(
        jobs.c.execution_id == execution_id)).scalar()
    if held != owner:
        raise LeaseLost(execution_id)
    _write_output(conn, log, dialect, execution_id, out)


def finish(conn: Connection, log: WriteLog, dialect: Dialect, execution_id: str, owner: str,
           out: Output, ending: Ending) -> bool:
    """Write the last output and the ending, and release the job; False (and
    nothing written) when ``owner`` no longer holds it."""
    released = conn.execute(update(jobs).where(
        jobs.c.execution_id == execution_id, jobs.c.lease_owner == owner).values(_CLEARED))
    if released.rowcount == 0:
        return False
    _write_output(conn, log, dialect, execution_id, out)
    if execs.load(conn, execution_id)["status"] in TERMINAL:
        return True   # ended by someone else meanwhile (a PATCH): that ending stands
    execs.patch(conn, log, execution_id, ExecutionPatch(
        status=ending.status, exit_code=ending.exit_code, error=ending.error))
    return True


def retry_or_fail(conn: Connection, log: WriteLog, job: Any, error: str, why: str) -> str:
    """After an attempt was lost: queue the job again if attempts remain, else fail
    it with ``error``. Returns the execution's new status."""
    execution_id = job["execution_id"]
    status = execs.load(conn, execution_id)["status"]
    if status in TERMINAL:
        return str(status)
    if job["cancel_requested"]:
        execs.patch(conn, log, execution_id, ExecutionPatch(
            status="cancelled", error=f"cancelled ({why})"))
        return "cancelled"
    if job["attempt"] < job["max_attempts"]:
        conn.execute(update(jobs).where(jobs.c.execution_id == execution_id)
                     .values(queued_at=now_ms()))
        append(conn, log, execution_id, [NewEvent(
            "log", f"attempt {job['attempt']} of {job['max_attempts']} ended early ({why}): "
            "queued again", data={"attempt": job["attempt"], "reason": error})])
        execs.patch(conn, log, execution_id, ExecutionPatch(status="queued"))
        return "queued"
    execs.patch(conn, log, execution_id, ExecutionPatch(status="failed", error=error))
    return "failed"


def release(conn: Connection, log: WriteLog, dialect: Dialect, execution_id: str, owner: str,
            out: Output, error: str, why: str) -> str | None:
    """A worker gives a job back unfinished (it is stopping): retry or fail it.
    None when ``owner`` no longer held it."""
    row = conn.execute(update(jobs).where(
        jobs.c.execution_id == execution_id, jobs.c.lease_owner == owner,
    ).values(_CLEARED).returning(*jobs.c)).mappings().first()
    if row is None:
        return None
    _write_output(conn, log, dialect, execution_id, out)
    return retry_or_fail(conn, log, row, error, why)


def expired(conn: Connection, dialect: Dialect, limit: int = 100) -> list[dict[str, Any]]:
    """Jobs whose lease has run out: their worker is gone (or stalled)."""
    c = jobs.c
    stmt = (select(c.execution_id, c.lease_owner, c.pid, c.pid_start)
            .where(c.lease_expires_at < now_ms_sql(dialect)).order_by(c.lease_expires_at)
            .limit(limit))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def held_by(conn: Connection, owner_prefix: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Leased jobs whose owner id starts with ``owner_prefix`` (a host's workers)."""
    c = jobs.c
    stmt = (select(c.execution_id, c.lease_owner, c.pid, c.pid_start)
            .where(c.lease_owner.startswith(owner_prefix, autoescape=True)).limit(limit))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def take_over(conn: Connection, dialect: Dialect, execution_id: str, lost_owner: str,
              owner: str, lease_ms: int, *, only_if_expired: bool = True) -> Any:
    """Move the lease of a lost worker's job to ``owner`` (who will kill what is
    left of the old attempt, then :func:`recover` it). Returns the job row as it
    was, or None when the lease was renewed or taken meanwhile."""
    c = jobs.c
    before = conn.execute(select(jobs).where(
        c.execution_id == execution_id, c.lease_owner == lost_owner)).mappings().first()
    stmt = update(jobs).where(c.execution_id == execution_id, c.lease_owner == lost_owner)
    if only_if_expired:
        stmt = stmt.where(c.lease_expires_at < now_ms_sql(dialect))
    moved = conn.execute(stmt.values(lease_owner=owner,
                                     lease_expires_at=now_ms_sql(dialect) + lease_ms))
    return dict(before) if before is not None and moved.rowcount else None


def recover(conn: Connection, log: WriteLog, execution_id: str, owner: str,
            lost_owner: str) -> str | None:
    """Retry a job taken over from ``lost_owner``, or fail it with ``worker_lost``.
    None when ``owner`` does not hold it."""
    c = jobs.c
    row = conn.execute(update(jobs).where(c.execution_id == execution_id,
                                          c.lease_owner == owner)
                       .values(_CLEARED).returning(*jobs.c)).mappings().first()
    if row is None:
        return None
    return retry_or_fail(conn, log, row, "worker_lost", f"its worker {lost_owner} was lost")
