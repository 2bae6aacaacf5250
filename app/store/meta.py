"""``meta`` of a list: total, disjunctive facets, timeline buckets, duration percentiles.

All of it is aggregated in SQL inside one read transaction (one snapshot), so
the numbers agree with each other; nothing loads rows into Python. The one
exception is the tool facet, the costliest statement (most of a filtered
``meta``): it runs at the same time on a second read connection of the same
engine (:func:`start_tool_facet`), so it may see a snapshot a few writes apart.
Nothing compares it with the rest: its counts are runs per path under a filter
the total does not use, and they neither add up to the total nor to a bar.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Subquery,
    bindparam,
    cast,
    func,
    literal,
    select,
    true,
)

from app.db.dialect import Dialect, groups_by_sorting, percentiles
from app.db.models import executions, tool_calls
from app.store.filters import UNKNOWN_TRIGGER, ExecutionFilter
from app.store.inputs import STATUSES
from app.store.statements import FROM_MS, bound
from app.times import format_ms, now_ms

e = executions.c
TOOL_FACET_SIZE = 20
# At most this many trigger kinds are counted one index range each.
TRIGGER_RANGES = 64
MAX_BUCKETS = 120
BUCKET_STEPS_MS = tuple(
    n * unit for n, unit in (
        (1, 1000), (5, 1000), (15, 1000), (30, 1000),
        (1, 60_000), (5, 60_000), (15, 60_000), (30, 60_000),
        (1, 3_600_000), (3, 3_600_000), (6, 3_600_000), (12, 3_600_000),
        (1, 86_400_000), (7, 86_400_000),
    )
)


FIRST, LAST, WIDTH = (bindparam(n, type_=BigInteger) for n in ("first", "last", "width"))
CAP = bindparam("cap", type_=Integer)


def bucket_width(span_ms: int) -> int:
    """The smallest step that covers ``span_ms`` in at most 120 buckets."""
    for step in BUCKET_STEPS_MS:
        if span_ms <= step * MAX_BUCKETS:
            return step
    return BUCKET_STEPS_MS[-1]


def _facet(conn: Connection, dialect: Dialect, flt: ExecutionFilter, name: str,
           column: Any) -> list[tuple[Any, int]]:
    stmt, params = bound("facet:" + name, dialect, flt, lambda conds: select(
        column, func.count()).where(*conds).group_by(column))
    return [(v, n) for v, n in conn.execute(stmt, params).all()]


def _time_only(flt: ExecutionFilter) -> bool:
    """True when ``flt`` holds no condition but a ``created_at`` range, which the
    (status, created_at) and (trigger_kind, created_at) indexes test by themselves."""
    return replace(flt, from_ms=None, to_ms=None).is_empty()


def _by_ranges(dialect: Dialect, flt: ExecutionFilter) -> bool:
    """Count (status, created_at) index ranges one by one instead of one GROUP BY?

    Only where a GROUP BY sorts (SQLite), and only when that index alone tests
    every condition: another condition could lead each count to another index.
    """
    return groups_by_sorting(dialect) and _time_only(replace(flt, status=(), not_status=()))


def _status_counts(conn: Connection, dialect: Dialect,
                   flt: ExecutionFilter) -> dict[str, int]:
    if not _by_ranges(dialect, flt):
        return dict(_facet(conn, dialect, flt, "status", e.status))
    # One count per status, each reading only its own range of the (status,
    # created_at) index: SQLite would answer the GROUP BY by walking the whole
    # index, all of it for a 24 h range too.
    stmt, params = bound("status ranges", dialect, flt, lambda conds: select(*[
        select(func.count()).select_from(executions).where(e.status == s, *conds)
        .scalar_subquery() for s in STATUSES]))
    return dict(zip(STATUSES, conn.execute(stmt, params).one(), strict=True))


def _elicitation_counts(conn: Connection, dialect: Dialect,
                        flt: ExecutionFilter) -> dict[bool, int]:
    if not (groups_by_sorting(dialect) and _time_only(flt)):
        return {bool(v): n for v, n in _facet(conn, dialect, flt, "elicitation",
                                                  e.had_elicitation)}
    # As for status: one count per value over its own range of the
    # (had_elicitation, created_at) index; a GROUP BY would walk all of it.
    stmt, params = bound("elicitation ranges", dialect, flt, lambda conds: select(*[
        select(func.count()).select_from(executions).where(e.had_elicitation == v, *conds)
        .scalar_subquery() for v in (True, False)]))
    yes, no = conn.execute(stmt, params).one()
    return {True: yes, False: no}


def _trigger_counts(conn: Connection, dialect: Dialect,
                    flt: ExecutionFilter) -> dict[str, int]:
    """Runs per trigger kind under ``flt``; no trigger counts as "unknown",
    together with a trigger literally so named."""
    pairs: list[tuple[Any, int]] | None = None
    if flt.is_empty():
        # Group on the bare column: SQLite reads it in (trigger_kind,
        # created_at) index order, where grouping on coalesce(...) sorts every row.
        pairs = _facet(conn, dialect, flt, "trigger", e.trigger_kind)
    elif groups_by_sorting(dialect) and _time_only(flt):
        pairs = _trigger_ranges(conn, dialect, flt)
    if pairs is None:
        # Any other condition: keep coalesce(...). On the bare column SQLite
        # walks the whole trigger index (reading every row to test a condition
        # it does not hold) instead of reading only the matching rows.
        pairs = _facet(conn, dialect, flt, "trigger or unknown",
                       func.coalesce(e.trigger_kind, literal(UNKNOWN_TRIGGER)))
    triggers: dict[str, int] = {}
    for value, n in pairs:
        if n:
            key = UNKNOWN_TRIGGER if value is None else value
            triggers[key] = triggers.get(key, 0) + n
    return triggers


def _trigger_ranges(conn: Connection, dialect: Dialect,
                    flt: ExecutionFilter) -> list[tuple[Any, int]] | None:
    """As for status: one count per trigger kind (and one for none) over its own
    range of the (trigger_kind, created_at) index, the kinds found by skipping
    through that index, one seek each. A GROUP BY reads every matching row from
    the table (24 h of a million runs: ~10 ms, against ~2 ms). None when there
    are more than ``TRIGGER_RANGES`` kinds: then the GROUP BY is cheaper."""
    stmt, params = bound("trigger ranges", dialect, flt, _trigger_ranges_statement)
    pairs = [(v, n) for v, n in conn.execute(stmt, params).all()]
    # The walk stops one kind past the cap: that kind's presence means too many.
    return None if len(pairs) > TRIGGER_RANGES + 1 else pairs


def _trigger_ranges_statement(conds: list[ColumnElement[bool]]) -> Any:
    kinds = select(func.min(e.trigger_kind).label("v"),
                   literal(1).label("n")).cte("kinds", recursive=True)
    kinds = kinds.union_all(select(
        select(func.min(e.trigger_kind)).where(e.trigger_kind > kinds.c.v).scalar_subquery(),
        kinds.c.n + 1,
    ).where(kinds.c.v.is_not(None), kinds.c.n <= TRIGGER_RANGES))
    named = select(kinds.c.v, select(func.count()).select_from(executions).where(
        e.trigger_kind == kinds.c.v, *conds).scalar_subquery()).where(kinds.c.v.is_not(None))
    none = select(literal(None), select(func.count()).select_from(executions).where(
        e.trigger_kind.is_(None), *conds).scalar_subquery())
    return named.union_all(none)


def _ranked(pairs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"value": v, "count": n} for v, n in sorted(pairs, key=lambda p: (-p[1], p[0]))]


# One side read at a time, process-wide. The caller holds its own pooled
# connection while it waits for the side one, so with at most one such waiter
# any pool of two or more connections always frees one for it (more waiters
# could hold a small pool whole and wait for each other). A second request
# finds the slot taken and reads its tool facet itself, afterwards, as before:
# on two cores one side read already keeps both busy.
_SIDE_SLOT = threading.BoundedSemaphore(1)
_SIDE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-meta-side")

ToolFacet = Callable[[], list[dict[str, Any]]]


def start_tool_facet(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> ToolFacet:
    """Start the tool facet of ``flt`` on another read connection of ``conn``'s
    engine when the side slot is free; call the result for the facet.

    When the slot is taken the returned call reads it on ``conn`` itself, in
    ``conn``'s snapshot. Errors of the side read (a storage failure) are raised
    by that call, as they would be by a read on ``conn``.
    """
    flt = flt.without("tool")
    if not _SIDE_SLOT.acquire(blocking=False):
        return lambda: tool_runs(conn, dialect, flt, TOOL_FACET_SIZE)

    def side() -> list[dict[str, Any]]:
        try:
            with conn.engine.connect() as other:
                return tool_runs(other, dialect, flt, TOOL_FACET_SIZE)
        finally:
            _SIDE_SLOT.release()

    try:
        return _SIDE.submit(side).result
    except RuntimeError:        # not submitted: the interpreter is shutting down
        _SIDE_SLOT.release()
        return lambda: tool_runs(conn, dialect, flt, TOOL_FACET_SIZE)


def facets(conn: Connection, dialect: Dialect, flt: ExecutionFilter,
           tool: ToolFacet | None = None) -> dict[str, Any]:
    """Each facet's counts under every filter except its own (``tool``: the tool
    facet already started by :func:`start_tool_facet`)."""
    if tool is None:
        tool = start_tool_facet(conn, dialect, flt)
    by_status = _status_counts(conn, dialect, flt.without("status"))
    status = _ranked([(s, by_status.get(s, 0)) for s in STATUSES])

    triggers = _trigger_counts(conn, dialect, flt.without("trigger"))
    trigger = _ranked(list(triggers.items()))

    by_elicitation = _elicitation_counts(conn, dialect, flt.without("elicitation"))
    elicitation = _ranked([("true", by_elicitation.get(True, 0)),
                           ("false", by_elicitation.get(False, 0))])

    return {"status": status, "trigger": trigger, "tool": tool(), "elicitation": elicitation}


def tool_runs(conn: Connection, dialect: Dialect, flt: ExecutionFilter, limit: int,
              paths: list[str] | None = None) -> list[dict[str, Any]]:
    """The ``limit`` tool paths called by the most runs matching ``flt`` (only
    among ``paths`` when given), with those run counts, most first."""
    if flt.is_empty():
        way = "every run"
    elif _few_older(conn, dialect, flt):
        way = "since"
    else:
        way = "pairs"

    def build(conds: list[ColumnElement[bool]]) -> Any:
        t = tool_calls.c
        only = [t.tool_path.in_(paths)] if paths is not None else []
        runs: Any
        if way == "every run":
            # Every run: count(DISTINCT) per path in (tool_path, execution_id)
            # index order, no sort (a DISTINCT subquery is ~3x slower here).
            runs = func.count(t.execution_id.distinct())
            stmt = select(t.tool_path, runs).where(*only).group_by(t.tool_path)
        elif way == "since":
            # Runs per path since ``from`` = runs per path ever - runs per path
            # before ``from`` (each run lies on one side): the first is the cheap
            # index-order count above, the second reads only the few older runs.
            # A database of the last day's runs: 26 -> ~4 ms CPU at 20,000 runs.
            # (Every call's run exists: foreign keys are enforced.)
            every = select(t.tool_path.label("path"), func.count(t.execution_id.distinct())
                           .label("n")).where(*only).group_by(t.tool_path).subquery()
            older = _pairs([e.created_at < FROM_MS], only)
            before = select(older.c.tool_path.label("path"), func.count().label("n")
                            ).group_by(older.c.tool_path).subquery()
            runs = (every.c.n - func.coalesce(before.c.n, 0)).label("runs")
            stmt = select(every.c.path, runs).select_from(
                every.outerjoin(before, before.c.path == every.c.path)).where(runs > 0)
        else:
            # The matching runs' (run, path) pairs, each once, come in order from
            # the (execution_id, tool_path) index, so DISTINCT costs nothing, and
            # only those pairs are grouped: 24 h of a million runs, 160 -> ~95 ms
            # CPU against count(DISTINCT) over the calls read from the table.
            pairs = _pairs(conds, only)
            runs = func.count()
            stmt = select(pairs.c.tool_path, runs).group_by(pairs.c.tool_path)
        return stmt.order_by(runs.desc(), stmt.selected_columns[0]).limit(limit)

    if paths is None:
        stmt, params = bound(f"tools {way} {limit}", dialect, flt, build)
    else:       # the rail's tool search: paths typed by hand, not worth keeping
        stmt = build(flt.conditions(dialect))
        params = {"from_ms": flt.from_ms} if way == "since" else {}
    return [{"value": v, "count": n} for v, n in conn.execute(stmt, params).all()]


def _pairs(conds: list[ColumnElement[bool]], only: list[ColumnElement[bool]]) -> Subquery:
    """Each (run, path) pair of the runs matching ``conds`` once."""
    t = tool_calls.c
    return select(t.execution_id, t.tool_path).distinct().where(
        t.execution_id.in_(select(e.id).where(*conds)), *only).subquery()


def count_statement(conds: list[ColumnElement[bool]]) -> Any:
    """How many runs match ``conds``."""
    return select(func.count()).select_from(executions).where(*conds)


def _older_statement(_conds: list[ColumnElement[bool]]) -> Any:
    return select(func.count()).select_from(
        select(e.created_at).where(e.created_at < FROM_MS).limit(CAP).subquery())


def _few_older(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> bool:
    """True when ``flt`` is only "since ``from``" and at most half as many runs
    are older than ``from`` as newer, on SQLite: there the tool facet costs
    ~1.3 us per run read through (run, path) pairs against ~0.2 us per run
    counted in index order, so counting every run and taking away the older
    ones is the cheaper way (the two counts here read at most 1.5 index entries
    per newer run)."""
    if not (groups_by_sorting(dialect) and flt.from_ms is not None and flt.to_ms is None
            and _time_only(flt)):
        return False
    stmt, params = bound("count", dialect, flt, count_statement)
    half = conn.execute(stmt, params).scalar_one() // 2
    stmt, params = bound("older", dialect, flt, _older_statement)
    older = conn.execute(stmt, {**params, "cap": half + 1}).scalar_one()
    return bool(older <= half)


def timeline(conn: Connection, dialect: Dialect, flt: ExecutionFilter,
             total: int) -> dict[str, Any]:
    """Stacked status counts per aligned time bucket over the requested range."""
    start, end = flt.from_ms, flt.to_ms
    if start is None or end is None:
        lo, hi = (None, None)
        if total:
            # Two subqueries: a lone min() or max() is one index lookup, where
            # min() and max() in one SELECT scan every matching row.
            stmt, params = bound("span", dialect, flt, lambda conds: select(
                select(func.min(e.created_at)).where(*conds).scalar_subquery(),
                select(func.max(e.created_at)).where(*conds).scalar_subquery()))
            lo, hi = conn.execute(stmt, params).one()
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
    first = (start // width) * width
    last = ((end - 1) // width) * width
    counts = _bucket_counts(conn, dialect, flt, first, last, width)
    buckets = [
        {"start": format_ms(b), "counts": counts.get(b, {})}
        for b in range(first, last + 1, width)
    ]
    return {"bucket_ms": width, "from": format_ms(start), "to": format_ms(end),
            "buckets": buckets}


def _bucket_counts(conn: Connection, dialect: Dialect, flt: ExecutionFilter, first: int,
                   last: int, width: int) -> dict[int, dict[str, int]]:
    """Matching rows per bucket start and status (every matching row lies in
    ``first`` to ``last + width``: the range was made to cover them)."""
    # Past MAX_BUCKETS (only over spans of years) the counts would be too many.
    if not _by_ranges(dialect, flt) or (last - first) // width > MAX_BUCKETS:
        stmt, params = bound("buckets grouped", dialect, flt, _grouped_buckets)
    else:
        stmt, params = bound("buckets by ranges", dialect, flt, _bucket_ranges)
    counts: dict[int, dict[str, int]] = {}
    # all(): one fetch of every row, not a Python-level fetch per (bucket, status).
    for bucket_start, status, count in conn.execute(
            stmt, {**params, "first": first, "last": last, "width": width}).all():
        if count:
            counts.setdefault(int(bucket_start), {})[status] = count
    return counts


def _grouped_buckets(conds: list[ColumnElement[bool]]) -> Any:
    bucket = (e.created_at // WIDTH) * WIDTH
    return select(bucket.label("b"), e.status, func.count()).where(*conds).group_by(
        bucket, e.status)


def _bucket_ranges(conds: list[ColumnElement[bool]]) -> Any:
    # Grouping on the bucket sorts every matching row (~0.4 s per million on
    # SQLite). Instead count each (status, bucket) range of the (status,
    # created_at) index; the statuses present come from skipping through
    # that index, one lookup per status.
    st = select(func.min(e.status).label("v")).cte("st", recursive=True)
    st = st.union_all(select(
        select(func.min(e.status)).where(e.status > st.c.v).scalar_subquery()
    ).where(st.c.v.is_not(None)))
    b = select(cast(FIRST, BigInteger).label("s")).cte("b", recursive=True)
    b = b.union_all(select(b.c.s + WIDTH).where(b.c.s + WIDTH <= LAST))
    n = select(func.count()).select_from(executions).where(
        e.status == st.c.v, e.created_at >= b.c.s, e.created_at < b.c.s + WIDTH, *conds)
    return select(b.c.s, st.c.v, n.scalar_subquery()).select_from(
        b.join(st, true())).where(st.c.v.is_not(None))


def duration_percentiles(conn: Connection, dialect: Dialect,
                         flt: ExecutionFilter) -> dict[str, int | None]:
    """Nearest-rank p50/p90/p99 of ``duration_ms`` over the matching rows."""
    base = select(e.duration_ms).where(*flt.conditions(dialect))
    p50, p90, p99 = percentiles(dialect, conn, e.duration_ms, base, (0.5, 0.9, 0.99))
    return {"p50": p50, "p90": p90, "p99": p99}


def compute(conn: Connection, dialect: Dialect, flt: ExecutionFilter) -> dict[str, Any]:
    """The whole ``meta`` object."""
    tool = start_tool_facet(conn, dialect, flt)
    stmt, params = bound("count", dialect, flt, count_statement)
    total = conn.execute(stmt, params).scalar_one()
    # The facets last: their tool facet is the side read, collected at the end.
    tl = timeline(conn, dialect, flt, total)
    duration = duration_percentiles(conn, dialect, flt)
    return {"total": total, "facets": facets(conn, dialect, flt, tool), "timeline": tl,
            "duration": duration}


