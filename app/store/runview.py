"""Reads for the runs page: one run with its counts, single values, known names.

Raw rows (times as epoch ms) on purpose: the page formats them itself. Every
read is bounded: the known-values scan visits at most ``cap`` distinct values
through the index (a loose index scan), never the whole table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select, text

from app.db.dialect import Dialect
from app.db.models import events, executions, interactions, tool_calls
from app.store import meta
from app.store.errors import NotFound
from app.store.executions import load
from app.store.filters import ExecutionFilter
from app.store.statements import bound
from app.store.trace import events_of, interactions_of

# The waterfall draws every call but shows args/results one at a time, on demand.
_SUMMARY = [tool_calls.c[n] for n in ("id", "parent_id", "seq", "tool_path", "status",
                                      "started_at", "completed_at", "duration_ms")]
SLOW_SAMPLE = 1000

# Column of each "known values" kind; fixed identifiers, never user input.
_DISTINCT = {
    "tool": ("execution_tool_call", "tool_path"),
    "trigger": ("execution", "trigger_kind"),
}


def run_detail(conn: Connection, execution_id: str, *, tab: str, ev_after: int,
               ev_levels: tuple[str, ...], ev_limit: int,
               scope_id: str | None = None) -> dict[str, Any]:
    """One run with what its drawer tab shows, and the counts every tab header needs."""
    row = dict(load(conn, execution_id, scope_id=scope_id))
    i = interactions.c
    asked, pending = conn.execute(
        select(func.count(), func.count().filter(i.status == "pending"))
        .where(i.execution_id == execution_id)).one()
    newest = conn.execute(select(events.c.seq, events.c.id).where(
        events.c.execution_id == execution_id).order_by(events.c.seq.desc()).limit(1)).first()
    # seq is dense per run, so the highest one is the number of events; and ids
    # grow with seq (writers are serialized), so its id is the run's newest.
    event_total, last_event_id = (newest.seq, newest.id) if newest else (0, 0)
    out: dict[str, Any] = {
        "execution": row, "interaction_count": asked, "pending_count": pending,
        "event_total": event_total, "last_event_id": last_event_id, "tool_calls": [],
        "interactions": [], "events": [], "next_after_seq": None,
    }
    if tab == "tools":
        out["tool_calls"] = [dict(r) for r in conn.execute(
            select(*_SUMMARY).where(tool_calls.c.execution_id == execution_id)
            .order_by(tool_calls.c.seq)).mappings()]
    elif tab == "interactions":
        out["interactions"] = interactions_of(conn, execution_id)
    elif tab == "events":
        out["events"], out["next_after_seq"] = events_of(
            conn, execution_id, after_seq=ev_after, limit=ev_limit, levels=ev_levels)
    return out


def events_page(conn: Connection, execution_id: str, *, after: int, levels: tuple[str, ...],
                limit: int, scope_id: str | None = None,
                ) -> tuple[list[dict[str, Any]], int | None]:
    """A further page of the console (the run must exist, in ``scope_id`` when given)."""
    load(conn, execution_id, scope_id=scope_id)
    return events_of(conn, execution_id, after_seq=after, limit=limit, levels=levels)


def full_value(conn: Connection, execution_id: str, part: str, ref: str, *,
               scope_id: str | None = None) -> Any:
    """One whole stored value for "show all": ``part`` names the row and column.

    ``execution`` + code/result/error/trigger_meta/labels; ``tool_call`` + the
    call id in ``ref`` and args/result/error encoded as ``id:column``;
    ``interaction`` + ``id:request`` or ``id:response``; ``event`` +
    ``seq:message`` or ``seq:data``. Raises ``KeyError`` for an unknown part,
    ``LookupError`` for a missing row and ``execution_not_found`` for a run that
    is missing or (with ``scope_id``) of another scope.
    """
    if part == "execution":
        if ref not in ("code", "result", "error", "trigger_meta", "labels"):
            raise KeyError(ref)
        return load(conn, execution_id, scope_id=scope_id)[ref]
    key, _, column = ref.rpartition(":")
    if part == "tool_call" and column in ("args", "result", "error"):
        table, where = tool_calls, tool_calls.c.id == key
    elif part == "interaction" and column in ("request", "response"):
        table, where = interactions, interactions.c.id == key
    elif part == "event" and column in ("message", "data") and key.isdigit():
        table, where = events, events.c.seq == int(key)
    else:
        raise KeyError(part)
    load(conn, execution_id, scope_id=scope_id)
    row = conn.execute(select(table.c[column]).where(
        table.c.execution_id == execution_id, where)).first()
    if row is None:
        raise LookupError(ref)
    return row[0]


def known_values(conn: Connection, kind: str, cap: int,
                 scope_id: str | None = None) -> list[str]:
    """Up to ``cap`` distinct tool paths or trigger kinds, in index order (of runs
    of ``scope_id`` only, when given: names are data too).

    A recursive "next value after this one" walk: ``cap`` index seeks instead
    of a scan of every row, on both dialects. With a scope each seek walks on
    past values only other scopes use, so it costs more where one scope holds
    few of the rows; the suggestions that call this are capped and on demand.
    """
    table, column = _DISTINCT[kind]
    params: dict[str, Any] = {"cap": cap}
    first, then = "", ""
    if scope_id is not None:
        params["scope"] = scope_id
        cond = ("scope_id = :scope" if table == "execution" else
                f"EXISTS (SELECT 1 FROM execution x WHERE x.id = {table}.execution_id"
                " AND x.scope_id = :scope)")
        first, then = f" WHERE {cond}", f" AND {cond}"
    sql = text(f"""
        WITH RECURSIVE walk(v, n) AS (
          SELECT (SELECT min({column}) FROM {table}{first}), 1
          UNION ALL
          SELECT (SELECT min({column}) FROM {table} WHERE {column} > walk.v{then}), n + 1
          FROM walk WHERE walk.v IS NOT NULL AND n < :cap
        )
        SELECT v FROM walk WHERE v IS NOT NULL""")
    return [v for (v,) in conn.execute(sql, params)]


def tool_counts(conn: Connection, dialect: Dialect, flt: ExecutionFilter,
                paths: list[str], limit: int) -> list[dict[str, Any]]:
    """Runs per tool path for the given paths, under every filter but the tool one
    (the rail's tool search: the same disjunctive count as the facet)."""
    if not paths:
        return []
    return meta.tool_runs(conn, dialect, flt.without("tool"), limit, paths)


def count_runs(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> int:
    """How many runs match (the list's "of M" without the rest of ``meta``)."""
    stmt, params = bound("count", dialect, flt, meta.count_statement)
    return int(conn.execute(stmt, params).scalar_one())


def tool_call(conn: Connection, execution_id: str, tool_call_id: str, *,
              scope_id: str | None = None) -> dict[str, Any]:
    """One tool call with its args, result and error (``tool_call_not_found`` when absent)."""
    load(conn, execution_id, scope_id=scope_id)
    row = conn.execute(select(tool_calls).where(
        tool_calls.c.execution_id == execution_id, tool_calls.c.id == tool_call_id)
    ).mappings().first()
    if row is None:
        raise NotFound(f"no tool call {tool_call_id!r} in execution {execution_id!r}",
                       {"execution_id": execution_id, "tool_call_id": tool_call_id},
                       code="tool_call_not_found")
    return dict(row)


def page_meta(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> dict[str, Any]:
    """What the page shows of ``meta``: total, facets, timeline, and a slow threshold.

    The exact percentiles of the contract cost a sort of every matching row;
    the page only needs "slower than most" to highlight a duration, so it takes
    the p90 of the newest ``SLOW_SAMPLE`` matching runs (an index walk).
    """
    tool = meta.start_tool_facet(conn, dialect, flt)
    total = count_runs(conn, dialect, flt)
    timeline = meta.timeline(conn, dialect, flt, total)
    return {"total": total, "facets": meta.facets(conn, dialect, flt, tool),
            "timeline": timeline, "slow_ms": _slow_threshold(conn, dialect, flt)}


def _slow_threshold(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> int | None:
    """Nearest-rank p90 of the newest ``SLOW_SAMPLE`` matching durations (None
    under 20 of them), ranked in SQL: the sample's rows never reach Python."""
    stmt, params = bound("slow", dialect, flt, _slow_statement)
    slow: int | None = conn.execute(stmt, params).scalar()
    return slow


def _slow_statement(conds: list[ColumnElement[bool]]) -> Any:
    e = executions.c
    sample = (select(e.duration_ms.label("d")).where(*conds, e.duration_ms.is_not(None))
              .order_by(e.created_at.desc()).limit(SLOW_SAMPLE).subquery())
    ranked = select(sample.c.d, func.row_number().over(order_by=sample.c.d).label("pos"),
                    func.count().over().label("n")).subquery()
    # Position ceil(9n/10), in integers.
    return select(ranked.c.d).where(ranked.c.n >= 20, ranked.c.pos == (9 * ranked.c.n + 9) // 10)
