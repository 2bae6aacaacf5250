"""Retention: old finished runs go with everything that belongs to them, in small steps."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from app.db.models import events, executions, interactions, jobs, tool_calls
from app.runner.retention import DAY_MS, prune_once
from app.store import Store
from app.store.inputs import parse_ingest
from app.times import now_ms
from tests.jobs_support import submit


def _count(store: Store, table: object) -> int:
    with store.db.read_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _run(run_id: str, status: str, age_days: float, n_events: int = 0) -> dict[str, object]:
    at = now_ms() - int(age_days * DAY_MS)
    terminal = status in ("completed", "failed", "cancelled", "timed_out")
    return {
        "id": run_id, "status": status, "created_at": at, "started_at": at,
        "completed_at": at + 1000 if terminal else None,
        "tool_calls": [{"id": f"{run_id}-t{i}", "tool_path": "a.b", "started_at": at}
                       for i in range(3)],
        "interactions": [{"id": f"{run_id}-q", "message": "ok?", "created_at": at}],
        "events": [{"message": f"line {i}", "ts": at} for i in range(n_events)],
    }


def test_old_finished_runs_are_pruned_with_their_parts_and_nothing_else(store: Store) -> None:
    store.ingest(parse_ingest({"executions": [
        _run("old-done", "completed", 40, n_events=2500),
        _run("old-failed", "failed", 31),
        _run("old-running", "running", 40),      # not finished: kept
        _run("recent-done", "completed", 5),     # too young: kept
    ]}))
    job = submit(store, {"argv": ["true"]})       # a queued job: kept
    # Small steps: 2,500 events take several transactions of at most 1,000 rows.
    steps = []
    cutoff = now_ms() - 30 * DAY_MS
    while not (step := store.prune_step(cutoff, runs=50, rows=1000)).done:
        assert step.rows <= 1000
        steps.append(step)
    assert len(steps) >= 4
    assert sum(s.executions for s in steps) == 2
    with store.db.read_engine.connect() as conn:
        left = set(conn.execute(select(executions.c.id)).scalars())
        assert left == {"old-running", "recent-done", job}
        for table in (events, tool_calls, interactions):
            owners = set(conn.execute(select(table.c.execution_id).distinct()).scalars())
            assert owners <= left
    assert _count(store, jobs) == 1


def test_prune_once_uses_the_retention_days(store: Store) -> None:
    store.ingest(parse_ingest({"executions": [
        _run("a", "completed", 3), _run("b", "timed_out", 1)]}))
    assert asyncio.run(prune_once(store, 2.0, pause_s=0)) == 1
    assert asyncio.run(prune_once(store, 2.0, pause_s=0)) == 0
    assert _count(store, executions) == 1
