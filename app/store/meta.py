"""``meta`` of a list: total, disjunctive facets, timeline buckets, duration percentiles.

All of it is aggregated in SQL inside one read transaction (one snapshot), so
the numbers agree with each other; nothing loads rows into Python.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, literal, select

from app.db.dialect import Dialect, percentiles
from app.db.models import executions, tool_calls
from app.store.filters import UNKNOWN_TRIGGER, ExecutionFilter
from app.store.inputs import STATUSES
from app.times import format_ms, now_ms

e = executions.c
TOOL_FACET_SIZE = 20
MAX_BUCKETS = 120
BUCKET_STEPS_MS = tuple(
    n * unit for n, unit in (
        (1, 1000), (5, 1000), (15, 1000), (30, 1000),
        (1, 60_000), (5, 60_000), (15, 60_000), (30, 60_000),
        (1, 3_600_000), (3, 3_600_000), (6, 3_600_000), (12, 3_600_000),
        (1, 86_400_000), (7, 86_400_000),
    )
)


def bucket_width(span_ms: int) -> int:
    """The smallest step that covers ``span_ms`` in at most 120 buckets."""
    for step in BUCKET_STEPS_MS:
        if span_ms <= step * MAX_BUCKETS:
            return step
    return BUCKET_STEPS_MS[-1]


def _facet(conn: Connection, dialect: Dialect, flt: ExecutionFilter,
           column: Any) -> list[tuple[Any, int]]:
    stmt = select(column, func.count()).where(*flt.conditions(dialect)).group_by(column)
    return [(v, n) for v, n in conn.execute(stmt)]


def _ranked(pairs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"value": v, "count": n} for v, n in sorted(pairs, key=lambda p: (-p[1], p[0]))]


def facets(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> dict[str, Any]:
    """Each facet's counts under every filter except its own."""
    by_status = dict(_facet(conn, dialect, flt.without("status"), e.status))
    status = _ranked([(s, by_status.get(s, 0)) for s in STATUSES])

    trigger_col = func.coalesce(e.trigger_kind, literal(UNKNOWN_TRIGGER))
    triggers: dict[str, int] = {}
    for value, n in _facet(conn, dialect, flt.without("trigger"), trigger_col):
        triggers[value] = triggers.get(value, 0) + n
    trigger = _ranked(list(triggers.items()))

    by_elicitation = {bool(v): n for v, n in
                      _facet(conn, dialect, flt.without("elicitation"), e.had_elicitation)}
    elicitation = _ranked([("true", by_elicitation.get(True, 0)),
                           ("false", by_elicitation.get(False, 0))])

    t = tool_calls.c
    runs = func.count(t.execution_id.distinct())
    tool_stmt = select(t.tool_path, runs).group_by(t.tool_path)
    tool_conds = flt.without("tool").conditions(dialect)
    if tool_conds:
        # Only when something filters the runs is the join worth its cost.
        tool_stmt = tool_stmt.where(
            t.execution_id.in_(select(e.id).where(*tool_conds)))
    tool_stmt = tool_stmt.order_by(runs.desc(), t.tool_path).limit(TOOL_FACET_SIZE)
    tool = [{"value": v, "count": n} for v, n in conn.execute(tool_stmt)]
    return {"status": status, "trigger": trigger, "tool": tool, "elicitation": elicitation}


def timeline(conn: Connection, dialect: Dialect, flt: ExecutionFilter,
             total: int) -> dict[str, Any]:
    """Stacked status counts per aligned time bucket over the requested range."""
    conds = flt.conditions(dialect)
    start, end = flt.from_ms, flt.to_ms
    if start is None or end is None:
        lo, hi = (None, None)
        if total:
            lo, hi = conn.execute(
                select(func.min(e.created_at), func.max(e.created_at)).where(*conds)).one()
        if start is None:
            start = lo
        if end is None:
            if flt.from_ms is None:
                end = None if hi is None else hi + 1   # neither bound: the rows' own span
            else:
                end = max(now_ms(), (hi + 1) if hi is not None else 0)
    if start is None or end is None:
        return {"bucket_ms": None, "from": format_ms(start), "to": format_ms(end), "buckets": []}
    width = bucket_width(max(0, end - start))
    if end <= start:
        return {"bucket_ms": width, "from": format_ms(start), "to": format_ms(end), "buckets": []}
    bucket = (e.created_at // width) * width
    counts: dict[int, dict[str, int]] = {}
    stmt = select(bucket.label("b"), e.status, func.count()).where(*conds).group_by(
        bucket, e.status)
    for b, status, n in conn.execute(stmt):
        counts.setdefault(int(b), {})[status] = n
    first = (start // width) * width
    last = ((end - 1) // width) * width
    buckets = [
        {"start": format_ms(b), "counts": counts.get(b, {})}
        for b in range(first, last + 1, width)
    ]
    return {"bucket_ms": width, "from": format_ms(start), "to": format_ms(end),
            "buckets": buckets}


def duration_percentiles(conn: Connection, dialect: Dialect,
                         flt: ExecutionFilter) -> dict[str, int | None]:
    """Nearest-rank p50/p90/p99 of ``duration_ms`` over the matching rows."""
    base = select(e.duration_ms).where(*flt.conditions(dialect))
    p50, p90, p99 = percentiles(dialect, conn, e.duration_ms, base, (0.5, 0.9, 0.99))
    return {"p50": p50, "p90": p90, "p99": p99}


def compute(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> dict[str, Any]:
    """The whole ``meta`` object."""
    total = conn.execute(
        select(func.count()).select_from(executions).where(*flt.conditions(dialect))
    ).scalar_one()
    return {
        "total": total,
        "facets": facets(conn, dialect, flt),
        "timeline": timeline(conn, dialect, flt, total),
        "duration": duration_percentiles(conn, dialect, flt),
    }


