"""Interactions: asking a person and recording the answer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from app.db.models import executions, interactions
from app.ids import new_id
from app.store.errors import Conflict, NotFound
from app.store.executions import load, set_status
from app.store.feed import NewEvent, WriteLog, append
from app.store.inputs import TERMINAL, InteractionAsk, InteractionResolve
from app.times import now_ms


def ask(conn: Connection, log: WriteLog, execution_id: str, data: InteractionAsk, *,
        scope_id: str | None = None) -> tuple[dict[str, Any], bool]:
    """Open a question; the execution waits for it. Asking a finished run is a 409."""
    execution = load(conn, execution_id, for_update=True, scope_id=scope_id)
    if data.id is not None:
        existing = conn.execute(
            select(interactions).where(interactions.c.id == data.id)).mappings().first()
        if existing is not None:
            if existing["execution_id"] != execution_id or existing["kind"] != data.kind:
                raise Conflict(f"an interaction with id {data.id!r} already exists",
                               {"interaction_id": data.id}, code="already_exists")
            return dict(existing), False
    if execution["status"] in TERMINAL:
        raise Conflict(f"execution {execution_id!r} is {execution['status']}: nobody is waiting "
                       "for an answer", {"status": execution["status"]},
                       code="invalid_transition")
    now = now_ms()
    row = {
        "id": data.id or new_id(), "execution_id": execution_id, "kind": data.kind,
        "status": "pending", "message": data.message, "request": data.request,
        "action": None, "response": None,
        "created_at": data.created_at if data.created_at is not None else now,
        "resolved_at": None,
    }
    conn.execute(insert(interactions), row)
    conn.execute(update(executions).where(executions.c.id == execution_id).values(
        had_elicitation=True, updated_at=now))
    append(conn, log, execution_id, [NewEvent(
        "interaction.requested", data.message,
        data={"interaction_id": row["id"], "kind": data.kind})])
    if execution["status"] != "waiting_for_interaction":
        set_status(conn, log, execution_id, "waiting_for_interaction")
    return row, True


def get(conn: Connection, execution_id: str, interaction_id: str) -> Any:
    """The interaction row, or raise ``interaction_not_found``."""
    row = conn.execute(select(interactions).where(
        interactions.c.id == interaction_id, interactions.c.execution_id == execution_id,
    )).mappings().first()
    if row is None:
        raise NotFound(f"no interaction {interaction_id!r} in execution {execution_id!r}",
                       {"execution_id": execution_id, "interaction_id": interaction_id},
                       code="interaction_not_found")
    return row


def resolve(conn: Connection, log: WriteLog, execution_id: str, interaction_id: str,
            data: InteractionResolve) -> dict[str, Any]:
    """Answer a pending question; the run resumes when none is left pending."""
    execution = load(conn, execution_id, for_update=True)
    current = get(conn, execution_id, interaction_id)
    if current["status"] != "pending":
        if current["action"] == data.action:
            return dict(current)
        raise Conflict(f"interaction {interaction_id!r} is already {current['status']}",
                       {"status": current["status"], "action": current["action"]},
                       code="invalid_transition")
    now = now_ms()
    changes = {
        "status": "cancelled" if data.action == "cancel" else "resolved",
        "action": data.action, "response": data.response, "resolved_at": now,
    }
    conn.execute(update(interactions).where(interactions.c.id == interaction_id).values(changes))
    append(conn, log, execution_id, [NewEvent(
        "interaction.resolved", data.action,
        data={"interaction_id": interaction_id, "action": data.action,
              "status": changes["status"]})])
    still_pending = conn.execute(select(func.count()).select_from(interactions).where(
        interactions.c.execution_id == execution_id, interactions.c.status == "pending",
    )).scalar_one()
    if still_pending == 0 and execution["status"] == "waiting_for_interaction":
        set_status(conn, log, execution_id, "running")
    else:
        conn.execute(update(executions).where(executions.c.id == execution_id).values(
            updated_at=now))
    return {**dict(current), **changes}


def pending_for(conn: Connection, execution_id: str) -> Any:
    """The oldest pending interaction of an execution, or None."""
    return conn.execute(select(interactions).where(
        interactions.c.execution_id == execution_id, interactions.c.status == "pending",
    ).order_by(interactions.c.created_at, interactions.c.id).limit(1)).mappings().first()
