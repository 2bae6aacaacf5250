"""Jobs: submitting commands, the approval gate, cancel requests and re-runs.

A job is an execution plus its row in ``job``. The queue is that table: a job
waits to be claimed while ``queued_at`` is set (see ``app.store.leases`` for
claiming, leases and endings). A job that needs approval is created with
``queued_at`` unset and an approval interaction (its *gate*); approving sets
``queued_at``, declining cancels the run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from app.db.models import executions, interactions, jobs
from app.store import executions as execs
from app.store import questions
from app.store.errors import Conflict
from app.store.feed import NewEvent, WriteLog, append
from app.store.inputs import (
    TERMINAL,
    ExecutionCreate,
    ExecutionPatch,
    InteractionAsk,
    InteractionResolve,
    JobSubmit,
)
from app.times import now_ms

# Who acted on a job (``Principal.actor``), or None for Runyard's own doing
# (the demo): kept in the job's record, never its secret.
Actor = dict[str, str] | None
# Execution text fields have these limits (see ``inputs``); a huge argv is cut
# for display only, the job row keeps all of it.
_CODE_MAX = 1_000_000
_GATE_MESSAGE_MAX = 4000


@dataclass(frozen=True)
class Limits:
    """Server settings a submission is held to."""

    timeout_default_s: float = 600.0
    timeout_max_s: float = 86_400.0


def command_text(command: dict[str, Any]) -> str:
    """How a command reads in a shell: the ``code`` of its execution."""
    if command.get("argv") is not None:
        return shlex.join(command["argv"])
    return str(command["shell"])


def job_row(conn: Connection, execution_id: str, *, for_update: bool = False) -> Any:
    """The job row of an execution, or None when the execution is not a job."""
    stmt = select(jobs).where(jobs.c.execution_id == execution_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def _by(actor: Actor) -> dict[str, Any]:
    return {} if actor is None else {"by": actor}


def not_a_job(execution_id: str) -> Conflict:
    """The 409 for cancelling or re-running a run that Runyard did not run."""
    return Conflict(f"execution {execution_id!r} is not a job: it was recorded, not run "
                    "by Runyard", {"execution_id": execution_id, "reason": "not_a_job"},
                    code="invalid_transition")


def submit(conn: Connection, log: WriteLog, data: JobSubmit, limits: Limits, *,
           rerun_of: str | None = None, scope_id: str = "default",
           actor: Actor = None) -> tuple[dict[str, Any], bool]:
    """Create the execution and its job; ``({"execution_id", "status"}, created)``.
    ``actor`` (who submitted: ``Principal.actor``) is kept in
    ``trigger_meta.job.submitted_by``, which no route can change afterwards.

    The same ``idempotency_key`` again answers the existing execution instead;
    a key already used in another scope is a 409 that names nothing of that run.
    """
    if data.idempotency_key is not None:
        existing = conn.execute(select(jobs.c.execution_id).where(
            jobs.c.idempotency_key == data.idempotency_key)).scalar()
        if existing is not None:
            row = execs.load(conn, existing)
            if row["scope_id"] != scope_id:
                raise Conflict("this idempotency_key is already used",
                               {"idempotency_key": data.idempotency_key},
                               code="already_exists")
            return {"execution_id": existing, "status": row["status"]}, False
    command = data.command.model_dump(exclude_none=True)
    asked = data.timeout_s or limits.timeout_default_s
    timeout = min(asked, limits.timeout_max_s)
    code = command_text(command)
    meta = {"job": {"cwd": data.cwd, "env": sorted(data.env or {}), "timeout_s": timeout,
                    "max_attempts": data.max_attempts,
                    "requires_approval": data.requires_approval,
                    "idempotency_key": data.idempotency_key}}
    if actor is not None:
        meta["job"]["submitted_by"] = actor
    execution, _ = execs.create(conn, log, ExecutionCreate(
        name=data.name, status="queued", trigger_kind=data.trigger_kind or "http",
        trigger_meta=meta, code=code[:_CODE_MAX], labels=data.labels, rerun_of=rerun_of,
    ), scope_id)
    execution_id = execution["id"]
    conn.execute(insert(jobs), {
        "execution_id": execution_id, "command": command, "cwd": data.cwd,
        "env": data.env, "timeout_s": timeout, "attempt": 0,
        "max_attempts": data.max_attempts, "idempotency_key": data.idempotency_key,
        "requires_approval": data.requires_approval,
        "queued_at": None if data.requires_approval else now_ms(),
    })
    if timeout < asked:
        append(conn, log, execution_id, [NewEvent(
            "log", f"timeout capped at {timeout:g}s by this server (asked for {asked:g}s)",
            data={"asked_s": asked, "timeout_s": timeout})])
    if not data.requires_approval:
        return {"execution_id": execution_id, "status": "queued"}, True
    questions.ask(conn, log, execution_id, InteractionAsk(
        kind="approval", message=f"Run this command?\n{code[:_GATE_MESSAGE_MAX]}",
        request={"command": command, "cwd": data.cwd}))
    # Waiting counts as begun for a recorded run; a job begins when its process
    # does (the claim sets started_at), so waiting for approval is not runtime.
    conn.execute(update(executions).where(executions.c.id == execution_id)
                 .values(started_at=None))
    return {"execution_id": execution_id, "status": "waiting_for_interaction"}, True


def gate(conn: Connection, execution_id: str, job: Any) -> Any:
    """The pending approval that holds a job back from the queue, or None.

    Only a job that asked for approval and has never been queued has one; an
    approval asked later through the generic route is an ordinary question.
    """
    if (job is None or not job["requires_approval"] or job["attempt"] > 0
            or job["queued_at"] is not None or job["lease_owner"] is not None):
        return None
    return conn.execute(select(interactions).where(
        interactions.c.execution_id == execution_id, interactions.c.kind == "approval",
        interactions.c.status == "pending",
    ).order_by(interactions.c.created_at, interactions.c.id).limit(1)).mappings().first()


def is_gate(conn: Connection, execution_id: str, interaction_id: str) -> bool:
    """True when the interaction is the approval a job waits on."""
    pending = gate(conn, execution_id, job_row(conn, execution_id))
    return pending is not None and pending["id"] == interaction_id


def resolve_gate(conn: Connection, log: WriteLog, execution_id: str, interaction: Any,
                 action: str, response: Any, actor: Actor) -> dict[str, Any]:
    """Answer a job's approval: accept queues the job, anything else cancels it.
    The event it appends names ``actor``, who decided."""
    now = now_ms()
    changes = {"status": "cancelled" if action == "cancel" else "resolved",
               "action": action, "response": response, "resolved_at": now}
    conn.execute(update(interactions).where(interactions.c.id == interaction["id"])
                 .values(changes))
    append(conn, log, execution_id, [NewEvent(
        "interaction.resolved", action,
        data={"interaction_id": interaction["id"], "action": action,
              "status": changes["status"], **_by(actor)})])
    if action == "accept":
        conn.execute(update(jobs).where(jobs.c.execution_id == execution_id)
                     .values(queued_at=now))
        # Not `running` (what resolving an ordinary question does): nothing runs
        # until a worker claims the job.
        execs.patch(conn, log, execution_id, ExecutionPatch(status="queued"))
    else:
        reason = response.get("reason") if isinstance(response, dict) else None
        execs.patch(conn, log, execution_id, ExecutionPatch(
            status="cancelled", error="declined" + (f": {reason}" if reason else ""),
            started_at=None))
    return {**dict(interaction), **changes}


def resolve_interaction(conn: Connection, log: WriteLog, execution_id: str,
                        interaction_id: str, data: InteractionResolve, *,
                        scope_id: str | None = None, actor: Actor = None) -> dict[str, Any]:
    """The generic resolve route: ``questions.resolve``, except that a job's gate
    is answered like ``…/approve`` and ``…/reject`` answer it."""
    execs.load(conn, execution_id, for_update=True, scope_id=scope_id)
    pending = gate(conn, execution_id, job_row(conn, execution_id, for_update=True))
    if pending is not None and pending["id"] == interaction_id:
        return resolve_gate(conn, log, execution_id, pending, data.action, data.response,
                            actor)
    return questions.resolve(conn, log, execution_id, interaction_id, data)


def decide(conn: Connection, log: WriteLog, execution_id: str, accept: bool,
           reason: str | None, *, scope_id: str | None = None,
           actor: Actor = None) -> dict[str, Any]:
    """``…/approve`` and ``…/reject``; 409 ``not_awaiting_approval`` unless gated."""
    execution = execs.load(conn, execution_id, for_update=True, scope_id=scope_id)
    job = job_row(conn, execution_id, for_update=True)
    pending = gate(conn, execution_id, job)
    if pending is None or execution["status"] in TERMINAL:
        raise Conflict(f"execution {execution_id!r} is not waiting for approval "
                       f"(it is {execution['status']})", {"status": execution["status"]},
                       code="not_awaiting_approval")
    resolve_gate(conn, log, execution_id, pending, "accept" if accept else "decline",
                 {"reason": reason} if reason else None, actor)
    return {"execution_id": execution_id, "status": "queued" if accept else "cancelled"}


def request_cancel(conn: Connection, log: WriteLog, execution_id: str,
                   reason: str | None, *, scope_id: str | None = None,
                   actor: Actor = None) -> tuple[dict[str, Any], str | None]:
    """Cancel a job: at once when no worker holds it, else by flagging the row for
    its worker's next lease renewal. Returns the answer and the lease owner.
    Either way an event says who asked (``actor``) and why."""
    execution = execs.load(conn, execution_id, for_update=True, scope_id=scope_id)
    job = job_row(conn, execution_id, for_update=True)
    if job is None:
        raise not_a_job(execution_id)
    if execution["status"] in TERMINAL:
        raise Conflict(f"execution {execution_id!r} is {execution['status']} (terminal): "
                       "there is nothing to cancel", {"status": execution["status"]},
                       code="invalid_transition")
    asked = NewEvent("log", "cancel requested" + (f": {reason}" if reason else ""),
                     data={"reason": reason, **_by(actor)})
    if job["lease_owner"] is None:
        conn.execute(update(jobs).where(jobs.c.execution_id == execution_id)
                     .values(queued_at=None, cancel_requested=True))
        append(conn, log, execution_id, [asked])
        execs.patch(conn, log, execution_id, ExecutionPatch(
            status="cancelled", started_at=execution["started_at"],
            error="cancelled before it started" + (f": {reason}" if reason else "")))
        return {"execution_id": execution_id, "status": "cancelled"}, None
    if not job["cancel_requested"]:
        conn.execute(update(jobs).where(jobs.c.execution_id == execution_id)
                     .values(cancel_requested=True))
        append(conn, log, execution_id, [asked])
    return {"execution_id": execution_id, "status": execution["status"]}, job["lease_owner"]


def rerun(conn: Connection, log: WriteLog, execution_id: str, limits: Limits,
          trigger_kind: str, *, scope_id: str | None = None,
          actor: Actor = None) -> dict[str, Any]:
    """A new execution of the same command, linked by ``rerun_of``, in the scope of
    the run it repeats (a reader may only re-run what it can see)."""
    execution = execs.load(conn, execution_id, scope_id=scope_id)
    job = job_row(conn, execution_id)
    if job is None:
        raise not_a_job(execution_id)
    data = JobSubmit.model_validate({
        "command": job["command"], "cwd": job["cwd"], "env": job["env"],
        "timeout_s": job["timeout_s"], "name": execution["name"],
        "labels": execution["labels"], "requires_approval": job["requires_approval"],
        "max_attempts": job["max_attempts"], "trigger_kind": trigger_kind,
    })
    out, _ = submit(conn, log, data, limits, rerun_of=execution_id,
                    scope_id=execution["scope_id"], actor=actor)
    return out


def job_view(conn: Connection, execution: Any, reruns_limit: int = 20,
             ) -> dict[str, Any] | None:
    """What the drawer's job controls show for ``execution`` (its row, as
    ``executions.load`` read it); never the env values: they may be secrets."""
    execution_id = execution["id"]
    job = job_row(conn, execution_id)
    if job is None:
        return None
    e = executions.c
    # `rerun_of` is also writable through the API, so another scope's run may
    # name this one: list only re-runs of this run's own scope.
    reruns = [dict(r) for r in conn.execute(
        select(e.id, e.status, e.created_at).where(e.rerun_of == execution_id,
                                                   e.scope_id == execution["scope_id"])
        .order_by(e.created_at.desc(), e.id.desc()).limit(reruns_limit)).mappings()]
    meta = execution["trigger_meta"]
    job_meta = meta.get("job") if isinstance(meta, dict) else None
    # None for a job submitted before the record was kept (or by the demo).
    submitted_by = job_meta.get("submitted_by") if isinstance(job_meta, dict) else None
    return {
        "execution_id": execution_id, "command": job["command"], "cwd": job["cwd"],
        "env_keys": sorted(job["env"] or {}), "timeout_s": job["timeout_s"],
        "attempt": job["attempt"], "max_attempts": job["max_attempts"],
        "requires_approval": bool(job["requires_approval"]),
        "awaiting_approval": gate(conn, execution_id, job) is not None,
        "cancel_requested": bool(job["cancel_requested"]),
        "running": job["lease_owner"] is not None, "reruns": reruns,
        "submitted_by": submitted_by if isinstance(submitted_by, dict) else None,
    }
